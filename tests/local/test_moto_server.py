"""The local moto server: its own encoding of DynamoDB Streams GetRecords, its indexed
Kinesis shards, and its HTTP front (connections kept open, routing cached)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import BaseResponse
from moto.core.serialize import XFormedAttributePicker, get_serializer_class
from moto.core.utils import get_service_model
from moto.dynamodbstreams.models import dynamodbstreams_backends
from moto.kinesis.models import Shard
from moto.moto_api._internal import mock_random
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from local.aws import LocalAws
from local.moto_patches import applied
from local.moto_server import (
    CACHE_REQUEST_ROUTING,
    ENCODE_BATCH_WRITES,
    ENRICH_ONLY_XML_BODIES,
    FIND_ACCOUNT_BACKENDS_ONCE,
    FIRST_STREAM_SEQUENCE,
    _get_records,
    _put_record,
    encode_stream_records,
    serve,
)
from local.net import free_port

#: moto's own backend lookup and response enrichment (the patches are undone after each
#: test that applies them: this process runs the unit suite on moto as it is).
_MOTO_GET_BACKEND = DomainDispatcherApplication.get_backend_for_host
_MOTO_ENRICH = BaseResponse._enrich_response

ACCOUNT = "123456789012"


def _moto_serialized(
    result: dict[str, Any], service: str = "dynamodbstreams", operation: str = "GetRecords"
) -> Any:
    model = get_service_model(service)
    serializer = get_serializer_class(service, "json")(
        operation_model=model.operation_model(operation),
        pretty_print=False,
        value_picker=XFormedAttributePicker(response_transformers=None),
    )
    return json.loads(serializer.serialize(result)["body"])


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


@pytest.fixture
def served() -> Iterator[str]:
    """The local server's HTTP front (keep-alive, cached routing) in this process."""
    with applied(CACHE_REQUEST_ROUTING):
        server = serve(free_port())
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}"
        server.shutdown()
        thread.join()


def _signed_headers(service: str, target: str) -> dict[str, str]:
    """What moto routes a JSON request by (it does not check the signature)."""
    return {
        "Authorization": f"AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host, Signature=0",
        "X-Amz-Target": target,
        "Content-Type": "application/x-amz-json-1.0",
    }


def test_the_server_answers_request_after_request_on_one_connection(served: str) -> None:
    # Given one HTTP/1.1 connection to the server
    connection = http.client.HTTPConnection(served.removeprefix("http://"), timeout=10)
    connection.connect()
    socket_before = connection.sock
    answers = []
    # When three DynamoDB calls are made on it, one of them failing
    for target in ["ListTables", "DescribeTable", "ListTables"]:
        body = b'{"TableName": "missing"}' if target == "DescribeTable" else b"{}"
        connection.request(
            "POST", "/", body=body, headers=_signed_headers("dynamodb", f"DynamoDB_20120810.{target}")
        )
        response = connection.getresponse()
        answers.append((response.status, response.getheader("Connection"), json.loads(response.read())))
    # Then each is answered in full, the error too, and the connection stays open
    assert [status for status, _, _ in answers] == [200, 400, 200]
    assert answers[0][2] == {"TableNames": []}
    assert answers[1][2]["__type"].endswith("ResourceNotFoundException")
    assert [header for _, header, _ in answers] == [None, None, None]
    assert connection.sock is socket_before
    connection.close()


def test_sdk_calls_to_several_services_reach_their_backends_through_the_server(served: str) -> None:
    # Given boto3 clients of three services on the server
    def client(service: str) -> Any:
        return boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=served,
            aws_access_key_id="a",
            aws_secret_access_key="b",
        )

    s3, kinesis, sqs = client("s3"), client("kinesis"), client("sqs")
    # When each creates and reads something, including a HEAD request (a length, no body)
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="k", Body=b"12345")
    kinesis.create_stream(StreamName="served", ShardCount=1)
    url = sqs.create_queue(QueueName="served")["QueueUrl"]
    # Then every answer comes from the right backend, complete
    assert s3.head_object(Bucket="archive", Key="k")["ContentLength"] == 5
    assert s3.get_object(Bucket="archive", Key="k")["Body"].read() == b"12345"
    assert "served" in kinesis.list_streams()["StreamNames"]
    assert sqs.get_queue_url(QueueName="served")["QueueUrl"] == url


def test_cached_routing_finds_the_backend_moto_finds() -> None:
    # Given moto's own lookup of a request's backend, and the cached one
    with applied(CACHE_REQUEST_ROUTING):
        application = DomainDispatcherApplication(create_backend_app)
        cached = _lookups(application)
    theirs = [_MOTO_GET_BACKEND(application, host) for host in HOSTS]
    # Then they agree
    assert cached == theirs + theirs
    assert theirs[2:] == ["dynamodb", "kinesis", "s3"]


HOSTS = [
    None,
    "moto_api",
    "dynamodb.us-east-1.amazonaws.com",
    "kinesis.eu-west-1.amazonaws.com",
    "s3.amazonaws.com",
]


def _lookups(application: DomainDispatcherApplication) -> list[Any]:
    """The same hosts looked up twice (the second time from the cache)."""
    return [application.get_backend_for_host(host) for host in HOSTS + HOSTS]


def test_batch_writes_are_answered_as_moto_serializer_answers(served: str) -> None:
    # Given the server answering BatchWriteItem itself (applied twice: once counts), and a table
    with applied([ENCODE_BATCH_WRITES, ENCODE_BATCH_WRITES]):
        _batch_write_through(served)


def _batch_write_through(served: str) -> None:
    dynamodb = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=served,
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    dynamodb.create_table(
        TableName="writes",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    requests = {"writes": [{"PutRequest": {"Item": {"id": {"N": str(n)}}}} for n in range(3)]}
    # When a batch is written through it
    connection = http.client.HTTPConnection(served.removeprefix("http://"), timeout=10)
    connection.request(
        "POST",
        "/",
        body=json.dumps({"RequestItems": requests}),
        headers=_signed_headers("dynamodb", "DynamoDB_20120810.BatchWriteItem"),
    )
    answer = json.loads(connection.getresponse().read())
    connection.close()
    # Then the body is what moto's serializer makes of the same result, and the items are there
    expected = {
        "ConsumedCapacity": [{"TableName": "writes", "CapacityUnits": 1.0, "Table": {"CapacityUnits": 1.0}}],
        "ItemCollectionMetrics": {},
        "UnprocessedItems": {},
    }
    assert answer == _moto_serialized(expected, "dynamodb", "BatchWriteItem") == expected
    assert dynamodb.scan(TableName="writes")["Count"] == 3


@pytest.mark.parametrize(
    "body",
    ['{"Records":[{"x":"<RequestId"}]}', "<R><RequestId>old</RequestId></R>", b"\x00binary", ""],
)
def test_responses_are_enriched_as_moto_enriches_them(body: str | bytes) -> None:
    # Given moto's enrichment of a response and the one that skips bodies without a RequestId
    # When both enrich the same body, drawing the same random request id
    mock_random.seed(7)
    theirs = _MOTO_ENRICH({"status": 200}, body)  # type: ignore[dict-item]
    with applied([ENRICH_ONLY_XML_BODIES]):
        mock_random.seed(7)
        ours = BaseResponse._enrich_response({"status": 200}, body)  # type: ignore[dict-item]
    # Then headers and body are the same
    assert ours == theirs
    assert ours[0]["status"] == "200"


def test_existing_account_backends_are_found_without_moto_lock_and_made_again_after_a_reset() -> None:
    # Given the patched lookup, and an account whose SQS backends exist
    with applied([FIND_ACCOUNT_BACKENDS_ONCE]):
        _lookup_without_moto_lock()


def _lookup_without_moto_lock() -> None:
    from moto.core.base_backend import backend_lock
    from moto.sqs.models import sqs_backends

    assert sqs_backends["111122223333"]["us-east-1"].queues == {}
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with backend_lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    try:
        # When another thread looks the account up while moto's lock is held
        found: list[Any] = []
        looker = threading.Thread(target=lambda: found.append(sqs_backends["111122223333"]["us-east-1"]))
        looker.start()
        looker.join(2)
        # Then it finds the backend at once
        assert len(found) == 1
    finally:
        release.set()
        holder.join()
    # And an account removed since is made again through moto's own path
    del sqs_backends["111122223333"]
    assert sqs_backends["111122223333"]["us-east-1"].queues == {}


def test_stream_sequence_numbers_start_at_the_time_the_shard_is_made() -> None:
    # Given the local moto server (in its own process, patched as local mode runs it)
    aws = LocalAws()
    aws.start()
    try:
        before = FIRST_STREAM_SEQUENCE + time.time_ns()
        # When a table with a stream is created, twice over (as after a restart)
        starts = []
        for name in ("first", "again"):
            dynamodb = aws.client("dynamodb")
            dynamodb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            )
            arn = dynamodb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
            (shard,) = aws.client("dynamodbstreams").describe_stream(StreamArn=arn)["StreamDescription"][
                "Shards"
            ]
            starts.append(int(shard["SequenceNumberRange"]["StartingSequenceNumber"]))
        # Then each starts at its creation time, later than any before it (moto: one constant)
        assert before <= starts[0] < starts[1] <= FIRST_STREAM_SEQUENCE + time.time_ns()
    finally:
        aws.stop()
