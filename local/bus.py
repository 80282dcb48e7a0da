"""The bus and consumers stacks, provisioned on the moto server from the same config:
the stream, the dead-letter queues, the functions (metadata only: the local Lambda service
runs them) and the consumers' event source mappings. The glue's mappings are discovery's
to create, as in AWS.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config.functions import (
    bucket_name,
    consumer_environment,
    consumer_name,
    dead_letter_name,
    discovery_environment,
    discovery_name,
    failures_bucket_name,
    glue_environment,
    glue_name,
    stream_name,
)
from config.model import BusConfig, ConsumerConfig
from dmsbus.event_sources import mapping_request
from local.functions import ACCOUNT, REGION, Handler, LocalFunction

ROLE_NAME = "dmsbus-local-function"
#: Locally the stream is provisioned with this many shards when the config says on-demand
#: (a new on-demand stream starts with 4 in AWS).
ON_DEMAND_SHARDS = 4


@dataclass
class LocalBus:
    """``provision()`` creates the resources; ``functions`` is the local Lambda registry."""

    config: BusConfig
    clients: Any  # LocalAws: .client(service) and .environment()
    #: Added to every function's environment (log levels, say).
    extra_environment: Mapping[str, str] = field(default_factory=dict)
    functions: dict[str, LocalFunction] = field(default_factory=dict)
    queue_urls: dict[str, str] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    failures: str = ""
    stream_arn: str = ""

    @property
    def stream(self) -> str:
        return stream_name(self.config)

    def provision(self) -> dict[str, LocalFunction]:
        bus = self.config
        self._stream()
        role = self._role()
        glue, discovery = glue_name(bus), discovery_name(bus)
        self.failures = self._bucket(
            failures_bucket_name(bus, account=ACCOUNT, region=REGION), versioned=False
        )
        glue_dlq = self._queue(dead_letter_name(glue))
        self._queue(dead_letter_name(discovery))
        self._register(
            LocalFunction(
                name=glue,
                folder="glue",
                environment=glue_environment(bus, stream=self.stream, dlq_url=glue_dlq),
                timeout_seconds=bus.glue.timeout_seconds,
                memory_mb=bus.glue.memory_mb,
            ),
            role,
        )
        self._register(
            LocalFunction(
                name=discovery,
                folder="discovery",
                environment=discovery_environment(
                    bus,
                    stream=self.stream,
                    glue_function=glue,
                    glue_on_failure_arn=self.failures_arn,
                ),
                timeout_seconds=900,
                memory_mb=512,
            ),
            role,
        )
        for consumer in bus.consumers:
            self.add_consumer(consumer)
        return self.functions

    def add_consumer(self, consumer: ConsumerConfig, *, handler: Handler | None = None) -> LocalFunction:
        """A configured consumer (its folder's handler) or a local one (``handler``), with
        the event source mapping the consumers stack gives every consumer."""
        name = consumer_name(self.config.name, consumer)
        dlq = self._queue(dead_letter_name(name))
        bucket = self._bucket(bucket_name(name)) if consumer.bucket is not None else None
        function = LocalFunction(
            name=name,
            folder=None if handler is not None else consumer.code.removeprefix("functions/"),
            handler=handler,
            environment=consumer_environment(self.config.name, consumer, dlq_url=dlq, bucket=bucket),
            timeout_seconds=consumer.timeout_seconds,
            memory_mb=consumer.memory_mb,
        )
        self._register(function, self._role())
        self.clients.client("lambda").create_event_source_mapping(
            **mapping_request(
                consumer,
                function_name=name,
                stream_arn=self.stream_arn,
                starting_position=consumer.starting_position,
                on_failure=self.failures_arn,
            )
        )
        return function

    def queue_arn(self, name: str) -> str:
        attributes = self.clients.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_urls[name], AttributeNames=["QueueArn"]
        )
        return str(attributes["Attributes"]["QueueArn"])

    def _stream(self) -> None:
        kinesis = self.clients.client("kinesis")
        shards = self.config.kinesis.shards or ON_DEMAND_SHARDS
        with contextlib.suppress(kinesis.exceptions.ResourceInUseException):
            kinesis.create_stream(StreamName=self.stream, ShardCount=shards)
        kinesis.get_waiter("stream_exists").wait(StreamName=self.stream, WaiterConfig={"Delay": 0.1})
        self.stream_arn = kinesis.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"][
            "StreamARN"
        ]

    def _queue(self, name: str) -> str:
        url: str = self.clients.client("sqs").create_queue(QueueName=name)["QueueUrl"]
        self.queue_urls[name] = url
        return url

    @property
    def failures_arn(self) -> str:
        """The failure bucket: every mapping's on-failure destination."""
        return f"arn:aws:s3:::{self.failures}"

    def _bucket(self, name: str, *, versioned: bool = True) -> str:
        """As the stacks make it (KMS and lifecycle do not apply here): a consumer's bucket
        is versioned, the failure bucket is not."""
        s3 = self.clients.client("s3")
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        self.buckets[name] = name
        return name

    def _role(self) -> str:
        iam = self.clients.client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        try:
            arn: str = iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
                "Arn"
            ]
        return arn

    def _register(self, function: LocalFunction, role: str) -> None:
        # Lambda's API holds what the stacks set; the function runs with local mode's too.
        deployed = dict(function.environment)
        function.environment = {
            **self.clients.environment(),
            **self.extra_environment,
            **function.environment,
        }
        self.functions[function.name] = function
        client = self.clients.client("lambda")
        try:
            client.get_function(FunctionName=function.name)
        except client.exceptions.ResourceNotFoundException:
            client.create_function(
                FunctionName=function.name,
                Runtime="python3.12",
                Role=role,
                Handler="handler.handler",
                Code={"ZipFile": _placeholder_zip()},
                Timeout=function.timeout_seconds,
                MemorySize=function.memory_mb,
                Architectures=["arm64"],
                Environment={"Variables": deployed},
            )


def _placeholder_zip() -> bytes:
    """Lambda's API wants code; the local service runs the repository's code instead."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "# run by dmsbus's local Lambda service from functions/\n")
    return buffer.getvalue()
