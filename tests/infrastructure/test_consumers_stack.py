"""The consumers stack: one function per consumer, ordered-stream failure handling."""

from __future__ import annotations

from aws_cdk.assertions import Capture, Match, Template


def test_mapping_reports_partial_failures_bisects_and_bounds_retries(consumers: Template) -> None:
    destination = Capture()
    consumers.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionName": Match.any_value(),
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 100,
            "MaximumBatchingWindowInSeconds": 0,
            "ParallelizationFactor": 1,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 10,
            "MaximumRecordAgeInSeconds": 86400,
            "DestinationConfig": {"OnFailure": {"Destination": destination}},
        },
    )
    (queue_id,) = [k for k, v in consumers.find_resources("AWS::SQS::Queue").items()]
    assert destination.as_object() == {"Fn::GetAtt": [queue_id, "Arn"]}


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


def test_consumer_reads_the_bus_stream_and_decrypts_with_its_key(consumers: Template) -> None:
    statements = [
        statement
        for policy in consumers.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {
        action
        for s in statements
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {"kinesis:GetRecords", "kinesis:GetShardIterator", "kms:Decrypt", "sqs:SendMessage"} <= actions
    assert not any(action.startswith(("kinesis:Put", "dynamodb:")) for action in actions)


def test_consumer_alarms_watch_errors_lag_and_dead_letters(consumers: Template) -> None:
    metrics = sorted(
        a["Properties"]["MetricName"] for a in consumers.find_resources("AWS::CloudWatch::Alarm").values()
    )
    assert metrics == ["ApproximateNumberOfMessagesVisible", "Errors", "IteratorAge"]
