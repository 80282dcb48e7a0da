"""A source stack: DMS never public, credentials only from Secrets Manager, the target role
limited to the source's tables, TableMappings rendered from the config."""

from __future__ import annotations

import json
import re

from aws_cdk.assertions import Match, Template

from config.mappings import render_table_mappings, task_settings
from tests.infrastructure.conftest import Synthesized


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


def test_task_is_full_load_and_cdc_with_mappings_rendered_from_the_config(
    source: Template, sample: Synthesized
) -> None:
    (task,) = source.find_resources("AWS::DMS::ReplicationTask").values()
    properties = task["Properties"]
    assert properties["MigrationType"] == "full-load-and-cdc"
    mappings = json.loads(properties["TableMappings"])
    (legacy,) = sample.config.sources
    assert mappings == render_table_mappings("demo", legacy)
    assert json.loads(properties["ReplicationTaskSettings"]) == task_settings()


def test_table_mappings_for_the_sample_config_are_the_reviewed_rules(sample: Synthesized) -> None:
    # Given the sample source (PII exclusions, a composite key, a version, a wildcard)
    (legacy,) = sample.config.sources
    rules = render_table_mappings("demo", legacy)["rules"]
    # Then the rules are, in order: selections, prefixes per schema, suffix, object mappings
    assert [(r["rule-type"], r["rule-name"]) for r in rules] == [
        ("selection", "include-public-customers"),
        ("selection", "include-public-orders"),
        ("selection", "include-public-order_lines"),
        ("selection", "include-public-products"),
        ("selection", "include-audit-event_any"),
        ("transformation", "prefix-public"),
        ("transformation", "prefix-audit"),
        ("transformation", "suffix-public-products"),
        ("object-mapping", "map-public-customers"),
        ("object-mapping", "map-public-order_lines"),
    ]
    assert [r["rule-id"] for r in rules] == [str(n) for n in range(1, 11)]
    assert rules[4]["object-locator"] == {"schema-name": "audit", "table-name": "event_%"}
    assert rules[5]["value"] == "demo.legacy.public."
    assert rules[7]["value"] == ".v2"
    assert rules[8]["target-table-name"] == "demo.legacy.public.customers"
    assert rules[8]["mapping-parameters"] == {
        "partition-key-name": "id",
        "exclude-columns": ["email", "phone"],
    }
    assert rules[9]["mapping-parameters"] == {"partition-key-name": "order_id", "sort-key-name": "line_no"}


def test_cdc_latency_alarms_watch_the_task(source: Template) -> None:
    for metric in ("CDCLatencySource", "CDCLatencyTarget"):
        source.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "Namespace": "AWS/DMS",
                "MetricName": metric,
                "Threshold": 300,
                "Dimensions": Match.array_with(
                    [{"Name": "ReplicationTaskIdentifier", "Value": "demo-legacy"}]
                ),
            },
        )


def test_created_vpc_has_no_internet_and_reaches_aws_through_endpoints(source: Template) -> None:
    source.resource_count_is("AWS::EC2::InternetGateway", 0)
    source.resource_count_is("AWS::EC2::NatGateway", 0)
    source.resource_count_is("AWS::EC2::VPCEndpoint", 2)
    source.resource_count_is("AWS::EC2::FlowLog", 1)
    # The Secrets Manager endpoint admits the replication instance's group only
    source.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress", {"FromPort": 443, "SourceSecurityGroupId": Match.any_value()}
    )
