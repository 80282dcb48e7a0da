"""dmsbus tail: the bus stream's change events, deaggregated and filtered (moto's Kinesis,
aggregated by the glue's own publisher)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dmsbus.changes import UserRecord
from dmsbus.envelope import ChangeEvent
from dmsbus.partition import hash_key, partition_key
from dmsbus.publisher import KinesisPublisher
from dmsbus.testing import change
from dmsbus_cli.tail import Filter, TailError, start_position, tail

STREAM = "demo-bus"


@pytest.fixture
def kinesis() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("kinesis", region_name="us-east-1")
        client.create_stream(StreamName=STREAM, ShardCount=2)
        yield client


def publish(kinesis: Any, events: list[ChangeEvent]) -> None:
    """As the glue puts them: under each row's partition key, KPL-aggregated."""
    records = []
    for origin, event in enumerate(events):
        key = partition_key(event.source.schema, event.source.table, event.key)
        records.append(
            UserRecord(data=event.to_json(), partition_key=key, hash_key=hash_key(key), origin=origin)
        )
    assert KinesisPublisher(kinesis, STREAM).publish(records).failed_from is None


def sample() -> list[ChangeEvent]:
    return [
        change("public.orders", "c", key={"id": 1}, after={"id": 1, "status": "new"}),
        change(
            "public.orders",
            "u",
            key={"id": 1},
            before={"id": 1, "status": "new"},
            after={"id": 1, "status": "paid"},
        ),
        change("public.customers", "c", key={"id": 7}, after={"id": 7, "name": "Ada"}),
        change("audit.events", "c", key={"id": 3}, after={"id": 3}),
        change("public.orders", "d", key={"id": 2}, before={"id": 2, "status": "void"}),
    ]


def ids(lines: Iterator[bytes]) -> list[str]:
    return [json.loads(line)["id"] for line in lines]


def test_every_event_is_printed_once_and_each_rows_events_in_order(kinesis: Any) -> None:
    # Given five changes on the stream, aggregated
    events = sample()
    publish(kinesis, events)
    # When the stream is tailed from its start, without --follow
    printed = ids(
        tail(kinesis, STREAM, start=start_position("trim-horizon"), sleep=lambda _: None, read_interval=0)
    )
    # Then it stops at the tip, every event printed once, row 1's in its order
    assert sorted(printed) == sorted(event.id for event in events)
    assert [i for i in printed if i in (events[0].id, events[1].id)] == [events[0].id, events[1].id]


def test_table_patterns_and_ops_filter(kinesis: Any) -> None:
    events = sample()
    publish(kinesis, events)
    selection = Filter(tables=("public.*",), ops=frozenset({"c", "d"}))
    printed = ids(
        tail(
            kinesis,
            STREAM,
            start=start_position("trim-horizon"),
            selection=selection,
            sleep=lambda _: None,
            read_interval=0,
        )
    )
    assert sorted(printed) == sorted([events[0].id, events[2].id, events[4].id])


def test_latest_prints_nothing_written_before(kinesis: Any) -> None:
    publish(kinesis, sample())
    assert (
        ids(tail(kinesis, STREAM, start=start_position("latest"), sleep=lambda _: None, read_interval=0))
        == []
    )


def test_a_record_that_is_not_a_change_event_stops_the_tail_naming_it(kinesis: Any) -> None:
    kinesis.put_record(StreamName=STREAM, Data=b"not json", PartitionKey="x")
    with pytest.raises(TailError, match=r"shardId-\d+ record \d+"):
        list(
            tail(kinesis, STREAM, start=start_position("trim-horizon"), sleep=lambda _: None, read_interval=0)
        )


@pytest.mark.parametrize("text", ["yesterday", "2026-11-30T10:00:00"])
def test_a_start_that_is_not_a_position_or_a_utc_time_is_refused(text: str) -> None:
    with pytest.raises(Exception, match=text):
        start_position(text)


def test_after_a_reshard_a_rows_changes_on_the_child_shard_come_after_those_on_the_parent() -> None:
    with mock_aws():
        kinesis = boto3.client("kinesis", region_name="us-east-1")
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        # Given row 1 created on the only shard, then the stream resharded, then row 1 updated
        created = change("public.orders", "c", key={"id": 1}, after={"id": 1, "status": "new"})
        publish(kinesis, [created])
        kinesis.update_shard_count(StreamName=STREAM, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
        shards = kinesis.list_shards(StreamName=STREAM)["Shards"]
        assert any(shard.get("ParentShardId") for shard in shards)
        updated = change(
            "public.orders",
            "u",
            key={"id": 1},
            before={"id": 1, "status": "new"},
            after={"id": 1, "status": "paid"},
        )
        publish(kinesis, [updated])
        # When tailed from the start, then the parent's change comes first
        printed = ids(
            tail(kinesis, STREAM, start=start_position("trim-horizon"), sleep=lambda _: None, read_interval=0)
        )
        assert printed == [created.id, updated.id]


def test_latest_after_a_reshard_prints_nothing_written_before() -> None:
    with mock_aws():
        kinesis = boto3.client("kinesis", region_name="us-east-1")
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        publish(kinesis, [change("public.orders", "c", key={"id": 1}, after={"id": 1})])
        kinesis.update_shard_count(StreamName=STREAM, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
        publish(kinesis, [change("public.orders", "c", key={"id": 2}, after={"id": 2})])
        # the children were there when the tail began: they are read from --from too
        assert (
            ids(tail(kinesis, STREAM, start=start_position("latest"), sleep=lambda _: None, read_interval=0))
            == []
        )
