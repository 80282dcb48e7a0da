"""The archive against moto's S3: partitioned gzip JSON lines, events unmodified, a retry
overwrites the same objects."""

from __future__ import annotations

import base64
import importlib
from collections.abc import Iterator
from dataclasses import replace
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from consumers.s3_archive.archive import read_lines
from dmsbus.envelope import ChangeEvent
from tests.consumers.conftest import change

BUCKET = "demo-archive"
HOUR = 3_600_000
#: 2025-11-22 08:26:40 UTC
T0 = 1_763_800_000_000


def kinesis_event(payloads: list[bytes]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:kinesis",
                "kinesis": {
                    "partitionKey": "k",
                    "sequenceNumber": str(100 + index),
                    "data": base64.b64encode(data).decode(),
                },
            }
            for index, data in enumerate(payloads)
        ]
    }


@pytest.fixture
def archive(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Any]]:
    monkeypatch.setenv("DMSBUS_BUCKET", BUCKET)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        module = importlib.reload(importlib.import_module("consumers.s3_archive.handler"))
        yield module, s3


def stored(s3: Any) -> dict[str, list[bytes]]:
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return {
        key: list(read_lines(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())) for key in sorted(keys)
    }


def events() -> list[ChangeEvent]:
    return [
        change(
            "c", "public.orders", {"id": 1}, {"note": "geschenk 🎁", "total": "10.50"}, sequence=1, ts_ms=T0
        ),
        change("c", "audit.event_login", {"id": 1}, {"ok": True}, sequence=2, ts_ms=T0 + 1),
        change("u", "public.orders", {"id": 1}, {"note": None}, sequence=3, ts_ms=T0 + 2, before={"id": 1}),
        change("d", "public.orders", {"id": 1}, sequence=4, ts_ms=T0 + HOUR),
    ]


def test_given_a_batch_when_archived_then_each_table_and_hour_gets_one_object_of_the_exact_events(
    archive: tuple[ModuleType, Any],
) -> None:
    # Given a batch over two tables and two hours, as bytes on the stream
    handler, s3 = archive
    payloads = [event.to_json() for event in events()]

    # When the archive consumer handles it
    response = handler.handler(kinesis_event(payloads), None)

    # Then three objects, partitioned by bus/schema/table/date/hour, hold the bytes unchanged, in order
    assert response == {"batchItemFailures": []}
    objects = stored(s3)
    assert {key.rsplit("/", 1)[0]: lines for key, lines in objects.items()} == {
        "bus=demo/schema=audit/table=event_login/date=2025-11-22/hour=08": [payloads[1]],
        "bus=demo/schema=public/table=orders/date=2025-11-22/hour=08": [payloads[0], payloads[2]],
        "bus=demo/schema=public/table=orders/date=2025-11-22/hour=09": [payloads[3]],
    }
    assert all(key.endswith(".jsonl.gz") for key in objects)


def test_given_an_archived_batch_when_lambda_retries_it_then_the_same_objects_are_overwritten(
    archive: tuple[ModuleType, Any],
) -> None:
    # Given a batch archived once
    handler, s3 = archive
    event = kinesis_event([event.to_json() for event in events()])
    handler.handler(event, None)
    first = stored(s3)

    # When the same batch is handled again (a retry after a timeout, say)
    handler.handler(event, None)

    # Then the keys and contents are the same: no duplicate object, no duplicate line
    assert stored(s3) == first
    versions = s3.list_object_versions(Bucket=BUCKET)["Versions"]
    assert len(versions) == 2 * len(first)  # versioning keeps the overwritten copies


def test_given_the_bucket_is_unreachable_when_a_batch_comes_then_every_record_is_reported(
    archive: tuple[ModuleType, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the archive pointed at a bucket that does not exist
    handler, _ = archive
    monkeypatch.setattr(handler, "SETTINGS", replace(handler.SETTINGS, bucket="no-such-bucket"))

    # When a batch comes
    response = handler.handler(kinesis_event([event.to_json() for event in events()[:2]]), None)

    # Then the whole batch is reported for Lambda to retry
    assert response == {"batchItemFailures": [{"itemIdentifier": "100"}, {"itemIdentifier": "101"}]}


def test_without_a_bucket_the_handler_fails_at_cold_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DMSBUS_BUCKET", raising=False)
    with pytest.raises(ValueError, match="DMSBUS_BUCKET is required by the s3_archive consumer"):
        importlib.reload(importlib.import_module("consumers.s3_archive.handler"))
