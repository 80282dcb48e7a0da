"""Reading DynamoDB Streams and Kinesis shards the way Lambda's pollers do, and turning
what boto3 returns into the records Lambda hands a function.

boto3 parses the wire format: timestamps become ``datetime`` and binary values ``bytes``.
Lambda hands JSON: epoch seconds and base64 strings. ``lambda_record`` undoes the parsing so
the handlers see exactly Lambda's shapes.
"""

from __future__ import annotations

import base64
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

    def shards(self) -> list[Shard]: ...

    def iterator(self, shard_id: str, position: str, after: str | None) -> str | None: ...

    def read(self, shard_id: str, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None]: ...


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

    def read(self, shard_id: str, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        response = self.client.get_records(ShardIterator=iterator, Limit=min(limit, DYNAMODB_GET_LIMIT))
        records = [self._lambda_record(record) for record in response.get("Records", [])]
        return records, response.get("NextShardIterator")

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        ddb = dict(record["dynamodb"])
        created = ddb.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            ddb["ApproximateCreationDateTime"] = created.timestamp()
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

    def read(self, shard_id: str, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
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
    *, stream_arn: str, shard_id: str, partition_key: str, sequence_number: str, data: bytes, arrival: float
) -> dict[str, Any]:
    """One record of a Lambda Kinesis event, as Lambda shapes it."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(data).decode("ascii"),
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
