"""A source stack: DMS never public, credentials only from Secrets Manager, the target role
limited to the source's tables, TableMappings rendered from the config."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Stack
from aws_cdk.assertions import Capture, Match, Template

from config import Config, TableConfig
from config.mappings import render_table_mappings, task_settings
from stacks.source import PLACEHOLDER_MAPPINGS
from tests.infrastructure.conftest import Synthesized, synthesize


def test_replication_instance_is_never_public_and_its_storage_encrypted(source: Template) -> None:
    source.has_resource_properties(
        "AWS::DMS::ReplicationInstance",
        {
            "PubliclyAccessible": False,
            "ReplicationInstanceClass": "dms.t3.medium",
            "MultiAZ": False,
            "KmsKeyId": Match.any_value(),
        },
    )


def test_source_endpoint_reads_credentials_from_secrets_manager(source: Template) -> None:
    source.has_resource_properties(
        "AWS::DMS::Endpoint",
        {
            "EndpointType": "source",
            "EngineName": "postgres",
            "DatabaseName": "shop",
            "SslMode": "require",
            "PostgreSqlSettings": {
                "SecretsManagerSecretId": Match.any_value(),
                "SecretsManagerAccessRoleArn": Match.any_value(),
            },
            "Password": Match.absent(),
            "Username": Match.absent(),
        },
    )


def test_no_secret_value_is_in_any_template(sample: Synthesized) -> None:
    for path in sample.outdir.glob("*.template.json"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'"(Password|Username|SecretString)"', text), path.name
        assert "GenerateSecretString" not in text


def test_target_role_reaches_only_this_source_tables_and_dms_control_tables(source: Template) -> None:
    (policy,) = [
        p
        for p in source.find_resources("AWS::IAM::Policy").values()
        if any("dynamodb:PutItem" in s["Action"] for s in p["Properties"]["PolicyDocument"]["Statement"])
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    (writes,) = [s for s in statements if "dynamodb:PutItem" in s["Action"]]
    suffixes = sorted(resource["Fn::Join"][1][-1] for resource in writes["Resource"])
    assert suffixes == [":table/awsdms_*", ":table/demo.legacy.*"]


def test_table_mappings_for_the_sample_config_are_the_reviewed_rules(sample: Synthesized) -> None:
    # Given the sample source (PII exclusions, a composite key, a version, a wildcard)
    (legacy,) = sample.config.sources
    rules = render_table_mappings("demo", legacy)["rules"]
    # Then the rules are selections, then exactly one naming rule per table or pattern
    assert [(r["rule-type"], r["rule-name"]) for r in rules] == [
        ("selection", "1-include-public.customers"),
        ("selection", "2-include-public.orders"),
        ("selection", "3-include-public.order_lines"),
        ("selection", "4-include-public.products"),
        ("selection", "5-include-audit.event_any"),
        ("transformation", "6-prefix-audit.event_any"),
        ("object-mapping", "7-map-public.customers"),
        ("transformation", "8-prefix-public.orders"),
        ("object-mapping", "9-map-public.order_lines"),
        ("transformation", "10-rename-public.products"),
    ]
    assert [r["rule-id"] for r in rules] == [str(n) for n in range(1, 11)]
    # A literal `_` is `[_]` in a locator (a bare `_` is any one character)
    assert rules[2]["object-locator"] == {"schema-name": "public", "table-name": "order[_]lines"}
    assert rules[4]["object-locator"] == {"schema-name": "audit", "table-name": "event[_]%"}
    assert rules[5]["value"] == "demo.legacy.audit."
    assert rules[6]["target-table-name"] == "demo.legacy.public.customers"
    # Object mappings declare their key attributes as every documented DynamoDB object
    # mapping does (CHAP_Target.DynamoDB): scalar, with the attribute-sub-type config gives
    assert rules[6]["mapping-parameters"] == {
        "partition-key-name": "id",
        "exclude-columns": ["email", "phone"],
        "attribute-mappings": [
            {
                "target-attribute-name": "id",
                "attribute-type": "scalar",
                "attribute-sub-type": "number",
                "value": "${id}",
            }
        ],
    }
    assert rules[7]["value"] == "demo.legacy.public."
    assert rules[8]["mapping-parameters"] == {
        "partition-key-name": "order_id",
        "sort-key-name": "line_no",
        "attribute-mappings": [
            {
                "target-attribute-name": column,
                "attribute-type": "scalar",
                "attribute-sub-type": "number",
                "value": "${" + column + "}",
            }
            for column in ("order_id", "line_no")
        ],
    }
    assert rules[9]["value"] == "demo.legacy.public.products.v2"


def staged_task_config(outdir: Path, stack: Stack, key: str) -> bytes:
    """The bytes ``cdk deploy`` uploads as the object ``key`` of ``stack`` (its asset
    manifest names the staged file of each object)."""
    manifest = json.loads((outdir / f"{stack.artifact_id}.assets.json").read_text(encoding="utf-8"))
    (path,) = [
        entry["source"]["path"]
        for entry in manifest["files"].values()
        if any(destination["objectKey"] == key for destination in entry["destinations"].values())
    ]
    return (outdir / path).read_bytes()


def test_the_lifecycle_applies_the_rendered_mappings_and_settings_to_the_task(
    source: Template, sample: Synthesized
) -> None:
    # Given the sample source stack
    ((task_id, task),) = source.find_resources("AWS::DMS::ReplicationTask").items()
    key, sha256 = Capture(), Capture()
    source.has_resource_properties(
        "Custom::DmsTaskLifecycle",
        {
            "TaskArn": {"Ref": task_id},
            "TaskConfigBucket": Match.any_value(),
            "TaskConfigKey": key,
            "TaskConfigSha256": sha256,
            "Start": "true",
            "TableMappings": Match.absent(),
            "TaskSettings": Match.absent(),
        },
    )
    # Then the task is full-load-and-cdc with fixed placeholder mappings
    assert task["Properties"]["MigrationType"] == "full-load-and-cdc"
    assert json.loads(task["Properties"]["TableMappings"]) == PLACEHOLDER_MAPPINGS
    assert "ReplicationTaskSettings" not in task["Properties"]
    # And the lifecycle resource, on that task, names the S3 object that carries the
    # config's mappings and settings, by its key and hash
    (legacy,) = sample.config.sources
    body = staged_task_config(sample.outdir, sample.stacks.sources["legacy"], key.as_string())
    assert hashlib.sha256(body).hexdigest() == sha256.as_string()
    assert json.loads(body) == {
        "TableMappings": render_table_mappings("demo", legacy),
        "TaskSettings": task_settings(),
    }
    # And what the deploy left the task as is shown as a stack output
    (output,) = source.find_outputs("TaskState").values()
    assert output["Value"]["Fn::GetAtt"][1] == "Summary"


def _task_and_lifecycle(config: Config, outdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    synthesized = synthesize(config, outdir)
    template = synthesized.template(synthesized.stacks.sources["legacy"])
    (task,) = template.find_resources("AWS::DMS::ReplicationTask").values()
    (lifecycle,) = template.find_resources("Custom::DmsTaskLifecycle").values()
    return task, lifecycle


def test_adding_a_table_or_bumping_a_version_changes_only_the_lifecycle_resource(
    sample: Synthesized, tmp_path: Path
) -> None:
    # Given the sample config, and one with a table added and products bumped to v3
    (legacy,) = sample.config.sources
    tables = [t.model_copy(update={"version": 3}) if t.table == "products" else t for t in legacy.tables]
    tables.append(TableConfig(schema="public", table="invoices"))
    changed = sample.config.model_copy(update={"sources": [legacy.model_copy(update={"tables": tables})]})
    # When both are synthesized
    task_before, lifecycle_before = _task_and_lifecycle(sample.config, tmp_path / "before")
    task_after, lifecycle_after = _task_and_lifecycle(changed, tmp_path / "after")
    # Then CloudFormation has nothing to change on the task (it would modify it in place,
    # which DMS refuses on a running task); only the lifecycle's mappings change
    assert task_after == task_before
    before, after = lifecycle_before["Properties"], lifecycle_after["Properties"]
    changed = {"TaskConfigKey", "TaskConfigSha256"}
    assert all(after[name] != before[name] for name in changed)
    assert {k: v for k, v in after.items() if k not in changed} == {
        k: v for k, v in before.items() if k not in changed
    }


def test_the_lifecycle_functions_change_this_task_only(source: Template) -> None:
    # Given every IAM statement of the stack that names the task
    task_id = next(iter(source.find_resources("AWS::DMS::ReplicationTask")))
    on_task = sorted(
        sorted(statement["Action"])
        for policy in source.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Resource"] == {"Ref": task_id}
    )
    # Then onEvent only reads the task and marks it as its request's; isComplete changes it
    assert on_task == [
        ["dms:AddTagsToResource", "dms:ListTagsForResource"],
        [
            "dms:AddTagsToResource",
            "dms:ListTagsForResource",
            "dms:ModifyReplicationTask",
            "dms:ReloadTables",
            "dms:StartReplicationTask",
            "dms:StopReplicationTask",
        ],
    ]
    # And no statement grants a DMS change on any other resource
    for policy in source.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if any(a.startswith("dms:") and a != "dms:DescribeReplicationTasks" for a in actions):
                assert statement["Resource"] == {"Ref": task_id}


def test_the_lifecycle_waits_for_the_task_in_the_provider_framework(source: Template) -> None:
    # isComplete is polled by the framework's state machine, not waited on in one invocation,
    # and gives up before CloudFormation's hour for a custom resource runs out
    (machine,) = source.find_resources("AWS::StepFunctions::StateMachine").values()
    definition = "".join(
        part if isinstance(part, str) else "ARN"
        for part in machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    )
    (retry,) = json.loads(definition)["States"]["framework-isComplete-task"]["Retry"]
    assert retry["IntervalSeconds"] == 30
    assert retry["IntervalSeconds"] * retry["MaxAttempts"] < 3600
    handlers = sorted(
        f["Properties"]["Handler"]
        for f in source.find_resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler", "").startswith("task_lifecycle.")
    )
    assert handlers == ["task_lifecycle.handler.is_complete", "task_lifecycle.handler.on_event"]


def test_postgres_source_sends_heartbeats_and_never_truncates_a_lob(source: Template) -> None:
    source.has_resource_properties(
        "AWS::DMS::Endpoint",
        {
            "EndpointType": "source",
            "PostgreSqlSettings": Match.object_like(
                {"HeartbeatEnable": True, "HeartbeatFrequency": 5, "FailTasksOnLobTruncation": True}
            ),
        },
    )
    # LOBs up to DynamoDB's 400 KB item are copied whole; a larger one fails the task.
    # 800 KB: a text (NCLOB, two bytes a character) that fits in a 400 KB item is never cut
    assert task_settings()["TargetMetadata"]["LobMaxSize"] == 800


def test_cdc_latency_alarms_watch_the_task_by_its_resource_id(source: Template) -> None:
    (task,) = source.find_resources("AWS::DMS::ReplicationTask")
    for metric in ("CDCLatencySource", "CDCLatencyTarget"):
        source.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "Namespace": "AWS/DMS",
                "MetricName": metric,
                "Threshold": 300,
                "Dimensions": Match.array_with(
                    [
                        {
                            "Name": "ReplicationTaskIdentifier",
                            "Value": {"Fn::Select": [6, {"Fn::Split": [":", {"Ref": task}]}]},
                        }
                    ]
                ),
            },
        )


@pytest.mark.parametrize(
    ("metric", "comparison", "threshold"),
    [
        # 10% of the default 50 GiB
        ("FreeStorageSpace", "LessThanThreshold", 50 * 1024**3 / 10),
        ("CPUUtilization", "GreaterThanOrEqualToThreshold", 90),
        ("FreeableMemory", "LessThanThreshold", 256 * 1024 * 1024),
    ],
)
def test_the_replication_instance_is_watched(
    source: Template, metric: str, comparison: str, threshold: float
) -> None:
    source.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/DMS",
            "MetricName": metric,
            "ComparisonOperator": comparison,
            "Threshold": threshold,
            "Dimensions": [{"Name": "ReplicationInstanceIdentifier", "Value": "demo-legacy"}],
        },
    )


def test_without_a_topic_no_dms_event_subscription_is_made(source: Template) -> None:
    source.resource_count_is("AWS::DMS::EventSubscription", 0)


def test_created_vpc_routes_to_the_source_through_nat_and_to_aws_through_endpoints(source: Template) -> None:
    # egress: nat: the replication instance's private subnets reach the source's public address
    source.resource_count_is("AWS::EC2::NatGateway", 1)
    source.resource_count_is("AWS::EC2::VPCEndpoint", 2)
    source.resource_count_is("AWS::EC2::FlowLog", 1)
    source.has_resource_properties(
        "AWS::EC2::Route", {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": Match.any_value()}
    )
    # The instance sits in the private subnets, never in the public ones
    (group,) = source.find_resources("AWS::DMS::ReplicationSubnetGroup").values()
    private = [
        name
        for name, subnet in source.find_resources("AWS::EC2::Subnet").items()
        if not subnet["Properties"]["MapPublicIpOnLaunch"]
    ]
    assert len(private) == 2
    assert sorted(ref["Ref"] for ref in group["Properties"]["SubnetIds"]) == sorted(private)
    # The Secrets Manager endpoint admits the replication instance's group only, and DMS
    # is told to use it
    source.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress", {"FromPort": 443, "SourceSecurityGroupId": Match.any_value()}
    )
    (endpoint,) = source.find_resources(
        "AWS::DMS::Endpoint", {"Properties": {"EndpointType": "source"}}
    ).values()
    attributes = json.dumps(endpoint["Properties"]["ExtraConnectionAttributes"])
    assert "secretsManagerEndpointOverride=" in attributes and "DnsEntries" in attributes


def _function_named(template: Template, name: str) -> tuple[str, dict[str, Any]]:
    (found,) = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"FunctionName": name}}
    ).items()
    return found


def test_the_admin_function_runs_in_the_replication_network_on_the_sweeps_schedule(source: Template) -> None:
    # Given the sample source (PostgreSQL), Then its admin function runs in the replication
    # subnets with the credentials DMS reads, and a schedule invokes it (the slot watch)
    admin_id, admin = _function_named(source, "demo-legacy-admin")
    assert "VpcConfig" in admin["Properties"]
    variables = admin["Properties"]["Environment"]["Variables"]
    assert variables["DMSBUS_SECRET"] == "dmsbus/legacy"
    assert (
        variables["DMSBUS_SOURCE_KEYS"]
        == "public.customers=id:number,public.order_lines=order_id:number+line_no:number"
    )
    source.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(15 minutes)",
            "Targets": Match.array_with([Match.object_like({"Arn": {"Fn::GetAtt": [admin_id, "Arn"]}})]),
        },
    )


def test_only_the_lifecycles_waiter_may_invoke_the_admin_function_and_it_waits_for_it(
    source: Template,
) -> None:
    admin_id, _ = _function_named(source, "demo-legacy-admin")
    _, waiter = _function_named(source, "demo-legacy-task-lifecycle-wait")
    waiter_role = waiter["Properties"]["Role"]["Fn::GetAtt"][0]
    # Given every statement that allows an invoke of the admin function
    invokers = [
        (policy["Properties"]["Roles"], statement)
        for policy in source.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in statement["Action"]
        and statement["Resource"] == {"Fn::GetAtt": [admin_id, "Arn"]}
    ]
    # Then there is one, the lifecycle's waiter's, on the unqualified function only
    assert [roles for roles, _ in invokers] == [[{"Ref": waiter_role}]]
    # And both lifecycle functions know the admin function, the engine and the database
    for name in ("demo-legacy-task-lifecycle", "demo-legacy-task-lifecycle-wait"):
        variables = _function_named(source, name)[1]["Properties"]["Environment"]["Variables"]
        assert variables["DMSBUS_SOURCE_ADMIN_FUNCTION"] == {"Ref": admin_id}
        assert (variables["DMSBUS_SOURCE_ENGINE"], variables["DMSBUS_SOURCE_DATABASE"]) == (
            "postgres",
            "shop",
        )
    # And the lifecycle resource is created after the function and deleted before it (its
    # delete drops DMS's slot through it)
    (lifecycle,) = source.find_resources("Custom::DmsTaskLifecycle").values()
    assert admin_id in lifecycle["DependsOn"]
    # And so is its way out: the created VPC's NAT gateway and endpoints (Secrets Manager,
    # DynamoDB), which its delete needs while it drops the slot
    network = [
        *source.find_resources("AWS::EC2::NatGateway"),
        *source.find_resources("AWS::EC2::VPCEndpoint"),
    ]
    assert len(network) == 3
    assert set(network) <= set(lifecycle["DependsOn"])


def test_an_alarm_watches_the_wal_a_stopped_tasks_slot_keeps(source: Template) -> None:
    # The admin function emits the metric with its name as the service (Powertools)
    admin_id, _ = _function_named(source, "demo-legacy-admin")
    source.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "dmsbus",
            "MetricName": "InactiveSlotRetainedBytes",
            "Dimensions": [{"Name": "service", "Value": {"Ref": admin_id}}],
            "Statistic": "Maximum",
            "Threshold": 1024 * 1024 * 1024,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        },
    )
