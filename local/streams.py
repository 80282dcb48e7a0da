"""Reading DynamoDB Streams and Kinesis shards the way Lambda's pollers do, and turning
what boto3 returns into the records Lambda hands a function.

boto3 parses the wire format: timestamps become ``datetime`` and binary values ``bytes``.
Lambda hands JSON: epoch seconds and base64 strings. ``lambda_record`` undoes the parsing so
the handlers see exactly Lambda's shapes.
"""

from __future__ import annotations

import base64
import threading
import time
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from local.functions import REGION

#: GetRecords' own limits per call.
DYNAMODB_GET_LIMIT = 1_000
KINESIS_GET_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    parent_id: str | None
    #: Closed shards have an end; their children start once they are read to it.
    closed: bool


class StreamSource(Protocol):
    arn: str
    #: The key of the batch description in an on-failure destination's message.
    batch_info_key: str
    #: Whether ``read`` waits (up to ``wait`` seconds) for records rather than returning at
    #: once: the poller then needs no back-off of its own.
    waits: bool

    def shards(self) -> list[Shard]: ...

    def iterator(self, shard_id: str, position: str, after: str | None) -> str | None: ...

    def read(
        self, shard_id: str, iterator: str, limit: int, *, wait: float = 0.0
    ) -> tuple[list[dict[str, Any]], str | None]: ...


def sequence_of(record: Mapping[str, Any]) -> str:
    if "kinesis" in record:
        return str(record["kinesis"]["sequenceNumber"])
    return str(record["dynamodb"]["SequenceNumber"])


def arrival_of(record: Mapping[str, Any]) -> float:
    if "kinesis" in record:
        return float(record["kinesis"]["approximateArrivalTimestamp"])
    return float(record["dynamodb"]["ApproximateCreationDateTime"])


def source_for(arn: str, *, dynamodbstreams: Any, kinesis: Any) -> StreamSource:
    service = arn.split(":")[2]
    if service == "dynamodb":
        return DynamoDBStreamSource(arn, dynamodbstreams)
    if service == "kinesis":
        return KinesisSource(arn, kinesis)
    raise ValueError(f"event source {arn}: only DynamoDB streams and Kinesis streams are polled locally")


class DynamoDBStreamSource:
    batch_info_key = "DDBStreamBatchInfo"
    waits = False

    def __init__(self, arn: str, client: Any) -> None:
        self.arn = arn
        self.client = client

    def shards(self) -> list[Shard]:
        shards: list[Shard] = []
        start: dict[str, Any] = {}
        while True:
            description = self.client.describe_stream(StreamArn=self.arn, **start)["StreamDescription"]
            for shard in description.get("Shards", []):
                ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
                shards.append(Shard(shard["ShardId"], shard.get("ParentShardId"), ending is not None))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            start = {"ExclusiveStartShardId": last}

    def iterator(self, shard_id: str, position: str, after: str | None) -> str | None:
        arguments: dict[str, Any] = {"StreamArn": self.arn, "ShardId": shard_id}
        if after is not None:
            arguments |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        else:
            arguments["ShardIteratorType"] = position
        iterator: str | None = self.client.get_shard_iterator(**arguments).get("ShardIterator")
        return iterator

    def read(
        self, shard_id: str, iterator: str, limit: int, *, wait: float = 0.0
    ) -> tuple[list[dict[str, Any]], str | None]:
        response = self.client.get_records(ShardIterator=iterator, Limit=min(limit, DYNAMODB_GET_LIMIT))
        records = [self._lambda_record(record) for record in response.get("Records", [])]
        return records, response.get("NextShardIterator")

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        ddb = record["dynamodb"]
        created = ddb.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            # Parsed by botocore (a client without WireRecords): back to the wire's form.
            ddb = dict(ddb, ApproximateCreationDateTime=created.timestamp())
            for image in ("Keys", "NewImage", "OldImage"):
                if image in ddb:
                    ddb[image] = {name: _json_attribute(value) for name, value in ddb[image].items()}
        shaped: dict[str, Any] = {
            "eventID": record["eventID"],
            "eventName": record["eventName"],
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": record.get("awsRegion", REGION),
            "dynamodb": ddb,
            "eventSourceARN": self.arn,
        }
        if "userIdentity" in record:
            shaped["userIdentity"] = record["userIdentity"]
        return shaped


def _json_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """A boto3-parsed AttributeValue back in DynamoDB JSON (binary as base64)."""
    (kind, inner), *_ = value.items()
    if kind == "B":
        return {"B": base64.b64encode(inner).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(item).decode("ascii") for item in inner]}
    if kind == "M":
        return {"M": {name: _json_attribute(item) for name, item in inner.items()}}
    if kind == "L":
        return {"L": [_json_attribute(item) for item in inner]}
    return {kind: inner}


class KinesisSource:
    batch_info_key = "KinesisBatchInfo"
    waits = False

    def __init__(self, arn: str, client: Any) -> None:
        self.arn = arn
        self.client = client
        self.stream_name = arn.split("/", 1)[1]

    def shards(self) -> list[Shard]:
        shards: list[Shard] = []
        arguments: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            response = self.client.list_shards(**arguments)
            for shard in response.get("Shards", []):
                ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
                shards.append(Shard(shard["ShardId"], shard.get("ParentShardId"), ending is not None))
            token = response.get("NextToken")
            if not token:
                return shards
            arguments = {"NextToken": token}

    def iterator(self, shard_id: str, position: str, after: str | None) -> str | None:
        arguments: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": shard_id}
        if after is not None:
            arguments |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
        else:
            arguments["ShardIteratorType"] = position
        iterator: str | None = self.client.get_shard_iterator(**arguments).get("ShardIterator")
        return iterator

    def read(
        self, shard_id: str, iterator: str, limit: int, *, wait: float = 0.0
    ) -> tuple[list[dict[str, Any]], str | None]:
        response = self.client.get_records(ShardIterator=iterator, Limit=min(limit, KINESIS_GET_LIMIT))
        records = [self._lambda_record(record, shard_id) for record in response.get("Records", [])]
        return records, response.get("NextShardIterator")

    def _lambda_record(self, record: dict[str, Any], shard_id: str) -> dict[str, Any]:
        arrival = record["ApproximateArrivalTimestamp"]
        return lambda_kinesis_record(
            stream_arn=self.arn,
            shard_id=shard_id,
            partition_key=record["PartitionKey"],
            sequence_number=record["SequenceNumber"],
            data=record["Data"],
            arrival=arrival.timestamp() if isinstance(arrival, datetime) else arrival,
        )


def lambda_kinesis_record(
    *,
    stream_arn: str,
    shard_id: str,
    partition_key: str,
    sequence_number: str,
    data: bytes | str,
    arrival: float,
) -> dict[str, Any]:
    """One record of a Lambda Kinesis event, as Lambda shapes it (``data`` as bytes, or as the
    base64 text the wire carries)."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": data if isinstance(data, str) else base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{stream_arn.split(':')[4]}:role/dmsbus-local-function",
        "awsRegion": REGION,
        "eventSourceARN": stream_arn,
    }


class ShardLog:
    """One Kinesis shard's records, read from the stream by one thread for every mapping on
    it. Records every reader has passed are dropped (readers idle for ``idle_seconds`` do
    not hold them); a reader behind what is kept reads the stream itself until it catches up."""

    def __init__(
        self,
        source: KinesisSource,
        shard_id: str,
        stop: threading.Event,
        *,
        poll_seconds: float,
        max_poll_seconds: float,
        keep: int = 2_000,
        idle_seconds: float = 60.0,
    ) -> None:
        self.source = source
        self.shard_id = shard_id
        self._stop = stop
        self._poll_seconds = poll_seconds
        self._max_poll_seconds = max_poll_seconds
        self._keep = keep
        self._idle_seconds = idle_seconds
        self._changed = threading.Condition()
        self._records: list[dict[str, Any]] = []
        self._sequences: list[int] = []
        #: Every record up to this sequence number was dropped (-1: none).
        self.dropped_through = -1
        #: The shard is closed and read to its end.
        self.ended = False
        self._readers: dict[int, tuple[int, float]] = {}
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"local-kinesis-{shard_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            iterator = self.source.iterator(self.shard_id, "TRIM_HORIZON", None)
            idle = 0
            while not self._stop.is_set():
                if iterator is None:
                    with self._changed:
                        self.ended = True
                        self._changed.notify_all()
                    return
                records, iterator = self.source.read(self.shard_id, iterator, KINESIS_GET_LIMIT)
                if records:
                    idle = 0
                    with self._changed:
                        self._records.extend(records)
                        self._sequences.extend(int(sequence_of(record)) for record in records)
                        self._changed.notify_all()
                else:
                    idle += 1
                    self._stop.wait(min(self._max_poll_seconds, self._poll_seconds * idle))
        except Exception as exc:  # e.g. moto going away on stop; readers fall back to the stream
            self.error = f"{type(exc).__name__}: {exc}"
            with self._changed:
                self._changed.notify_all()

    def after(
        self, reader: int, sequence: int, limit: int, wait: float
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """Up to ``limit`` records after ``sequence`` for ``reader``, waiting up to ``wait``
        seconds for some, and whether the shard has ended after them; None when they are no
        longer kept (or the log stopped) and the reader must read the stream itself."""
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                if sequence < self.dropped_through or self.error is not None:
                    return None
                start = bisect_right(self._sequences, sequence)
                records = self._records[start : start + limit]
                remaining = deadline - time.monotonic()
                if records or self.ended or remaining <= 0 or self._stop.is_set():
                    break
                self._changed.wait(remaining)
            last = self._sequences[start + len(records) - 1] if records else sequence
            self._readers[reader] = (last, time.monotonic())
            ended = self.ended and start + len(records) >= len(self._records)
            if len(self._records) > 2 * self._keep:
                self._drop()
            return records, ended

    def keeps(self, sequence: int) -> bool:
        """Whether the records after ``sequence`` are all here (a stream reader can switch)."""
        with self._changed:
            return self.error is None and sequence >= self.dropped_through

    def _drop(self) -> None:
        """Drop the records every active reader has passed, keeping at least ``keep``."""
        now = time.monotonic()
        active = [last for last, seen in self._readers.values() if now - seen < self._idle_seconds]
        if not active:
            return
        through = bisect_right(self._sequences, min(active))
        through = min(through, len(self._records) - self._keep)
        if through > 0:
            self.dropped_through = self._sequences[through - 1]
            del self._records[:through]
            del self._sequences[:through]


class SharedKinesisSource:
    """A Kinesis stream as several mappings poll it: one reader per shard (a ShardLog) for
    all of them, instead of one GetRecords loop per mapping and shard, and reads that wait
    for records instead of polling. Iterators are ``s:<reader>:<sequence>`` (after that
    sequence number, from the log) or ``d:<reader>:<stream iterator>`` (reading the stream
    directly: LATEST, or behind what the log keeps)."""

    batch_info_key = "KinesisBatchInfo"
    waits = True

    def __init__(
        self, arn: str, client: Any, stop: threading.Event, *, poll_seconds: float, max_poll_seconds: float
    ) -> None:
        self.arn = arn
        self.direct = KinesisSource(arn, client)
        self._stop = stop
        self._poll_seconds = poll_seconds
        self._max_poll_seconds = max_poll_seconds
        self._logs: dict[str, ShardLog] = {}
        self._lock = threading.Lock()
        self._readers = 0

    def shards(self) -> list[Shard]:
        return self.direct.shards()

    def log(self, shard_id: str) -> ShardLog:
        with self._lock:
            log = self._logs.get(shard_id)
            if log is None:
                log = self._logs[shard_id] = ShardLog(
                    self.direct,
                    shard_id,
                    self._stop,
                    poll_seconds=self._poll_seconds,
                    max_poll_seconds=self._max_poll_seconds,
                )
            return log

    def iterator(self, shard_id: str, position: str, after: str | None) -> str | None:
        with self._lock:
            self._readers += 1
            reader = self._readers
        if after is None and position == "LATEST":
            direct = self.direct.iterator(shard_id, position, None)
            return None if direct is None else f"d:{reader}:{direct}"
        self.log(shard_id)
        return f"s:{reader}:{-1 if after is None else int(after)}"

    def read(
        self, shard_id: str, iterator: str, limit: int, *, wait: float = 0.0
    ) -> tuple[list[dict[str, Any]], str | None]:
        kind, reader, rest = iterator.split(":", 2)
        log = self.log(shard_id)
        if kind == "d":
            records, direct = self.direct.read(shard_id, rest, limit)
            if direct is None:
                return records, None
            if records and log.keeps(int(sequence_of(records[-1]))):
                return records, f"s:{reader}:{sequence_of(records[-1])}"
            return records, f"d:{reader}:{direct}"
        sequence = int(rest)
        found = log.after(int(reader), sequence, limit, wait)
        if found is None:  # behind what the log keeps: read the stream from there
            direct = self.direct.iterator(shard_id, "TRIM_HORIZON", str(sequence) if sequence >= 0 else None)
            return ([], None) if direct is None else self.read(shard_id, f"d:{reader}:{direct}", limit)
        records, ended = found
        if ended:
            return records, None
        return records, f"s:{reader}:{sequence_of(records[-1]) if records else sequence}"
