"""Glue Lambda entry point: ``glue.handler.handler``. Parse -> core -> report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config

from dmsbus import metrics as emitted
from dmsbus.changes import ChangeBuilder
from dmsbus.ddbjson import NATIVE
from dmsbus.deadletter import DeadLetterQueue
from dmsbus.publisher import KinesisPublisher
from dmsbus.schema_events import SchemaAnnouncer
from dmsbus.typed import schema_cache, sync_lambda_client
from glue.core import GlueOutcome, process_batch
from glue.settings import GlueSettings

logger = Logger(service="dmsbus-glue")
metrics = Metrics(namespace=emitted.NAMESPACE, service=emitted.GLUE)
if not NATIVE:  # the layer ships it for arm64: without it decoding is ~8x slower
    logger.warning("the compiled decoder _dmsbus_ddbjson is missing; decoding in pure Python")

#: Time kept back from the invocation's limit to report what was not put.
DEADLINE_MARGIN_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Glue:
    settings: GlueSettings
    builder: ChangeBuilder
    publisher: KinesisPublisher
    dead_letters: DeadLetterQueue | None
    announcer: SchemaAnnouncer | None


@cache
def glue() -> Glue:
    """Built once per container, at the first invocation."""
    settings = GlueSettings.from_environ(os.environ)
    config = Config(retries={"mode": "standard", "max_attempts": 3})
    schemas = schema_cache(
        settings,
        dynamodb=boto3.client("dynamodb", config=config),
        lambda_client=boto3.client("lambda", config=config) if settings.schema_functions else None,
        sync_clients=sync_lambda_client,
    )
    publisher = KinesisPublisher(
        boto3.client("kinesis", config=config), settings.stream_name, settings=settings.publisher
    )
    return Glue(
        settings=settings,
        builder=ChangeBuilder(settings.bus, numbers=settings.numbers, schemas=schemas),
        publisher=publisher,
        announcer=SchemaAnnouncer(schemas.store, publisher, settings.bus) if schemas is not None else None,
        dead_letters=(
            DeadLetterQueue(boto3.client("sqs", config=config), settings.dlq_url, stage="glue")
            if settings.dlq_url
            else None
        ),
    )


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    app = glue()
    outcome = process_batch(
        event.get("Records") or [],
        builder=app.builder,
        publisher=app.publisher,
        dead_letters=app.dead_letters,
        deadline=_deadline(context),
        announcer=app.announcer,
    )
    report(outcome)
    emitted.emit_untyped(getattr(context, "function_name", None) or emitted.GLUE, outcome.untyped)
    return outcome.response()


def _deadline(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    seconds_left = float(remaining()) / 1000
    return time.monotonic() + max(0.0, seconds_left - DEADLINE_MARGIN_SECONDS)


def report(outcome: GlueOutcome) -> None:
    result = outcome.publish
    metrics.add_metric(name=emitted.CHANGES, unit=MetricUnit.Count, value=outcome.changes)
    metrics.add_metric(name="RecordsPut", unit=MetricUnit.Count, value=result.kinesis_records)
    metrics.add_metric(name="PutRetries", unit=MetricUnit.Count, value=result.retries)
    metrics.add_metric(name="PoisonRecords", unit=MetricUnit.Count, value=outcome.poison)
    metrics.add_metric(name="FailedRecords", unit=MetricUnit.Count, value=len(outcome.failed))
    fields = {
        "changes": outcome.changes,
        "records_put": result.kinesis_records,
        "requests": result.requests,
        "retries": result.retries,
        "reshards": result.reshards,
        "poison": outcome.poison,
        "failed": len(outcome.failed),
    }
    if outcome.untyped:
        fields["untyped"] = sum(outcome.untyped.values())
        logger.warning("events went out untyped", extra={"untyped": outcome.untyped})
    if outcome.announced:
        fields["schema_changes_announced"] = outcome.announced
    if outcome.failed:
        logger.error(
            "batch not fully published; Lambda will hand it again from the first failed record",
            extra={
                **fields,
                "first_failed": outcome.failed[0],
                "errors": result.errors,
                "stopped_by": outcome.stopped_by,
            },
        )
    else:
        logger.info("batch published", extra=fields)
