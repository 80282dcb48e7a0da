"""The local moto server's own encoding of DynamoDB Streams GetRecords."""

from __future__ import annotations

import json
from typing import Any

import boto3
from moto import mock_aws
from moto.core.serialize import XFormedAttributePicker, get_serializer_class
from moto.core.utils import get_service_model
from moto.dynamodbstreams.models import dynamodbstreams_backends
from moto.kinesis.models import Shard

from local.moto_server import _get_records, _put_record, encode_stream_records

ACCOUNT = "123456789012"


def _moto_serialized(result: dict[str, Any]) -> dict[str, Any]:
    model = get_service_model("dynamodbstreams")
    serializer = get_serializer_class("dynamodbstreams", "json")(
        operation_model=model.operation_model("GetRecords"),
        pretty_print=False,
        value_picker=XFormedAttributePicker(response_transformers=None),
    )
    return json.loads(serializer.serialize(result)["body"])  # type: ignore[no-any-return]


@mock_aws
def test_stream_records_encode_as_moto_serializer_does() -> None:
    # Given a table whose stream holds an insert, a modify and a remove of every value type
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}, {"AttributeName": "line", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "line", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    item = {
        "id": {"S": "ü-1"},
        "line": {"N": "2"},
        "price": {"N": "12.5"},
        "paid": {"BOOL": True},
        "blob": {"B": b"\x00\xff"},
        "tags": {"SS": ["a", "b"]},
        "sizes": {"NS": ["1", "2.5"]},
        "nested": {"M": {"list": {"L": [{"S": "x"}, {"NULL": True}]}}},
    }
    dynamodb.put_item(TableName="t", Item=item)
    dynamodb.put_item(TableName="t", Item={**item, "price": {"N": "13"}})
    dynamodb.delete_item(TableName="t", Key={"id": item["id"], "line": item["line"]})
    arn = dynamodb.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    backend = dynamodbstreams_backends[ACCOUNT]["us-east-1"]
    shard = backend.describe_stream(arn)["Shards"][0]["ShardId"]
    iterator = backend.get_shard_iterator(arn, shard, "TRIM_HORIZON", None).arn
    result = backend.get_records(iterator, 1000)
    assert [record["eventName"] for record in result["Records"]] == ["INSERT", "MODIFY", "REMOVE"]

    # When it is encoded by the local server and by moto's serializer
    ours = json.loads(encode_stream_records(result))
    theirs = _moto_serialized(result)

    # Then both bodies are the same JSON, creation times as epoch seconds
    assert ours == theirs
    assert isinstance(ours["Records"][0]["dynamodb"]["ApproximateCreationDateTime"], int | float)


def test_indexed_kinesis_shard_reads_what_moto_reads() -> None:
    # Given a moto shard of 60 records put by moto itself, and one put by the indexed put
    theirs, ours = Shard(0, 0, 2**128 - 1), Shard(0, 0, 2**128 - 1)
    for number in range(60):
        expected = Shard.put_record(theirs, f"pk{number}", f"data{number}", str(number))
        assert _put_record(ours, f"pk{number}", f"data{number}", str(number)) == expected
    assert list(ours.records) == list(theirs.records)
    # When both read from every position with several limits (moto's scan vs the index)
    for last in ["0", "1", "17", "59", "60", "99"]:
        for limit in [1, 7, 60, 10000, None]:
            moto_records, moto_last, moto_behind = Shard.get_records(theirs, last, limit)
            records, new_last, behind = _get_records(theirs, last, limit)
            # Then they return the same records, next position and lag
            assert [r.sequence_number for r in records] == [r.sequence_number for r in moto_records]
            assert (new_last, behind) == (moto_last, moto_behind)
