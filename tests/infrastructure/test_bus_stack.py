"""The bus stack: encrypted stream and queues, the glue's and discovery's least privilege,
the CreateTable rule and the sweep, alarms."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template


def _policy_statements(template: Template, role_ref: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_ref} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _role_of(template: Template, function_name: str) -> str:
    (function,) = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"FunctionName": function_name}}
    ).values()
    return str(function["Properties"]["Role"]["Fn::GetAtt"][0])


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_stream_is_encrypted_with_the_bus_key_and_on_demand(bus: Template) -> None:
    key = Capture()
    bus.has_resource_properties(
        "AWS::Kinesis::Stream",
        {
            "Name": "demo-bus",
            "StreamEncryption": {"EncryptionType": "KMS", "KeyId": {"Fn::GetAtt": [key, "Arn"]}},
            "StreamModeDetails": {"StreamMode": "ON_DEMAND"},
            "RetentionPeriodHours": 24,
        },
    )
    bus.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    assert bus.to_json()["Resources"][key.as_string()]["Type"] == "AWS::KMS::Key"


def test_every_queue_is_kms_encrypted_tls_only_and_takes_a_mebibyte(bus: Template) -> None:
    queues = bus.find_resources("AWS::SQS::Queue")
    assert len(queues) == 2  # the glue's and discovery's dead letters
    for queue in queues.values():
        assert "KmsMasterKeyId" in queue["Properties"]
        assert queue["Properties"]["MaximumMessageSize"] == 1024 * 1024
    bus.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )


def test_functions_run_python_3_12_on_arm64_with_tracing(bus: Template) -> None:
    for function in bus.find_resources("AWS::Lambda::Function").values():
        properties = function["Properties"]
        assert properties["Runtime"] == "python3.12"
        assert properties["Architectures"] == ["arm64"]
        assert properties["TracingConfig"] == {"Mode": "Active"}
        assert len(properties["Layers"]) == 1


def test_glue_gets_its_settings_from_the_config(bus: Template) -> None:
    bus.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "demo-glue",
            "Handler": "glue.handler.handler",
            "Environment": {
                "Variables": Match.object_like(
                    {"BUS_NAME": "demo", "BUS_AGGREGATE": "true", "BUS_DLQ_URL": Match.any_value()}
                )
            },
        },
    )


def test_glue_reads_only_the_streams_of_the_bus_tables(bus: Template) -> None:
    statements = _policy_statements(bus, _role_of(bus, "demo-glue"))
    reads = [s for s in statements if "dynamodb:GetRecords" in _actions(s)]
    assert len(reads) == 1
    assert reads[0]["Resource"]["Fn::Join"][1][-1] == ":table/demo.*/stream/*"
    assert not any(
        action.startswith(("dynamodb:Put", "dynamodb:Update")) for s in statements for action in _actions(s)
    )


def test_discovery_manages_only_tables_under_the_bus_prefix(bus: Template) -> None:
    statements = _policy_statements(bus, _role_of(bus, "demo-discovery"))
    table_statements = [s for s in statements if "dynamodb:UpdateTable" in _actions(s)]
    assert len(table_statements) == 2
    by_resource = {s["Resource"]["Fn::Join"][1][-1]: s for s in table_statements}
    # DMS's exceptions table: described and switched to on-demand, nothing else
    assert sorted(_actions(by_resource[":table/awsdms_apply_exceptions"])) == [
        "dynamodb:DescribeTable",
        "dynamodb:UpdateTable",
    ]
    assert sorted(_actions(by_resource[":table/demo.*"])) == [
        "dynamodb:DescribeTable",
        "dynamodb:ListTagsOfResource",
        "dynamodb:Scan",
        "dynamodb:TagResource",
        "dynamodb:UpdateTable",
    ]
    # Mapping calls only for the glue function
    (mappings,) = [s for s in statements if "lambda:CreateEventSourceMapping" in _actions(s)]
    assert list(mappings["Condition"]["StringEquals"]) == ["lambda:FunctionArn"]
    assert sorted(_actions(mappings)) == [
        "lambda:CreateEventSourceMapping",
        "lambda:DeleteEventSourceMapping",
        # an older mapping's on-failure destination moved to the failure bucket
        "lambda:UpdateEventSourceMapping",
    ]
    # No table permission on anything but the prefix, no deletes
    assert not any("dynamodb:DeleteTable" in _actions(s) for s in statements)


def test_discovery_settings_reach_it_through_its_environment(bus: Template) -> None:
    bus.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "demo-discovery",
            "Timeout": 900,
            "ReservedConcurrentExecutions": 1,
            "DeadLetterConfig": {"TargetArn": Match.any_value()},
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "BUS_NAME": "demo",
                        "GLUE_FUNCTION_NAME": Match.any_value(),
                        "GLUE_ON_FAILURE_ARN": Match.any_value(),
                        "GLUE_BATCH_SIZE": "5000",
                        "KEEP_PROVISIONED": "false",
                        "BACKFILL": "true",
                    }
                )
            },
        },
    )


def test_create_table_events_of_the_bus_trigger_discovery(bus: Template) -> None:
    bus.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.dynamodb"],
                "detail-type": ["AWS API Call via CloudTrail"],
                "detail": {
                    "eventSource": ["dynamodb.amazonaws.com"],
                    "eventName": ["CreateTable"],
                    "requestParameters": {"tableName": [{"prefix": "demo."}]},
                },
            },
            "Targets": [
                Match.object_like({"DeadLetterConfig": Match.any_value(), "RetryPolicy": Match.any_value()})
            ],
        },
    )


def test_a_sweep_runs_on_the_configured_schedule(bus: Template) -> None:
    bus.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(15 minutes)"})


def test_alarms_watch_errors_lag_and_dead_letters(bus: Template) -> None:
    metrics = sorted(
        alarm["Properties"]["MetricName"] for alarm in bus.find_resources("AWS::CloudWatch::Alarm").values()
    )
    assert metrics == [
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
        "Errors",
        "IteratorAge",
        "PutRequests",
        "ReadProvisionedThroughputExceeded",
        "TableThrottleEvents",
        "WriteProvisionedThroughputExceeded",
    ]
    bus.resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_the_failure_bucket_is_private_encrypted_with_the_bus_key_and_expires_its_objects(
    bus: Template,
) -> None:
    # Given the sample config (failures.expire_days defaults to 90)
    key = Capture()
    # Then
    bus.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": {
                "Fn::Join": ["", ["demo-failures-", {"Ref": "AWS::AccountId"}, "-", {"Ref": "AWS::Region"}]]
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]},
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LifecycleConfiguration": {
                "Rules": Match.array_with([Match.object_like({"ExpirationInDays": 90, "Status": "Enabled"})])
            },
            "MetricsConfigurations": [{"Id": "failed-batches", "Prefix": "aws/lambda/"}],
        },
    )
    assert bus.find_resources("AWS::KMS::Key")[key.as_string()]
    bus.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )


def test_the_bus_tables_throttles_are_alarmed_on_through_discoverys_count(bus: Template) -> None:
    # DMS creates the tables: each sweep counts their throttle events over its period
    bus.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "dmsbus",
            "MetricName": "TableThrottleEvents",
            "Dimensions": [{"Name": "service", "Value": "discovery"}],
            "Period": 15 * 60,
            "Threshold": 1,
        },
    )
    bus.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "demo-discovery",
            "Environment": {"Variables": Match.object_like({"SWEEP_MINUTES": "15"})},
        },
    )


def test_the_glue_may_only_put_failed_batches_under_lambdas_prefix(bus: Template) -> None:
    # Then the glue's role writes objects under aws/lambda/ and lists the bucket, nothing else
    statements = [
        statement
        for policy in bus.find_resources("AWS::IAM::Policy").values()
        if "Glue" in json.dumps(policy["Properties"]["Roles"])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(str(action).startswith("s3:") for action in _as_list(statement["Action"]))
    ]
    resources = {
        str(_as_list(statement["Action"])[0]): json.dumps(statement["Resource"]) for statement in statements
    }
    assert set(resources) == {"s3:PutObject", "s3:ListBucket"}
    assert resources["s3:PutObject"].endswith('"/aws/lambda/*"]]}')
    assert "/" not in resources["s3:ListBucket"].split("s3:::")[1]


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize(
    ("role_name", "policy"),
    [
        ("dms-vpc-role", "AmazonDMSVPCManagementRole"),
        # The task settings turn CloudWatch logging on, which needs this role.
        ("dms-cloudwatch-logs-role", "AmazonDMSCloudWatchLogsRole"),
    ],
)
def test_the_account_dms_roles_are_created_when_asked(bus: Template, role_name: str, policy: str) -> None:
    bus.has_resource_properties(
        "AWS::IAM::Role",
        {
            "RoleName": role_name,
            "AssumeRolePolicyDocument": {
                "Statement": [Match.object_like({"Principal": {"Service": "dms.amazonaws.com"}})]
            },
            "ManagedPolicyArns": [
                {
                    "Fn::Join": [
                        "",
                        ["arn:", {"Ref": "AWS::Partition"}, f":iam::aws:policy/service-role/{policy}"],
                    ]
                }
            ],
        },
    )


def test_dashboard_plots_the_glue_metric_by_its_emitted_name(bus: Template) -> None:
    # Powertools emits "Changes" in namespace dmsbus; CloudWatch names are case-sensitive
    (dashboard,) = bus.find_resources("AWS::CloudWatch::Dashboard").values()
    body = "".join(str(part) for part in dashboard["Properties"]["DashboardBody"]["Fn::Join"][1])
    assert '"dmsbus","Changes","service","glue"' in body


def test_eventbridge_may_put_undelivered_events_in_the_key_encrypted_dead_letter_queue(bus: Template) -> None:
    # The rules' dead-letter queue is encrypted with the bus key: EventBridge itself sends
    # to it, so the key's policy must let events.amazonaws.com use it, from this account only
    bus.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                                "Condition": {
                                    "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
                                },
                            }
                        )
                    ]
                )
            }
        },
    )
