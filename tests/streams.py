"""Test helpers: events shaped exactly like the ones Lambda hands to our functions.

Stream records carry real DynamoDB JSON (made by boto3's TypeSerializer); Kinesis records
carry base64 data, aggregated ones made by the real aggregation path.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from boto3.dynamodb.types import TypeSerializer

from dmsbus.envelope import ChangeEvent

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account, not a real one
BUS = "demo"
TABLE = "demo.legacy.public.orders"

_serializer = TypeSerializer()
_sequence = itertools.count(1)


def ddb(image: dict[str, Any]) -> dict[str, Any]:
    """Python values -> DynamoDB JSON as Lambda delivers it (binary as base64 text)."""
    out = {name: _serializer.serialize(value) for name, value in image.items()}
    return _b64_binary(out)


def _b64_binary(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"B"}:
            raw = value["B"]
            return {"B": base64.b64encode(bytes(raw.value if hasattr(raw, "value") else raw)).decode()}
        if set(value) == {"BS"}:
            return {"BS": [base64.b64encode(bytes(getattr(b, "value", b))).decode() for b in value["BS"]]}
        return {name: _b64_binary(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_b64_binary(item) for item in value]
    return value


def stream_arn(table: str = TABLE, label: str = "2026-11-01T00:00:00.000") -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}/stream/{label}"


def stream_record(
    event_name: str,
    keys: dict[str, Any],
    *,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    table: str = TABLE,
    sequence: str | None = None,
    seconds: float = 1_763_800_000,
    ttl: bool = False,
) -> dict[str, Any]:
    """One record of a Lambda DynamoDB Streams event (NEW_AND_OLD_IMAGES)."""
    sequence = sequence or f"{next(_sequence):021d}"
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": seconds,
        "Keys": ddb(keys),
        "SequenceNumber": sequence,
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if old is not None:
        body["OldImage"] = ddb(old)
    if new is not None:
        body["NewImage"] = ddb(new)
    record: dict[str, Any] = {
        "eventID": f"evt-{sequence}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": body,
        "eventSourceARN": stream_arn(table),
    }
    if ttl:
        record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return record


def insert(row: dict[str, Any], key: str = "id", **kwargs: Any) -> dict[str, Any]:
    return stream_record("INSERT", {key: row[key]}, new=row, **kwargs)


def modify(old: dict[str, Any], new: dict[str, Any], key: str = "id", **kwargs: Any) -> dict[str, Any]:
    return stream_record("MODIFY", {key: new[key]}, old=old, new=new, **kwargs)


def remove(row: dict[str, Any], key: str = "id", **kwargs: Any) -> dict[str, Any]:
    return stream_record("REMOVE", {key: row[key]}, old=row, **kwargs)


def kinesis_event(records: list[dict[str, Any]], stream: str = "demo-bus") -> dict[str, Any]:
    """Records read from Kinesis (boto3 GetRecords shape) -> the event Lambda hands a consumer."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": record["PartitionKey"],
                    "sequenceNumber": record["SequenceNumber"],
                    "data": base64.b64encode(record["Data"]).decode(),
                    "approximateArrivalTimestamp": 1_763_800_000.5,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{record['SequenceNumber']}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/consumer",
                "awsRegion": REGION,
                "eventSourceARN": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}",
            }
            for record in records
        ]
    }


def read_shards(kinesis: Any, stream: str) -> dict[str, list[dict[str, Any]]]:
    """Every Kinesis record of every shard, in shard order (boto3 GetRecords shape)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records: list[dict[str, Any]] = []
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            records.extend(page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
        out[shard["ShardId"]] = records
    return out


def events_in(records: list[dict[str, Any]]) -> list[ChangeEvent]:
    """Deaggregate (aws-kinesis-agg) and parse Kinesis records, in order."""
    users = iter_deaggregate_records(kinesis_event(records)["Records"])
    return [ChangeEvent.from_json(base64.b64decode(user["kinesis"]["data"])) for user in users]
