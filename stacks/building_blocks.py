"""Constructs every stack uses: a dmsbus function, a dead-letter queue, the failure
bucket, alarms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jsii
from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from config.functions import failures_bucket_name
from config.model import BusConfig
from config.plan import FunctionPlan, TablePlan, resolve
from dmsbus import variables
from stacks.nag import acknowledge
from stacks.packaging import ARCHITECTURE, RUNTIME, function_code, handler_name

#: SQS's largest message: a dead letter carries the whole record that failed.
MAX_MESSAGE_BYTES = 1024 * 1024
LOG_RETENTION = logs.RetentionDays.ONE_MONTH


class DeadLetterQueue(Construct):
    """A KMS-encrypted, TLS-only queue that keeps messages 14 days."""

    def __init__(self, scope: Construct, id_: str, *, queue_name: str, key: kms.IKey) -> None:
        super().__init__(scope, id_)
        self.queue_name = queue_name
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=queue_name,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            max_message_size_bytes=MAX_MESSAGE_BYTES,
            retention_period=Duration.days(14),
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(self.queue, "AwsSolutions-SQS3", "This queue is itself a dead-letter destination.")
        acknowledge(
            self.queue, "Serverless-SQSRedrivePolicy", "This queue is itself a dead-letter destination."
        )


#: Where Lambda writes a failed batch's record in the failure bucket: no prefix of ours
#: ("aws/lambda/<ESM UUID>/<shard>/YYYY/MM/DD/...", kinesis-on-failure-destination).
FAILURE_PREFIX = "aws/lambda/"
#: The bucket's request-metrics filter, whose PutRequests the failure alarm watches.
FAILURE_METRICS_ID = "failed-batches"


class FailureBucket(Construct):
    """Where the event source mappings (the glue's and every consumer's) put a batch they
    give up on. With an S3 destination Lambda writes the whole invocation (its records
    too, in ``payload``), where a queue gets only the batch's shard and sequence range,
    which a DynamoDB stream forgets after 24 hours (kinesis-on-failure-destination,
    services-dynamodb-errors). Private, TLS-only, the bus's key, objects expiring after
    ``expire_days``; request metrics count what arrives. Named per account and region
    (``failures_bucket_name``), so a stack grants it without importing it."""

    def __init__(self, scope: Construct, id_: str, *, bus: BusConfig, key: kms.IKey) -> None:
        super().__init__(scope, id_)
        self.key = key
        self.bucket_name = failures_bucket_name(bus, account=Aws.ACCOUNT_ID, region=Aws.REGION)
        #: How cdk-nag prints the bucket's name in a finding.
        self._nag_name = failures_bucket_name(bus, account="<AWS::AccountId>", region="<AWS::Region>")
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=self.bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-failed-batches",
                    expiration=Duration.days(bus.failures.expire_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            metrics=[s3.BucketMetrics(id=FAILURE_METRICS_ID, prefix=FAILURE_PREFIX)],
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "Only Lambda's on-failure delivery writes here, with the functions' roles; "
            "the request metrics and the failure alarm show every arrival.",
        )

    @property
    def bucket_arn(self) -> str:
        """The bucket's ARN from its name: the same in every stack, without an import."""
        return f"arn:{Aws.PARTITION}:s3:::{self.bucket_name}"

    def grant_put(self, function: lambda_.IFunction) -> None:
        """What Lambda needs to write there with ``function``'s role: s3:PutObject and
        s3:ListBucket, and kms:GenerateDataKey for the key (kinesis-on-failure-destination).
        Not CDK's S3OnFailureDestination, which grants reading and deleting too."""
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[f"{self.bucket_arn}/{FAILURE_PREFIX}*"])
        )
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket_arn])
        )
        self.key.grant(function, "kms:GenerateDataKey")
        if function.role is not None:
            acknowledge(
                function.role,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{self._nag_name}/{FAILURE_PREFIX}*]",
                "Lambda names each failed batch's object under aws/lambda/ by mapping, shard and time.",
            )

    def metric_failed_batches(self) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/S3",
            metric_name="PutRequests",
            dimensions_map={"BucketName": self.bucket_name, "FilterId": FAILURE_METRICS_ID},
            statistic="Sum",
            period=Duration.minutes(5),
        )


@jsii.implements(lambda_.IEventSourceDlq)
class FailureBucketDestination:
    """An event source mapping's on-failure destination in the failure bucket."""

    def __init__(self, failures: FailureBucket) -> None:
        self.failures = failures

    def bind(
        self, _target: lambda_.IEventSourceMapping, target_handler: lambda_.IFunction
    ) -> lambda_.DlqDestinationConfig:
        self.failures.grant_put(target_handler)
        return lambda_.DlqDestinationConfig(destination=self.failures.bucket_arn)


@dataclass(frozen=True)
class VpcPlacement:
    """Where a function runs in a VPC."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_groups: Sequence[ec2.ISecurityGroup]


class BusFunction(Construct):
    """A dmsbus Lambda: Python 3.12 on arm64, the dependencies layer, X-Ray tracing, a log
    group with a retention, and an explicit name (alarms and the dashboard use it).
    ``entry``: the function in ``functions/<folder>/handler.py`` Lambda calls."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        function_name: str,
        folder: str,
        layer: lambda_.ILayerVersion,
        memory_mb: int,
        timeout_seconds: int,
        environment: Mapping[str, str],
        dead_letter_queue: sqs.IQueue | None = None,
        unscoped_actions: str = "X-Ray's trace actions",
        reserved_concurrency: int | None = None,
        network: VpcPlacement | None = None,
        entry: str = "handler",
    ) -> None:
        super().__init__(scope, id_)
        self.log_group = logs.LogGroup(
            self, "Logs", log_group_name=f"/aws/lambda/{function_name}", retention=LOG_RETENTION
        )
        # Its own role, writing to its own log group only (not AWSLambdaBasicExecutionRole).
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"dmsbus function {function_name}",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=function_name,
            role=self.role,
            code=function_code(folder),
            handler=handler_name(folder, entry),
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            layers=[layer],
            memory_size=memory_mb,
            timeout=Duration.seconds(timeout_seconds),
            environment={variables.POWERTOOLS_SERVICE: function_name, **environment},
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            dead_letter_queue=dead_letter_queue,
            reserved_concurrent_executions=reserved_concurrency,
            vpc=network.vpc if network else None,
            vpc_subnets=network.subnets if network else None,
            security_groups=list(network.security_groups) if network else None,
        )
        if network is not None:
            # Lambda creates the function's network interfaces with the function's role and
            # refuses to create the function without ec2:CreateNetworkInterface and friends
            # (configuration-vpc: "Required IAM permissions"); CDK adds this policy only to
            # roles it creates, and this role is the function's own.
            self.role.add_managed_policy(
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaVPCAccessExecutionRole")
            )
            acknowledge(
                self.role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
                "Lambda's own policy for the network interfaces a function in a VPC needs (EC2's ENI actions take no resource).",
            )
        for rule in ("AwsSolutions-L1", "Serverless-LambdaLatestVersion"):
            acknowledge(
                self.function,
                rule,
                "Python 3.12 is the runtime dmsbus builds its arm64 dependencies layer for "
                "(orjson, protobuf wheels); moving runtimes is a reviewed change.",
            )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            f"{unscoped_actions} take no resource.",
        )


def planned_function(
    scope: Construct,
    id_: str,
    *,
    plan: FunctionPlan,
    values: Mapping[str, str],
    layer: lambda_.ILayerVersion,
    unscoped_actions: str = "X-Ray's trace actions",
    dead_letter_queue: sqs.IQueue | None = None,
    network: VpcPlacement | None = None,
) -> BusFunction:
    """The plan's function, its references resolved to ``values`` (tokens of this app)."""
    return BusFunction(
        scope,
        id_,
        function_name=plan.name,
        folder=plan.folder,
        entry=plan.entry,
        layer=layer,
        memory_mb=plan.memory_mb,
        timeout_seconds=plan.timeout_seconds,
        reserved_concurrency=plan.reserved_concurrency,
        environment=resolve(plan.environment, values),
        dead_letter_queue=dead_letter_queue,
        unscoped_actions=unscoped_actions,
        network=network,
    )


def planned_function_with_dead_letters(
    scope: Construct,
    *,
    plan: FunctionPlan,
    key: kms.IKey,
    values: Mapping[str, str],
    layer: lambda_.ILayerVersion,
    unscoped_actions: str = "X-Ray's trace actions",
    network: VpcPlacement | None = None,
) -> tuple[BusFunction, DeadLetterQueue]:
    """A plan's bus or source function (``Glue``, ``Discovery``, ``Schema``: its kind names
    its constructs) and its dead-letter queue, Lambda's own for asynchronous invokes when
    the plan says so; the queue's URL is among the values the function's references take."""
    construct = plan.kind.title()
    dead_letters = DeadLetterQueue(
        scope, f"{construct}DeadLetters", queue_name=plan.dead_letters.name, key=key
    )
    bus_function = planned_function(
        scope,
        construct,
        plan=plan,
        values={**values, plan.dead_letters.url: dead_letters.queue.queue_url},
        layer=layer,
        unscoped_actions=unscoped_actions,
        dead_letter_queue=dead_letters.queue if plan.asynchronous_dead_letters else None,
        network=network,
    )
    return bus_function, dead_letters


def bus_table(scope: Construct, id_: str, *, plan: TablePlan) -> dynamodb.Table:
    """A table of the bus's own (the plan's ``TablePlan``): on-demand, point-in-time
    recovery, kept when the stack is deleted."""
    types = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}
    kinds = {item["AttributeName"]: types[item["AttributeType"]] for item in plan.key["AttributeDefinitions"]}
    keys = {item["KeyType"]: item["AttributeName"] for item in plan.key["KeySchema"]}
    sort = keys.get("RANGE")
    return dynamodb.Table(
        scope,
        id_,
        table_name=plan.name,
        partition_key=dynamodb.Attribute(name=keys["HASH"], type=kinds[keys["HASH"]]),
        sort_key=dynamodb.Attribute(name=sort, type=kinds[sort]) if sort else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        removal_policy=RemovalPolicy.RETAIN,
    )


class Alarms(Construct):
    """Alarms for the functions and queues of one stack, notifying ``topic_arn`` if given."""

    def __init__(self, scope: Construct, id_: str, *, topic_arn: str | None) -> None:
        super().__init__(scope, id_)
        self._action = (
            cloudwatch_actions.SnsAction(sns.Topic.from_topic_arn(self, "Topic", topic_arn))
            if topic_arn
            else None
        )
        self.alarms: list[cloudwatch.Alarm] = []

    def add(
        self,
        id_: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        below: bool = False,
    ) -> cloudwatch.Alarm:
        """Fires when ``metric`` reaches ``threshold`` (``below``: drops under it)."""
        alarm = cloudwatch.Alarm(
            self,
            id_,
            metric=metric,
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=(
                cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
                if below
                else cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
            ),
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        if self._action is not None:
            alarm.add_alarm_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def stream_function(
        self, id_: str, function: lambda_.IFunction, *, errors: int, iterator_age_ms: int
    ) -> None:
        """Errors and IteratorAge (how far behind its stream the function is)."""
        self.add(
            f"{id_}Errors",
            metric=function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=errors,
            description=f"{function.function_name} failed invocations: its stream is retrying a batch",
        )
        self.add(
            f"{id_}IteratorAge",
            metric=function.metric("IteratorAge", period=Duration.minutes(5), statistic="Maximum"),
            threshold=iterator_age_ms,
            description=f"{function.function_name} is falling behind its stream",
        )

    def queue_depth(self, id_: str, queue: sqs.IQueue, *, messages: int) -> None:
        self.add(
            id_,
            metric=queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=messages,
            description=f"{queue.queue_name} holds dead letters: records that could not be delivered",
        )


def allow_eventbridge_dead_letters(key: kms.IKey) -> None:
    """EventBridge sends a rule's undelivered events to its dead-letter queue itself
    (EventBridge User Guide, eb-rule-dlq): to a queue encrypted with a customer-managed
    key, only if the key's policy lets it ("the policies on that KMS key must give
    EventBridge permission to use it": kms:GenerateDataKey and kms:Decrypt, with an
    aws:SourceAccount condition as eb-encryption-key-policy advises). An imported key's
    policy is not this app's to change: its owner adds the statement."""
    key.add_to_resource_policy(
        iam.PolicyStatement(
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=["kms:GenerateDataKey", "kms:Decrypt"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
        )
    )


def acknowledge_kms_grant(role: iam.IRole) -> None:
    """CDK's KMS grants for an encrypted stream or queue use these wildcard actions."""
    for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Action::{action}]",
            "CDK's grant on the bus's KMS key (one key, named resource): encrypting records needs the key variants.",
        )


def acknowledge_stream_invoked(function: lambda_.IFunction) -> None:
    """Lambda's dead-letter target applies to asynchronous invokes; a stream-invoked
    function's failed batches go to its event source mapping's on-failure destination."""
    acknowledge(
        function,
        "Serverless-LambdaDLQ",
        "Invoked by an event source mapping, whose on-failure destination is this function's dead-letter queue.",
    )
