"""Example consumer: logs every change on the bus (the demo uses it)."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from dmsbus.consumer import ChangeEvent, consumer

logger = Logger(service="log_changes")


@consumer()
def handler(event: ChangeEvent) -> None:
    logger.info(
        "change",
        extra={"id": event.id, "op": event.op, "table": event.qualified_table, "key": event.key},
    )
