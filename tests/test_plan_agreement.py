"""The stacks and local mode render one deployment plan (config/plan.py). Built from the
sample config, the synthesized templates and a local bus on a moto server are compared
with the plan and with each other: every function (handler, memory, timeout, runtime,
concurrency), every environment variable, every event source mapping setting.

A reference in the plan (a queue's URL, the stream's name) is checked for what it points
at: in a template, the resource it names; locally, the moto resource its value is."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from config.functions import failures_bucket_name
from config.loader import load_config
from config.plan import DeploymentPlan, FunctionPlan, Ref, deployment_plan
from local.aws import LocalAws
from local.bus import LocalBus
from stacks.packaging import ARCHITECTURE, RUNTIME
from tests.infrastructure.conftest import REPO, Synthesized, synthesize
from tests.plans import typed_bus

_SAMPLE = load_config(REPO / "config")
#: The sample config with typed events on: every kind of function and resource (the sample
#: itself is the snapshots' to guard).
CONFIG = _SAMPLE.model_copy(update={"bus": typed_bus(_SAMPLE.bus)})
PLAN = deployment_plan(CONFIG.bus, CONFIG.sources)
#: CreateEventSourceMapping's settings, as CloudFormation and Lambda's API both name them.
MAPPING_SETTINGS = (
    "StartingPosition",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "ParallelizationFactor",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "FunctionResponseTypes",
)


@dataclass
class Deployed:
    """One function as a renderer deployed it, references written as the plan's."""

    function: dict[str, Any]
    environment: dict[str, str]
    mapping: dict[str, Any] | None


def planned(function: FunctionPlan) -> Deployed:
    mapping = None
    if function.mapping is not None and function.mapping.source == "bus-stream":
        request = function.mapping.request(
            function_name=function.name, stream_arn=PLAN.stream.arn, on_failure=function.mapping.on_failure
        )
        mapping = {
            **{key: request[key] for key in MAPPING_SETTINGS},
            "EventSourceArn": request["EventSourceArn"],
            "OnFailure": request["DestinationConfig"]["OnFailure"]["Destination"],
        }
    return Deployed(
        function={
            "Handler": function.handler,
            "MemorySize": function.memory_mb,
            "Timeout": function.timeout_seconds,
            "Runtime": RUNTIME.name,
            "Architectures": [ARCHITECTURE.name],
            "ReservedConcurrentExecutions": function.reserved_concurrency,
            "DeadLetter": function.dead_letters.arn if function.asynchronous_dead_letters else None,
        },
        environment=dict(function.environment),
        mapping=mapping,
    )


# ---- the stacks ------------------------------------------------------------------------------


class TemplateReader:
    """Names what a template's value points at, in the plan's words."""

    def __init__(self, templates: Mapping[str, Template], plan: DeploymentPlan) -> None:
        self.resources: dict[str, dict[str, Any]] = {}
        self.exports: dict[str, Any] = {}
        for template in templates.values():
            body = template.to_json()
            self.resources.update(body["Resources"])
            for output in body.get("Outputs", {}).values():
                if "Export" in output:
                    self.exports[output["Export"]["Name"]] = output["Value"]
        failures = failures_bucket_name(plan.bus, account="<AWS::AccountId>", region="<AWS::Region>")
        self.failures_arn = f"arn:<AWS::Partition>:s3:::{failures}"

    def functions(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for logical_id, resource in self.resources.items():
            if resource["Type"] == "AWS::Lambda::Function":
                yield logical_id, resource["Properties"]

    def points_at(self, value: Any, ref: Ref, owner: str) -> bool:
        """Whether ``value`` is ``ref`` (``owner``: the function whose it is)."""
        if isinstance(value, dict) and "Fn::ImportValue" in value:
            return self.points_at(self.exports[value["Fn::ImportValue"]], ref, owner)
        if isinstance(value, dict) and "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            text = separator.join(
                f"<{part['Ref']}>"
                if isinstance(part, dict) and part.get("Ref", "").startswith("AWS::")
                else part
                for part in parts
            )
            return ref == PLAN.failures.arn and text == self.failures_arn
        if isinstance(value, dict) and "Ref" in value:
            logical_id = value["Ref"]
            # What CloudFormation's Ref gives, by resource type
            attribute = "url" if self.resources[logical_id]["Type"] == "AWS::SQS::Queue" else "name"
        elif isinstance(value, dict) and "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == "Arn":
            logical_id, attribute = value["Fn::GetAtt"][0], "arn"
        else:
            return False
        if ref.attribute != attribute:
            return False
        resource = self.resources[logical_id]
        kind, properties = resource["Type"], resource["Properties"]
        if kind == "AWS::SQS::Queue":
            return properties["QueueName"] == ref.resource
        if kind == "AWS::Kinesis::Stream":
            return properties["Name"] == ref.resource
        if kind == "AWS::Lambda::Function":
            return properties["FunctionName"] == ref.resource
        if kind == "AWS::DynamoDB::Table":
            return properties["TableName"] == ref.resource
        if kind == "AWS::S3::Bucket":
            # CloudFormation names a consumer's bucket: it must be the one of that consumer.
            consumer = PLAN.function(owner)
            construct = re.sub(
                r"[^A-Za-z0-9]", "", f"Consumer-{consumer.name.removeprefix(PLAN.bus.name + '-')}"
            )
            return (
                consumer.bucket is not None
                and ref == consumer.bucket.name
                and logical_id.startswith(construct)
            )
        return False

    def written(self, value: Any, planned_value: str, owner: str) -> Any:
        """``value`` as the plan writes it, when it points where the plan's reference does."""
        if isinstance(planned_value, Ref) and self.points_at(value, planned_value, owner):
            return planned_value
        if isinstance(planned_value, Ref) and value == planned_value.resource and self.named(planned_value):
            return planned_value  # a named resource of another stack, by its name: no import
        return value

    def named(self, ref: Ref) -> bool:
        """Whether ``ref`` is the name of a table some template creates under that name."""
        return ref.attribute == "name" and any(
            resource["Type"] == "AWS::DynamoDB::Table"
            and resource["Properties"].get("TableName") == ref.resource
            for resource in self.resources.values()
        )


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(CONFIG, tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="module")
def stacks(synthesized: Synthesized) -> dict[str, Deployed]:
    reader = TemplateReader(
        {
            "bus": synthesized.template(synthesized.stacks.bus),
            "consumers": synthesized.template(synthesized.stacks.consumers),
            **{name: synthesized.template(stack) for name, stack in synthesized.stacks.sources.items()},
        },
        PLAN,
    )
    deployed: dict[str, Deployed] = {}
    by_logical_id: dict[str, str] = {}
    for logical_id, properties in reader.functions():
        name = properties.get("FunctionName")
        if not isinstance(name, str) or name not in {f.name for f in PLAN.functions}:
            continue  # CDK's own (the task lifecycle's provider framework)
        by_logical_id[logical_id] = name
        plan = PLAN.function(name)
        variables = properties["Environment"]["Variables"]
        deployed[name] = Deployed(
            function={
                "Handler": properties["Handler"],
                "MemorySize": properties["MemorySize"],
                "Timeout": properties["Timeout"],
                "Runtime": properties["Runtime"],
                "Architectures": properties["Architectures"],
                "ReservedConcurrentExecutions": properties.get("ReservedConcurrentExecutions"),
                "DeadLetter": reader.written(
                    properties.get("DeadLetterConfig", {}).get("TargetArn"), plan.dead_letters.arn, name
                ),
            },
            environment={
                key: reader.written(value, plan.environment.get(key, ""), name)
                for key, value in variables.items()
            },
            mapping=None,
        )
    for resource in reader.resources.values():
        if resource["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        properties = resource["Properties"]
        name = by_logical_id[properties["FunctionName"]["Ref"]]
        deployed[name].mapping = {
            **{key: properties.get(key) for key in MAPPING_SETTINGS},
            "EventSourceArn": reader.written(properties["EventSourceArn"], PLAN.stream.arn, name),
            "OnFailure": reader.written(
                properties["DestinationConfig"]["OnFailure"]["Destination"], PLAN.failures.arn, name
            ),
        }
    return deployed


# ---- local mode ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_bus() -> Iterator[LocalBus]:
    aws = LocalAws()
    aws.start()
    try:
        bus = LocalBus(CONFIG.bus, aws, sources=CONFIG.sources)
        bus.provision()
        yield bus
    finally:
        aws.stop()


@pytest.fixture(scope="module")
def local(local_bus: LocalBus) -> dict[str, Deployed]:
    return {name: local_function(local_bus.clients, local_bus, name) for name in local_bus.functions}


def local_function(aws: LocalAws, bus: LocalBus, name: str) -> Deployed:
    """What Lambda's API (moto's) holds for ``name``, each value checked against moto."""
    lambda_client, sqs = aws.client("lambda"), aws.client("sqs")
    configuration = lambda_client.get_function_configuration(FunctionName=name)
    concurrency = lambda_client.get_function_concurrency(FunctionName=name)
    plan = PLAN.function(name)
    queues = {url: url.rsplit("/", 1)[1] for url in sqs.list_queues()["QueueUrls"]}
    streams = set(aws.client("kinesis").list_streams()["StreamNames"])
    buckets = {bucket["Name"] for bucket in aws.client("s3").list_buckets()["Buckets"]}
    tables = set(aws.client("dynamodb").list_tables()["TableNames"])

    def written(value: str, planned_value: str) -> str:
        if not isinstance(planned_value, Ref):
            return value
        ref = planned_value
        pointed = {
            "url": ref.attribute == "url" and queues.get(value) == ref.resource,
            "name": ref.attribute == "name"
            and (
                (ref.resource in streams and value == ref.resource)
                or (ref.resource == name == value)
                or (ref.resource in {f.name for f in PLAN.functions} and value == ref.resource)
                or (plan.bucket is not None and ref == plan.bucket.name and value in buckets - {bus.failures})
                or (PLAN.schema_table is not None and ref == PLAN.schema_table.name_ref and value in tables)
            ),
            "arn": ref.attribute == "arn"
            and (
                (ref == PLAN.failures.arn and value == bus.failures_arn and bus.failures in buckets)
                or (ref == PLAN.stream.arn and value == bus.stream_arn)
            ),
        }
        return ref if pointed[ref.attribute] else value

    mappings = lambda_client.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
    mapping = None
    if mappings:
        (found,) = mappings
        mapping = {
            **{key: found.get(key) for key in MAPPING_SETTINGS},
            "EventSourceArn": written(found["EventSourceArn"], PLAN.stream.arn),
            "OnFailure": written(found["DestinationConfig"]["OnFailure"]["Destination"], PLAN.failures.arn),
        }
    return Deployed(
        function={
            "Handler": configuration["Handler"],
            "MemorySize": configuration["MemorySize"],
            "Timeout": configuration["Timeout"],
            "Runtime": configuration["Runtime"],
            "Architectures": configuration["Architectures"],
            "ReservedConcurrentExecutions": concurrency.get("ReservedConcurrentExecutions"),
        },
        environment={
            key: written(value, plan.environment.get(key, ""))
            for key, value in configuration["Environment"]["Variables"].items()
        },
        mapping=mapping,
    )


# ---- the comparisons -------------------------------------------------------------------------


def test_both_deploy_every_function_of_the_plan_and_no_other(
    stacks: dict[str, Deployed], local: dict[str, Deployed]
) -> None:
    names = sorted(function.name for function in PLAN.functions)
    assert sorted(stacks) == names
    assert sorted(local) == names
    assert len(PLAN.consumers) == len(CONFIG.bus.consumers) == 3
    assert [f.name for f in PLAN.functions if f.kind == "schema"] == ["demo-legacy-schema"]


@pytest.mark.parametrize("name", [function.name for function in PLAN.functions])
def test_a_function_is_configured_alike(
    name: str, stacks: dict[str, Deployed], local: dict[str, Deployed]
) -> None:
    assert stacks[name].function == planned(PLAN.function(name)).function
    # moto's Lambda keeps no DeadLetterConfig (local/bus.py passes the plan's): not compared
    deployed = {key: value for key, value in stacks[name].function.items() if key != "DeadLetter"}
    assert local[name].function == deployed


@pytest.mark.parametrize("name", [function.name for function in PLAN.functions])
def test_a_function_has_the_same_environment(
    name: str, stacks: dict[str, Deployed], local: dict[str, Deployed]
) -> None:
    assert stacks[name].environment == planned(PLAN.function(name)).environment
    assert local[name].environment == stacks[name].environment


@pytest.mark.parametrize("name", [function.name for function in PLAN.functions])
def test_a_function_reads_the_bus_stream_with_the_same_mapping(
    name: str, stacks: dict[str, Deployed], local: dict[str, Deployed]
) -> None:
    assert stacks[name].mapping == planned(PLAN.function(name)).mapping
    assert local[name].mapping == stacks[name].mapping


@pytest.mark.parametrize("name", [function.name for function in PLAN.functions])
def test_local_mode_runs_what_lambdas_api_holds(name: str, local_bus: LocalBus) -> None:
    # The local Lambda service runs the plan's folder with the environment Lambda's API
    # (moto's) holds, and local mode's own variables on top
    planned, running = PLAN.function(name), local_bus.functions[name]
    registered = local_bus.clients.client("lambda").get_function_configuration(FunctionName=name)
    assert running.folder == planned.folder
    assert registered["Environment"]["Variables"].items() <= running.environment.items()


def test_the_references_were_checked_not_copied(
    stacks: dict[str, Deployed], local: dict[str, Deployed]
) -> None:
    # Every reference of the plan's environments came out as the plan's: had a renderer
    # pointed one elsewhere, its deployed value would have stayed (a token or a URL).
    references = [
        (function.name, key)
        for function in PLAN.functions
        for key, value in function.environment.items()
        if isinstance(value, Ref)
    ]
    assert {
        ("demo-glue", "BUS_DLQ_URL"),
        ("demo-discovery", "GLUE_FUNCTION_NAME"),
        ("demo-discovery", "GLUE_ON_FAILURE_ARN"),
        ("demo-archive", "DMSBUS_BUCKET"),
        ("demo-glue", "BUS_SCHEMA_TABLE"),
        ("demo-legacy-schema", "BUS_SCHEMA_TABLE"),
    } <= set(references)
    for name, key in references:
        assert isinstance(stacks[name].environment[key], Ref), (name, key)
        assert isinstance(local[name].environment[key], Ref), (name, key)


def _statements(template: Template) -> list[tuple[str, dict[str, Any]]]:
    """Every statement of every IAM policy, with the role it is attached to."""
    found = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                found.append((role["Ref"], statement))
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def _function_of_role(template: Template) -> dict[str, str]:
    return {
        function["Properties"]["Role"]["Fn::GetAtt"][0]: function["Properties"]["FunctionName"]
        for function in template.find_resources("AWS::Lambda::Function").values()
    }


def test_the_glue_and_discovery_may_invoke_the_schema_function_by_its_arn_and_nothing_else(
    synthesized: Synthesized,
) -> None:
    # Given the typed bus's stack, every statement of every policy in it
    bus = synthesized.template(synthesized.stacks.bus)
    functions = _function_of_role(bus)
    invoking = [
        (functions.get(role), statement)
        for role, statement in _statements(bus)
        if any(
            action.startswith("lambda:Invoke") or action in ("lambda:*", "*")
            for action in _actions(statement)
        )
    ]
    # Then only the glue and discovery may invoke, one action, on the schema function's ARN
    assert sorted(name for name, _ in invoking) == ["demo-discovery", "demo-glue"]
    for _, statement in invoking:
        assert _actions(statement) == ["lambda:InvokeFunction"]
        parts = statement["Resource"]["Fn::Join"][1]
        assert parts[-1] == ":function:demo-legacy-schema"
        assert {"Ref": "AWS::AccountId"} in parts and {"Ref": "AWS::Region"} in parts


def test_the_glue_and_discovery_may_update_the_announcement_of_a_schema_version_only(
    synthesized: Synthesized,
) -> None:
    bus = synthesized.template(synthesized.stacks.bus)
    functions = _function_of_role(bus)
    updating = [
        (functions.get(role), statement)
        for role, statement in _statements(bus)
        if any(action in ("dynamodb:UpdateItem", "dynamodb:*", "*") for action in _actions(statement))
        and "schema" in json.dumps(statement["Resource"]).lower()
    ]
    # Only they update the schema table, and only its announced_ms (the key names it too)
    assert sorted(name for name, _ in updating) == ["demo-discovery", "demo-glue"]
    for _, statement in updating:
        assert _actions(statement) == ["dynamodb:UpdateItem"]
        assert statement["Condition"] == {
            "ForAllValues:StringEquals": {"dynamodb:Attributes": ["table", "version", "announced_ms"]}
        }


def test_every_function_in_a_vpc_may_create_its_network_interfaces(synthesized: Synthesized) -> None:
    # Given every stack of the typed sample: pg_mirror and the schema function run in VPCs
    templates = [
        synthesized.template(stack)
        for stack in (
            synthesized.stacks.bus,
            synthesized.stacks.consumers,
            *synthesized.stacks.sources.values(),
        )
    ]
    in_vpc = []
    for template in templates:
        roles = template.find_resources("AWS::IAM::Role")
        for function in template.find_resources("AWS::Lambda::Function").values():
            properties = function["Properties"]
            if "VpcConfig" not in properties:
                continue
            in_vpc.append(properties["FunctionName"])
            # Then its own role carries Lambda's policy for the function's network interfaces,
            # without which Lambda refuses to create the function (configuration-vpc)
            role = roles[properties["Role"]["Fn::GetAtt"][0]]["Properties"]
            policies = json.dumps(role.get("ManagedPolicyArns", []))
            assert "service-role/AWSLambdaVPCAccessExecutionRole" in policies, properties["FunctionName"]
    assert {"demo-pg-mirror", "demo-legacy-schema"} <= set(in_vpc)


def test_untyped_events_of_the_glue_and_discoverys_backfill_are_alarmed_on(synthesized: Synthesized) -> None:
    # Given the typed bus's stack
    bus = synthesized.template(synthesized.stacks.bus)
    # Then one alarm sums both functions' UntypedEvents (each its own service dimension)
    (alarm,) = [
        alarm["Properties"]
        for alarm in bus.find_resources("AWS::CloudWatch::Alarm").values()
        if "UntypedEvents" in json.dumps(alarm["Properties"].get("Metrics", []))
    ]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    found = {query["Id"]: query for query in alarm["Metrics"]}
    watched = {
        query["MetricStat"]["Metric"]["Dimensions"][0]["Value"]: query["MetricStat"]
        for query in found.values()
        if "MetricStat" in query and query["MetricStat"]["Metric"]["MetricName"] == "UntypedEvents"
    }
    assert set(watched) == {"demo-glue", "demo-discovery"}
    for stat in watched.values():
        assert (stat["Metric"]["Namespace"], stat["Stat"], stat["Period"]) == ("dmsbus", "Sum", 300)
    (expression,) = [query["Expression"] for query in found.values() if "Expression" in query]
    assert expression == "FILL(glueUntyped, 0) + FILL(discoveryUntyped, 0)"
    # And the functions are told how long to wait for a schema at a DDL moment
    for name in ("demo-glue", "demo-discovery"):
        bus.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "FunctionName": name,
                "Environment": {"Variables": Match.object_like({"BUS_TYPED_WAIT_SECONDS": "10"})},
            },
        )


def test_a_consumer_of_a_typed_bus_may_read_the_schema_tables_versions_and_latest_only(
    synthesized: Synthesized,
) -> None:
    # Given the typed sample's consumers stack
    consumers = synthesized.template(synthesized.stacks.consumers)
    functions = _function_of_role(consumers)
    reading = [
        (functions.get(role), statement)
        for role, statement in _statements(consumers)
        if "schemas" in json.dumps(statement["Resource"])
    ]
    # Then each consumer gets a version (GetItem) and a table's latest (Query, newest
    # first: pg_mirror's read for a column typed with an older version), and nothing else
    assert reading, "no consumer may read the schema table"
    for name, statement in reading:
        assert sorted(_actions(statement)) == ["dynamodb:GetItem", "dynamodb:Query"], name
