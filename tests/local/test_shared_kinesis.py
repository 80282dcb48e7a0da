"""One reader per Kinesis shard for every mapping on it (local/streams.py SharedKinesisSource)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.streams import ShardLog, SharedKinesisSource, sequence_of

STREAM = "bus"


@pytest.fixture
def kinesis() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("kinesis", region_name="us-east-1")
        client.create_stream(StreamName=STREAM, ShardCount=1)
        yield client


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def _arn(kinesis: Any) -> str:
    return str(kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["StreamARN"])


def _put(kinesis: Any, *numbers: int) -> None:
    for number in numbers:
        kinesis.put_record(StreamName=STREAM, Data=f"r{number}".encode(), PartitionKey="k")


def _data(records: list[dict[str, Any]]) -> list[str]:
    return [base64.b64decode(record["kinesis"]["data"]).decode() for record in records]


def _read_all(source: SharedKinesisSource, shard: str, iterator: str | None, count: int) -> list[str]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(got) < count and iterator is not None and time.monotonic() < deadline:
        records, iterator = source.read(shard, iterator, 3, wait=0.2)
        got += records
    return _data(got)


def _source(kinesis: Any, stop: threading.Event) -> tuple[SharedKinesisSource, str, list[str]]:
    """The source, its shard, and the names of the threads that read the stream itself."""
    source = SharedKinesisSource(_arn(kinesis), kinesis, stop, poll_seconds=0.01, max_poll_seconds=0.02)
    calls: list[str] = []
    read = source.direct.read

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.current_thread().name)
        return read(*args, **kwargs)

    source.direct.read = counted  # type: ignore[method-assign]
    return source, source.shards()[0].shard_id, calls


def test_every_mapping_gets_every_record_in_order_from_one_reader(
    kinesis: Any, stop: threading.Event
) -> None:
    # Given ten records on a shard, and three mappings starting at its beginning
    _put(kinesis, *range(10))
    source, shard, calls = _source(kinesis, stop)
    iterators = [source.iterator(shard, "TRIM_HORIZON", None) for _ in range(3)]
    # When each reads it in small batches, while the stream keeps growing
    firsts = [_read_all(source, shard, iterator, 10) for iterator in iterators]
    _put(kinesis, 10, 11)
    # Then each got every record, in order, and only the shard's one reader read the stream
    expected = [f"r{number}" for number in range(10)]
    assert firsts == [expected, expected, expected]
    assert set(calls) == {f"local-kinesis-{shard}"}


def test_a_mapping_resumes_after_its_checkpoint(kinesis: Any, stop: threading.Event) -> None:
    # Given six records, and a mapping whose checkpoint is the third
    _put(kinesis, *range(6))
    source, shard, _ = _source(kinesis, stop)
    third = sequence_of(
        source.direct.read(shard, source.direct.iterator(shard, "TRIM_HORIZON", None), 3)[0][-1]
    )
    # When it starts after that sequence number
    iterator = source.iterator(shard, "TRIM_HORIZON", third)
    # Then it gets the three after it
    assert _read_all(source, shard, iterator, 3) == ["r3", "r4", "r5"]


def test_a_read_waits_for_records_and_returns_when_one_arrives(kinesis: Any, stop: threading.Event) -> None:
    # Given an empty shard and a mapping waiting on it for up to 5 s
    source, shard, _ = _source(kinesis, stop)
    iterator = source.iterator(shard, "TRIM_HORIZON", None)
    assert iterator is not None
    threading.Timer(0.3, _put, args=(kinesis, 1)).start()
    started = time.monotonic()
    # When a record is put 0.3 s later
    records, _ = source.read(shard, iterator, 10, wait=5.0)
    # Then the read returns it well before its wait is over
    assert _data(records) == ["r1"]
    assert time.monotonic() - started < 3.0


def test_latest_starts_at_records_put_after_it(kinesis: Any, stop: threading.Event) -> None:
    # Given a shard with old records and a mapping starting at LATEST
    _put(kinesis, 1, 2)
    source, shard, _ = _source(kinesis, stop)
    iterator = source.iterator(shard, "LATEST", None)
    # When records are put after it started
    _put(kinesis, 3, 4)
    # Then it reads those only
    assert _read_all(source, shard, iterator, 2) == ["r3", "r4"]


def test_a_mapping_behind_what_the_log_keeps_reads_the_stream_itself(
    kinesis: Any, stop: threading.Event
) -> None:
    # Given a shard log keeping few records, which an active mapping has read far past
    _put(kinesis, *range(30))
    source, shard, _ = _source(kinesis, stop)
    log = ShardLog(source.direct, shard, stop, poll_seconds=0.01, max_poll_seconds=0.02, keep=2)
    source._logs[shard] = log
    ahead = source.iterator(shard, "TRIM_HORIZON", None)
    late = source.iterator(shard, "TRIM_HORIZON", None)
    assert _read_all(source, shard, ahead, 30)[-1] == "r29"
    assert log.dropped_through > 0
    # When a mapping that had not read yet reads from the beginning
    # Then it still gets every record, in order
    assert _read_all(source, shard, late, 30) == [f"r{number}" for number in range(30)]
