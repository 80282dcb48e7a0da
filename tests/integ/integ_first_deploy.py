"""The first real deploy, as an integ-runner test (README "Deploying": ``make integ``).

It deploys a throwaway source (the smallest RDS for PostgreSQL, seeded when its stack
deploys), the bus, one source and the consumers as ``stacks/`` builds them from a config
made here, and a probe consumer recording what it receives; its assertions check that DMS
created the tables and that an insert, an update setting a column to NULL and a delete
reach the probe in order, and answer docs/dms.md's "Open questions for the first real
deploy" (where: docs/dms.md). ``make test`` compares its synthesized templates with the
snapshot beside this file, without an account (tests/integ/test_snapshot.py);
``make integ-snapshot`` writes that snapshot again.

integ-runner runs this file as a script: ``python tests/integ/integ_first_deploy.py``.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aws_cdk import App, CfnOutput, CustomResource, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import custom_resources as cr
from aws_cdk.integ_tests_alpha import ExpectedResult, IApiCall, IntegTest, Match
from constructs import Construct

from config.mappings import render_table_mappings
from config.model import (
    BusConfig,
    Config,
    Credentials,
    DiscoveryConfig,
    KinesisConfig,
    Network,
    Replication,
    SelectionConfig,
    SourceConfig,
    TableConfig,
)
from stacks.app import Stacks, build
from stacks.packaging import ARCHITECTURE, FUNCTIONS, RUNTIME, dependencies_layer

HERE = Path(__file__).resolve().parent
LAMBDAS = HERE / "lambdas"

BUS = "integ"
SOURCE = "legacy"
DATABASE = "legacy"
#: The RDS secret DMS reads: named, because the config names its source's secret
#: (CloudFormation deletes a secret without a recovery window, so a rerun can reuse it).
SECRET_NAME = "dmsbus-integ/legacy"
TABLES = ("orders", "samples", "lobs")
#: Functions the assertions invoke, named so that tests/integ/leftovers.py finds their logs.
CHECKER = "dmsbus-integ-checker"
SOURCE_SQL = "dmsbus-integ-source-sql"
#: Context key: ``existing`` when the account already has dms-vpc-role and
#: dms-cloudwatch-logs-role (one per account; the bus stack would fail creating them again).
DMS_ROLES_CONTEXT = "dmsbus-integ:dms-roles"
WAIT = {"total_timeout": Duration.minutes(30), "interval": Duration.seconds(30)}


def short_lived_logs(scope: Construct, id_: str) -> logs.LogGroup:
    """A function's log group that goes with its stack. (Not the checker's: Lambda's own
    log group outlives the stacks, with the answers in it.)"""
    return logs.LogGroup(
        scope, id_, retention=logs.RetentionDays.ONE_DAY, removal_policy=RemovalPolicy.DESTROY
    )


class ThrowawaySource(Stack):
    """The source database: a VPC without NAT (DynamoDB through a gateway endpoint,
    Secrets Manager through an interface endpoint), the smallest RDS for PostgreSQL with
    logical replication on, and the function that seeds it and changes it."""

    def __init__(self, scope: Construct, id_: str) -> None:
        super().__init__(scope, id_, description="dmsbus integ test: the throwaway source database")
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
        )
        # DMS 3.4.7 and later reach DynamoDB from a private subnet through an endpoint
        # (CHAP_VPC_Endpoints); DMS and the SQL function reach Secrets Manager likewise.
        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)
        self.secrets_endpoint = self.vpc.add_interface_endpoint(
            "SecretsManager", service=ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER
        )
        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_16)
        self.database = rds.DatabaseInstance(
            self,
            "Database",
            engine=engine,
            instance_type=ec2.InstanceType.of(ec2.InstanceClass.BURSTABLE4_GRAVITON, ec2.InstanceSize.MICRO),
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            multi_az=False,
            allocated_storage=20,
            storage_encrypted=True,
            database_name=DATABASE,
            credentials=rds.Credentials.from_generated_secret("dmsbus", secret_name=SECRET_NAME),
            # CHAP_Source.PostgreSQL (RDS): "set the rds.logical_replication parameter in
            # your DB parameter group to 1". A zone other than UTC shows whether DMS writes
            # a timestamptz in UTC (docs/dms.md, open question 6).
            parameter_group=rds.ParameterGroup(
                self,
                "Parameters",
                engine=engine,
                parameters={"rds.logical_replication": "1", "timezone": "Asia/Kolkata"},
            ),
            deletion_protection=False,
            delete_automated_backups=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.database.connections.allow_default_port_from(ec2.Peer.ipv4(self.vpc.vpc_cidr_block))
        assert self.database.secret is not None  # from_generated_secret
        self.secret = self.database.secret
        self.sql = lambda_.Function(
            self,
            "SourceSql",
            function_name=SOURCE_SQL,
            code=lambda_.Code.from_asset(str(LAMBDAS / "source_sql"), exclude=["__pycache__"]),
            handler="handler.handler",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            layers=[dependencies_layer(self, "Dependencies")],  # psycopg
            timeout=Duration.minutes(5),
            memory_size=256,
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            environment={"SECRET_ARN": self.secret.secret_arn, "DATABASE": DATABASE},
            log_group=short_lived_logs(self, "SourceSqlLogs"),
        )
        self.secret.grant_read(self.sql)
        # Seeded before the source stack exists, so DMS's first start full-loads it.
        seed = CustomResource(
            self,
            "Seed",
            service_token=cr.Provider(self, "SeedProvider", on_event_handler=self.sql).service_token,
            properties={"statements": "seed"},
        )
        seed.node.add_dependency(self.database)

    def network(self) -> Network:
        """The source's ``network``: this VPC's ids as CloudFormation references.

        The config model checks ``vpc-...``/``subnet-...`` ids and a VPC endpoint's DNS name
        with patterns that a token (known at deploy time only) cannot match, so this one
        model is built without validation (pydantic's ``model_construct``); what it holds is
        what the validated fields would hold once deployed."""
        # "Each DNS entry is <hosted zone id>:<dns name>; the first is the regional name."
        entry = Fn.select(0, self.secrets_endpoint.vpc_endpoint_dns_entries)
        fields: dict[str, Any] = {
            "create_vpc": False,
            "vpc_id": self.vpc.vpc_id,
            "subnet_ids": [subnet.subnet_id for subnet in self.vpc.isolated_subnets],
            "secrets_manager_endpoint": Fn.select(1, Fn.split(":", entry)),
        }
        if "dynamodb_endpoint" in Network.model_fields:
            fields["dynamodb_endpoint"] = "existing"  # the gateway endpoint above
        return Network.model_construct(**fields)


def config(source_db: ThrowawaySource, *, dms_roles: str) -> Config:
    """A bus of config defaults but the cheapest stream and a one-minute discovery sweep (no
    CloudTrail trail is assumed), and one PostgreSQL source on the throwaway database.
    ``dms_roles``: ``existing`` when the account has DMS's roles already (tests/integ/run.py
    looks before a deploy)."""
    bus = BusConfig(
        name=BUS,
        dms_vpc_role=dms_roles,
        dms_cloudwatch_logs_role=dms_roles,
        kinesis=KinesisConfig(mode="provisioned", shards=1),
        discovery=DiscoveryConfig(sweep_minutes=1),
    )
    source = SourceConfig(
        name=SOURCE,
        engine="postgres",
        server=source_db.database.db_instance_endpoint_address,
        port=5432,
        database=DATABASE,
        credentials=Credentials(secret=SECRET_NAME),
        network=source_db.network(),
        replication=Replication(instance_class="dms.t3.micro", allocated_storage_gb=20),
        tables=[TableConfig(schema="public", table=table) for table in TABLES],
    )
    return Config(bus=bus, sources=[source])


def probe_code() -> tuple[lambda_.Code, Path]:
    """The probe's asset: its handler beside the consumer SDK (``functions/dmsbus``), as
    every consumer's asset holds it; staged in a folder removed after synth."""
    staged = Path(tempfile.mkdtemp(prefix="dmsbus-integ-probe-"))
    shutil.copytree(FUNCTIONS / "dmsbus", staged / "dmsbus", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(LAMBDAS / "probe" / "handler.py", staged / "probe.py")
    return lambda_.Code.from_asset(str(staged)), staged


class Probe(Stack):
    """The probe consumer (every event from the bus stream into a table) and the checker
    the assertions invoke."""

    def __init__(self, scope: Construct, id_: str, *, stacks: Stacks, code: lambda_.Code) -> None:
        super().__init__(scope, id_, description="dmsbus integ test: the probe consumer and the checker")
        self.table = dynamodb.Table(
            self,
            "Events",
            partition_key=dynamodb.Attribute(name="row", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="position", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            removal_policy=RemovalPolicy.DESTROY,
        )
        layer = dependencies_layer(self, "Dependencies")
        self.probe = lambda_.Function(
            self,
            "Probe",
            code=code,
            handler="probe.handler",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            layers=[layer],
            timeout=Duration.minutes(1),
            memory_size=256,
            environment={"PROBE_TABLE": self.table.table_name},
            log_group=short_lived_logs(self, "ProbeLogs"),
        )
        self.table.grant_write_data(self.probe)
        self.probe.add_event_source(
            event_sources.KinesisEventSource(
                stacks.bus.stream,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=100,
                retry_attempts=10,
                bisect_batch_on_error=True,
                report_batch_item_failures=True,
            )
        )
        source = stacks.sources[SOURCE]
        prefix = f"{BUS}.{SOURCE}.public"
        self.checker = lambda_.Function(
            self,
            "Checker",
            function_name=CHECKER,
            code=lambda_.Code.from_asset(str(LAMBDAS / "checker"), exclude=["__pycache__"]),
            handler="handler.handler",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            timeout=Duration.minutes(1),
            memory_size=256,
            environment={
                "PROBE_TABLE": self.table.table_name,
                "TABLE_PREFIX": prefix,
                "TASK_ARN": source.task.ref,
            },
        )
        self.table.grant_read_write_data(self.checker)
        self.checker.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:GetItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:Scan",
                    "dynamodb:DescribeTable",
                ],
                resources=[
                    self.format_arn(service="dynamodb", resource="table", resource_name=f"{prefix}.*")
                ],
            )
        )
        self.checker.add_to_role_policy(
            iam.PolicyStatement(actions=["dms:DescribeReplicationTasks"], resources=["*"])
        )
        self.checker.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dms:StopReplicationTask", "dms:ModifyReplicationTask", "dms:StartReplicationTask"],
                resources=[source.task.ref],
            )
        )


def payload(value: dict[str, Any]) -> Any:
    """What an assertion expects of an invoked function's JSON result."""
    return ExpectedResult.object_like({"Payload": Match.serialized_json(Match.object_like(value))})


def assertions(integ: IntegTest, source_db: ThrowawaySource, probe: Probe, source: SourceConfig) -> None:
    """The checks and questions, one after the other (docs/dms.md says which answers what)."""
    checks = integ.assertions
    steps: list[IApiCall] = []

    def invoke(function: lambda_.IFunction, body: dict[str, Any]) -> IApiCall:
        call = checks.invoke_function(function_name=function.function_name, payload=json.dumps(body))
        steps.append(call)
        return call

    def check(body: dict[str, Any], expected: dict[str, Any], *, wait: bool = True) -> IApiCall:
        call = invoke(probe.checker, body).expect(payload(expected))
        if wait:
            call.wait_for_assertions(**WAIT)
        return call

    # DMS created its tables, and discovery gave each a stream.
    for table in TABLES:
        described = checks.aws_api_call(
            "DynamoDB", "describeTable", {"TableName": f"{BUS}.{SOURCE}.public.{table}"}
        ).expect(
            ExpectedResult.object_like(
                {
                    "Table": Match.object_like(
                        {
                            "TableStatus": "ACTIVE",
                            "StreamSpecification": Match.object_like({"StreamEnabled": True}),
                        }
                    )
                }
            )
        )
        described.wait_for_assertions(**WAIT)
        steps.append(described)
    # The full load reached the probe (as backfill `r` events, or `c` once the stream was on).
    seeded = [("orders", 1), ("orders", 2), ("orders", 3), ("samples", 1), ("lobs", 10)]
    check({"step": "seen", "rows": [{"table": t, "key": {"id": i}} for t, i in seeded]}, {"missing": []})
    check({"step": "mark"}, {"marked": True}, wait=False)
    invoke(source_db.sql, {"step": "changes"}).expect(payload({"done": True}))
    # One row's insert, its update to NULL and its delete, in order.
    check({"step": "row", "table": "orders", "key": {"id": 4}}, {"ops": ["c", "u", "d"], "cleared": ["note"]})
    answers: dict[str, IApiCall] = {}
    for question in ("null", "marker", "forms"):
        answers[question] = check({"step": question}, {"settled": True})
    # Whether resume-processing loads a table only a new wildcard selection matches: the task
    # is stopped, its mappings get `public.late_%`, and it is resumed.
    widened = source.model_copy(update={"selections": [SelectionConfig(schema="public", table="late_%")]})
    check({"step": "wildcard_stop"}, {}, wait=False)
    check({"step": "task"}, {"status": "stopped"})
    check(
        {"step": "wildcard_modify", "mappings": render_table_mappings(BUS, widened)},
        {"modified": True},
        wait=False,
    )
    check({"step": "task"}, {"resting": True})
    check({"step": "wildcard_resume"}, {"resumed": True}, wait=False)
    check({"step": "task"}, {"status": "running"})
    answers["wildcard"] = check({"step": "wildcard"}, {"settled": True})
    # LOBs last: a value DMS cannot write may fail the task.
    invoke(source_db.sql, {"step": "lobs"}).expect(payload({"done": True}))
    answers["lobs"] = check({"step": "lobs"}, {"uncut": True})
    for earlier, later in itertools.pairwise(steps):
        later.node.add_dependency(earlier)
    # The answers where a person reads them: the assertion stack's outputs (cdk prints them;
    # tests/integ/run.py writes them to first-deploy-answers.json) and the checker's log.
    # The provider parses a JSON payload and flattens it: an output names one field.
    stack = Stack.of(steps[0])
    fields = {question: ["answer"] for question in answers}
    fields["wildcard"] += ["status_after_modify", "start_date_changed_on_resume"]
    for question, call in answers.items():
        final = checks.invoke_function(
            function_name=probe.checker.function_name, payload=json.dumps({"step": question})
        )
        final.node.add_dependency(call)
        for field in fields[question]:
            name = "".join(part.title() for part in f"{question}_{field}".split("_"))
            CfnOutput(stack, f"Answer{name}", value=final.get_att_string(f"Payload.{field}"))


def main() -> None:
    app = App()
    source_db = ThrowawaySource(app, "dmsbus-integ-source-db")
    made = config(source_db, dms_roles=app.node.try_get_context(DMS_ROLES_CONTEXT) or "create")
    # cdk-nag checks the real app (tests/infrastructure); this one is a test fixture.
    stacks = build(app, made, nag=False)
    code, staged = probe_code()
    try:
        probe = Probe(app, "dmsbus-integ-probe", stacks=stacks, code=code)
        integ = IntegTest(
            app,
            "FirstDeploy",
            test_cases=[source_db, stacks.bus, *stacks.sources.values(), stacks.consumers, probe],
            # Nothing to update from: a run deploys from scratch (and the snapshot keeps no
            # assets, so the update workflow could not deploy it).
            stack_update_workflow=False,
        )
        assertions(integ, source_db, probe, made.sources[0])
        app.synth()
    finally:
        shutil.rmtree(staged, ignore_errors=True)


if __name__ == "__main__":
    main()
