"""Config options that change the stacks: an existing VPC, provisioned shards, a given key,
an existing dms-vpc-role, a MySQL source with a secret ARN."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from aws_cdk.assertions import Match

from config import load_config
from tests.config.test_config import BUS, SOURCE, write
from tests.infrastructure.conftest import REPO, Synthesized, synthesize

KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:team/orders-db-AbCdEf"
SECRET_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/99998888-12ab-34cd-56ef-1234567890ab"
TOPIC_ARN = "arn:aws:sns:eu-west-1:111122223333:dmsbus-alarms"
SECRETS_ENDPOINT = "vpce-0a1b2c3d4e5f60718-abcdefgh.secretsmanager.eu-west-1.vpce.amazonaws.com"


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    bus = {
        **BUS,
        # Mixed case: DMS stores identifiers in lowercase, and reports them so
        "name": "Demo",
        "dms_vpc_role": "existing",
        "dms_cloudwatch_logs_role": "existing",
        "kinesis": {"mode": "provisioned", "shards": 4, "kms_key_arn": KEY_ARN},
        "alarms": {"topic_arn": TOPIC_ARN},
    }
    source = {
        **SOURCE,
        "name": "orders",
        "engine": "mysql",
        "credentials": {"secret": SECRET_ARN, "kms_key_arn": SECRET_KEY_ARN},
        "network": {
            "vpc_id": "vpc-0123456789abcdef0",
            "subnet_ids": ["subnet-0aaa1111", "subnet-0bbb2222"],
            "secrets_manager_endpoint": SECRETS_ENDPOINT,
            "dynamodb_endpoint": "create",
            "route_table_ids": ["rtb-0aaa1111", "rtb-0bbb2222"],
        },
        "start": False,
        "replication": {"multi_az": True, "instance_class": "dms.r5.large"},
    }
    root = write(tmp_path_factory.mktemp("variant") / "config", bus, {"orders": source})
    assert yaml.safe_load((root / "bus.yaml").read_text())["kinesis"]["shards"] == 4
    return synthesize(load_config(root, repo=REPO), tmp_path_factory.mktemp("variant.out"))


def test_provisioned_stream_with_the_given_key(variant: Synthesized) -> None:
    bus = variant.template(variant.stacks.bus)
    bus.has_resource_properties(
        "AWS::Kinesis::Stream",
        {"ShardCount": 4, "StreamEncryption": {"EncryptionType": "KMS", "KeyId": KEY_ARN}},
    )
    bus.resource_count_is("AWS::KMS::Key", 0)


def test_existing_dms_account_roles_are_not_created(variant: Synthesized) -> None:
    bus = variant.template(variant.stacks.bus)
    for name in ("dms-vpc-role", "dms-cloudwatch-logs-role"):
        assert bus.find_resources("AWS::IAM::Role", {"Properties": {"RoleName": name}}) == {}


def test_a_secret_under_a_customer_key_can_be_decrypted_through_secrets_manager_only(
    variant: Synthesized,
) -> None:
    source = variant.template(variant.stacks.sources["orders"])
    source.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": ["kms:Decrypt", "kms:DescribeKey"],
                            "Effect": "Allow",
                            "Resource": SECRET_KEY_ARN,
                            "Condition": {
                                "StringEquals": {
                                    "kms:ViaService": {
                                        "Fn::Join": [
                                            "",
                                            ["secretsmanager.", {"Ref": "AWS::Region"}, ".amazonaws.com"],
                                        ]
                                    }
                                }
                            },
                        }
                    ]
                )
            }
        },
    )


def test_an_existing_private_vpc_reaches_secrets_manager_through_the_named_endpoint(
    variant: Synthesized,
) -> None:
    source = variant.template(variant.stacks.sources["orders"])
    source.has_resource_properties(
        "AWS::DMS::Endpoint",
        {
            "EndpointType": "source",
            "ExtraConnectionAttributes": f"secretsManagerEndpointOverride={SECRETS_ENDPOINT}",
        },
    )


def test_start_false_reaches_the_lifecycle(variant: Synthesized) -> None:
    source = variant.template(variant.stacks.sources["orders"])
    source.has_resource_properties("Custom::DmsTaskLifecycle", {"Start": "false"})


def test_existing_vpc_subnets_and_multi_az_mysql(variant: Synthesized) -> None:
    source = variant.template(variant.stacks.sources["orders"])
    source.resource_count_is("AWS::EC2::VPC", 0)
    source.has_resource_properties(
        "AWS::DMS::ReplicationSubnetGroup", {"SubnetIds": ["subnet-0aaa1111", "subnet-0bbb2222"]}
    )
    source.has_resource_properties(
        "AWS::DMS::ReplicationInstance", {"MultiAZ": True, "PubliclyAccessible": False}
    )
    source.has_resource_properties(
        "AWS::DMS::Endpoint",
        {
            "EngineName": "mysql",
            "MySqlSettings": {
                "SecretsManagerSecretId": SECRET_ARN,
                "SecretsManagerAccessRoleArn": Match.any_value(),
            },
        },
    )


def test_secret_access_is_limited_to_the_named_secret(variant: Synthesized) -> None:
    source = variant.template(variant.stacks.sources["orders"])
    source.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": Match.array_with(["secretsmanager:GetSecretValue"]),
                                "Resource": SECRET_ARN,
                            }
                        )
                    ]
                )
            }
        },
    )


def test_dms_identifiers_alarm_dimensions_and_events_name_the_resources_as_dms_reports_them(
    variant: Synthesized,
) -> None:
    # Given a bus named "Demo" (DMS stores identifiers in lowercase: API_CreateReplicationInstance)
    source = variant.template(variant.stacks.sources["orders"])
    # Then the instance, the task and the endpoints are named in lowercase
    source.has_resource_properties(
        "AWS::DMS::ReplicationInstance", {"ReplicationInstanceIdentifier": "demo-orders"}
    )
    source.has_resource_properties("AWS::DMS::ReplicationTask", {"ReplicationTaskIdentifier": "demo-orders"})
    source.has_resource_properties("AWS::DMS::Endpoint", {"EndpointIdentifier": "demo-orders-source"})
    # And every DMS alarm's instance dimension is the identifier DMS reports
    alarms = source.find_resources("AWS::CloudWatch::Alarm", {"Properties": {"Namespace": "AWS/DMS"}})
    assert alarms
    for alarm in alarms.values():
        dimensions = {d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]}
        assert dimensions["ReplicationInstanceIdentifier"] == "demo-orders"


def test_an_existing_vpc_reaches_dynamodb_through_a_gateway_endpoint_on_the_given_route_tables(
    variant: Synthesized,
) -> None:
    # Given an existing VPC with dynamodb_endpoint: create (DMS >= 3.4.7 needs one: CHAP_VPC_Endpoints)
    source = variant.template(variant.stacks.sources["orders"])
    # Then the stack creates DynamoDB's gateway endpoint on those route tables
    source.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Gateway",
            "VpcId": "vpc-0123456789abcdef0",
            "RouteTableIds": ["rtb-0aaa1111", "rtb-0bbb2222"],
            "ServiceName": {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".dynamodb"]]},
        },
    )
    # And the task lifecycle (whose first start DMS writes DynamoDB on) waits for it
    (endpoint_id,) = source.find_resources("AWS::EC2::VPCEndpoint")
    (lifecycle,) = source.find_resources("Custom::DmsTaskLifecycle").values()
    assert endpoint_id in lifecycle["DependsOn"]


def test_the_cdk_cli_synthesizes_one_template_per_stack(tmp_path: Path) -> None:
    cdk = REPO / "node_modules" / ".bin" / "cdk"
    # Given the CDK CLI that `make test` installs into the repo
    assert cdk.exists(), "run `make test` (it installs the CDK CLI with npm)"
    # When `cdk synth` runs the app as `make synth` does
    result = subprocess.run(
        [str(cdk), "synth", "--quiet", "--no-notices", "--output", str(tmp_path / "cdk.out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "CDK_DISABLE_VERSION_CHECK": "1",
            "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        },
        check=False,
    )
    # Then it succeeds with one template per stack
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "cdk.out").glob("*.template.json")) == [
        "dmsbus-demo-consumers.template.json",
        "dmsbus-demo-source-legacy.template.json",
        "dmsbus-demo.template.json",
    ]


@pytest.mark.parametrize(
    ("source_type", "categories"),
    [("replication-task", ["failure", "state change"]), ("replication-instance", ["failure", "low storage"])],
)
def test_dms_events_of_the_task_and_the_instance_go_to_the_alarm_topic(
    variant: Synthesized, source_type: str, categories: list[str]
) -> None:
    source = variant.template(variant.stacks.sources["orders"])
    source.has_resource_properties(
        "AWS::DMS::EventSubscription",
        {
            "SnsTopicArn": TOPIC_ARN,
            "SourceType": source_type,
            "SourceIds": ["demo-orders"],
            "EventCategories": categories,
            "Enabled": True,
        },
    )


def test_a_mysql_source_has_no_slot_to_watch(variant: Synthesized) -> None:
    # Given the MySQL source (binlogs are kept by time, not by a slot)
    source = variant.template(variant.stacks.sources["orders"])
    # Then no alarm watches a slot, and the lifecycle knows the engine (no slot steps)
    assert not source.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"MetricName": "InactiveSlotRetainedBytes"}}
    )
    source.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "demo-orders-task-lifecycle-wait",
            "Environment": {"Variables": Match.object_like({"DMSBUS_SOURCE_ENGINE": "mysql"})},
        },
    )
