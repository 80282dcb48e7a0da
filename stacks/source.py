"""One stack per source database (its team's stack): DMS from that database into DynamoDB.

Replication subnet group and security group, a replication instance that is never public,
a source endpoint reading its credentials from Secrets Manager, a DynamoDB target
endpoint whose role reaches only this source's tables (and DMS's ``awsdms_*`` control
tables), a full-load-and-cdc task, and the task's lifecycle: the custom resource that
applies the TableMappings rendered from the config and the task settings, and owns the
task's running state. The task resource itself keeps fixed properties, so CloudFormation
never modifies a running task (DMS refuses it: docs/dms.md).
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Duration, Fn, Stack, Tags
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dms as dms
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from config.endpoints import POSTGRES_SOURCE_SETTINGS
from config.functions import replication_identifier
from config.mappings import render_table_mappings, task_settings
from config.model import BusConfig, SourceConfig
from config.plan import DeploymentPlan, FunctionPlan
from dmsbus import metrics as emitted
from dmsbus.schemas import POSTGRES_ENGINES
from stacks.building_blocks import (
    Alarms,
    BusFunction,
    VpcPlacement,
    acknowledge_kms_grant,
    allow_eventbridge_dead_letters,
    planned_function_with_dead_letters,
)
from stacks.nag import acknowledge
from stacks.packaging import dependencies_layer
from stacks.task_lifecycle import TaskLifecycle

#: DMS engine name -> the family whose endpoint settings hold the Secrets Manager secret.
_SECRET_SETTINGS = {
    "postgres": "postgres",
    "aurora-postgresql": "postgres",
    "mysql": "mysql",
    "aurora": "mysql",
    "mariadb": "mysql",
}
#: The TableMappings the template's task is created with. The lifecycle replaces them with
#: the config's before the task first starts; being fixed, they never change in place.
PLACEHOLDER_MAPPINGS = {
    "rules": [
        {
            "rule-type": "selection",
            "rule-id": "1",
            "rule-name": "dmsbus-task-lifecycle-applies-the-mappings",
            "object-locator": {"schema-name": "dmsbus", "table-name": "placeholder"},
            "rule-action": "include",
        }
    ]
}
#: What DMS's DynamoDB target does to the tables it owns.
_DYNAMODB_TARGET_ACTIONS = [
    "dynamodb:CreateTable",
    "dynamodb:DescribeTable",
    "dynamodb:DeleteTable",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
]


class SourceStack(Stack):
    def __init__(
        self, scope: Construct, id_: str, *, plan: DeploymentPlan, source: SourceConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        bus = plan.bus
        self.source = source
        # DMS's identifier for the instance, task and endpoints, as DMS stores it (lowercase),
        # so the alarms' dimensions and the event subscriptions name what DMS reports.
        name = replication_identifier(bus.name, source.name)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/dmsbus-{name}",
            description=f"dmsbus {name}: the replication instance's storage and endpoints",
            enable_key_rotation=True,
        )
        self.secrets_endpoint: ec2.InterfaceVpcEndpoint | None = None
        #: What the stack builds of the network (a created VPC, its endpoints; a DynamoDB
        #: endpoint in an existing VPC): the lifecycle resource waits for it, and is deleted first.
        self.network_resources: list[Construct] = []
        vpc, subnet_ids = self._network(source)
        self.vpc = vpc
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description=f"DMS replication instance of {name}: no inbound, outbound to the source and AWS APIs",
            allow_all_outbound=True,
        )
        if self.secrets_endpoint is not None:
            self.secrets_endpoint.connections.allow_default_port_from(self.security_group)
        self.subnet_group = dms.CfnReplicationSubnetGroup(
            self,
            "SubnetGroup",
            replication_subnet_group_identifier=name,
            replication_subnet_group_description=f"dmsbus {name}",
            subnet_ids=subnet_ids,
        )
        replication = source.replication
        self.instance = dms.CfnReplicationInstance(
            self,
            "Instance",
            replication_instance_identifier=name,
            replication_instance_class=replication.instance_class,
            allocated_storage=replication.allocated_storage_gb,
            multi_az=replication.multi_az,
            engine_version=replication.engine_version,
            publicly_accessible=False,
            kms_key_id=self.key.key_arn,
            replication_subnet_group_identifier=self.subnet_group.ref,
            vpc_security_group_ids=[self.security_group.security_group_id],
            auto_minor_version_upgrade=True,
        )
        self.source_endpoint = self._source_endpoint(name, source)
        self.target_endpoint = self._target_endpoint(name, bus, source)
        self.table_mappings = render_table_mappings(bus.name, source)
        self.task = dms.CfnReplicationTask(
            self,
            "Task",
            replication_task_identifier=name,
            migration_type="full-load-and-cdc",
            replication_instance_arn=self.instance.ref,
            source_endpoint_arn=self.source_endpoint.ref,
            target_endpoint_arn=self.target_endpoint.ref,
            table_mappings=json.dumps(PLACEHOLDER_MAPPINGS),
        )
        self.layer = dependencies_layer(self, "Dependencies")
        self.lifecycle = TaskLifecycle(
            self,
            "TaskLifecycle",
            function_prefix=name,
            task=self.task,
            layer=self.layer,
            table_mappings=json.dumps(self.table_mappings),
            task_settings=json.dumps(task_settings()),
            start=source.start,
        )
        CfnOutput(
            self,
            "TaskState",
            value=self.lifecycle.summary,
            description=f"DMS task {name} after this deploy (docs/dms.md: the task's lifecycle)",
        )
        self._monitor(name, bus, source)
        self.functions = {
            planned.name: self._function(planned, plan, subnet_ids)
            for planned in plan.functions
            if planned.source == source.name
        }
        # The lifecycle checks the source before the first start and drops DMS's slot on
        # delete through the admin function (functions/source_admin).
        (admin,) = (
            self.functions[p.name] for p in plan.functions if p.source == source.name and p.kind == "admin"
        )
        self.admin = admin
        self.lifecycle.use_source_admin(
            admin.function, engine=source.engine, database=source.database, network=self.network_resources
        )
        if source.engine in POSTGRES_ENGINES:
            self._watch_slots(name, bus, admin)

    def _function(self, planned: FunctionPlan, plan: DeploymentPlan, subnet_ids: list[str]) -> BusFunction:
        """A function of the plan that runs beside DMS (the schema function): in the
        replication subnets, with a security group of its own, on its schedule."""
        construct = planned.kind.title()
        group = ec2.SecurityGroup(
            self,
            f"{construct}SecurityGroup",
            vpc=self.vpc,
            description=f"{planned.name}: no inbound; outbound to the source and AWS APIs",
            allow_all_outbound=True,
        )
        if self.secrets_endpoint is not None:
            self.secrets_endpoint.connections.allow_default_port_from(group)
        subnets = [
            ec2.Subnet.from_subnet_id(self, f"{construct}Subnet{index}", id_)
            for index, id_ in enumerate(subnet_ids)
        ]
        values: dict[str, str] = {}
        if plan.schema_table is not None:
            values[plan.schema_table.name_ref] = plan.schema_table.name  # named: no import
        bus_function, dead_letters = planned_function_with_dead_letters(
            self,
            plan=planned,
            key=self.key,
            values=values,
            layer=self.layer,
            network=VpcPlacement(self.vpc, ec2.SubnetSelection(subnets=subnets), [group]),
        )
        function = bus_function.function
        for grant in planned.grants:
            match grant.access:
                case "schemas:write":
                    table = self.format_arn(
                        service="dynamodb", resource="table", resource_name=grant.resource
                    )
                    function.add_to_role_policy(
                        iam.PolicyStatement(
                            actions=["dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"],
                            resources=[table],
                        )
                    )
                case "secret:read" if grant.resource == self.source.credentials.secret:
                    self._grant_secret(bus_function.role, kms_actions=["kms:Decrypt"])
                case _:
                    raise ValueError(f"the source stack cannot grant {grant}")
        acknowledge_kms_grant(bus_function.role)
        CfnOutput(
            self,
            f"{construct}SecurityGroupId",
            value=group.security_group_id,
            description=f"{planned.name}'s security group: admit it on the source database's port",
        )
        self.alarms.add(
            f"{construct}Errors",
            metric=function.metric_errors(period=Duration.minutes(15), statistic="Sum"),
            threshold=plan.bus.alarms.function_errors,
            description=(
                f"{planned.name} failed: the source's schemas are not read, typed events may stop"
                if planned.kind == "schema"
                else f"{planned.name} failed: the source's replication slots are not watched"
            ),
        )
        self.alarms.queue_depth(
            f"{construct}DeadLetterDepth", dead_letters.queue, messages=plan.bus.alarms.dlq_messages
        )
        if planned.schedule_minutes is not None:
            rule = events.Rule(
                self,
                f"{construct}Schedule",
                description=f"Run {planned.name} every {planned.schedule_minutes} minutes",
                schedule=events.Schedule.rate(Duration.minutes(planned.schedule_minutes)),
            )
            allow_eventbridge_dead_letters(self.key)
            rule.add_target(
                targets.LambdaFunction(
                    function,
                    dead_letter_queue=dead_letters.queue,
                    retry_attempts=2,
                    max_event_age=Duration.hours(1),
                )
            )
        return bus_function

    def _watch_slots(self, name: str, bus: BusConfig, admin: BusFunction) -> None:
        """DMS leaves its PostgreSQL slot when its task stops, and the source keeps WAL for
        it without bound (CHAP_Source.PostgreSQL): the admin function measures, each sweep,
        the WAL kept by slots no process reads, and this alarm fires past the threshold
        (``start: false``, a long stop, a slot a deleted task left)."""
        limit_mib = bus.alarms.replication_slot_retained_mib
        self.alarms.add(
            "InactiveSlotRetainedBytes",
            metric=cloudwatch.Metric(
                namespace=emitted.NAMESPACE,
                metric_name=emitted.INACTIVE_SLOT_RETAINED_BYTES,
                dimensions_map={emitted.SERVICE_DIMENSION: admin.function.function_name},
                statistic="Maximum",
                period=Duration.minutes(bus.discovery.sweep_minutes),
            ),
            threshold=limit_mib * 1024 * 1024,
            description=f"DMS {name}: a replication slot no process reads keeps over {limit_mib} MiB of the "
            "source's WAL (a stopped task's slot, or one a deleted task left): resume the task or drop the slot",
        )

    def _monitor(self, name: str, bus: BusConfig, source: SourceConfig) -> None:
        """Alarms on the task's lag and the replication instance's storage, CPU and memory
        (CHAP_Monitoring), and DMS's own events for the task and the instance to the alarm
        topic (CHAP_Events)."""
        limits = bus.alarms
        self.alarms = Alarms(self, "Alarms", topic_arn=limits.topic_arn)
        instance = {"ReplicationInstanceIdentifier": name}
        # Task metrics name the task by its resource id, the ARN's last part, not its
        # identifier (docs/dms.md: to confirm on the first deploy).
        task = {**instance, "ReplicationTaskIdentifier": Fn.select(6, Fn.split(":", self.task.ref))}
        self.metrics: dict[str, cloudwatch.Metric] = {}
        for metric_name in ("CDCLatencySource", "CDCLatencyTarget"):
            metric = self._dms_metric(metric_name, task, "Maximum")
            self.alarms.add(
                metric_name,
                metric=metric,
                threshold=limits.cdc_latency_seconds,
                description=f"DMS {name}: changes take longer than {limits.cdc_latency_seconds} s ({metric_name})",
            )
        gib = 1024**3
        storage_bytes = source.replication.allocated_storage_gb * gib * limits.dms_free_storage_percent / 100
        self.alarms.add(
            "FreeStorageSpace",
            metric=self._dms_metric("FreeStorageSpace", instance, "Minimum"),
            threshold=storage_bytes,
            below=True,
            description=f"DMS {name}: under {limits.dms_free_storage_percent}% of its storage is free "
            "(the task stops when the disk is full)",
        )
        self.alarms.add(
            "CPUUtilization",
            metric=self._dms_metric("CPUUtilization", instance, "Average"),
            threshold=limits.dms_cpu_percent,
            description=f"DMS {name}: CPU over {limits.dms_cpu_percent}%",
        )
        self.alarms.add(
            "FreeableMemory",
            metric=self._dms_metric("FreeableMemory", instance, "Minimum"),
            threshold=limits.dms_freeable_memory_mib * 1024 * 1024,
            below=True,
            description=f"DMS {name}: under {limits.dms_freeable_memory_mib} MiB of memory free",
        )
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"dmsbus-{name}")
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="CDC latency (s)",
                left=[self.metrics["CDCLatencySource"], self.metrics["CDCLatencyTarget"]],
            ),
            cloudwatch.GraphWidget(
                title="Replication instance: free storage and memory (bytes)",
                left=[self.metrics["FreeStorageSpace"], self.metrics["FreeableMemory"]],
            ),
            cloudwatch.GraphWidget(
                title="Replication instance: CPU (%)", left=[self.metrics["CPUUtilization"]]
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms.alarms, width=24)
        )
        self.event_subscriptions: list[dms.CfnEventSubscription] = []
        if limits.topic_arn is None:
            return
        for source_type, source_id, categories in (
            ("replication-task", name, ["failure", "state change"]),
            ("replication-instance", name, ["failure", "low storage"]),
        ):
            subscription = dms.CfnEventSubscription(
                self,
                f"Events-{source_type}",
                sns_topic_arn=limits.topic_arn,
                source_type=source_type,
                source_ids=[source_id],
                event_categories=categories,
                enabled=True,
            )
            subscription.add_dependency(self.task if source_type == "replication-task" else self.instance)
            self.event_subscriptions.append(subscription)

    def _dms_metric(self, metric_name: str, dimensions: dict[str, str], statistic: str) -> cloudwatch.Metric:
        metric = cloudwatch.Metric(
            namespace="AWS/DMS",
            metric_name=metric_name,
            dimensions_map=dimensions,
            statistic=statistic,
            period=Duration.minutes(5),
        )
        self.metrics[metric_name] = metric
        return metric

    def _network(self, source: SourceConfig) -> tuple[ec2.IVpc, list[str]]:
        network = source.network
        if not network.create_vpc:
            assert network.vpc_id is not None  # the config model requires it
            vpc = ec2.Vpc.from_vpc_attributes(
                self, "Vpc", vpc_id=network.vpc_id, availability_zones=self.availability_zones
            )
            if network.dynamodb_endpoint == "create":
                # DMS >= 3.4.7 reaches DynamoDB from a private network through a VPC
                # endpoint only (CHAP_VPC_Endpoints); a gateway endpoint costs nothing.
                endpoint = ec2.CfnVPCEndpoint(
                    self,
                    "DynamoDbEndpoint",
                    vpc_id=network.vpc_id,
                    service_name=f"com.amazonaws.{self.region}.dynamodb",
                    vpc_endpoint_type="Gateway",
                    route_table_ids=list(network.route_table_ids),
                )
                self.network_resources.append(endpoint)
            return vpc, list(network.subnet_ids)
        # The config model admits create_vpc only with egress: nat, the one route a new VPC
        # has to a source outside it (its public address).
        assert network.egress == "nat"
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="nat", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=28),
                ec2.SubnetConfiguration(
                    name="replication", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=24
                ),
            ],
        )
        vpc.add_flow_log("FlowLog")
        # DMS reaches DynamoDB and Secrets Manager through endpoints, not the NAT gateway.
        vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)
        # Closed by default: only the replication instance's security group may reach it.
        self.secrets_endpoint = vpc.add_interface_endpoint(
            "SecretsManager", service=ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER, open=False
        )
        self.network_resources.append(vpc)
        return vpc, [subnet.subnet_id for subnet in vpc.private_subnets]

    def _secrets_manager_endpoint(self, source: SourceConfig) -> str | None:
        """The Secrets Manager endpoint DNS name DMS must use in a VPC without internet:
        "Set the endpoint extra connection attribute, secretsManagerEndpointOverride"
        (security_iam_secretsmanager)."""
        if self.secrets_endpoint is not None:
            # Each DNS entry is "<hosted zone id>:<dns name>"; the first is the regional name.
            first = Fn.select(0, self.secrets_endpoint.vpc_endpoint_dns_entries)
            return Fn.select(1, Fn.split(":", first))
        return source.network.secrets_manager_endpoint

    def _source_endpoint(self, name: str, source: SourceConfig) -> dms.CfnEndpoint:
        credentials = source.credentials
        secret = self.secret = (
            secretsmanager.Secret.from_secret_complete_arn(self, "Secret", credentials.secret)
            if credentials.is_arn
            else secretsmanager.Secret.from_secret_name_v2(self, "Secret", credentials.secret)
        )
        role = iam.Role(
            self,
            "SecretAccessRole",
            assumed_by=iam.ServicePrincipal(f"dms.{self.region}.amazonaws.com"),
            description=f"DMS {name} reads the source database's credentials",
        )
        # A secret under a customer-managed key: "kms:Decrypt", "kms:DescribeKey" on it
        # (security_iam_secretsmanager)
        self._grant_secret(role, kms_actions=["kms:Decrypt", "kms:DescribeKey"])
        # DMS takes host, port, user and password from the secret (it refuses both a secret
        # and clear-text connection values); the config's server and port document it.
        settings: dict[str, Any] = {
            "secretsManagerSecretId": secret.secret_arn,
            "secretsManagerAccessRoleArn": role.role_arn,
        }
        family = _SECRET_SETTINGS[source.engine]
        postgres = {**settings, **POSTGRES_SOURCE_SETTINGS}
        override = self._secrets_manager_endpoint(source)
        endpoint = dms.CfnEndpoint(
            self,
            "SourceEndpoint",
            endpoint_identifier=f"{name}-source",
            endpoint_type="source",
            engine_name=source.engine,
            database_name=source.database,
            ssl_mode="require",
            extra_connection_attributes=(
                Fn.join("", ["secretsManagerEndpointOverride=", override]) if override else None
            ),
            postgre_sql_settings=postgres if family == "postgres" else None,
            my_sql_settings=settings if family == "mysql" else None,
        )
        Tags.of(endpoint).add("dmsbus:server", f"{source.server}:{source.effective_port}")
        return endpoint

    def _grant_secret(self, role: iam.IRole, *, kms_actions: list[str]) -> None:
        """Read access to the source's secret: under a customer-managed key, ``kms_actions``
        on it, and only through Secrets Manager; a secret named in config is matched by its
        name and ARN suffix."""
        credentials = self.source.credentials
        self.secret.grant_read(role)
        if credentials.kms_key_arn is not None:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=kms_actions,
                    resources=[credentials.kms_key_arn],
                    conditions={
                        "StringEquals": {"kms:ViaService": f"secretsmanager.{self.region}.amazonaws.com"}
                    },
                )
            )
        if not credentials.is_arn:
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:{credentials.secret}-??????]",
                "A secret named in config: its ARN ends in a random six-character suffix.",
            )

    def _target_endpoint(self, name: str, bus: BusConfig, source: SourceConfig) -> dms.CfnEndpoint:
        role = iam.Role(
            self,
            "TargetRole",
            assumed_by=iam.ServicePrincipal("dms.amazonaws.com"),
            description=f"DMS {name} writes this source's DynamoDB tables, and only those",
        )
        tables = [
            self.format_arn(service="dynamodb", resource="table", resource_name=pattern)
            for pattern in (f"{bus.name}.{source.name}.*", "awsdms_*")
        ]
        role.add_to_policy(iam.PolicyStatement(actions=_DYNAMODB_TARGET_ACTIONS, resources=tables))
        role.add_to_policy(iam.PolicyStatement(actions=["dynamodb:ListTables"], resources=["*"]))
        for pattern in (f"{bus.name}.{source.name}.*", "awsdms_*"):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:dynamodb:<AWS::Region>:<AWS::AccountId>:table/{pattern}]",
                "DMS creates its target and control tables itself: only their name prefix is known.",
            )
        acknowledge(role, "AwsSolutions-IAM5[Resource::*]", "dynamodb:ListTables takes no resource.")
        return dms.CfnEndpoint(
            self,
            "TargetEndpoint",
            endpoint_identifier=f"{name}-target",
            endpoint_type="target",
            engine_name="dynamodb",
            dynamo_db_settings=dms.CfnEndpoint.DynamoDbSettingsProperty(
                service_access_role_arn=role.role_arn
            ),
        )
