"""dmsbus redrive on the running local data path: a batch Lambda gave up on is kept, whole,
in the failure bucket, and handed again once the cause is gone; nothing is lost."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest
from botocore.client import BaseClient

from config.functions import dead_letter_name, glue_name
from dmsbus.failures import PREFIX, FailedBatch
from dmsbus_cli.redrive import Redrive, RedriveError
from local.demo import key_text
from tests.e2e.conftest import BUS, Pipeline, corrupt_poison_records, failing_on_customer
from tests.e2e.test_faults import assert_converged, run_workload

_real_api_call = BaseClient._make_api_call


def failed_batches(pipeline: Pipeline, timeout: float = 60.0) -> list[FailedBatch]:
    """The failure bucket's batches, once there is one."""
    assert pipeline.runtime.local_bus is not None
    s3, bucket = pipeline.runtime.aws.client("s3"), pipeline.runtime.local_bus.failures
    deadline = time.monotonic() + timeout
    while not (listed := s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", [])):
        assert time.monotonic() < deadline, "no failed batch reached the failure bucket"
        time.sleep(0.3)
    return [
        FailedBatch.parse(item["Key"], s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        for item in listed
    ]


def redrive(pipeline: Pipeline, functions: set[str], *, dry_run: bool = False) -> Redrive:
    runtime = pipeline.runtime
    assert runtime.local_bus is not None
    local_functions = runtime.local_bus.functions

    def invoke(name: str, event: Mapping[str, Any]) -> Mapping[str, Any]:
        response = local_functions[name].invoke(dict(event))
        return response if isinstance(response, Mapping) else {}

    return Redrive(
        s3=runtime.aws.client("s3"),
        sqs=runtime.aws.client("sqs"),
        lambda_client=runtime.aws.client("lambda"),
        bucket=runtime.local_bus.failures,
        invoke=invoke,
        glue=glue_name(BUS),
        functions=functions,
        dry_run=dry_run,
    )


def test_given_a_consumers_failed_batch_when_the_cause_is_fixed_then_redrive_delivers_it_and_empties_the_bucket(
    pipeline: Pipeline,
) -> None:
    # Given the consumer cannot take customer 9998 until "fixed", and gave its batch up
    fixed: list[bool] = []
    pipeline.faults.append(failing_on_customer(9998, fixed))
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9998, 'unlucky')")
    (batch,) = failed_batches(pipeline)
    run_workload(pipeline, changes=50)
    name = batch.function_name

    # When a redrive runs before the fix, then it stops there and keeps the batch
    with pytest.raises(RedriveError, match=f"{batch.key}: .* failed again"):
        redrive(pipeline, {name}).run(say=lambda _: None)
    # and a dry run lists it and changes nothing
    assert redrive(pipeline, {name}, dry_run=True).run(say=lambda _: None).batches == 1

    # When the consumer is fixed and the redrive runs
    fixed.append(True)
    report = redrive(pipeline, {name}).run(say=lambda _: None)

    # Then the batch was handed again, the bucket is empty and nothing is lost
    assert (report.batches, report.records) == (1, len(batch.records))
    assert redrive(pipeline, {name}).failed_batches() == []
    assert_converged(pipeline)


def test_given_a_glue_failed_batch_when_the_cause_is_fixed_then_redrive_publishes_its_changes(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the glue cannot publish customer 9997 until "fixed" (its PutRecords raise)
    pipeline.wait_attached()
    fixed: list[bool] = []

    def refuse(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if (
            operation == "PutRecords"
            and not fixed
            and os.environ.get("AWS_LAMBDA_FUNCTION_NAME") == glue_name(BUS)
            and any(b"9997" in record["Data"] for record in params["Records"])
        ):
            raise RuntimeError("injected: the glue cannot publish customer 9997 yet")
        return _real_api_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", refuse)
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9997, 'stuck')")

    # When Lambda's retries run out, the batch is kept with its DynamoDB stream records
    (batch,) = failed_batches(pipeline, timeout=120)
    assert (batch.kind, batch.function_name) == ("dynamodb", glue_name(BUS))
    assert batch.stream_arn.split("/")[1].endswith("customers")

    # When the glue is fixed and the redrive runs
    fixed.append(True)
    report = redrive(pipeline, {glue_name(BUS)}).run(say=lambda _: None)

    # Then the change reached the consumers, and the state converged
    assert report.batches == 1
    assert_converged(pipeline)
    assert pipeline.rebuilt.tables["public.customers"][key_text({"id": 9997})]["name"] == "stuck"


def test_a_glue_dead_letter_that_is_still_poison_is_handed_once_and_left(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the glue parked a corrupted stream record (an unknown attribute type)
    corrupt_poison_records(monkeypatch)
    pipeline.wait_attached()
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9995, 'poison')")
    queue = dead_letter_name(glue_name(BUS))
    sqs = pipeline.runtime.aws.client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    deadline = time.monotonic() + 30
    # (counted, not received: a receive would hide the message from the redrive)
    while not int(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
    ):
        assert time.monotonic() < deadline, "the poison record never reached the glue's DLQ"
        time.sleep(0.2)

    # When it is redriven: the glue parks it again
    report = redrive(pipeline, {glue_name(BUS)}).run(say=lambda _: None)

    # Then it was handed once, and left in the queue as still poison (no endless loop)
    assert report.letters == 1
    assert report.left == [(queue, 1, "records the glue parked again: still poison")]


def test_an_object_that_names_another_function_than_its_mapping_is_not_redriven(pipeline: Pipeline) -> None:
    # Given a failed batch of the rebuilding consumer
    pipeline.faults.append(failing_on_customer(9994))
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9994, 'x')")
    (batch,) = failed_batches(pipeline)
    # When someone rewrites it to name the glue (every bus function may write the bucket)
    assert pipeline.runtime.local_bus is not None
    s3, bucket = pipeline.runtime.aws.client("s3"), pipeline.runtime.local_bus.failures
    body = json.loads(s3.get_object(Bucket=bucket, Key=batch.key)["Body"].read())
    body["requestContext"]["functionArn"] = body["requestContext"]["functionArn"].replace(
        batch.function_name, glue_name(BUS)
    )
    s3.put_object(Bucket=bucket, Key=batch.key, Body=json.dumps(body).encode())
    # Then the redrive refuses it, naming the object
    with pytest.raises(RedriveError, match=f"{batch.key} says it is a batch of {glue_name(BUS)}"):
        redrive(pipeline, {batch.function_name}).failed_batches()
