"""Discovery Lambda entry point: ``discovery.handler.handler``. Parse -> core -> report.

Invoked by EventBridge for CloudTrail ``CreateTable`` events of the bus's tables, by the
sweep schedule, or by hand with ``{}`` (a sweep). Every table is handled, then: the
per-table summary is returned, or, when some table errored, ``DiscoveryError`` is raised
naming each, so the failure shows in the function's Errors metric and alarm (and the
asynchronous invocation is retried: discovery is idempotent). ``pending`` and ``gone``
tables are not errors: the next run goes on with the former.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config

from discovery.core import Discovery, RunReport
from discovery.settings import DiscoverySettings
from dmsbus import metrics as emitted
from dmsbus.publisher import KinesisPublisher
from dmsbus.schema_events import SchemaAnnouncer
from dmsbus.typed import schema_cache, sync_lambda_client

logger = Logger(service="dmsbus-discovery")
metrics = Metrics(namespace=emitted.NAMESPACE, service=emitted.DISCOVERY)

#: Kept back from the invocation's limit to report (and save a backfill's position) in time.
DEADLINE_MARGIN_SECONDS = 20.0


class DiscoveryError(RuntimeError):
    """Some table could not be put on the bus; the message says which and why."""


@cache
def settings() -> DiscoverySettings:
    """The environment, parsed once per container."""
    return DiscoverySettings.from_environ(os.environ)


@cache
def discovery() -> Discovery:
    """Clients and core, built once per container, at the first invocation."""
    config = Config(retries={"mode": "standard", "max_attempts": 5})
    current = settings()
    lambda_client = boto3.client("lambda", config=config)
    schemas = schema_cache(
        current,
        dynamodb=boto3.client("dynamodb", config=config),
        lambda_client=lambda_client,
        sync_clients=sync_lambda_client,
    )
    publisher = KinesisPublisher(
        boto3.client("kinesis", config=config), current.stream_name, settings=current.publisher
    )
    return Discovery(
        settings=current,
        dynamodb=boto3.client("dynamodb", config=config),
        lambda_client=lambda_client,
        cloudwatch=boto3.client("cloudwatch", config=config),
        publisher=publisher,
        schemas=schemas,
        refresher=schemas.refresher if schemas is not None else None,
        announcer=SchemaAnnouncer(schemas.store, publisher, current.bus) if schemas is not None else None,
    )


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    run = discovery().run(event or {}, deadline=_deadline(context))
    summary = report(run)
    untyped = {table.table: table.untyped for table in run.tables if table.untyped}
    emitted.emit_untyped(getattr(context, "function_name", None) or emitted.DISCOVERY, untyped)
    if run.errors:
        raise DiscoveryError("; ".join(f"{table.table}: {table.detail}" for table in run.errors))
    return summary


def _deadline(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    seconds_left = float(remaining()) / 1000 if remaining is not None else 60.0
    return time.monotonic() + max(0.0, seconds_left - DEADLINE_MARGIN_SECONDS)


def report(run: RunReport) -> dict[str, Any]:
    """Log each table that changed, waits or failed; emit the counts; return the summary."""
    tables = [
        {
            "table": table.table,
            "status": table.status,
            "actions": table.actions,
            "backfilled": table.backfilled,
            "detail": table.detail,
        }
        for table in run.tables
    ]
    for fields in tables:
        if fields["status"] == "error":
            logger.error("table failed", extra=fields)
        elif fields["actions"] or fields["status"] != "done":
            logger.info("table discovered", extra=fields)
    if run.control_table is not None:
        logger.info("DMS's exceptions table", extra={"detail": run.control_table})
    counts = {
        "TablesFound": len(run.tables),
        "TablesSkipped": run.skipped,
        "BillingSwitched": sum(table.billing_switched for table in run.tables),
        "StreamsEnabled": sum(table.stream_enabled for table in run.tables),
        "MappingsCreated": sum(table.mapping_created for table in run.tables),
        "ItemsBackfilled": sum(table.backfilled for table in run.tables),
        "TablesPending": sum(table.status == "pending" for table in run.tables),
        "TableErrors": len(run.errors),
    }
    if run.throttle_events is not None:
        counts[emitted.TABLE_THROTTLE_EVENTS] = run.throttle_events
    if run.schema_changes_announced is not None:
        counts["SchemaChangesAnnounced"] = run.schema_changes_announced
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    logger.info("discovery run", extra=counts)
    summary: dict[str, Any] = {"tables": tables, **counts}
    if run.control_table is not None:
        summary["control_table"] = run.control_table
    return summary
