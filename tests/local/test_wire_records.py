"""Stream reads through local mode's WireRecords clients give the events the botocore-parsed
reads gave (local/aws.py WireRecords, local/streams.py sources)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.aws import LocalAws
from local.streams import DynamoDBStreamSource, KinesisSource


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    local = LocalAws()
    local.start()
    yield local
    local.stop()


def _clients(aws: LocalAws, service: str) -> tuple[Any, Any]:
    """(botocore-parsed client, WireRecords client) of ``service``."""
    return aws.client(service), aws.client(service, wire_records=True)


def _read(source: DynamoDBStreamSource | KinesisSource) -> list[dict[str, Any]]:
    shard = source.shards()[0].shard_id
    iterator = source.iterator(shard, "TRIM_HORIZON", None)
    assert iterator is not None
    return source.read(shard, iterator, 100)[0]


def test_dynamodb_stream_records_are_the_same_events_read_either_way(aws: LocalAws) -> None:
    # Given a table whose stream holds an insert, a modify and a remove of every value type
    dynamodb = aws.client("dynamodb")
    dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    item = {
        "id": {"S": "ü-1"},
        "price": {"N": "12.5"},
        "paid": {"BOOL": True},
        "blob": {"B": b"\x00\xff"},
        "blobs": {"BS": [b"\x01", b"\x02"]},
        "tags": {"SS": ["a", "b"]},
        "nested": {"M": {"list": {"L": [{"S": "x"}, {"NULL": True}, {"B": b"\x03"}]}}},
    }
    dynamodb.put_item(TableName="t", Item=item)
    dynamodb.put_item(TableName="t", Item={**item, "price": {"N": "13"}})
    dynamodb.delete_item(TableName="t", Key={"id": item["id"]})
    arn = dynamodb.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    parsed, wire = _clients(aws, "dynamodbstreams")

    # When the source reads the stream through each client
    theirs = _read(DynamoDBStreamSource(arn, parsed))
    ours = _read(DynamoDBStreamSource(arn, wire))

    # Then the Lambda events are equal: binary as base64, creation time as epoch seconds
    assert [record["eventName"] for record in ours] == ["INSERT", "MODIFY", "REMOVE"]
    assert ours == theirs
    assert ours[0]["dynamodb"]["NewImage"]["blob"] == {"B": "AP8="}
    assert isinstance(ours[0]["dynamodb"]["ApproximateCreationDateTime"], int | float)


def test_kinesis_records_are_the_same_events_read_either_way(aws: LocalAws) -> None:
    # Given a stream holding binary records
    kinesis = aws.client("kinesis")
    kinesis.create_stream(StreamName="bus", ShardCount=1)
    for data in [b"\x00\xff", "é".encode(), b"{}"]:
        kinesis.put_record(StreamName="bus", Data=data, PartitionKey="k")
    arn = kinesis.describe_stream_summary(StreamName="bus")["StreamDescriptionSummary"]["StreamARN"]
    parsed, wire = _clients(aws, "kinesis")

    # When the source reads it through each client
    theirs = _read(KinesisSource(arn, parsed))
    ours = _read(KinesisSource(arn, wire))

    # Then the Lambda events are equal, data as base64
    assert ours == theirs
    assert [record["kinesis"]["data"] for record in ours] == ["AP8=", "w6k=", "e30="]


def test_a_failed_read_still_raises_the_service_error(aws: LocalAws) -> None:
    # Given a WireRecords client
    _, wire = _clients(aws, "kinesis")
    # When GetRecords is called with an iterator the service rejects
    with pytest.raises(ClientError) as raised:
        wire.get_records(ShardIterator="not-an-iterator")
    # Then the error is parsed as botocore parses it
    assert raised.value.response["Error"]["Code"] != ""
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 400
