"""Schema-change events (op ``s``): the glue puts a table's schema change on every shard of
the bus stream before the first row typed with the new version, once per version (the
schema table remembers it). moto's Kinesis (4 shards) and DynamoDB; real aggregation."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dmsbus.changes import ChangeBuilder
from dmsbus.consumer import Selection, consumer
from dmsbus.deadletter import DeadLetterQueue
from dmsbus.envelope import ChangeEvent, EnvelopeError
from dmsbus.publisher import KinesisPublisher
from dmsbus.schema_events import SchemaAnnouncer
from dmsbus.schemas import Column, SchemaStore, TableSchema
from dmsbus.typed import SchemaCache
from glue.core import process_batch
from tests.streams import BUS, events_in, insert, modify, read_shards
from tests.unit.conftest import STREAM, dead_letters

ID = Column(name="id", type="integer", base="int4", nullable=False, key=1)
PAID = Column(name="paid", type="boolean", base="bool", nullable=False)
COUPON = Column(name="coupon", type="varchar(12)", base="varchar", nullable=True, length=12)
V1 = TableSchema(source="legacy", schema="public", table="orders", columns=(ID, PAID))
V2 = TableSchema(source="legacy", schema="public", table="orders", columns=(ID, PAID, COUPON))


class Glue:
    """One glue container: its builder, publisher and announcer, over the given store."""

    def __init__(self, kinesis: Any, store: SchemaStore, dead_letters: DeadLetterQueue | None = None) -> None:
        self.builder = ChangeBuilder(BUS, schemas=SchemaCache(store, ttl=0))
        self.publisher = KinesisPublisher(kinesis, STREAM)
        self.announcer = SchemaAnnouncer(store, self.publisher, BUS)
        self.dead_letters = dead_letters

    def run(self, records: list[dict[str, Any]]) -> list[str]:
        outcome = process_batch(
            records,
            builder=self.builder,
            publisher=self.publisher,
            dead_letters=self.dead_letters,
            announcer=self.announcer,
        )
        return outcome.failed


#: An op s event's source and schema_change, as the glue writes them.
SOURCE = {
    "bus": "demo",
    "source": "legacy",
    "schema": "public",
    "table": "orders",
    "version": None,
    "dynamodb_table": "demo.legacy.public.orders",
    "sequence": "0",
    "snapshot": False,
    "ttl": False,
    "typed": True,
    "schema_version": 2,
}
CHANGE = {
    "version": 2,
    "previous_version": 1,
    "added": ["coupon"],
    "dropped": [],
    "retyped": [],
    "renamed": [],
}


def shards(kinesis: Any) -> dict[str, list[ChangeEvent]]:
    return {shard: events_in(records) for shard, records in read_shards(kinesis, STREAM).items()}


def test_a_schema_change_is_on_every_shard_before_the_first_row_of_its_version(
    kinesis: Any, schema_store: SchemaStore
) -> None:
    # Given the orders' first schema, announced, and rows spread over the shards
    schema_store.save(V1)
    glue = Glue(kinesis, schema_store)
    assert glue.run([insert({"id": row, "paid": "false"}) for row in range(1, 9)]) == []
    # When a column is added (v2) and rows use it
    schema_store.save(V2)
    assert glue.run([insert({"id": row, "paid": "true", "coupon": "X"}) for row in range(11, 19)]) == []
    # Then on every shard, each version's schema event comes before any row typed with it
    for shard, events in shards(kinesis).items():
        kinds = [(event.op, event.source.schema_version) for event in events]
        assert kinds[0] == ("s", 1), shard
        assert kinds.index(("s", 2)) < min(
            (index for index, kind in enumerate(kinds) if kind[0] == "c" and kind[1] == 2), default=len(kinds)
        ), shard
        assert [kind for kind in kinds if kind[0] == "s"] == [("s", 1), ("s", 2)], shard
    # And the v2 event says what changed, the same bytes on every shard
    changes = {event.to_json() for events in shards(kinesis).values() for event in events if event.op == "s"}
    v2 = [
        ChangeEvent.from_json(data)
        for data in changes
        if ChangeEvent.from_json(data).schema_change["version"] == 2
    ]  # type: ignore[index]
    (event,) = v2
    assert event.id == "demo.legacy.public.orders/schema/2"
    assert event.schema_change == {
        "version": 2,
        "previous_version": 1,
        "added": ["coupon"],
        "dropped": [],
        "retyped": [],
        "renamed": [],
    }
    assert (event.key, event.before, event.after, event.source.typed) == ({}, None, None, True)


def test_a_version_announced_once_is_not_announced_again_by_this_or_another_container(
    kinesis: Any, schema_store: SchemaStore
) -> None:
    # Given v1 announced by one glue container
    schema_store.save(V1)
    Glue(kinesis, schema_store).run([insert({"id": 1, "paid": "true"})])
    # When it and a new container publish more rows of v1
    Glue(kinesis, schema_store).run([modify({"id": 1, "paid": "true"}, {"id": 1, "paid": "false"})])
    # Then the schema table says v1 is announced, and each shard has its schema event once
    assert schema_store.announced("legacy.public.orders", 1)
    for events in shards(kinesis).values():
        assert [event.op for event in events].count("s") == 1


def test_a_schema_change_that_cannot_be_announced_holds_its_rows_back(
    kinesis: Any, schema_store: SchemaStore
) -> None:
    # Given a container that types with v1, and cannot note announcements (its store's
    # table is not there: say, its role lost the grant)
    schema_store.save(V1)
    glue = Glue(kinesis, schema_store)
    glue.announcer = SchemaAnnouncer(
        SchemaStore(schema_store.client, "demo-schemas-not-there"), glue.publisher, BUS
    )
    # When a batch typed with v1 comes
    records = [insert({"id": row, "paid": "true"}, sequence=f"{row:021d}") for row in (1, 2)]
    failed = glue.run(records)
    # Then nothing went out and Lambda is handed the whole batch again
    assert failed == [f"{row:021d}" for row in (1, 2)]
    assert all(events == [] for events in shards(kinesis).values())


def test_schema_events_go_to_consumers_that_name_op_s_only() -> None:
    event = ChangeEvent.from_json(
        b'{"v":1,"id":"demo.legacy.public.orders/schema/2","op":"s","ts_ms":1,"source":{"bus":"demo",'
        b'"source":"legacy","schema":"public","table":"orders","version":null,"dynamodb_table":'
        b'"demo.legacy.public.orders","sequence":"0","snapshot":false,"ttl":false,"typed":true,'
        b'"schema_version":2},"key":{},"before":null,"after":null,"schema_change":{"version":2,'
        b'"previous_version":1,"added":["coupon"],"dropped":[],"retyped":[],"renamed":[]}}'
    )
    # A consumer's decorator without ops takes rows only; one naming s takes schema changes
    assert consumer()(print).selection.matches(event) is False
    assert consumer(ops=["c", "s"])(print).selection.matches(event) is True
    # A deployment's selection without ops leaves it to the code
    assert Selection.from_env({}).matches(event) is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"after": {"id": 1}}, "has an empty key and no images"),
        ({"key": {"id": 1}}, "has an empty key and no images"),
        ({"schema_change": None}, "needs schema_change, an object"),
        ({"source": {**SOURCE, "typed": None}}, "needs source.typed true and source.schema_version 2"),
        ({"source": {**SOURCE, "schema_version": 3}}, "needs source.typed true and source.schema_version 2"),
        ({"schema_change": {**CHANGE, "renamed": [["a"]]}}, r"renamed must be a list of \[old, new\]"),
        ({"schema_change": {**CHANGE, "added": [1]}}, "added must be a list of column names"),
        ({"schema_change": {**CHANGE, "previous_version": 2}}, "previous_version must be null or below 2"),
        (
            {"op": "u", "before": {"id": 1}, "after": {"id": 1}, "key": {"id": 1}},
            "op 'u' has no schema_change",
        ),
    ],
)
def test_a_schema_event_not_following_the_envelope_is_refused_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    valid = {
        "v": 1,
        "id": "demo.legacy.public.orders/schema/2",
        "op": "s",
        "ts_ms": 1,
        "source": SOURCE,
        "key": {},
        "before": None,
        "after": None,
        "schema_change": CHANGE,
    }
    assert ChangeEvent.from_dict(valid).schema_change == CHANGE
    raw = {**valid, **change}
    with pytest.raises(
        EnvelopeError, match=rf"^change event 'demo.legacy.public.orders/schema/2': .*{message}"
    ):
        ChangeEvent.from_dict(raw)


def test_versions_the_glue_skipped_are_announced_oldest_first(
    kinesis: Any, schema_store: SchemaStore
) -> None:
    # Given two DDLs between the glue's reads: v1, v2 and v3 stored, none announced
    schema_store.save(V1)
    schema_store.save(V2)
    schema_store.save(TableSchema(source="legacy", schema="public", table="orders", columns=(ID, COUPON)))
    # When the glue first types rows, with v3
    assert Glue(kinesis, schema_store).run([insert({"id": row, "coupon": "X"}) for row in range(1, 9)]) == []
    # Then every shard has v1's, v2's and v3's changes, in order, before the rows
    for shard, events in shards(kinesis).items():
        assert [(e.op, e.source.schema_version) for e in events[:3]] == [("s", 1), ("s", 2), ("s", 3)], shard
        assert all(e.op == "c" for e in events[3:]), shard
    v3 = next(e for e in next(iter(shards(kinesis).values())) if e.op == "s" and e.source.schema_version == 3)
    assert v3.schema_change is not None and v3.schema_change["dropped"] == ["paid"]


class SplitBeforeFirstPut:
    """A Kinesis client whose stream splits a shard between ListShards and the first put."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.split = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_records(self, **kwargs: Any) -> Any:
        if not self.split:
            self.split = True
            shard = self._client.list_shards(StreamName=STREAM)["Shards"][0]
            low, high = (int(shard["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
            self._client.split_shard(
                StreamName=STREAM, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high) // 2)
            )
        return self._client.put_records(**kwargs)


def test_a_shard_split_while_announcing_gets_the_change_on_both_children(kinesis: Any) -> None:
    # Given a stream whose first shard splits between the listing and the put
    client = SplitBeforeFirstPut(kinesis)
    publisher = KinesisPublisher(client, STREAM)  # type: ignore[arg-type]
    # When a record goes to every shard
    result = publisher.publish_to_every_shard(b'{"x": 1}', "public.orders|schema")
    # Then every open shard has it, the split's children too
    assert (client.split, result.failed_from) == (True, None)
    open_shards = [
        s["ShardId"]
        for s in kinesis.list_shards(StreamName=STREAM)["Shards"]
        if "EndingSequenceNumber" not in s["SequenceNumberRange"]
    ]
    on_stream = read_shards(kinesis, STREAM)
    assert len(open_shards) == 5
    assert all(on_stream[shard] for shard in open_shards)


def test_a_version_put_on_every_shard_but_not_noted_lets_the_rows_go(
    kinesis: Any, schema_store: SchemaStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a store that cannot note announcements (UpdateItem refused)
    schema_store.save(V1)
    glue = Glue(kinesis, schema_store)

    def refuse(qualified: str, version: int) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "UpdateItem")

    glue.announcer.store.mark_announced = refuse  # type: ignore[method-assign]
    # When rows typed with v1 come, then they go out after the change, with a warning
    with caplog.at_level(logging.WARNING, logger="dmsbus.schema_events"):
        assert glue.run([insert({"id": 1, "paid": "true"})]) == []
    assert sum(1 for events in shards(kinesis).values() for e in events if e.op == "c") == 1
    assert "not noted as announced" in caplog.text


def test_a_poison_record_of_a_batch_handed_back_for_its_announcement_is_parked_once(
    kinesis: Any, schema_store: SchemaStore, dlq: DeadLetterQueue, sqs: Any
) -> None:
    # Given a batch with a poison record, whose announcement fails at first
    schema_store.save(V1)
    glue = Glue(kinesis, schema_store, dead_letters=dlq)
    working = glue.announcer
    glue.announcer = SchemaAnnouncer(
        SchemaStore(schema_store.client, "demo-schemas-not-there"), glue.publisher, BUS
    )
    poison = insert({"id": 2, "paid": "true"})
    del poison["dynamodb"]["NewImage"]
    batch = [insert({"id": 1, "paid": "true"}), poison]
    # When it is handed back, then handed again once the announcement can be made
    assert glue.run(batch) != []
    glue.announcer = working
    assert glue.run(batch) == []
    # Then the poison record was parked once, by the attempt that went on
    assert len(dead_letters(sqs, dlq.queue_url)) == 1
