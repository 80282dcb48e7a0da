"""The metrics dmsbus's functions emit (CloudWatch embedded metric format, through
Powertools): their namespace, services and the names the stacks alarm and graph on, in one
place for both."""

from __future__ import annotations

from collections.abc import Mapping

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

NAMESPACE = "dmsbus"
#: The dimension Powertools gives each metric: the emitting function's ``service``.
SERVICE_DIMENSION = "service"
GLUE = "glue"
DISCOVERY = "discovery"

#: Change events the glue put on the bus (a batch's count).
CHANGES = "Changes"
#: The bus tables' read and write throttle events over one discovery sweep period.
TABLE_THROTTLE_EVENTS = "TableThrottleEvents"

#: A source's admin function: the WAL the source keeps for logical replication slots no
#: process reads (DMS's, while its task is stopped), in bytes; the service is the function.
INACTIVE_SLOT_RETAINED_BYTES = "InactiveSlotRetainedBytes"

#: Row events a typed bus put on the stream untyped (``source.typed: false``): the table's
#: schema could not be read within ``glue.typed_wait_seconds``, or an image did not fit the
#: schema the source's catalog has. One data point per invocation that had any, its service
#: dimension the emitting function's name (the glue's, or discovery's for its backfill):
#: once with that dimension alone (the alarm's), once more per table with ``TABLE_DIMENSION``
#: (the DynamoDB table) beside it.
UNTYPED_EVENTS = "UntypedEvents"
TABLE_DIMENSION = "table"


def emit_untyped(service: str, untyped: Mapping[str, int]) -> None:
    """:data:`UNTYPED_EVENTS` of one invocation (DynamoDB table -> events), as EMF on stdout:
    the total, then each table's. Ephemeral metric sets: their own, not the process-wide one
    Powertools' ``Metrics`` instances share (local mode runs every function in one process)."""
    if not untyped:
        return
    total = EphemeralMetrics(namespace=NAMESPACE, service=service)
    total.add_metric(name=UNTYPED_EVENTS, unit=MetricUnit.Count, value=sum(untyped.values()))
    total.flush_metrics()
    for table, count in sorted(untyped.items()):
        per_table = EphemeralMetrics(namespace=NAMESPACE, service=service)
        per_table.add_dimension(name=TABLE_DIMENSION, value=table)
        per_table.add_metric(name=UNTYPED_EVENTS, unit=MetricUnit.Count, value=count)
        per_table.flush_metrics()
