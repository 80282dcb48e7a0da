"""The glue types change events with their table's schema (dmsbus.changes with a schema
source): typed when the schema fits, untyped (as DMS wrote them) otherwise, never held
back, and routed on DMS's key either way."""

from __future__ import annotations

import boto3
from moto import mock_aws

from dmsbus.changes import ChangeBuilder
from dmsbus.envelope import ChangeEvent
from dmsbus.names import TableName
from dmsbus.schemas import Column, SchemaStore, TableSchema
from dmsbus.typed import ImageTyper, SchemaCache, TypingError
from tests.streams import BUS, insert, modify

ORDERS = TableSchema(
    source="legacy",
    schema="public",
    table="orders",
    version=3,
    columns=(
        Column(name="id", type="integer", base="int4", nullable=False, key=1),
        Column(name="paid", type="boolean", base="bool", nullable=False),
        Column(name="placed_at", type="timestamp with time zone", base="timestamptz", nullable=True),
        Column(name="note", type="text", base="text", nullable=True),
    ),
)


class Schemas:
    """A schema source holding what the test gives it; asked for a fresh schema, it has
    none newer (the source cannot be read)."""

    def __init__(self, *schemas: TableSchema) -> None:
        self.typers = {schema.table: ImageTyper(schema) for schema in schemas}
        self.asked: list[tuple[str, str | None]] = []

    def typer(self, name: TableName) -> ImageTyper | None:
        return self.typers.get(name.table)

    def refreshed(
        self, name: TableName, held: ImageTyper | None, error: TypingError | None
    ) -> ImageTyper | None:
        self.asked.append((name.table, str(error) if error is not None else None))
        return None

    def begin(self, deadline: float | None = None) -> None:
        pass


ROW = {"id": 7, "paid": "true", "placed_at": "2026-11-01 10:00:00.500000"}
#: ORDERS after ``ALTER TABLE orders ADD COLUMN coupon text``.
GROWN = TableSchema(
    source="legacy",
    schema="public",
    table="orders",
    columns=(*ORDERS.columns, Column(name="coupon", type="text", base="text", nullable=True)),
)


def test_given_a_schema_when_a_change_comes_then_its_event_is_typed() -> None:
    # Given the glue's builder with the table's schema
    builder = ChangeBuilder(BUS, schemas=Schemas(ORDERS))
    # When an update comes as DMS wrote it (note was NULL before)
    event = builder.from_stream_record(modify(ROW, {**ROW, "paid": "false", "note": "late"}))
    # Then both images have the source's types, every column, NULL as null
    assert event.before == {"id": 7, "paid": True, "placed_at": "2026-11-01T10:00:00.500000Z", "note": None}
    assert event.after == {"id": 7, "paid": False, "placed_at": "2026-11-01T10:00:00.500000Z", "note": "late"}
    assert (event.source.typed, event.source.schema_version) == (True, 3)
    # And the event says so on the wire, and reads back the same
    raw = event.to_dict()["source"]
    assert (raw["typed"], raw["schema_version"]) == (True, 3)
    assert ChangeEvent.from_json(event.to_json()) == event


def test_without_a_schema_the_event_goes_out_as_dms_wrote_it_marked_untyped() -> None:
    event = ChangeBuilder(BUS, schemas=Schemas()).from_stream_record(insert(ROW))
    assert event.after == ROW
    assert (event.source.typed, event.source.schema_version) == (False, None)


def test_a_column_the_schema_lacks_asks_for_the_schema_and_unanswered_leaves_the_event_untyped() -> None:
    schemas = Schemas(ORDERS)
    builder = ChangeBuilder(BUS, schemas=schemas)
    event = builder.from_stream_record(insert({**ROW, "coupon": "X"}))
    assert event.after == {**ROW, "coupon": "X"}
    assert event.source.typed is False
    assert schemas.asked == [("orders", "attributes ['coupon'] are not columns of the known schema")]
    # And the event is counted as untyped, per table
    assert builder.take_untyped() == {"demo.legacy.public.orders": 1}


def test_a_bus_that_does_not_type_writes_no_typed_field() -> None:
    event = ChangeBuilder(BUS).from_stream_record(insert(ROW))
    assert "typed" not in event.to_dict()["source"]
    assert event.source.typed is None


def test_typed_and_untyped_events_of_a_row_have_one_partition_key() -> None:
    # A key whose typed form differs from DMS's (a timestamp) routes as DMS wrote it
    schema = TableSchema(
        source="legacy",
        schema="public",
        table="orders",
        version=1,
        columns=(Column(name="at", type="timestamp", base="timestamp", nullable=False, key=1),),
    )
    record = insert({"at": "2026-11-01 12:00:00.000000"}, key="at")
    typed = ChangeBuilder(BUS, schemas=Schemas(schema)).encode_stream_record(record, 0)
    untyped = ChangeBuilder(BUS).encode_stream_record(record, 0)
    assert ChangeEvent.from_json(typed.data).key == {"at": "2026-11-01T12:00:00.000000"}
    assert typed.partition_key == untyped.partition_key


# ---- the cache in front of the store ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


NAME = TableName(bus=BUS, source="legacy", schema="public", table="orders", version=None)


def test_a_schema_that_arrives_later_types_events_once_the_cache_reads_it_again(
    schema_store: SchemaStore,
) -> None:
    # Given a cache without a schema function to ask, and no schema stored yet
    clock = Clock()
    cache = SchemaCache(schema_store, ttl=300, retry=10, clock=clock)
    builder = ChangeBuilder(BUS, schemas=cache)
    assert builder.from_stream_record(insert(ROW)).source.typed is False
    # When the schema is stored, the store is not asked again before the retry period is over
    schema_store.save(ORDERS)
    clock.now = 5
    assert builder.from_stream_record(insert(ROW)).source.typed is False
    # Then after it, events are typed with version 1
    clock.now = 11
    event = builder.from_stream_record(insert(ROW))
    assert (event.source.typed, event.source.schema_version) == (True, 1)


def test_a_new_column_the_store_has_already_types_its_first_row_at_once(schema_store: SchemaStore) -> None:
    clock = Clock()
    schema_store.save(ORDERS)
    cache = SchemaCache(schema_store, ttl=300, retry=10, clock=clock)
    builder = ChangeBuilder(BUS, schemas=cache)
    assert builder.from_stream_record(insert(ROW)).source.typed is True
    # Given the source gained a column, and the schema function's sweep stored version 2
    schema_store.save(GROWN)
    # When a row with it comes, long before the cache's TTL is over
    event = builder.from_stream_record(insert({**ROW, "coupon": "X"}))
    # Then the cache reads the store at once, and the row is typed with version 2
    assert (event.source.typed, event.source.schema_version, event.after["coupon"]) == (True, 2, "X")  # type: ignore[index]


def test_a_store_that_cannot_be_read_leaves_events_untyped() -> None:
    with mock_aws():
        # The schema table does not exist
        cache = SchemaCache(SchemaStore(boto3.client("dynamodb", region_name="us-east-1"), "missing"))
        event = ChangeBuilder(BUS, schemas=cache).from_stream_record(insert(ROW))
    assert (event.source.typed, event.after) == (False, ROW)


def test_a_stored_schema_this_code_cannot_use_leaves_events_untyped_not_poison(
    schema_store: SchemaStore,
) -> None:
    # Given a schema item whose version is not a number
    schema_store.client.put_item(
        TableName=schema_store.table_name,
        Item={
            "table": {"S": "legacy.public.orders"},
            "version": {"N": "1"},
            "schema": {
                "S": '{"source": "legacy", "schema": "public", "table": "orders", "version": null, "columns": []}'
            },
        },
    )
    # When a change comes, it goes out as DMS wrote it
    event = ChangeBuilder(BUS, schemas=SchemaCache(schema_store)).from_stream_record(insert(ROW))
    assert (event.source.typed, event.after) == (False, ROW)


def test_a_schema_source_that_raises_leaves_events_untyped_not_poison() -> None:
    class Broken(Schemas):
        def typer(self, name: TableName) -> ImageTyper | None:
            raise RuntimeError("a bug in a schema source")

    event = ChangeBuilder(BUS, schemas=Broken()).from_stream_record(insert(ROW))
    assert (event.source.typed, event.after) == (False, ROW)


def test_a_known_schema_is_read_again_only_after_its_ttl(schema_store: SchemaStore) -> None:
    clock = Clock()
    schema_store.save(ORDERS)
    cache = SchemaCache(schema_store, ttl=300, retry=10, clock=clock)
    builder = ChangeBuilder(BUS, schemas=cache)
    assert builder.from_stream_record(insert(ROW)).source.schema_version == 1
    schema_store.save(GROWN)
    clock.now = 299
    assert builder.from_stream_record(insert(ROW)).source.schema_version == 1
    clock.now = 301
    assert builder.from_stream_record(insert(ROW)).source.schema_version == 2


def test_a_backfill_read_is_typed_as_the_glue_types_the_rows_changes() -> None:
    # Given a scanned item of the table, and a builder with its schema
    from dmsbus.backfill import read_records
    from tests.streams import ddb

    name = TableName(bus=BUS, source="legacy", schema="public", table="orders", version=None)
    item = ddb(ROW)
    typed_builder, untyped_builder = ChangeBuilder(BUS, schemas=Schemas(ORDERS)), ChangeBuilder(BUS)
    # When read as an r event by each
    (typed,) = read_records(typed_builder, name, run="run-1", key_attributes=["id"], items=[item], ts_ms=1)
    (untyped,) = read_records(
        untyped_builder, name, run="run-1", key_attributes=["id"], items=[item], ts_ms=1
    )
    # Then the typed one has the source's types, and both have one id and one partition key
    event, plain = ChangeEvent.from_json(typed.data), ChangeEvent.from_json(untyped.data)
    assert (event.source.typed, event.source.schema_version, event.after["paid"]) == (True, 3, True)  # type: ignore[index]
    assert plain.source.typed is None
    assert (event.id, typed.partition_key) == (plain.id, untyped.partition_key)
