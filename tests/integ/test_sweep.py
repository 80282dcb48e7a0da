"""What `make integ` removes after the stacks are destroyed, against moto: the tables DMS
created, the resources the bus's tag names that the stacks retain, and the checker's log,
whose answers it keeps."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from tests.integ import run

REGION = "eu-west-1"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.Session(region_name=REGION)


def _table(session: boto3.Session, name: str) -> None:
    session.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )


def test_the_sweep_removes_what_dms_and_the_retained_resources_left_and_keeps_others(
    session: boto3.Session,
) -> None:
    # Given tables DMS created for the integ bus, DMS's shared control table, an unrelated
    # table, and a retained queue and bucket (with an object) tagged with the integ bus
    for name in ("integ.legacy.public.orders", "integ.legacy.public.lobs", "awsdms_apply_exceptions", "shop"):
        _table(session, name)
    sqs = session.client("sqs")
    sqs.create_queue(QueueName="integ-glue-dlq", tags={"dmsbus:bus": "integ"})
    sqs.create_queue(QueueName="other-dlq", tags={"dmsbus:bus": "demo"})
    s3 = session.client("s3")
    s3.create_bucket(
        Bucket="integ-failures-123456789012-eu-west-1",
        CreateBucketConfiguration={"LocationConstraint": REGION},
    )
    s3.put_bucket_tagging(
        Bucket="integ-failures-123456789012-eu-west-1",
        Tagging={"TagSet": [{"Key": "dmsbus:bus", "Value": "integ"}]},
    )
    s3.put_object(Bucket="integ-failures-123456789012-eu-west-1", Key="aws/lambda/x", Body=b"{}")

    # When the sweep runs
    run.sweep(session)

    # Then only the unrelated table and DMS's shared control table remain, with the other
    # bus's queue; the integ bus's queue and bucket are gone
    assert session.client("dynamodb").list_tables()["TableNames"] == ["awsdms_apply_exceptions", "shop"]
    assert [url.rsplit("/", 1)[1] for url in sqs.list_queues()["QueueUrls"]] == ["other-dlq"]
    assert s3.list_buckets()["Buckets"] == []


def test_the_checkers_logged_answers_are_kept_and_its_log_removed(session: boto3.Session) -> None:
    # Given the checker's log with a question answered twice (waiting, then settled)
    logs = session.client("logs")
    group = f"/aws/lambda/{run.CHECKER}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    lines = [
        "START RequestId: 1",
        json.dumps({run.ANSWER_MARK: "null", "settled": True, "answer": "whole item: ..."}),
        json.dumps({run.ANSWER_MARK: "wildcard", "settled": True, "answer": "not loaded: ..."}),
    ]
    logs.put_log_events(
        logGroupName=group,
        logStreamName="s",
        logEvents=[{"timestamp": 1_796_000_000_000 + n, "message": line} for n, line in enumerate(lines)],
    )

    # When the sweep runs
    answers = run.sweep(session)

    # Then it returns each question's answer and deletes the log group
    assert answers == {
        "null": {"settled": True, "answer": "whole item: ..."},
        "wildcard": {"settled": True, "answer": "not loaded: ..."},
    }
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/dmsbus-integ")["logGroups"] == []
