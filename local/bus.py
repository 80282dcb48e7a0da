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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from config.functions import failures_bucket_name
from config.model import BusConfig, ConsumerConfig, SourceConfig
from config.plan import DeploymentPlan, FunctionPlan, consumer_plan, deployment_plan, resolve
from local.emf import EmfMetrics
from local.functions import ACCOUNT, REGION, Handler, LocalFunction

ROLE_NAME = "dmsbus-local-function"
#: Locally the stream is provisioned with this many shards when the config says on-demand
#: (a new on-demand stream starts with 4 in AWS).
ON_DEMAND_SHARDS = 4


@dataclass
class LocalBus:
    """The deployment plan rendered on the moto server: ``provision()`` creates the
    resources; ``functions`` is the local Lambda registry."""

    config: BusConfig
    clients: Any  # LocalAws: .client(service) and .environment()
    #: Added to every function's environment (log levels, say).
    extra_environment: Mapping[str, str] = field(default_factory=dict)
    functions: dict[str, LocalFunction] = field(default_factory=dict)
    queue_urls: dict[str, str] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    failures: str = ""
    stream_arn: str = ""
    #: The plan's references, resolved to the moto server's values.
    values: dict[str, str] = field(default_factory=dict)
    #: The sources whose functions (their schema functions) local mode runs too.
    sources: Sequence[SourceConfig] = ()
    #: Given to every function: the EMF metrics in its stdout reach CloudWatch (moto's).
    metrics: EmfMetrics | None = None

    @cached_property
    def plan(self) -> DeploymentPlan:
        return deployment_plan(self.config, self.sources)

    @property
    def stream(self) -> str:
        return self.plan.stream.name

    def provision(self) -> dict[str, LocalFunction]:
        plan = self.plan
        self._stream()
        if plan.schema_table is not None:
            dynamodb = self.clients.client("dynamodb")
            with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
                dynamodb.create_table(
                    TableName=plan.schema_table.name, BillingMode="PAY_PER_REQUEST", **plan.schema_table.key
                )
        self.failures = self._bucket(
            failures_bucket_name(self.config, account=ACCOUNT, region=REGION), versioned=False
        )
        for function in plan.functions:
            self.deploy(function)
        return self.functions

    def add_consumer(self, consumer: ConsumerConfig, *, handler: Handler | None = None) -> LocalFunction:
        """A configured consumer (its folder's handler) or a local one (``handler``), with
        the event source mapping the consumers stack gives every consumer."""
        return self.deploy(consumer_plan(self.config, consumer), handler=handler)

    def deploy(self, plan: FunctionPlan, *, handler: Handler | None = None) -> LocalFunction:
        """The plan's function, its queue and bucket, and its mapping when it reads the bus
        stream (the glue's are discovery's to create, as in AWS). ``handler``: run this
        callable instead of the folder's handler."""
        dlq_url = self._queue(plan.dead_letters.name)
        if plan.bucket is not None:
            self._bucket(plan.bucket.key)
        self.values.update(local_values(self.plan, plan, dlq_url=dlq_url))
        function = local_function(self.plan, plan, dlq_url=dlq_url, handler=handler)
        self._register(function, plan, self._role())
        mapping = plan.mapping
        if mapping is not None and mapping.source == "bus-stream":
            self.clients.client("lambda").create_event_source_mapping(
                **mapping.request(
                    function_name=plan.name,
                    stream_arn=self.stream_arn,
                    on_failure=self.values[mapping.on_failure],
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
        assert self.stream_arn == stream_arn(self.stream), "moto's stream ARN moved"

    def _queue(self, name: str) -> str:
        url: str = self.clients.client("sqs").create_queue(QueueName=name)["QueueUrl"]
        self.queue_urls[name] = url
        return url

    @property
    def failures_arn(self) -> str:
        """The failure bucket: every mapping's on-failure destination."""
        return bucket_arn(self.failures)

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

    def _register(self, function: LocalFunction, plan: FunctionPlan, role: str) -> None:
        # Lambda's API holds what the stacks set; the function runs with local mode's too,
        # and with the moto server for every service (not a VPC endpoint's address).
        deployed = dict(function.environment)
        function.environment = {
            **self.clients.environment(),
            **self.extra_environment,
            **{
                key: value
                for key, value in function.environment.items()
                if not key.startswith("AWS_ENDPOINT_URL")
            },
        }
        if function.metrics is None:
            function.metrics = self.metrics
        self.functions[function.name] = function
        client = self.clients.client("lambda")
        try:
            client.get_function(FunctionName=function.name)
        except client.exceptions.ResourceNotFoundException:
            client.create_function(
                FunctionName=function.name,
                Runtime="python3.12",
                Role=role,
                Handler=plan.handler,
                Code={"ZipFile": _placeholder_zip()},
                Timeout=function.timeout_seconds,
                MemorySize=function.memory_mb,
                Architectures=["arm64"],
                Environment={"Variables": deployed},
                **(
                    {"DeadLetterConfig": {"TargetArn": self.queue_arn(plan.dead_letters.name)}}
                    if plan.asynchronous_dead_letters
                    else {}
                ),
            )
            if plan.reserved_concurrency is not None:
                client.put_function_concurrency(
                    FunctionName=function.name, ReservedConcurrentExecutions=plan.reserved_concurrency
                )


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def bucket_arn(name: str) -> str:
    return f"arn:aws:s3:::{name}"


def local_values(deployment: DeploymentPlan, plan: FunctionPlan, *, dlq_url: str) -> dict[str, str]:
    """What local mode resolves ``plan``'s references to: the names and ARNs of its
    resources on the moto server, and ``dlq_url``."""
    failures = failures_bucket_name(deployment.bus, account=ACCOUNT, region=REGION)
    values: dict[str, str] = {
        deployment.stream.name_ref: deployment.stream.name,
        deployment.stream.arn: stream_arn(deployment.stream.name),
        deployment.failures.name: failures,
        deployment.failures.arn: bucket_arn(failures),
        plan.name_ref: plan.name,
        plan.dead_letters.url: dlq_url,
    }
    for function in deployment.functions:
        # Discovery names the glue; local mode runs every function under its plan name.
        values[function.name_ref] = function.name
    if deployment.schema_table is not None:
        values[deployment.schema_table.name_ref] = deployment.schema_table.name
    if plan.bucket is not None:
        # A consumer's bucket: CloudFormation names it in AWS, the plan's key here.
        values[plan.bucket.name] = plan.bucket.key
    return values


def local_function(
    deployment: DeploymentPlan,
    plan: FunctionPlan,
    *,
    dlq_url: str,
    environment: Mapping[str, str] | None = None,
    handler: Handler | None = None,
) -> LocalFunction:
    """``plan``'s function as local mode runs it: its folder's handler (or ``handler``),
    its references resolved by :func:`local_values`, ``environment`` on top."""
    return LocalFunction(
        name=plan.name,
        folder=None if handler is not None else plan.folder,
        handler=handler,
        environment={
            **resolve(plan.environment, local_values(deployment, plan, dlq_url=dlq_url)),
            **(environment or {}),
        },
        timeout_seconds=plan.timeout_seconds,
        memory_mb=plan.memory_mb,
    )


def _placeholder_zip() -> bytes:
    """Lambda's API wants code; the local service runs the repository's code instead."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "# run by dmsbus's local Lambda service from functions/\n")
    return buffer.getvalue()
