"""The DMS endpoint settings dmsbus sets, in one place: the source stack renders them into
each source endpoint, and local mode's DMS stand-in behaves as they say (docs/dms.md).

PostgreSQL (PostgreSQLSettings, API reference; CHAP_Source.PostgreSQL):
- ``HeartbeatEnable`` every ``HeartbeatFrequency`` minutes keeps an idle database's
  replication slot from holding WAL;
- ``FailTasksOnLobTruncation``: a LOB over the task's ``LobMaxSize`` fails the task instead
  of being truncated.

Left at DMS's defaults, on purpose:
- ``TrimSpaceInChar`` (default true): CHAR(n) values arrive without their padding;
- ``MapBooleanAsBoolean`` (default false) "must be set on both the source and target
  endpoints", and a DynamoDB target endpoint has no such setting: booleans arrive as
  "true"/"false";
- ``MapUnboundedNumericAsString``: "Do not use ... with non-PostgreSQL targets", so an
  unbounded NUMERIC is NUMERIC(28,6).
"""

from __future__ import annotations

from typing import Any

POSTGRES_SOURCE_SETTINGS: dict[str, Any] = {
    "heartbeatEnable": True,
    "heartbeatFrequency": 5,
    "failTasksOnLobTruncation": True,
}
