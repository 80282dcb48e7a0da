from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.kinesis.models import Stream

from dmsbus.changes import ChangeBuilder
from dmsbus.deadletter import DeadLetterQueue, read_letter
from dmsbus.publisher import KinesisPublisher, PublisherSettings
from dmsbus.schemas import TABLE_KEY, SchemaStore
from local.functions import INVOCATIONS_QUEUE
from tests.streams import BUS

STREAM = "demo-bus"


def _open_shard_for_key(self: Stream, partition_key: str, explicit_hash_key: str) -> Any:
    """moto routes a put to the first shard whose range covers the key, closed ones
    included, and treats EndingHashKey as exclusive. Kinesis writes only to open shards
    and EndingHashKey is inclusive: route as Kinesis does."""
    import hashlib

    key = (
        int(explicit_hash_key)
        if explicit_hash_key
        else int(hashlib.md5(partition_key.encode()).hexdigest(), 16)
    )
    for shard in self.shards.values():
        if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
            return shard
    return None


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(Stream, "get_shard_for_key", _open_shard_for_key)
    with mock_aws():
        yield


@pytest.fixture
def kinesis(aws: None) -> Any:
    client = boto3.client("kinesis", region_name="us-east-1")
    client.create_stream(StreamName=STREAM, ShardCount=4)
    return client


@pytest.fixture
def sqs(aws: None) -> Any:
    return boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def dlq(sqs: Any) -> DeadLetterQueue:
    url = sqs.create_queue(QueueName="demo-glue-dlq")["QueueUrl"]
    return DeadLetterQueue(sqs, url, stage="glue")


@pytest.fixture
def builder() -> ChangeBuilder:
    return ChangeBuilder(BUS)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_publisher(kinesis: Any, sleeps: Sleeps) -> Callable[..., KinesisPublisher]:
    def make(client: Any = None, **settings: Any) -> KinesisPublisher:
        return KinesisPublisher(
            client or kinesis,
            STREAM,
            settings=PublisherSettings(**settings),
            sleep=sleeps,
            jitter=lambda: 1.0,
        )

    return make


def dead_letters(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [read_letter(message["Body"]) for message in messages]


@pytest.fixture
def schema_store() -> Iterator[SchemaStore]:
    """The bus's schema table, empty, in moto."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="demo-schemas", BillingMode="PAY_PER_REQUEST", **TABLE_KEY)
        yield SchemaStore(client, "demo-schemas")


def deploy_function(lambda_client: Any, name: str, handler: str) -> None:
    """A function in moto's Lambda, for mappings and invocations to name (never run)."""
    role = boto3.client("iam", region_name="us-east-1").create_role(
        RoleName=f"{name}-role", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(
            handler.rsplit(".", 1)[0].replace(".", "/") + ".py",
            "def handler(event, context):\n    return {}\n",
        )
    lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler=handler,
        Code={"ZipFile": archive.getvalue()},
    )


def queued_invocations() -> list[dict[str, Any]]:
    """The asynchronous invocations moto's Lambda holds, queued as the local moto server
    queues them (``local.moto_server.QUEUE_INVOCATIONS`` applied), payloads parsed."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    try:
        url = sqs.get_queue_url(QueueName=INVOCATIONS_QUEUE)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return []
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    invocations = [json.loads(message["Body"]) for message in messages]
    return [{**invocation, "payload": json.loads(invocation["payload"])} for invocation in invocations]
