"""Envelope v1: the change event, dmsbus's public contract (docs/envelope.md).

This module is the only definition of the event. The glue and the backfill build it, the
consumer SDK parses it, local mode and the tests import it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, cast, get_args

import orjson

from dmsbus.schemas import TableSchema

ENVELOPE_VERSION = 1

Op = Literal["c", "u", "d", "r", "s"]
OPS: frozenset[str] = frozenset(get_args(Op))
#: A row's change ops; ``s`` is a table's schema change (typed buses only).
ROW_OPS: frozenset[str] = frozenset({"c", "u", "d", "r"})

#: DynamoDB Streams eventName -> envelope op (Debezium's codes; ``r`` is a backfill read).
STREAM_OPS: dict[str, Op] = {"INSERT": "c", "MODIFY": "u", "REMOVE": "d"}


class EnvelopeError(ValueError):
    """A change event that does not follow envelope v1."""


class UnsupportedVersionError(EnvelopeError):
    """An envelope of a version this SDK does not read."""


# Not frozen: a frozen dataclass costs three times as much to build, and the glue builds
# one per change. Treat events as read-only values.
@dataclass(slots=True, kw_only=True)
class Source:
    """Where a change comes from. ``dynamodb_table`` and ``sequence`` make the event's id."""

    bus: str
    source: str
    schema: str
    table: str
    version: str | None
    dynamodb_table: str
    sequence: str
    snapshot: bool = False
    ttl: bool = False
    #: A resync read meant for one consumer only (its function's name); None: for every
    #: consumer. Written only when set, so that other events keep their bytes.
    resync_for: str | None = None
    #: Whether ``before``/``after`` hold the source's types (docs/envelope.md, "Typed
    #: values"), and the version of the table schema that typed them. None (and not
    #: written): the bus does not type its events.
    typed: bool | None = None
    schema_version: int | None = None


#: The attribute ``dmsbus resync`` sets on a bus table's item to have the glue publish the
#: row again, in stream order, as an ``r`` event; never part of a row's image.
RESYNC_ATTRIBUTE = "dmsbus_resync"


@dataclass(slots=True, kw_only=True)
class ChangeEvent:
    """One row change. ``before`` is None for ``c``/``r``; ``after`` is None for ``d``.

    On a typed bus, op ``s`` is a table's schema change (``schema_change``; ``key`` empty,
    no images), put on every shard before the first row typed with the new version."""

    v: int = ENVELOPE_VERSION
    id: str
    op: Op
    ts_ms: int
    source: Source
    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    #: The table's schema that typed this event (``source.schema_version``): set by the
    #: consumer SDK on a bus that types its events, when it could read it; never on the wire.
    schema: TableSchema | None = field(default=None, compare=False, repr=False)
    #: Op ``s`` only: ``version``, ``previous_version`` (None: the table's first), and the
    #: columns ``added``, ``dropped``, ``retyped`` and ``renamed`` (``[old, new]`` pairs).
    schema_change: dict[str, Any] | None = None

    @property
    def qualified_table(self) -> str:
        """``schema.table``, the name consumers filter on."""
        return f"{self.source.schema}.{self.source.table}"

    @property
    def idempotency_key(self) -> str:
        """Deprecated: ``id`` is the dedup key, stable across retries and redeliveries."""
        warnings.warn("ChangeEvent.idempotency_key is deprecated: use id", DeprecationWarning, stacklevel=2)
        return self.id

    @property
    def row(self) -> dict[str, Any] | None:
        """The row's latest state: ``after``, or None once deleted."""
        return self.after

    def to_json(self) -> bytes:
        """UTF-8 JSON, field order as documented; decimals in number mode stay exact."""
        # A dict serializes faster than the slotted dataclass itself, building it included.
        fields = self.to_dict()
        try:
            return orjson.dumps(fields, default=_encode_decimal)
        except orjson.JSONEncodeError:
            # orjson stops at 64-bit integers; DynamoDB numbers reach 38 digits.
            return orjson.dumps(_big_ints_as_fragments(fields), default=_encode_decimal)

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON-ready values."""
        fields: dict[str, Any] = {
            "v": self.v,
            "id": self.id,
            "op": self.op,
            "ts_ms": self.ts_ms,
            "source": {
                "bus": self.source.bus,
                "source": self.source.source,
                "schema": self.source.schema,
                "table": self.source.table,
                "version": self.source.version,
                "dynamodb_table": self.source.dynamodb_table,
                "sequence": self.source.sequence,
                "snapshot": self.source.snapshot,
                "ttl": self.source.ttl,
            },
            "key": self.key,
            "before": self.before,
            "after": self.after,
        }
        if self.source.resync_for is not None:
            fields["source"]["resync_for"] = self.source.resync_for
        if self.source.typed is not None:
            fields["source"]["typed"] = self.source.typed
            fields["source"]["schema_version"] = self.source.schema_version
        if self.schema_change is not None:
            fields["schema_change"] = self.schema_change
        return fields

    @classmethod
    def from_json(cls, data: bytes | str, *, exact_decimals: bool = False) -> ChangeEvent:
        """Parse and validate one event. Integers of any size stay exact; JSON numbers with a
        fraction (number mode) become ``Decimal`` with ``exact_decimals``, else float."""
        try:
            raw = json.loads(data, parse_float=Decimal if exact_decimals else float)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"change event is not valid JSON: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> ChangeEvent:
        if not isinstance(raw, dict):
            raise EnvelopeError(f"change event must be a JSON object, not {type(raw).__name__}")
        version = raw.get("v")
        if version != ENVELOPE_VERSION:
            raise UnsupportedVersionError(
                f"change event {raw.get('id')!r} has envelope version v={version!r}; "
                f"this dmsbus SDK reads v={ENVELOPE_VERSION} only (upgrade the consumer's dmsbus)"
            )
        event_id = _field(raw, "id", str)
        op = _field(raw, "op", str)
        if op not in OPS:
            raise EnvelopeError(f"change event {event_id!r}: op {op!r} is not one of c, u, d, r, s")
        ts_ms = _field(raw, "ts_ms", int)
        src = _field(raw, "source", dict)
        source = Source(
            bus=_field(src, "bus", str, "source."),
            source=_field(src, "source", str, "source."),
            schema=_field(src, "schema", str, "source."),
            table=_field(src, "table", str, "source."),
            version=_optional(src, "version", str, "source."),
            dynamodb_table=_field(src, "dynamodb_table", str, "source."),
            sequence=_field(src, "sequence", str, "source."),
            snapshot=_field(src, "snapshot", bool, "source."),
            ttl=_field(src, "ttl", bool, "source."),
            resync_for=_field(src, "resync_for", str, "source.")
            if src.get("resync_for") is not None
            else None,
            typed=_field(src, "typed", bool, "source.") if src.get("typed") is not None else None,
            schema_version=_field(src, "schema_version", int, "source.")
            if src.get("schema_version") is not None
            else None,
        )
        key = _field(raw, "key", dict)
        before = _optional(raw, "before", dict)
        after = _optional(raw, "after", dict)
        schema_change = None
        if op == "s":
            schema_change = _schema_change(raw, event_id, key=key, before=before, after=after, source=source)
        elif raw.get("schema_change") is not None:
            raise EnvelopeError(f"change event {event_id!r}: op {op!r} has no schema_change (op 's' only)")
        elif op in ("c", "r") and before is not None:
            raise EnvelopeError(f"change event {event_id!r}: op {op!r} must have before = null")
        if op == "d" and after is not None:
            raise EnvelopeError(f"change event {event_id!r}: op 'd' must have after = null")
        if op not in ("d", "s") and after is None:
            raise EnvelopeError(f"change event {event_id!r}: op {op!r} needs an after image")
        return cls(
            id=event_id,
            op=cast(Op, op),
            ts_ms=ts_ms,
            source=source,
            key=key,
            before=before,
            after=after,
            schema_change=schema_change,
        )


def _schema_change(
    raw: dict[str, Any],
    event_id: str,
    *,
    key: dict[str, Any],
    before: Any,
    after: Any,
    source: Source,
) -> dict[str, Any]:
    """An op ``s`` event's ``schema_change``, checked; EnvelopeError naming the field."""

    def refuse(problem: str) -> EnvelopeError:
        return EnvelopeError(f"change event {event_id!r}: op 's' {problem}")

    change = raw.get("schema_change")
    if not isinstance(change, dict):
        raise refuse("needs schema_change, an object")
    if key or before is not None or after is not None:
        raise refuse("has an empty key and no images")
    version = change.get("version")
    if type(version) is not int or version < 1:
        raise refuse(f"schema_change.version must be a positive integer, not {version!r}")
    if source.typed is not True or source.schema_version != version:
        raise refuse(f"needs source.typed true and source.schema_version {version}")
    previous = change.get("previous_version")
    if previous is not None and (type(previous) is not int or previous >= version):
        raise refuse(f"schema_change.previous_version must be null or below {version}, not {previous!r}")
    for name in ("added", "dropped", "retyped"):
        columns = change.get(name)
        if not isinstance(columns, list) or not all(isinstance(column, str) for column in columns):
            raise refuse(f"schema_change.{name} must be a list of column names")
    renamed = change.get("renamed")
    if not isinstance(renamed, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) for n in pair)
        for pair in renamed
    ):
        raise refuse("schema_change.renamed must be a list of [old, new] column names")
    return change


def _field(raw: dict[str, Any], name: str, kind: type, prefix: str = "") -> Any:
    if name not in raw:
        raise EnvelopeError(f"change event {raw.get('id')!r}: field {prefix}{name} is missing")
    value = raw[name]
    # bool is an int subclass: ts_ms=True must not pass as an integer.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EnvelopeError(
            f"change event {raw.get('id')!r}: field {prefix}{name} must be {kind.__name__}, "
            f"not {type(value).__name__}"
        )
    return value


def _optional(raw: dict[str, Any], name: str, kind: type, prefix: str = "") -> Any:
    if raw.get(name) is None:
        if name not in raw:
            raise EnvelopeError(f"change event {raw.get('id')!r}: field {prefix}{name} is missing")
        return None
    return _field(raw, name, kind, prefix)


def _encode_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode("ascii"))
    raise TypeError(f"{type(value).__name__} is not a change-event value")


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _big_ints_as_fragments(value: Any) -> Any:
    if type(value) is int and not _INT64_MIN <= value <= _UINT64_MAX:
        return orjson.Fragment(str(value).encode("ascii"))
    if isinstance(value, dict):
        return {name: _big_ints_as_fragments(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_big_ints_as_fragments(item) for item in value]
    return value
