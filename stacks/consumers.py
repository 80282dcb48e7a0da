"""The consumers stack: one Lambda per configured consumer, reading the bus's stream, with
what its config entry asks for: a Secrets Manager secret to read, a VPC to run in, a
bucket to write to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from config.functions import ConsumerError
from config.model import ConsumerBucket, ConsumerNetwork
from config.plan import DeploymentPlan, FunctionPlan, Grant
from stacks.building_blocks import (
    Alarms,
    DeadLetterQueue,
    FailureBucket,
    FailureBucketDestination,
    VpcPlacement,
    acknowledge_kms_grant,
    acknowledge_stream_invoked,
    planned_function,
)
from stacks.nag import acknowledge
from stacks.packaging import dependencies_layer

__all__ = ["ArchiveBucket", "Consumer", "ConsumerError", "ConsumersStack"]


class ArchiveBucket(Construct):
    """A private, TLS-only, versioned bucket encrypted with the bus's key, its objects
    moving to cheaper storage as they age; access logs go to a bucket of their own."""

    def __init__(self, scope: Construct, id_: str, *, settings: ConsumerBucket, key: kms.IKey) -> None:
        super().__init__(scope, id_)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # S3 server access logs cannot use KMS
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        )
        acknowledge(self.access_logs, "AwsSolutions-S1", "This bucket receives the archive's access logs.")
        transitions = [
            s3.Transition(
                storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                transition_after=Duration.days(settings.infrequent_access_days),
            )
        ]
        if settings.glacier_days is not None:
            transitions.append(
                s3.Transition(
                    storage_class=s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
                    transition_after=Duration.days(settings.glacier_days),
                )
            )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="archive/",
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="cheaper-storage",
                    transitions=transitions,
                    expiration=Duration.days(settings.expire_days) if settings.expire_days else None,
                    noncurrent_version_expiration=Duration.days(settings.noncurrent_expire_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )


class Consumer(Construct):
    """A consumer function with its dead-letter queue (poison records) and its event
    source mapping: ReportBatchItemFailures, bisect on error, bounded retries and record
    age, failed batches to the bus's failure bucket."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        plan: FunctionPlan,
        values: Mapping[str, str],
        stream: kinesis.IStream,
        key: kms.IKey,
        failures: FailureBucket,
        layer: lambda_.ILayerVersion,
    ) -> None:
        """``values``: the bus's references (its stream, its failure bucket) as tokens."""
        super().__init__(scope, id_)
        mapping = plan.mapping
        if mapping is None or mapping.source != "bus-stream":
            raise ValueError(f"consumer {plan.name} must read the bus stream")
        name = plan.name
        self.values = dict(values)
        self.dead_letters = DeadLetterQueue(self, "DeadLetters", queue_name=plan.dead_letters.name, key=key)
        self.values[plan.dead_letters.url] = self.dead_letters.queue.queue_url
        archive = plan.bucket.archive if plan.bucket is not None else None
        self.archive = (
            ArchiveBucket(self, "Archive", settings=archive, key=key) if archive is not None else None
        )
        if plan.bucket is not None and self.archive is not None:
            self.values[plan.bucket.name] = self.archive.bucket.bucket_name
        self.security_group: ec2.ISecurityGroup | None = None
        network = self._network(plan.network, name) if plan.network else None
        self.bus_function = planned_function(
            self, "Function", plan=plan, values=self.values, layer=layer, network=network
        )
        self.function = self.bus_function.function
        self.key = key
        for grant in plan.grants:
            self._grant(grant)
        acknowledge_kms_grant(self.bus_function.role)
        acknowledge_stream_invoked(self.function)
        self.function.add_event_source(
            event_sources.KinesisEventSource(
                stream,
                starting_position=lambda_.StartingPosition[mapping.starting_position],
                batch_size=mapping.batch_size,
                max_batching_window=Duration.seconds(mapping.batching_window_seconds),
                parallelization_factor=mapping.parallelization_factor,
                retry_attempts=mapping.max_retries,
                max_record_age=Duration.seconds(mapping.max_record_age_seconds),
                bisect_batch_on_error=mapping.bisect_batch_on_error,
                report_batch_item_failures=mapping.report_batch_item_failures,
                on_failure=FailureBucketDestination(failures),
            )
        )

    def _grant(self, grant: Grant) -> None:
        """One of the plan's grants on this consumer's resources."""
        role = self.bus_function.role
        match grant.access:
            case "queue:send" if grant.resource == self.dead_letters.queue_name:
                self.dead_letters.queue.grant_send_messages(self.function)
            case "bucket:put" if self.archive is not None:
                # PutObject only: no delete, no read, no multipart (objects are one batch each).
                # A retried batch's overwrite keeps the earlier copy as a version.
                self.function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["s3:PutObject"], resources=[self.archive.bucket.arn_for_objects("*")]
                    )
                )
                self.key.grant(self.function, "kms:GenerateDataKey")
                bucket_id = Stack.of(self).get_logical_id(self.archive.bucket.node.default_child)  # type: ignore[arg-type]
                acknowledge(
                    role,
                    f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/*]",
                    "Objects are named per batch: putting them needs the bucket's object ARNs.",
                )
            case "secret:read":
                secret = grant.resource
                self.secret = (
                    secretsmanager.Secret.from_secret_complete_arn(self, "Secret", secret)
                    if secret.startswith("arn:")
                    else secretsmanager.Secret.from_secret_name_v2(self, "Secret", secret)
                )
                self.secret.grant_read(self.function)
                if not secret.startswith("arn:"):
                    acknowledge(
                        role,
                        f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:{secret}-??????]",
                        "A secret named without its ARN: Secrets Manager appends six random characters.",
                    )
            case "schemas:read":
                # The bus stack's table, by its name: no import. A version (GetItem), and a
                # table's latest one (Query, newest first: dmsbus.schemas.SchemaStore.latest)
                table = Stack.of(self).format_arn(
                    service="dynamodb", resource="table", resource_name=grant.resource
                )
                self.function.add_to_role_policy(
                    iam.PolicyStatement(actions=["dynamodb:GetItem", "dynamodb:Query"], resources=[table])
                )
            case _:
                raise ValueError(f"the consumers stack cannot grant {grant}")

    def _network(self, network: ConsumerNetwork, name: str) -> VpcPlacement:
        vpc = ec2.Vpc.from_vpc_attributes(
            self, "Vpc", vpc_id=network.vpc_id, availability_zones=Stack.of(self).availability_zones
        )
        subnets = [
            ec2.Subnet.from_subnet_id(self, f"Subnet{index}", subnet)
            for index, subnet in enumerate(network.subnet_ids)
        ]
        if network.security_group_ids:
            groups = [
                ec2.SecurityGroup.from_security_group_id(self, f"SecurityGroup{index}", group, mutable=False)
                for index, group in enumerate(network.security_group_ids)
            ]
        else:
            group = ec2.SecurityGroup(
                self,
                "SecurityGroup",
                vpc=vpc,
                allow_all_outbound=False,
                description=f"dmsbus consumer {name}",
            )
            for port in network.egress_ports:
                group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(port), f"{name} out on {port}")
            groups = [group]
        self.security_group = groups[0]
        return VpcPlacement(vpc, ec2.SubnetSelection(subnets=subnets), groups)


class ConsumersStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        plan: DeploymentPlan,
        stream: kinesis.IStream,
        key: kms.IKey,
        failures: FailureBucket,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        bus = plan.bus
        layer = dependencies_layer(self, "Dependencies")
        self.alarms = Alarms(self, "Alarms", topic_arn=bus.alarms.topic_arn)
        values: dict[str, str] = {
            plan.stream.name_ref: stream.stream_name,
            plan.stream.arn: stream.stream_arn,
            plan.failures.arn: failures.bucket_arn,
            plan.failures.name: failures.bucket_name,
        }
        if plan.schema_table is not None:
            values[plan.schema_table.name_ref] = plan.schema_table.name  # named: no import
        self.consumers: dict[str, Consumer] = {}
        for config, planned in zip(bus.consumers, plan.consumers, strict=True):
            consumer = Consumer(
                self,
                f"Consumer-{config.name}",
                plan=planned,
                values=values,
                stream=stream,
                key=key,
                failures=failures,
                layer=layer,
            )
            self.consumers[config.name] = consumer
            self.alarms.stream_function(
                config.name,
                consumer.function,
                errors=bus.alarms.function_errors,
                iterator_age_ms=bus.alarms.iterator_age_ms,
            )
            self.alarms.queue_depth(
                f"{config.name}DeadLetterDepth", consumer.dead_letters.queue, messages=bus.alarms.dlq_messages
            )
