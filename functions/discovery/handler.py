"""Discovery Lambda entry point: ``discovery.handler.handler``. Parse -> core -> report.

Invoked by EventBridge for CloudTrail ``CreateTable`` events of the bus's tables, by the
sweep schedule, or by hand with ``{}`` (a sweep). Returns the per-table report; raises at
the end when a table errored, after every table was handled, so failures show in the
function's Errors metric and alarm.
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

from discovery.core import Discovery, DiscoverySettings, TableReport
from dmsbus.publisher import KinesisPublisher

logger = Logger(service="dmsbus-discovery")
metrics = Metrics(namespace="dmsbus", service="discovery")

#: Kept back from the invocation's limit to report what is left for the next sweep.
DEADLINE_MARGIN_SECONDS = 20.0


class DiscoveryError(RuntimeError):
    """Some table could not be put on the bus; the report says which and why."""


@cache
def discovery() -> Discovery:
    """Built once per container, at the first invocation."""
    settings = DiscoverySettings.from_env(os.environ)
    config = Config(retries={"mode": "standard", "max_attempts": 5})
    return Discovery(
        settings=settings,
        dynamodb=boto3.client("dynamodb", config=config),
        lambda_client=boto3.client("lambda", config=config),
        publisher=KinesisPublisher(
            boto3.client("kinesis", config=config), settings.stream_name, settings=settings.publisher
        ),
    )


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    reports = discovery().run(event or {}, deadline=_deadline(context))
    summary = report(reports)
    errors = [r for r in reports if r.status == "error"]
    if errors:
        raise DiscoveryError("; ".join(f"{r.table}: {r.detail}" for r in errors))
    return summary


def _deadline(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    seconds_left = float(remaining()) / 1000 if remaining is not None else 60.0
    return time.monotonic() + max(0.0, seconds_left - DEADLINE_MARGIN_SECONDS)


def report(reports: list[TableReport]) -> dict[str, Any]:
    for table in reports:
        fields = {
            "table": table.table,
            "status": table.status,
            "actions": table.actions,
            "detail": table.detail,
        }
        if table.status == "error":
            logger.error("table not on the bus", extra=fields)
        elif table.actions or table.status == "pending":
            logger.info("table discovered", extra=fields)
    counts = {
        "TablesFound": len(reports),
        "StreamsEnabled": sum("stream enabled" in " ".join(r.actions) for r in reports),
        "MappingsCreated": sum("glue attached" in r.actions for r in reports),
        "ItemsBackfilled": sum(r.backfilled for r in reports),
        "TablesPending": sum(r.status == "pending" for r in reports),
        "TableErrors": sum(r.status == "error" for r in reports),
    }
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    return {
        "tables": [
            {
                "table": r.table,
                "status": r.status,
                "actions": r.actions,
                "backfilled": r.backfilled,
                "detail": r.detail,
            }
            for r in reports
        ],
        **counts,
    }
