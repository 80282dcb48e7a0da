"""Typing at a DDL moment: a row whose columns or values the held schema does not explain
makes the glue read the source's catalog at once (a synchronous call of the schema
function, bounded by ``glue.typed_wait_seconds``) and type the row with what it stored.
The schema table is moto's; the schema function is a double that stores what the catalog
says, or fails, as the test says (the local end-to-end tests run the real one)."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dmsbus.changes import ChangeBuilder
from dmsbus.names import TableName
from dmsbus.publisher import KinesisPublisher
from dmsbus.schema_events import SchemaAnnouncer
from dmsbus.schemas import Column, SchemaStore, TableSchema
from dmsbus.typed import ImageTyper, MismatchError, SchemaCache, SchemaRefresher
from glue.core import process_batch
from tests.streams import BUS, events_in, insert, modify, read_shards, remove
from tests.unit.conftest import STREAM

ID = Column(name="id", type="integer", base="int4", nullable=False, key=1)
FLAG = Column(name="flag", type="boolean", base="bool", nullable=False)
AMOUNT = Column(name="amount", type="integer", base="int4", nullable=True)
V1 = TableSchema(source="legacy", schema="public", table="orders", columns=(ID, FLAG, AMOUNT))
WEIGHT = Column(name="weight", type="numeric(10,3)", base="numeric", nullable=True, precision=10, scale=3)
NAME = TableName(bus=BUS, source="legacy", schema="public", table="orders", version=None)
ROW = {"id": 1, "flag": "false", "amount": 12}


def changed(columns: tuple[Column, ...]) -> TableSchema:
    return TableSchema(source="legacy", schema="public", table="orders", columns=columns)


class Clock:
    """Time that passes only when something sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SchemaFunction:
    """A source's schema function behind Lambda's synchronous Invoke: it stores the schema
    the catalog has now (``catalog``), or fails as Lambda reports a function's error, or is
    throttled, or takes ``takes`` seconds (on the test's clock)."""

    def __init__(self, store: SchemaStore, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self.catalog: TableSchema | None = None
        self.failing = False
        self.throttled = 0
        self.takes = 0.2
        self.calls: list[dict[str, Any]] = []
        #: The timeout each call's client was made with (seconds).
        self.timeouts: list[float] = []

    def client(self, seconds: float) -> SchemaFunction:
        self.timeouts.append(seconds)
        return self

    def invoke(self, **call: Any) -> dict[str, Any]:
        self.calls.append({**call, "Payload": json.loads(call["Payload"])})
        self.clock.sleep(self.takes)
        if self.throttled:
            self.throttled -= 1
            raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate"}}, "Invoke")
        if self.failing:
            error = {"errorType": "OperationalError", "errorMessage": "connection refused"}
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": io.BytesIO(json.dumps(error).encode()),
            }
        if self.catalog is not None:
            self.store.save(self.catalog)
        return {"StatusCode": 200, "Payload": io.BytesIO(b'{"tables": 1}')}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def function(schema_store: SchemaStore, clock: Clock) -> SchemaFunction:
    return SchemaFunction(schema_store, clock)


def builder_with(
    store: SchemaStore, function: SchemaFunction, clock: Clock, *, wait: float = 10.0
) -> ChangeBuilder:
    refresher = SchemaRefresher(
        None, {"legacy": "demo-legacy-schema"}, clock=clock, sleep=clock.sleep, sync_clients=function.client
    )
    cache = SchemaCache(store, ttl=300, retry=10, wait=wait, backoff=60, clock=clock, refresher=refresher)
    return ChangeBuilder(BUS, schemas=cache)


def test_a_row_with_an_added_column_is_typed_with_the_schema_read_at_once(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given a glue holding v1, and the source after ALTER TABLE ADD COLUMN weight numeric(10,3)
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    assert builder.from_stream_record(insert(ROW)).source.schema_version == 1
    function.catalog = changed((ID, FLAG, AMOUNT, WEIGHT))
    # When two rows come that carry the new column
    first = builder.from_stream_record(insert({**ROW, "id": 2, "weight": Decimal("1.5")}))
    second = builder.from_stream_record(insert({**ROW, "id": 3, "weight": 2}))
    # Then both are typed with v2 (the flag a boolean, NULLs as null), after one synchronous call
    assert (first.source.typed, first.source.schema_version) == (True, 2)
    assert first.after == {"id": 2, "flag": False, "amount": 12, "weight": "1.5"}
    assert second.source.schema_version == 2
    assert [(call["InvocationType"], call["Payload"]["tables"]) for call in function.calls] == [
        ("RequestResponse", ["public.orders"])
    ]
    assert builder.take_untyped() == {}


def test_a_table_without_a_schema_is_typed_from_its_first_row(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given no schema stored yet (the sweep has not run), and the catalog's table
    function.catalog = V1
    builder = builder_with(schema_store, function, clock)
    # When the table's first row comes, then it is typed with v1
    event = builder.from_stream_record(insert(ROW))
    assert (event.source.typed, event.source.schema_version, event.after) == (
        True,
        1,
        {"id": 1, "flag": False, "amount": 12},
    )
    assert function.calls[0]["Payload"]["reason"] == "no schema stored"


def test_rows_that_fit_the_schema_cost_no_call(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    for row in range(50):
        builder.from_stream_record(
            modify({**ROW, "id": row}, {**ROW, "id": row, "flag": "true", "amount": row})
        )
    assert function.calls == []


def test_a_fraction_in_an_integer_column_is_typed_with_the_retyped_schema(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given ALTER TABLE orders ALTER COLUMN amount TYPE numeric(10,3)
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = changed((ID, FLAG, WEIGHT.__class__(**{**WEIGHT.to_dict(), "name": "amount"})))
    # When a row's amount is whole, it still fits v1: no call
    whole = builder.from_stream_record(insert({**ROW, "amount": 12}))
    assert (whole.source.schema_version, function.calls) == (1, [])
    # When the first amount with a fraction comes, then it is typed with v2 at once
    fraction = builder.from_stream_record(insert({**ROW, "id": 2, "amount": Decimal("12.5")}))
    assert (fraction.source.schema_version, fraction.after["amount"]) == (2, "12.5")  # type: ignore[index]
    assert len(function.calls) == 1


def test_a_column_retyped_to_text_is_told_by_the_type_dms_writes(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given ALTER TABLE orders ALTER COLUMN amount TYPE text: DMS writes "12" as S, not N
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = changed((ID, FLAG, Column(name="amount", type="text", base="text", nullable=True)))
    record = insert(ROW)
    record["dynamodb"]["NewImage"]["amount"] = {"S": "12"}
    # When a row comes, then it is typed with v2, its amount the string
    event = builder.from_stream_record(record)
    assert (event.source.schema_version, event.after["amount"]) == (2, "12")  # type: ignore[index]


def test_a_not_null_column_absent_is_a_dropped_one(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given ALTER TABLE orders DROP COLUMN flag (NOT NULL: its absence cannot be a NULL)
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = changed((ID, AMOUNT))
    # When a row without it comes, then it is typed with v2, without the column
    event = builder.from_stream_record(insert({"id": 1, "amount": 3}))
    assert (event.source.schema_version, event.after) == (2, {"id": 1, "amount": 3})


def test_an_unexpected_form_the_catalog_does_not_explain_is_tolerated_and_asked_once(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given an integer column DMS writes, this once, in a form the docs do not name
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = V1
    records = [insert({**ROW, "id": row}) for row in range(3)]
    for record in records:
        record["dynamodb"]["NewImage"]["amount"] = {"S": "12"}
    # When rows come with it, then they are typed with v1 as they are
    events = [builder.from_stream_record(record) for record in records]
    assert {(event.source.schema_version, event.after["amount"]) for event in events} == {(1, "12")}  # type: ignore[index]
    # And the catalog was asked once, not per row
    assert len(function.calls) == 1


def test_a_source_that_cannot_be_read_costs_the_wait_once_and_the_rows_go_out_untyped_counted(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given the schema function failing (the source down), and a wait of 10 s
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock, wait=10)
    function.failing = True
    # When rows with a new column come
    started = clock.now
    first = builder.from_stream_record(insert({**ROW, "weight": 1}))
    waited = clock.now - started
    second = builder.from_stream_record(insert({**ROW, "id": 2, "weight": 2}))
    # Then the first waited 10 s at most (a call starts only with 2 s left: one to connect,
    # one to read), asking again meanwhile, and went out untyped
    assert 8 <= waited <= 10, waited
    assert len(function.calls) > 1
    assert (first.source.typed, first.after) == (False, {**ROW, "weight": 1})
    # And the next one did not wait again (the backoff), and both are counted
    assert clock.now - started == waited
    assert second.source.typed is False
    assert builder.take_untyped() == {"demo.legacy.public.orders": 2}
    # And each call's read timeout was what was left of the wait, less a second to connect
    assert function.timeouts[0] == 9 and all(seconds <= 9 for seconds in function.timeouts)
    assert function.timeouts == sorted(function.timeouts, reverse=True)


def test_after_the_backoff_the_source_is_asked_again(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock, wait=2)
    function.failing = True
    assert builder.from_stream_record(insert({**ROW, "weight": 1})).source.typed is False
    # When the source is back and the backoff is over
    function.failing = False
    function.catalog = changed((ID, FLAG, AMOUNT, WEIGHT))
    clock.now += 61
    # Then the next row is typed with the new version
    assert builder.from_stream_record(insert({**ROW, "weight": 1})).source.schema_version == 2


def test_a_throttled_schema_function_is_asked_again_within_the_wait(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = changed((ID, FLAG, AMOUNT, WEIGHT))
    function.throttled = 2
    event = builder.from_stream_record(insert({**ROW, "weight": 1}))
    assert (event.source.schema_version, len(function.calls)) == (2, 3)


def test_a_mismatch_names_the_columns_never_the_values() -> None:
    typer = ImageTyper(V1)
    with pytest.raises(MismatchError) as raised:
        typer.image({"id": 1, "flag": "true", "amount": "secret-ish"}, {"amount": {"S": "secret-ish"}})
    assert raised.value.columns == ["amount"]
    assert "secret-ish" not in str(raised.value)


def test_a_ddl_inside_a_batch_puts_its_schema_change_between_the_rows_of_each_version(
    kinesis: Any, schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given a glue holding v1 (announced) and a batch: rows 1-4 of v1, then ADD COLUMN,
    # then rows 5-8 carrying the column
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    publisher = KinesisPublisher(kinesis, STREAM)
    announcer = SchemaAnnouncer(schema_store, publisher, BUS)
    announcer.announce({("demo.legacy.public.orders", 1)})
    function.catalog = changed((ID, FLAG, AMOUNT, WEIGHT))
    records = [
        insert({**ROW, "id": row, **({"weight": 1} if row > 4 else {})}, sequence=f"{100 + row:021d}")
        for row in range(1, 9)
    ]
    # When the batch is processed
    outcome = process_batch(
        records, builder=builder, publisher=publisher, dead_letters=None, announcer=announcer
    )
    # Then it all went out, typed, v2's change announced once
    assert (outcome.failed, outcome.untyped, outcome.announced) == ([], {}, 1)
    # And on every shard, v2's change comes after the v1 rows and before the v2 rows
    for shard, records_on_shard in read_shards(kinesis, STREAM).items():
        versions = [
            ("s" if event.op == "s" else "row", event.source.schema_version)
            for event in events_in(records_on_shard)
            if not (event.op == "s" and event.source.schema_version == 1)
        ]
        assert ("s", 2) in versions, shard
        change = versions.index(("s", 2))
        assert all(version == 1 for _, version in versions[:change]), (shard, versions)
        assert all(version == 2 for _, version in versions[change + 1 :]), (shard, versions)


def test_an_update_after_a_drop_leaves_the_dropped_column_out_of_its_old_image(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given ALTER TABLE orders DROP COLUMN flag, and an item written before it
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = changed((ID, AMOUNT))
    # When the row changes: its old image has the column, its new one not
    event = builder.from_stream_record(modify(ROW, {"id": 1, "amount": 3}))
    # Then both images are typed with v2, without the column, after one call
    assert (event.source.schema_version, event.before, event.after) == (
        2,
        {"id": 1, "amount": 12},
        {"id": 1, "amount": 3},
    )
    assert len(function.calls) == 1


def test_a_delete_whose_old_image_has_an_added_column_is_typed_with_the_new_version(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = changed((ID, FLAG, AMOUNT, WEIGHT))
    event = builder.from_stream_record(remove({**ROW, "weight": 2}))
    assert (event.source.schema_version, event.before) == (
        2,
        {"id": 1, "flag": False, "amount": 12, "weight": 2},
    )


def test_an_old_image_column_the_catalog_does_not_have_is_left_out_once_it_said_so(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given a table whose stored schema never had the flag its old items hold
    schema_store.save(changed((ID, AMOUNT)))
    function.catalog = changed((ID, AMOUNT))
    builder = builder_with(schema_store, function, clock)
    # When two deletes of rows written before the DROP come
    events = [builder.from_stream_record(remove({**ROW, "id": row})) for row in (1, 2)]
    # Then the catalog is asked once, and both are typed without the column
    assert [(e.source.schema_version, e.before) for e in events] == [
        (1, {"id": 1, "amount": 12}),
        (1, {"id": 2, "amount": 12}),
    ]
    assert len(function.calls) == 1


def test_a_read_of_an_item_written_before_a_drop_is_typed_without_the_column(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given v2 (flag dropped) stored, and an item DMS wrote before the DROP (a backfill's read)
    schema_store.save(V1)
    schema_store.save(changed((ID, AMOUNT)))
    function.catalog = changed((ID, AMOUNT))
    builder = builder_with(schema_store, function, clock)
    # When it is read (twice), then it is typed with v2 without the column, after one call
    for _ in range(2):
        typed, version, after, _ = builder.typed(NAME, {"id": 1, "flag": "true", "amount": 3}, {"id": 1})
        assert (typed, version, after) == (True, 2, {"id": 1, "amount": 3})
    assert len(function.calls) == 1
    assert builder.take_untyped() == {}


def test_a_row_written_before_a_drop_that_comes_after_it_is_typed_without_the_column(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given a glue that learned v2 (flag dropped) from a row of another shard
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = changed((ID, AMOUNT))
    assert builder.from_stream_record(insert({"id": 1, "amount": 3})).source.schema_version == 2
    # When a row written before the DROP comes now, then it is typed with v2, no call more
    late = builder.from_stream_record(insert({"id": 2, "flag": "true", "amount": 4}))
    assert (late.source.schema_version, late.after) == (2, {"id": 2, "amount": 4})
    assert len(function.calls) == 1


def test_the_rows_of_one_batch_share_one_wait(
    kinesis: Any, schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given a schema function that takes 3 s a call, and a wait of 10 s
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock, wait=10)
    function.catalog, function.takes = V1, 3.0
    # When a batch has rows each with another column the catalog does not have (each a
    # question of its own)
    records = [insert({**ROW, "id": row, f"c{row}": 1}) for row in range(6)]
    started = clock.now
    outcome = process_batch(
        records,
        builder=builder,
        publisher=KinesisPublisher(kinesis, STREAM),
        dead_letters=None,
        deadline=clock.now + 100,
    )
    # Then the batch waited 10 s at most in all (not 3 s a row), and nothing failed
    assert clock.now - started <= 10, clock.now - started
    assert len(function.calls) < 6
    assert outcome.failed == []


def test_a_schema_stored_by_another_container_ends_the_wait(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given the schema function throttled (other glue shards' calls take its concurrency)
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.throttled = 100
    grown = changed((ID, FLAG, AMOUNT, WEIGHT))
    original = function.invoke

    def invoke(**call: Any) -> dict[str, Any]:
        schema_store.save(grown)  # another container's call stored it meanwhile
        return original(**call)

    function.invoke = invoke  # type: ignore[method-assign]
    # When a row with the new column comes, then it is typed with v2 after one throttled call
    event = builder.from_stream_record(insert({**ROW, "weight": 1}))
    assert (event.source.schema_version, len(function.calls)) == (2, 1)


def test_during_the_backoff_a_schema_stored_meanwhile_is_found(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock, wait=3)
    function.failing = True
    assert builder.from_stream_record(insert({**ROW, "weight": 1})).source.typed is False
    calls = len(function.calls)
    # When the sweep stores v2 while the glue backs off (60 s), then after the retry period
    # (10 s) the store is looked at, and the row is typed, with no call
    schema_store.save(changed((ID, FLAG, AMOUNT, WEIGHT)))
    clock.now += 11
    assert builder.from_stream_record(insert({**ROW, "weight": 1})).source.schema_version == 2
    assert len(function.calls) == calls


def test_a_store_that_fails_after_the_call_leaves_the_row_untyped_and_the_check_in_place(
    schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock)
    function.catalog = changed((ID, FLAG, WEIGHT.__class__(**{**WEIGHT.to_dict(), "name": "amount"})))
    store_reads = schema_store.latest
    reads = [0]

    def failing_after_the_call(qualified: str) -> TableSchema | None:
        reads[0] += 1
        if function.calls:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "Query")
        return store_reads(qualified)

    schema_store.latest = failing_after_the_call  # type: ignore[method-assign]
    # When a fraction comes in the integer column and the store fails after the call
    event = builder.from_stream_record(insert({**ROW, "amount": Decimal("1.5")}))
    # Then it goes out untyped, and v1 still checks the column (nothing was tolerated)
    assert event.source.typed is False
    typer = ImageTyper(V1)
    with pytest.raises(MismatchError):
        typer.new_image({**ROW, "amount": "1.5"}, {"amount": {"N": "1.5"}})
    held = builder._schemas.typer(NAME)  # type: ignore[union-attr]
    assert held is not None and "amount" in held._integers


def test_untyped_events_are_counted_only_when_they_went_out(
    kinesis: Any, schema_store: SchemaStore, function: SchemaFunction, clock: Clock
) -> None:
    # Given a source that cannot be read, and a batch whose third record is poison (no
    # dead-letter queue: the batch stops there and Lambda hands the rest again)
    schema_store.save(V1)
    builder = builder_with(schema_store, function, clock, wait=2)
    function.failing = True
    poison = insert({**ROW, "id": 3})
    poison["dynamodb"]["NewImage"]["amount"] = {"N": "twelve"}
    records = [
        insert({**ROW, "id": 1, "weight": 1}),
        insert({**ROW, "id": 2}),
        poison,
        insert({**ROW, "id": 4, "weight": 1}),
    ]
    outcome = process_batch(
        records, builder=builder, publisher=KinesisPublisher(kinesis, STREAM), dead_letters=None
    )
    # Then the one untyped event that went out is counted, not the one handed again
    assert outcome.untyped == {"demo.legacy.public.orders": 1}
    assert len(outcome.failed) == 2


def test_without_a_schema_function_a_column_the_schema_lacks_is_never_taken_for_dropped(
    schema_store: SchemaStore, clock: Clock
) -> None:
    # Given a cache that cannot ask a source's catalog (no schema function for the source)
    schema_store.save(V1)
    builder = ChangeBuilder(BUS, schemas=SchemaCache(schema_store, wait=10, clock=clock))
    # When rows carry a column v1 lacks, then they go out untyped with it, never typed without it
    for row in (1, 2):
        event = builder.from_stream_record(insert({**ROW, "id": row, "weight": 1}))
        assert (event.source.typed, event.after["weight"]) == (False, 1)  # type: ignore[index]
