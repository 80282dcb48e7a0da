"""The consumers stack: one function per consumer, ordered-stream failure handling, and
what a consumer's entry asks for (a secret, a VPC, an archive bucket), least privilege."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Capture, Match, Template


def _function_id(consumers: Template, name: str) -> str:
    (function_id,) = consumers.find_resources("AWS::Lambda::Function", {"Properties": {"FunctionName": name}})
    return function_id


def _statements_of(consumers: Template, function_name: str) -> list[dict[str, Any]]:
    """Every IAM statement attached to the role of the function named ``function_name``."""
    function = consumers.find_resources("AWS::Lambda::Function")[_function_id(consumers, function_name)]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in consumers.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


#: The bus's failure bucket, named from the account and region in every stack.
FAILURE_BUCKET_ARN = {
    "Fn::Join": [
        "",
        [
            "arn:",
            {"Ref": "AWS::Partition"},
            ":s3:::demo-failures-",
            {"Ref": "AWS::AccountId"},
            "-",
            {"Ref": "AWS::Region"},
        ],
    ]
}


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {
        action
        for s in statements
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }


def test_every_mapping_reports_partial_failures_bisects_bounds_retries_and_keeps_failures(
    consumers: Template,
) -> None:
    mappings = consumers.find_resources("AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 3
    for mapping in mappings.values():
        properties = mapping["Properties"]
        assert properties["StartingPosition"] == "TRIM_HORIZON"
        assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert properties["BisectBatchOnFunctionError"] is True
        assert properties["MaximumRetryAttempts"] == 10
        assert properties["MaximumRecordAgeInSeconds"] == 86400
        # Failed batches, their records included, go to the bus's failure bucket
        assert properties["DestinationConfig"]["OnFailure"]["Destination"] == FAILURE_BUCKET_ARN


def test_a_consumer_may_only_put_failed_batches_into_the_failure_bucket(consumers: Template) -> None:
    # Given the mirror consumer (no bucket of its own)
    statements = _statements_of(consumers, "demo-pg-mirror")
    # Then its S3 rights are Lambda's on-failure delivery's, and nothing else
    s3 = {
        action: json.dumps(statement["Resource"])
        for statement in statements
        for action in _actions([statement])
        if action.startswith("s3:")
    }
    assert set(s3) == {"s3:PutObject", "s3:ListBucket"}
    assert s3["s3:PutObject"] == json.dumps(
        {"Fn::Join": ["", [*FAILURE_BUCKET_ARN["Fn::Join"][1], "/aws/lambda/*"]]}
    )
    assert s3["s3:ListBucket"] == json.dumps(FAILURE_BUCKET_ARN)


def test_consumer_function_gets_its_filter_and_dead_letter_queue(consumers: Template) -> None:
    consumers.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "demo-log-changes",
            "Handler": "consumers.log_changes.handler.handler",
            "Runtime": "python3.12",
            "Architectures": ["arm64"],
            "Environment": {
                "Variables": Match.object_like(
                    {"DMSBUS_TABLES": "public.*", "DMSBUS_OPS": "c,u,d,r", "BUS_DLQ_URL": Match.any_value()}
                )
            },
        },
    )


def test_consumers_read_the_bus_stream_and_decrypt_with_its_key_and_write_nothing_else(
    consumers: Template,
) -> None:
    for name in ("demo-log-changes", "demo-pg-mirror", "demo-archive"):
        actions = _actions(_statements_of(consumers, name))
        assert {"kinesis:GetRecords", "kinesis:GetShardIterator", "kms:Decrypt", "sqs:SendMessage"} <= actions
        assert not any(action.startswith(("kinesis:Put", "dynamodb:")) for action in actions), name


def test_consumer_alarms_watch_errors_lag_and_dead_letters_of_each_consumer(consumers: Template) -> None:
    metrics = sorted(
        a["Properties"]["MetricName"] for a in consumers.find_resources("AWS::CloudWatch::Alarm").values()
    )
    assert metrics == sorted(["ApproximateNumberOfMessagesVisible", "Errors", "IteratorAge"] * 3)


def test_the_mirror_runs_in_its_vpc_with_egress_only_to_the_configured_ports(consumers: Template) -> None:
    group = Capture()
    consumers.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "demo-pg-mirror",
            "VpcConfig": {
                "SubnetIds": ["subnet-0a1b2c3d4e5f60718", "subnet-1a2b3c4d5e6f70819"],
                "SecurityGroupIds": [{"Fn::GetAtt": [group, "GroupId"]}],
            },
        },
    )
    properties = consumers.find_resources("AWS::EC2::SecurityGroup")[group.as_string()]["Properties"]
    assert properties["VpcId"] == "vpc-0a1b2c3d4e5f60718"
    assert "SecurityGroupIngress" not in properties
    assert sorted(
        (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) for rule in properties["SecurityGroupEgress"]
    ) == [
        ("tcp", 443, 443),
        ("tcp", 5432, 5432),
    ]


def test_the_mirror_reads_its_secret_and_only_that_one(consumers: Template) -> None:
    consumers.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "demo-pg-mirror",
            "Environment": {"Variables": Match.object_like({"DMSBUS_SECRET": "dmsbus/mirror"})},
        },
    )
    secret_statements = [
        s
        for s in _statements_of(consumers, "demo-pg-mirror")
        if "secretsmanager:GetSecretValue" in _actions([s])
    ]
    (statement,) = secret_statements
    assert statement["Effect"] == "Allow"
    resource = statement["Resource"]["Fn::Join"][1]
    assert resource[-1] == ":secret:dmsbus/mirror-??????"


def test_the_archive_bucket_is_private_versioned_encrypted_with_the_bus_key_and_ages_to_cheaper_storage(
    consumers: Template,
) -> None:
    bucket = Capture()
    consumers.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "demo-archive",
            "Environment": {"Variables": Match.object_like({"DMSBUS_BUCKET": {"Ref": bucket}})},
        },
    )
    properties = consumers.find_resources("AWS::S3::Bucket")[bucket.as_string()]["Properties"]
    (encryption,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert (
        "Fn::ImportValue" in encryption["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]
    )  # the bus stack's key
    assert encryption["BucketKeyEnabled"] is True
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert "LoggingConfiguration" in properties
    (rule,) = properties["LifecycleConfiguration"]["Rules"]
    assert [(t["StorageClass"], t["TransitionInDays"]) for t in rule["Transitions"]] == [
        ("STANDARD_IA", 30),
        ("GLACIER_IR", 180),
    ]
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    consumers.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket.as_string()},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            },
        },
    )


def test_the_archive_may_put_objects_and_never_delete_or_read_them(consumers: Template) -> None:
    actions = _actions(_statements_of(consumers, "demo-archive"))
    s3_actions = {action for action in actions if action.startswith("s3:")}
    # (s3:ListBucket: on the failure bucket, for Lambda's on-failure delivery)
    assert s3_actions == {"s3:PutObject", "s3:ListBucket"}
    assert "kms:GenerateDataKey" in actions
