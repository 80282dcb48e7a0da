"""Replay from the S3 archive (moto's S3) to a consumer or a stream, in each row's order."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from consumers.pg_mirror.mirror import Mirror
from consumers.s3_archive.archive import write
from dmsbus.consumer import ChangeEvent, Received, consumer
from dmsbus_cli.replay import ArchiveReader, ConsumerTarget, KinesisTarget, ReplayError, ReplayRange, replay
from tests.consumers.conftest import change
from tests.streams import events_in, read_shards

BUCKET = "demo-archive"
T = 1_763_800_000_000  # 2025-11-22 08:26:40 UTC
HOUR = 3_600_000


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def archive(s3: Any, *batches: list[ChangeEvent]) -> None:
    """As the s3_archive consumer writes them, one batch at a time."""
    for number, batch in enumerate(batches):
        write(
            s3,
            BUCKET,
            [Received(event, event.to_json(), str(number), index) for index, event in enumerate(batch)],
        )


def order_row_splits(s3: Any) -> list[ChangeEvent]:
    """Row 1's changes split over two batches of two shards; the second batch's object
    name sorts first (its first event, another row's, is older)."""
    first = [
        change("c", "public.orders", {"id": 1}, {"status": "new"}, sequence=10, ts_ms=T + 5),
        change("u", "public.orders", {"id": 1}, {"status": "paid"}, sequence=12, ts_ms=T + 7),
    ]
    second = [
        change("c", "public.orders", {"id": 2}, {"status": "new"}, sequence=5, ts_ms=T + 1),
        change("u", "public.orders", {"id": 1}, {"status": "shipped"}, sequence=20, ts_ms=T + 9),
        change("d", "public.orders", {"id": 2}, sequence=21, ts_ms=T + 10),
    ]
    archive(s3, first, second)
    return first + second


def test_given_a_rows_changes_archived_in_two_objects_when_replayed_to_a_consumer_then_it_gets_them_in_order(
    s3: Any,
) -> None:
    # Given row 1's changes in two objects whose names sort against their order
    order_row_splits(s3)
    seen: list[tuple[int, str]] = []

    @consumer()
    def record(event: ChangeEvent) -> None:
        seen.append((event.key["id"], event.op))

    # When the archive is replayed into that consumer
    report = replay(ArchiveReader(s3, BUCKET), ReplayRange(bus="demo"), ConsumerTarget(record))

    # Then each row's changes come in their stream order
    assert report.events == 5
    assert [op for row, op in seen if row == 1] == ["c", "u", "u"]
    assert [op for row, op in seen if row == 2] == ["c", "d"]


def test_given_an_archive_when_replayed_into_a_fresh_mirror_then_the_mirror_holds_the_final_rows(
    s3: Any, database: str
) -> None:
    # Given changes of two tables archived, and the same changes applied to a live mirror
    events = order_row_splits(s3)
    late = [change("c", "audit.event_login", {"id": 7}, {"ok": True}, sequence=3, ts_ms=T + HOUR)]
    archive(s3, late)
    with psycopg.connect(database, autocommit=True) as live:
        live.execute("CREATE DATABASE replayed")
        Mirror().apply(live, events + late)
        expected = live.execute("SELECT id, status FROM public.orders ORDER BY id").fetchall()
    fresh = database.rsplit("/", 1)[0] + "/replayed"

    # When the archive is replayed into the pg_mirror consumer of a fresh database
    mirror = Mirror()

    @consumer(batch=True)
    def pg_mirror(batch: list[ChangeEvent]) -> None:
        with psycopg.connect(fresh, autocommit=True) as connection:
            mirror.apply(connection, batch)

    replay(ArchiveReader(s3, BUCKET), ReplayRange(bus="demo"), ConsumerTarget(pg_mirror, batch_size=2))

    # Then the fresh mirror equals the live one
    with psycopg.connect(fresh) as replayed:
        assert (
            replayed.execute("SELECT id, status FROM public.orders ORDER BY id").fetchall()
            == expected
            == [(1, "shipped")]
        )
        assert replayed.execute("SELECT id, ok FROM audit.event_login").fetchall() == [(7, True)]


def test_given_a_table_and_time_window_when_replayed_to_a_stream_then_only_those_events_go_unchanged_and_in_order(
    s3: Any,
) -> None:
    # Given two tables over two hours in the archive, and a stream
    order_row_splits(s3)
    archive(s3, [change("c", "audit.event_login", {"id": 7}, {"ok": True}, sequence=3, ts_ms=T + 2)])
    archive(
        s3, [change("u", "public.orders", {"id": 1}, {"status": "returned"}, sequence=30, ts_ms=T + HOUR)]
    )
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    kinesis.create_stream(StreamName="replay", ShardCount=2)

    # When public.* within the first hour, from the 7th millisecond on, is replayed to the stream
    selection = ReplayRange(
        bus="demo",
        tables=("public.*",),
        since=datetime.fromtimestamp((T + 7) / 1000, tz=UTC),
        until=datetime.fromtimestamp((T + HOUR) / 1000, tz=UTC),
    )
    report = replay(ArchiveReader(s3, BUCKET), selection, KinesisTarget(kinesis, "replay"))

    # Then the stream has exactly those events (same bytes), each row in sequence order
    received = [event for records in read_shards(kinesis, "replay").values() for event in events_in(records)]
    assert report.events == 3
    assert sorted((event.key["id"], int(event.source.sequence)) for event in received) == [
        (1, 12),
        (1, 20),
        (2, 21),
    ]
    by_row = [int(event.source.sequence) for event in received if event.key["id"] == 1]
    assert by_row == sorted(by_row)


def test_given_a_corrupt_archive_line_when_replayed_then_the_error_names_the_object_and_line(s3: Any) -> None:
    # Given an object whose second line is not an event
    key = "bus=demo/schema=public/table=orders/date=2025-11-22/hour=08/0-bad.jsonl.gz"
    good = change("c", "public.orders", {"id": 1}, sequence=1, ts_ms=T).to_json()
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(good + b"\n{not json}\n"))

    # When replayed, then the error says where
    with pytest.raises(ReplayError, match=rf"s3://{BUCKET}/{key} line 2: change event is not valid JSON"):
        replay(ArchiveReader(s3, BUCKET), ReplayRange(bus="demo"), ConsumerTarget(lambda event: None))


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="since 2026-11-22T10:00:00\\+00:00 is not before until"):
        ReplayRange(
            bus="demo",
            since=datetime(2026, 11, 22, 10, tzinfo=UTC),
            until=datetime(2026, 11, 22, 9, tzinfo=UTC),
        )


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        ReplayRange(bus="demo", since=datetime(2026, 11, 22, 10))
