"""The consumers stack: one Lambda per configured consumer, reading the bus's stream, with
what its config entry asks for: a Secrets Manager secret to read, a VPC to run in, a
bucket to write to."""

from __future__ import annotations

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

from config.functions import ConsumerError, consumer_environment, consumer_name, dead_letter_name
from config.model import BusConfig, ConsumerBucket, ConsumerConfig, ConsumerNetwork
from stacks.building_blocks import (
    Alarms,
    BusFunction,
    DeadLetterQueue,
    FailureBucket,
    FailureBucketDestination,
    VpcPlacement,
    acknowledge_kms_grant,
    acknowledge_stream_invoked,
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
        bus_name: str,
        consumer: ConsumerConfig,
        stream: kinesis.IStream,
        key: kms.IKey,
        failures: FailureBucket,
        layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, id_)
        name = consumer_name(bus_name, consumer)
        self.dead_letters = DeadLetterQueue(self, "DeadLetters", queue_name=dead_letter_name(name), key=key)
        self.archive = (
            ArchiveBucket(self, "Archive", settings=consumer.bucket, key=key) if consumer.bucket else None
        )
        environment = consumer_environment(
            bus_name,
            consumer,
            dlq_url=self.dead_letters.queue.queue_url,
            bucket=self.archive.bucket.bucket_name if self.archive else None,
        )
        self.security_group: ec2.ISecurityGroup | None = None
        network = self._network(consumer.network, name) if consumer.network else None
        bus_function = BusFunction(
            self,
            "Function",
            function_name=name,
            folder=consumer.code.removeprefix("functions/"),
            layer=layer,
            memory_mb=consumer.memory_mb,
            timeout_seconds=consumer.timeout_seconds,
            environment=environment,
            network=network,
        )
        self.function = bus_function.function
        self.dead_letters.queue.grant_send_messages(self.function)
        if self.archive is not None:
            # PutObject only: no delete, no read, no multipart (objects are one batch each).
            # A retried batch's overwrite keeps the earlier copy as a version.
            self.function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:PutObject"], resources=[self.archive.bucket.arn_for_objects("*")]
                )
            )
            key.grant(self.function, "kms:GenerateDataKey")
            bucket_id = Stack.of(self).get_logical_id(self.archive.bucket.node.default_child)  # type: ignore[arg-type]
            acknowledge(
                bus_function.role,
                f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/*]",
                "Objects are named per batch: putting them needs the bucket's object ARNs.",
            )
        if consumer.secret is not None:
            self.secret = (
                secretsmanager.Secret.from_secret_complete_arn(self, "Secret", consumer.secret)
                if consumer.secret.startswith("arn:")
                else secretsmanager.Secret.from_secret_name_v2(self, "Secret", consumer.secret)
            )
            self.secret.grant_read(self.function)
            if not consumer.secret.startswith("arn:"):
                acknowledge(
                    bus_function.role,
                    f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:{consumer.secret}-??????]",
                    "A secret named without its ARN: Secrets Manager appends six random characters.",
                )
        acknowledge_kms_grant(bus_function.role)
        acknowledge_stream_invoked(self.function)
        self.function.add_event_source(
            event_sources.KinesisEventSource(
                stream,
                starting_position=lambda_.StartingPosition[consumer.starting_position],
                batch_size=consumer.batch_size,
                max_batching_window=Duration.seconds(consumer.batching_window_seconds),
                parallelization_factor=consumer.parallelization_factor,
                retry_attempts=consumer.max_retries,
                max_record_age=Duration.seconds(consumer.max_record_age_seconds),
                bisect_batch_on_error=True,
                report_batch_item_failures=True,
                on_failure=FailureBucketDestination(failures),
            )
        )

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
        bus: BusConfig,
        stream: kinesis.IStream,
        key: kms.IKey,
        failures: FailureBucket,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        layer = dependencies_layer(self, "Dependencies")
        self.alarms = Alarms(self, "Alarms", topic_arn=bus.alarms.topic_arn)
        self.consumers: dict[str, Consumer] = {}
        for config in bus.consumers:
            consumer = Consumer(
                self,
                f"Consumer-{config.name}",
                bus_name=bus.name,
                consumer=config,
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
