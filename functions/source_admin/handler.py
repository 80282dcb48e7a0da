"""Source admin function entry point: ``source_admin.handler.handler``. Parse -> core -> report.

Invoked synchronously, in the source's network, with the credentials DMS's endpoint reads:
- ``{"action": "doctor"}``: what DMS needs of the source and does not find
  (``source_admin.core.Report`` as JSON; ``dmsbus doctor --profile ...`` prints it). A source
  those credentials do not reach is itself the finding.
- ``{"action": "drop-slot", "slot": "<name>"}``: drops that logical replication slot of a
  PostgreSQL source unless a process reads it (``result``: ``dropped``, ``absent`` or
  ``refused`` with the reason and the command to run once the task has stopped).
- ``{"action": "slots"}``: the PostgreSQL source database's logical slots (the task
  lifecycle tells DMS's slot from them: the one new after the first start).
And on its schedule (an EventBridge "Scheduled Event"), the watch: the WAL that slots no
process reads keep, as the metric the source stack alarms on (a stopped task's slot holds
WAL without bound: CHAP_Source.PostgreSQL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
import psycopg
import pymysql
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from dmsbus import metrics as emitted
from dmsbus.schemas import POSTGRES_ENGINES
from dmsbus.sources import connect_source, read_secret
from source_admin.core import doctor, drop_slot, inactive_retained_bytes, logical_slots, unreachable
from source_admin.settings import SourceAdminSettings

logger = Logger(service="dmsbus-source-admin")
APPLICATION_NAME = "dmsbus-source-admin"
ACTIONS = ("doctor", "drop-slot", "slots")
#: What EventBridge's scheduled invocation is taken as.
WATCH = "watch"


@cache
def settings() -> SourceAdminSettings:
    """The environment, parsed once per container."""
    return SourceAdminSettings.from_environ(os.environ)


@cache
def secretsmanager() -> Any:
    return boto3.client("secretsmanager")


@dataclass(frozen=True, slots=True)
class AdminRequest:
    action: str
    slot: str | None = None

    @classmethod
    def from_event(cls, event: Any) -> AdminRequest:
        """The request, or ValueError naming the field that is wrong."""
        if isinstance(event, dict) and event.get("detail-type") == "Scheduled Event":
            return cls(WATCH)
        if not isinstance(event, dict) or event.get("action") not in ACTIONS:
            action = event.get("action") if isinstance(event, dict) else event
            raise ValueError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
        slot = event.get("slot")
        if event["action"] == "drop-slot" and (not isinstance(slot, str) or not slot):
            raise ValueError(f"drop-slot needs slot, the replication slot's name (not {slot!r})")
        return cls(event["action"], slot if isinstance(slot, str) else None)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = AdminRequest.from_event(event)
    config = settings()
    postgres = config.engine in POSTGRES_ENGINES
    if request.action == WATCH and not postgres:
        return {"action": WATCH, "slots": []}  # the MySQL family keeps binlogs by time, not by slot
    if request.action in ("drop-slot", "slots") and not postgres:
        raise ValueError(
            f"{request.action} is for PostgreSQL sources; source {config.source} is {config.engine}"
        )
    secret = read_secret(secretsmanager(), config.secret)
    try:
        connection = connect_source(
            config.engine, config.secret, secret, database=config.database, application_name=APPLICATION_NAME
        )
    except (psycopg.OperationalError, pymysql.err.OperationalError) as exc:
        if request.action != "doctor":
            raise
        logger.warning("source unreachable", extra={"source": config.source, "error": str(exc)})
        return unreachable(config.engine, exc).as_json()
    with connection:
        if request.action == "doctor":
            report = doctor(connection, config.engine, config.selection)
            logger.info(
                "source checked",
                extra={
                    "source": config.source,
                    "ready": report.ready,
                    "missing": [f.check for f in report.missing],
                },
            )
            return report.as_json()
        if request.action in ("slots", WATCH):
            slots = logical_slots(connection)
            if request.action == WATCH:
                # Ephemeral: its metrics are its own, not the process-wide set Metrics
                # instances share (local mode runs every function in one process); the
                # service dimension is the function's name (POWERTOOLS_SERVICE_NAME).
                metrics = EphemeralMetrics(namespace=emitted.NAMESPACE)
                metrics.add_metric(
                    name=emitted.INACTIVE_SLOT_RETAINED_BYTES,
                    unit=MetricUnit.Bytes,
                    value=inactive_retained_bytes(slots),
                )
                metrics.flush_metrics()
            return {"action": request.action, "slots": [slot.as_json() for slot in slots]}
        assert request.slot is not None
        result = drop_slot(connection, request.slot)
        logger.info(
            "drop-slot",
            extra={
                "source": config.source,
                "slot": result.slot,
                "result": result.result,
                "why": result.message,
            },
        )
        return result.as_json()
