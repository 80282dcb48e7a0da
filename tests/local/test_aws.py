"""The local moto server: one endpoint for every service the data path uses."""

from __future__ import annotations

import boto3

from local.aws import REGION, LocalAws


def test_one_moto_server_serves_dynamodb_streams_kinesis_sqs_and_lambda_mappings() -> None:
    # Given a local AWS on its own port
    aws = LocalAws()
    url = aws.start()
    try:
        # When a table with a stream and a Kinesis stream are created through it
        dynamodb = aws.client("dynamodb")
        dynamodb.create_table(
            TableName="demo.legacy.public.orders",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        aws.client("kinesis").create_stream(StreamName="demo-bus", ShardCount=1)
        aws.client("sqs").create_queue(QueueName="demo-glue-dlq")
        # Then a plain boto3 client given only the environment's endpoint sees them
        env = aws.environment()
        assert env["AWS_ENDPOINT_URL"] == url
        streams = boto3.client(
            "dynamodbstreams",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        assert [s["TableName"] for s in streams.list_streams()["Streams"]] == ["demo.legacy.public.orders"]
        assert aws.client("kinesis").list_streams()["StreamNames"] == ["demo-bus"]
        assert aws.client("lambda").list_event_source_mappings()["EventSourceMappings"] == []
    finally:
        aws.stop()
