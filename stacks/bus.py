"""The bus stack: the Kinesis stream, the glue, discovery, dead letters, the failure
bucket, alarms, dashboard."""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from config.model import BusConfig
from config.plan import DeploymentPlan, Grant
from dmsbus import metrics as emitted
from dmsbus.names import DMS_EXCEPTIONS_TABLE
from dmsbus.schemas import ANNOUNCED
from stacks.building_blocks import (
    Alarms,
    BusFunction,
    DeadLetterQueue,
    FailureBucket,
    acknowledge_kms_grant,
    acknowledge_stream_invoked,
    allow_eventbridge_dead_letters,
    bus_table,
    planned_function_with_dead_letters,
)
from stacks.nag import acknowledge
from stacks.packaging import dependencies_layer

#: Actions of a grant that take no resource (cdk-nag's acknowledgement names them).
UNSCOPED: dict[str, tuple[str, ...]] = {
    "table-streams:read": ("dynamodb:ListStreams",),
    "tables:manage": ("dynamodb:ListTables", "cloudwatch:GetMetricData"),
    "glue-mappings:manage": ("lambda:ListEventSourceMappings (the changes are conditioned on the glue)",),
}

#: The roles DMS needs in every account (security-iam, CHAP_Security.APIRole): to place
#: replication instances in a VPC, and to write task logs to CloudWatch Logs. Their names
#: and managed policies are fixed by DMS.
DMS_ACCOUNT_ROLES = {
    "DmsVpcRole": ("dms-vpc-role", "service-role/AmazonDMSVPCManagementRole"),
    "DmsCloudWatchLogsRole": ("dms-cloudwatch-logs-role", "service-role/AmazonDMSCloudWatchLogsRole"),
}


class BusStack(Stack):
    def __init__(self, scope: Construct, id_: str, *, plan: DeploymentPlan, **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        bus = plan.bus
        self.bus = bus
        self.plan = plan
        #: The plan's references, resolved to this stack's tokens.
        self.values: dict[str, str] = {}
        self.queues: dict[str, sqs.IQueue] = {}
        self.key: kms.IKey = (
            kms.Key.from_key_arn(self, "Key", bus.kinesis.kms_key_arn)
            if bus.kinesis.kms_key_arn
            else kms.Key(
                self,
                "Key",
                alias=f"alias/dmsbus-{bus.name}",
                description=f"dmsbus {bus.name}: the change stream and its dead-letter queues",
                enable_key_rotation=True,
            )
        )
        provisioned = bus.kinesis.mode == "provisioned"
        self.stream = kinesis.Stream(
            self,
            "Stream",
            stream_name=plan.stream.name,
            encryption=kinesis.StreamEncryption.KMS,
            encryption_key=self.key,
            stream_mode=kinesis.StreamMode.PROVISIONED if provisioned else kinesis.StreamMode.ON_DEMAND,
            shard_count=bus.kinesis.shards if provisioned else None,
            retention_period=Duration.hours(bus.kinesis.retention_hours),
        )
        acknowledge(
            self.stream,
            "AwsSolutions-KDS3",
            "The stream uses a customer-managed key (rotation on, or the one config names): stricter than aws/kinesis.",
        )
        self.values[plan.stream.name_ref] = self.stream.stream_name
        self.values[plan.stream.arn] = self.stream.stream_arn
        self.layer = dependencies_layer(self, "Dependencies")
        self.schema_table = None
        if plan.schema_table is not None:
            self.schema_table = bus_table(self, "Schemas", plan=plan.schema_table)
            self.values[plan.schema_table.name_ref] = self.schema_table.table_name
        self.alarms = Alarms(self, "Alarms", topic_arn=bus.alarms.topic_arn)
        self.failures = FailureBucket(self, "Failures", bus=bus, key=self.key)
        self.values[plan.failures.arn] = self.failures.bucket_arn
        self.values[plan.failures.name] = self.failures.bucket_name
        self.alarms.add(
            "FailedBatches",
            metric=self.failures.metric_failed_batches(),
            threshold=bus.alarms.failed_batches,
            description="A batch was given up on and kept in the failure bucket: `dmsbus redrive` it",
        )
        for metric, what, threshold in (
            (
                self.stream.metric_write_provisioned_throughput_exceeded,
                "Writes to",
                bus.alarms.kinesis_write_throttled,
            ),
            (
                self.stream.metric_read_provisioned_throughput_exceeded,
                "Reads from",
                bus.alarms.kinesis_read_throttled,
            ),
        ):
            self.alarms.add(
                f"Kinesis{what.split()[0]}Throttled",
                metric=metric(period=Duration.minutes(5), statistic="Sum"),
                threshold=threshold,
                description=f"{what} the bus stream are throttled: more shards, or fewer readers",
            )
        self.dead_letters: dict[str, DeadLetterQueue] = {}
        self.bus_functions: dict[str, BusFunction] = {}
        functions = self._functions()
        self.glue, self.discovery = functions["glue"], functions["discovery"]
        self.glue_dlq, self.discovery_dlq = self.dead_letters["glue"], self.dead_letters["discovery"]
        self._glue(bus)
        self._discovery(bus)
        wanted = {"DmsVpcRole": bus.dms_vpc_role, "DmsCloudWatchLogsRole": bus.dms_cloudwatch_logs_role}
        self.dms_roles: dict[str, iam.Role] = {}
        for construct_id, (role_name, policy) in DMS_ACCOUNT_ROLES.items():
            if wanted[construct_id] != "create":
                continue
            role = iam.Role(
                self,
                construct_id,
                role_name=role_name,
                assumed_by=iam.ServicePrincipal("dms.amazonaws.com"),
                managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(policy)],
            )
            acknowledge(
                role,
                f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                f"DMS requires the account's {role_name} with exactly this AWS managed policy.",
            )
            self.dms_roles[role_name] = role
        self.dashboard = self._dashboard(bus)

    def _functions(self) -> dict[str, BusFunction]:
        """The plan's bus functions (all but the consumers): each with its dead-letter queue
        and its grants. What is particular to one (its triggers, alarms) is wired after."""
        functions: dict[str, BusFunction] = {}
        for planned in self.plan.functions:
            if planned.kind == "consumer" or planned.source is not None:
                continue  # the consumers' stack's, a source's stack's
            unscoped = [action for grant in planned.grants for action in UNSCOPED.get(grant.access, ())]
            bus_function, dead_letters = planned_function_with_dead_letters(
                self,
                plan=planned,
                key=self.key,
                values=self.values,
                layer=self.layer,
                unscoped_actions=", ".join([*unscoped, "X-Ray's trace actions"]),
            )
            self.values[planned.dead_letters.url] = dead_letters.queue.queue_url
            self.queues[planned.dead_letters.name] = dead_letters.queue
            self.dead_letters[planned.kind] = dead_letters
            self.values[planned.name_ref] = bus_function.function.function_name
            functions[planned.kind] = self.bus_functions[planned.name] = bus_function
        for planned in self.plan.functions:
            if planned.name in self.bus_functions:
                for grant in planned.grants:
                    self._grant(self.bus_functions[planned.name].function, grant)
                acknowledge_kms_grant(self.bus_functions[planned.name].role)
        return functions

    def _glue(self, bus: BusConfig) -> None:
        function = self.glue.function
        # Poison records go to the queue (the code sends them); failed batches to the
        # failure bucket (the event source mapping, which discovery creates, writes with
        # the function's role).
        acknowledge_stream_invoked(function)
        self.alarms.stream_function(
            "Glue", function, errors=bus.alarms.function_errors, iterator_age_ms=bus.alarms.iterator_age_ms
        )
        self.alarms.queue_depth("GlueDeadLetterDepth", self.glue_dlq.queue, messages=bus.alarms.dlq_messages)

    def _grant(self, function: lambda_.IFunction, grant: Grant) -> None:
        """One of the plan's grants on the bus's resources."""
        match grant.access:
            case "stream:write" if grant.resource == self.plan.stream.name:
                self.stream.grant_write(function)
            case "queue:send":
                self.queues[grant.resource].grant_send_messages(function)
            case "failures:put" if grant.resource == self.plan.failures.key:
                self.failures.grant_put(function)
            case "table-streams:read":
                # Event source mappings read the streams of this bus's tables only.
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=[
                            "dynamodb:DescribeStream",
                            "dynamodb:GetRecords",
                            "dynamodb:GetShardIterator",
                        ],
                        resources=[self._table_arn(f"{grant.resource}.*/stream/*")],
                    )
                )
                function.add_to_role_policy(
                    iam.PolicyStatement(actions=["dynamodb:ListStreams"], resources=["*"])
                )
            case "schemas:read" if self.schema_table is not None:
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["dynamodb:Query", "dynamodb:GetItem"],
                        resources=[self.schema_table.table_arn],
                    )
                )
            case "schemas:announce" if self.schema_table is not None:
                # UpdateItem of the announcement's attribute and no other (the key attributes
                # are named by every request): "Using IAM policy conditions for fine-grained
                # access control", specifying-conditions, FGAC_DDB.ConditionKeys
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["dynamodb:UpdateItem"],
                        resources=[self.schema_table.table_arn],
                        conditions={
                            "ForAllValues:StringEquals": {
                                "dynamodb:Attributes": ["table", "version", ANNOUNCED]
                            }
                        },
                    )
                )
            case "tables:manage":
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=[
                            "dynamodb:DescribeTable",
                            "dynamodb:UpdateTable",
                            "dynamodb:ListTagsOfResource",
                            "dynamodb:TagResource",
                            "dynamodb:Scan",
                        ],
                        resources=[self._table_arn(f"{grant.resource}.*")],
                    )
                )
                # DMS's exceptions table: made on-demand, nothing else (discovery's core)
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["dynamodb:DescribeTable", "dynamodb:UpdateTable"],
                        resources=[self._table_arn(DMS_EXCEPTIONS_TABLE)],
                    )
                )
                # ListTables and GetMetricData (a sweep counts the bus tables' throttles)
                # take no resource.
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["dynamodb:ListTables", "cloudwatch:GetMetricData"], resources=["*"]
                    )
                )
            case "glue-mappings:manage" if grant.resource in self.bus_functions:
                # Listing takes no resource; the changes are limited to the glue's mappings.
                function.add_to_role_policy(
                    iam.PolicyStatement(actions=["lambda:ListEventSourceMappings"], resources=["*"])
                )
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=[
                            "lambda:CreateEventSourceMapping",
                            "lambda:UpdateEventSourceMapping",
                            "lambda:DeleteEventSourceMapping",
                        ],
                        resources=["*"],
                        conditions={
                            "StringEquals": {
                                "lambda:FunctionArn": self.bus_functions[grant.resource].function.function_arn
                            }
                        },
                    )
                )
            case "schema-function:invoke":
                # A source's schema function, in the source's stack (deployed after this
                # one): named, so no stack imports it; asked asynchronously (Invoke, Event).
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["lambda:InvokeFunction"],
                        resources=[
                            self.format_arn(
                                service="lambda",
                                resource="function",
                                resource_name=grant.resource,
                                arn_format=ArnFormat.COLON_RESOURCE_NAME,
                            )
                        ],
                    )
                )
            case _:
                raise ValueError(f"the bus stack cannot grant {grant}")

    def _discovery(self, bus: BusConfig) -> None:
        function = self.discovery.function
        acknowledge(
            self.discovery.role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:dynamodb:<AWS::Region>:<AWS::AccountId>:table/{bus.name}.*]",
            "Discovery manages the tables DMS creates for this bus; their names are only known by the bus prefix.",
        )
        acknowledge(
            self.glue.role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:dynamodb:<AWS::Region>:<AWS::AccountId>:table/{bus.name}.*/stream/*]",
            "The glue reads the streams of this bus's tables, created by DMS under the bus prefix.",
        )
        created = events.Rule(
            self,
            "TableCreated",
            description=f"A DynamoDB table of bus {bus.name} was created (CloudTrail): discover it now",
            event_pattern=events.EventPattern(
                source=["aws.dynamodb"],
                detail_type=["AWS API Call via CloudTrail"],
                detail={
                    "eventSource": ["dynamodb.amazonaws.com"],
                    "eventName": ["CreateTable"],
                    "requestParameters": {"tableName": [{"prefix": f"{bus.name}."}]},
                },
            ),
        )
        sweep = events.Rule(
            self,
            "Sweep",
            description=f"Sweep every table of bus {bus.name}: nothing is missed if an event is",
            schedule=events.Schedule.rate(Duration.minutes(bus.discovery.sweep_minutes)),
        )
        allow_eventbridge_dead_letters(self.key)
        for rule in (created, sweep):
            rule.add_target(
                targets.LambdaFunction(
                    function,
                    dead_letter_queue=self.discovery_dlq.queue,
                    retry_attempts=2,
                    max_event_age=Duration.hours(1),
                )
            )
        self.alarms.add(
            "DiscoveryErrors",
            metric=function.metric_errors(period=Duration.minutes(15), statistic="Sum"),
            threshold=bus.alarms.function_errors,
            description="Discovery failed: a new table may be without stream, glue or backfill",
        )
        self.alarms.queue_depth(
            "DiscoveryDeadLetterDepth", self.discovery_dlq.queue, messages=bus.alarms.dlq_messages
        )
        # DMS creates the bus tables, so no alarm here can name them: each sweep counts their
        # throttle events over its period and emits the count.
        # Each data point is already a sum over one sweep period: take the largest, so a sweep
        # by hand in the same period does not count the same throttles twice.
        self.table_throttles = cloudwatch.Metric(
            namespace=emitted.NAMESPACE,
            metric_name=emitted.TABLE_THROTTLE_EVENTS,
            dimensions_map={emitted.SERVICE_DIMENSION: emitted.DISCOVERY},
            statistic="Maximum",
            period=Duration.minutes(bus.discovery.sweep_minutes),
        )
        self.alarms.add(
            "TableThrottles",
            metric=self.table_throttles,
            threshold=bus.alarms.dynamodb_throttle_events,
            description="Reads or writes of the bus tables (DMS's writes, the streams' tables) are throttled",
        )
        if bus.glue.typed:
            self._untyped_alarm(bus)

    def _untyped_alarm(self, bus: BusConfig) -> None:
        """A typed bus's events that went out untyped: the glue's and discovery's backfill's,
        each function's name its service dimension (dmsbus.metrics.emit_untyped)."""
        period = Duration.minutes(5)
        untyped = {
            f"{who}Untyped": cloudwatch.Metric(
                namespace=emitted.NAMESPACE,
                metric_name=emitted.UNTYPED_EVENTS,
                dimensions_map={emitted.SERVICE_DIMENSION: function.name},
                statistic="Sum",
                period=period,
            )
            for who, function in (("glue", self.plan.glue), ("discovery", self.plan.discovery))
        }
        self.untyped_events = cloudwatch.MathExpression(
            expression="FILL(glueUntyped, 0) + FILL(discoveryUntyped, 0)",
            using_metrics=untyped,
            label="Untyped events",
            period=period,
        )
        self.alarms.add(
            "UntypedEvents",
            metric=self.untyped_events,
            threshold=bus.alarms.untyped_events,
            description=(
                "Events of a typed bus went out untyped: the source's catalog could not be read within "
                "glue.typed_wait_seconds (the schema function's logs say why), or an image did not fit it"
            ),
        )

    def _table_arn(self, name: str) -> str:
        return self.format_arn(service="dynamodb", resource="table", resource_name=name)

    def _dashboard(self, bus: BusConfig) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"dmsbus-{bus.name}")
        period = Duration.minutes(1)
        changes = cloudwatch.Metric(
            namespace=emitted.NAMESPACE,
            metric_name=emitted.CHANGES,
            dimensions_map={emitted.SERVICE_DIMENSION: emitted.GLUE},
            statistic="Sum",
            period=period,
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Changes put on the bus",
                left=[changes, self.stream.metric_incoming_records(period=period, statistic="Sum")],
            ),
            cloudwatch.GraphWidget(
                title="Lag (ms)",
                left=[
                    self.glue.function.metric("IteratorAge", period=period, statistic="Maximum"),
                    self.stream.metric_get_records_iterator_age_milliseconds(
                        period=period, statistic="Maximum"
                    ),
                ],
            ),
            cloudwatch.GraphWidget(
                title="Errors",
                left=[
                    self.glue.function.metric_errors(period=period),
                    self.discovery.function.metric_errors(period=period),
                ],
            ),
            cloudwatch.GraphWidget(
                title="Dead letters and failed batches",
                left=[
                    self.glue_dlq.queue.metric_approximate_number_of_messages_visible(period=period),
                    self.discovery_dlq.queue.metric_approximate_number_of_messages_visible(period=period),
                    self.failures.metric_failed_batches(),
                ],
            ),
            cloudwatch.GraphWidget(
                title="Throttles",
                left=[
                    self.stream.metric_write_provisioned_throughput_exceeded(period=period, statistic="Sum"),
                    self.stream.metric_read_provisioned_throughput_exceeded(period=period, statistic="Sum"),
                    self.table_throttles,
                ],
            ),
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms.alarms, width=24),
        )
        return dashboard
