"""DynamoDB target table names: ``{bus}.{source}.{schema}.{table}[.{version}]``.

Identifiers match ``[A-Za-z0-9_-]+`` (config validation enforces it), so a name splits on
``.`` without ambiguity. Names that do not parse under a bus's own prefix (DMS's
``awsdms_*`` control tables, other buses' and foreign tables) are never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")
#: DMS's control table for rows it could not apply: on a DynamoDB target "only the Apply
#: Exceptions control table ... is supported" (CHAP_Target.DynamoDB). DMS creates it like
#: its targets (provisioned 200/200); discovery makes it on-demand and never streams it.
DMS_EXCEPTIONS_TABLE = "awsdms_apply_exceptions"
_VERSION_NUMBER = re.compile(r"[A-Za-z_-]*(\d+)")


class TableNameError(ValueError):
    """A table name that is not a dmsbus target table name."""


@dataclass(frozen=True, slots=True)
class TableName:
    bus: str
    source: str
    schema: str
    table: str
    version: str | None = None

    def __post_init__(self) -> None:
        for field in ("bus", "source", "schema", "table", "version"):
            value = getattr(self, field)
            if value is None and field == "version":
                continue
            if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
                raise TableNameError(
                    f"{field} {value!r} is not an identifier (letters, digits, '_' and '-' only)"
                )

    @property
    def dynamodb_table(self) -> str:
        parts = [self.bus, self.source, self.schema, self.table]
        if self.version is not None:
            parts.append(self.version)
        return ".".join(parts)

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    def __str__(self) -> str:
        return self.dynamodb_table


def parse_table_name(name: str) -> TableName:
    """Parse a dmsbus target table name; raise TableNameError saying what is wrong."""
    parts = name.split(".")
    if len(parts) not in (4, 5):
        raise TableNameError(
            f"table name {name!r} has {len(parts)} dot-separated parts; "
            "expected bus.source.schema.table or bus.source.schema.table.version"
        )
    try:
        return TableName(*parts)
    except TableNameError as exc:
        raise TableNameError(f"table name {name!r}: {exc}") from None


def bus_table(name: str, bus: str) -> TableName | None:
    """The parsed name when ``name`` is one of ``bus``'s tables, else None (never raises)."""
    if not name.startswith(bus + "."):
        return None
    try:
        return parse_table_name(name)
    except TableNameError:
        return None


def table_from_stream_arn(arn: str) -> str:
    """``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`` -> ``NAME``."""
    _, sep, rest = arn.partition(":table/")
    name, slash, _ = rest.partition("/")
    if not sep or not slash or not name:
        raise TableNameError(f"{arn!r} is not a DynamoDB stream ARN")
    return name


def version_rank(version: str | None) -> int:
    """Reload versions in order: none is 0, ``v2`` is 2 (the number in the suffix); a
    suffix without a number is 1. Sequence numbers compare only within one version."""
    if version is None:
        return 0
    match = _VERSION_NUMBER.fullmatch(version)
    return int(match.group(1)) if match else 1
