"""The metrics dmsbus's functions emit (CloudWatch embedded metric format, through
Powertools): their namespace, services and the names the stacks alarm and graph on, in one
place for both."""

from __future__ import annotations

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
