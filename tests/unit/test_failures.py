"""Failed batches as Lambda writes them to the failure bucket."""

from __future__ import annotations

import json

import pytest

from dmsbus.failures import FailedBatch, FailedBatchError
from dmsbus.testing import change, kinesis_event

KEY = "aws/lambda/6d9b1c0e-uuid/shardId-000000000001/2026/11/30/2026-11-30T10.00.00-abc"


def _record(payload: object, info: str = "KinesisBatchInfo") -> bytes:
    body: dict[str, object] = {
        "requestContext": {
            "requestId": "r-1",
            "functionArn": "arn:aws:lambda:eu-west-1:111122223333:function:demo-mirror",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 11,
        },
        "version": "1.0",
        "timestamp": "2026-11-30T10:00:00.000Z",
        info: {
            "shardId": "shardId-000000000001",
            "startSequenceNumber": "1",
            "endSequenceNumber": "2",
            "batchSize": 2,
            "streamArn": "arn:aws:kinesis:eu-west-1:111122223333:stream/demo-bus",
        },
    }
    if payload is not None:
        body["payload"] = json.dumps(payload)
    return json.dumps(body).encode()


def test_a_consumers_failed_batch_gives_back_its_change_events_in_order() -> None:
    # Given a consumer's failed batch of two changes, aggregated as the glue writes them
    changes = [
        change("public.orders", "c", key={"id": 1}, after={"id": 1, "total": "9.50"}),
        change(
            "public.orders",
            "u",
            key={"id": 1},
            before={"id": 1, "total": "9.50"},
            after={"id": 1, "total": "10.00"},
        ),
    ]
    # When it is read back
    batch = FailedBatch.parse(KEY, _record(kinesis_event(changes, aggregated=True)))
    # Then it names its mapping, shard and function, and holds the same events
    assert (batch.mapping_uuid, batch.shard_id, batch.function_name, batch.kind) == (
        "6d9b1c0e-uuid",
        "shardId-000000000001",
        "demo-mirror",
        "kinesis",
    )
    assert [event.id for event in batch.change_events()] == [event.id for event in changes]


def test_a_record_without_payload_is_refused_naming_the_object() -> None:
    # Given a record from an SQS-style destination (range only)
    with pytest.raises(FailedBatchError, match=f"{KEY}: has no payload"):
        FailedBatch.parse(KEY, _record(None))


def test_an_object_that_is_not_json_is_refused_naming_the_object() -> None:
    with pytest.raises(FailedBatchError, match=f"{KEY}: not JSON"):
        FailedBatch.parse(KEY, b"{oops")


def test_the_glues_failed_batch_is_invoked_again_as_it_was_and_holds_no_change_events() -> None:
    # Given the glue's failed batch of DynamoDB stream records
    records = [{"eventID": "1", "eventName": "INSERT", "dynamodb": {"SequenceNumber": "100"}}]
    batch = FailedBatch.parse(KEY, _record({"Records": records}, info="DDBStreamBatchInfo"))
    # Then its invocation is the one the glue failed on
    assert (batch.kind, batch.invocation()) == ("dynamodb", {"Records": records})
    with pytest.raises(FailedBatchError, match="DynamoDB stream records"):
        list(batch.change_events())
