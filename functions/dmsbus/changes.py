"""DynamoDB Streams records -> change events (envelope v1), and events -> Kinesis user records."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmsbus.ddbjson import DecodeError, Decoder, NumberMode
from dmsbus.envelope import RESYNC_ATTRIBUTE, STREAM_OPS, ChangeEvent, Source
from dmsbus.names import TableName, TableNameError, bus_table, table_from_stream_arn
from dmsbus.partition import hash_key, partition_key_with_prefix
from dmsbus.typed import ImageTyper, SchemaSource, TypingError

logger = logging.getLogger("dmsbus.changes")

#: Kinesis takes at most 1 MiB per record, data and partition key together.
MAX_KINESIS_RECORD_BYTES = 1024 * 1024

_TTL_PRINCIPAL = "dynamodb.amazonaws.com"


class StreamRecordError(ValueError):
    """A stream record that cannot become a change event (a poison record)."""


@dataclass(slots=True)
class UserRecord:
    """One change, ready for Kinesis. ``origin`` is the index of what it came from (the
    stream record in the glue's batch) so failures map back to it."""

    data: bytes
    partition_key: str
    hash_key: int
    origin: int

    @property
    def size(self) -> int:
        """What Kinesis counts against its limits: data plus UTF-8 partition key."""
        return len(self.data) + len(self.partition_key.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class _Table:
    name: TableName
    prefix: str  # "schema.table|", the partition-key prefix


class ChangeBuilder:
    """Builds change events for one bus. Reuse one instance: it caches table names per ARN."""

    def __init__(
        self,
        bus: str,
        *,
        numbers: NumberMode = "string",
        native: bool | None = None,
        schemas: SchemaSource | None = None,
    ) -> None:
        """``schemas``: type events with their tables' schemas (None: DMS's values, and no
        ``typed`` field)."""
        self.bus = bus
        self._decoder = Decoder(numbers, native=native)
        self._tables: dict[str, _Table] = {}
        self._schemas = schemas
        #: (DynamoDB table, schema version) of the events typed since the last take, each
        #: with the ``origin`` of its first event: their schema changes go out before them
        #: (dmsbus.schema_events).
        self._typed_versions: dict[tuple[str, int], int] = {}
        #: (DynamoDB table, origin) of the events built untyped since the last take.
        self._untyped: list[tuple[str, int]] = []

    def take_typed_versions(self) -> dict[tuple[str, int], int]:
        """The (DynamoDB table, schema version) pairs typed since the last call, each with
        the ``origin`` of the first event typed with it."""
        taken, self._typed_versions = self._typed_versions, {}
        return taken

    def take_untyped(self, before: int | None = None) -> dict[str, int]:
        """Per DynamoDB table, the events a typed bus built untyped since the last call
        (``before``: of the origins below it only, the ones that went out)."""
        taken, self._untyped = self._untyped, []
        counts: dict[str, int] = {}
        for table, origin in taken:
            if before is None or origin < before:
                counts[table] = counts.get(table, 0) + 1
        return counts

    def begin(self, deadline: float | None = None) -> None:
        """A new batch, to end by ``deadline`` (time.monotonic): the reads of schemas it
        waits for share one wait (``glue.typed_wait_seconds``)."""
        if self._schemas is not None:
            self._schemas.begin(deadline)

    def _count(self, dynamodb_table: str, version: int | None, origin: int) -> None:
        if version is None:
            self._untyped.append((dynamodb_table, origin))
        else:
            self._typed_versions.setdefault((dynamodb_table, version), origin)

    @property
    def decoder(self) -> Decoder:
        """The decoder of this bus's number mode (the backfill decodes scanned items with it)."""
        return self._decoder

    def from_stream_record(self, record: Mapping[str, Any]) -> ChangeEvent:
        """A Lambda DynamoDB Streams record -> its change event; StreamRecordError if poison."""
        return self._event(record, 0)[0]

    def encode_stream_record(self, record: Mapping[str, Any], origin: int) -> UserRecord:
        """The glue's one call per record: the change event, serialized and routed."""
        event, table, route = self._event(record, origin)
        return self._user_record(event, table, origin, route)

    def _event(self, record: Mapping[str, Any], origin: int) -> tuple[ChangeEvent, _Table, dict[str, Any]]:
        """The event, its table, and the key its partition key is made of: DMS's, typed or
        not, so that a row's events stay on one shard whether or not they are typed."""
        # The hot path validates nothing it need not: any failure is diagnosed afterwards
        # by _diagnose, which names the record and the field.
        try:
            arn = record["eventSourceARN"]
            table = self._tables.get(arn) or self._table(arn)
            ddb = record["dynamodb"]
            op = STREAM_OPS[record["eventName"]]
            sequence = ddb["SequenceNumber"]
            name = table.name
            dynamodb_table = name.dynamodb_table
            image = self._decoder.image
            before = None if op == "c" else image(ddb["OldImage"])
            after = None if op == "d" else image(ddb["NewImage"])
            resync: object = None
            if after is not None and RESYNC_ATTRIBUTE in after:
                marker = after.pop(RESYNC_ATTRIBUTE)
                if before is not None and before.pop(RESYNC_ATTRIBUTE, None) != marker and before == after:
                    # Only the resync marker changed: `dmsbus resync` asks for the row again.
                    op, before, resync = "r", None, marker
            elif before is not None:
                before.pop(RESYNC_ATTRIBUTE, None)
            # The images hold the key attributes: take them decoded rather than decode twice.
            row = before if after is None else after
            key = route = {attribute: row[attribute] for attribute in ddb["Keys"]}  # type: ignore[index]
            typed: bool | None = None
            version: int | None = None
            if self._schemas is not None:
                # The new image DMS wrote for a change is checked against the schema (a
                # resync's or a delete's image is the item as it was)
                written = ddb["NewImage"] if op in _WRITES else None
                typed, version, before, after, key = _typed(
                    self._schemas, name, before, after, key, written=written
                )
                if version is None:
                    self._untyped.append((dynamodb_table, origin))
                elif (dynamodb_table, version) not in self._typed_versions:
                    self._typed_versions[(dynamodb_table, version)] = origin
            ttl = op == "d" and (record.get("userIdentity") or {}).get("principalId") == _TTL_PRINCIPAL
            event = ChangeEvent(
                id=f"{dynamodb_table}/{sequence}",
                op=op,
                ts_ms=round(ddb["ApproximateCreationDateTime"] * 1000),
                source=Source(
                    bus=name.bus,
                    source=name.source,
                    schema=name.schema,
                    table=name.table,
                    version=name.version,
                    dynamodb_table=dynamodb_table,
                    sequence=sequence,
                    ttl=ttl,
                    snapshot=op == "r",
                    resync_for=resync_target(resync),
                    typed=typed,
                    schema_version=version,
                ),
                key=key,
                before=before,
                after=after,
            )
        except Exception as exc:
            raise StreamRecordError(
                f"{describe_stream_record(record)}: {self._diagnose(record, exc)}"
            ) from exc
        if type(sequence) is not str or type(event.ts_ms) is not int:
            raise StreamRecordError(f"{describe_stream_record(record)}: {self._diagnose(record, None)}")
        return event, table, route

    def _diagnose(self, record: Mapping[str, Any], error: Exception | None) -> str:
        """Why a stream record cannot become an event, naming the field (the slow path)."""
        if isinstance(error, TableNameError):
            return str(error)
        ddb = record.get("dynamodb")
        if not isinstance(ddb, Mapping):
            return "field 'dynamodb' is missing or not an object"
        event_name = record.get("eventName")
        if event_name not in STREAM_OPS:
            return f"eventName {event_name!r} is not INSERT, MODIFY or REMOVE"
        if not isinstance(ddb.get("SequenceNumber"), str):
            return f"dynamodb.SequenceNumber {ddb.get('SequenceNumber')!r} is not a string"
        seconds = ddb.get("ApproximateCreationDateTime")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return f"dynamodb.ApproximateCreationDateTime {seconds!r} is not epoch seconds"
        op = STREAM_OPS[event_name]
        fields = ["Keys"] + ([] if op == "c" else ["OldImage"]) + ([] if op == "d" else ["NewImage"])
        for field in fields:
            image = ddb.get(field)
            if image is None:
                return (
                    f"dynamodb.{field} is missing (the table's stream must be NEW_AND_OLD_IMAGES, "
                    f"it is {ddb.get('StreamViewType', 'unknown')})"
                )
            try:
                decoded = self._decoder.image(image)
            except DecodeError as exc:
                return f"dynamodb.{field}.{exc}"
            if field != "Keys":
                missing = sorted(set(ddb["Keys"]) - set(decoded))
                if missing:
                    return f"dynamodb.{field} lacks the key attributes {missing}"
        return _reason(error) if error is not None else "malformed stream record"

    def user_record(
        self, event: ChangeEvent, origin: int, *, route: dict[str, Any] | None = None
    ) -> UserRecord:
        """Serialize and route one event; StreamRecordError when it exceeds Kinesis's limit.
        ``route``: the key its partition key is made of, DMS's (default: ``event.key``, which
        a typed event holds typed)."""
        table = self._tables.get(event.source.dynamodb_table) or self._remember(event.source.dynamodb_table)
        return self._user_record(event, table, origin, event.key if route is None else route)

    def typed(
        self, name: TableName, after: dict[str, Any], key: dict[str, Any], origin: int = 0
    ) -> tuple[bool | None, int | None, dict[str, Any], dict[str, Any]]:
        """A read's image and key typed as the glue types changes (``typed`` None: this
        builder does not type). A scanned item is not checked against the schema: it may
        have been written before the latest DDL."""
        if self._schemas is None:
            return None, None, after, key
        typed, version, _, typed_after, typed_key = _typed(
            self._schemas, name, None, after, key, written=None
        )
        self._count(name.dynamodb_table, version, origin)
        return typed, version, typed_after if typed_after is not None else after, typed_key

    def _user_record(
        self, event: ChangeEvent, table: _Table, origin: int, route: dict[str, Any]
    ) -> UserRecord:
        data = event.to_json()
        pk = partition_key_with_prefix(table.prefix, route)
        record = UserRecord(data, pk, hash_key(pk), origin)
        # A partition key is at most 256 characters, 1 KiB of UTF-8: measure it only when close.
        if len(data) + 1024 > MAX_KINESIS_RECORD_BYTES and record.size > MAX_KINESIS_RECORD_BYTES:
            raise StreamRecordError(
                f"change {event.id} encodes to {record.size} bytes; a Kinesis record takes at most "
                f"{MAX_KINESIS_RECORD_BYTES} (both images of a 400 KB item can exceed it)"
            )
        return record

    def _table(self, arn: str) -> _Table:
        table = self._tables.get(arn)
        if table is None:
            table = self._remember(table_from_stream_arn(arn))
            self._tables[arn] = table
        return table

    def _remember(self, dynamodb_table: str) -> _Table:
        name = bus_table(dynamodb_table, self.bus)
        if name is None:
            raise TableNameError(
                f"table {dynamodb_table!r} is not a table of bus {self.bus!r} "
                f"(expected {self.bus}.source.schema.table[.version])"
            )
        table = _Table(name, f"{name.schema}.{name.table}|")
        self._tables[dynamodb_table] = table
        return table


#: The ops whose new image DMS has just written.
_WRITES = frozenset({"c", "u"})
#: A typer that fails an image is replaced at most this often per image: a newer stored
#: version, then the catalog read now (two DDLs since the last read are two versions), then
#: once more to leave columns dropped since out of an old image.
_REFRESHES = 3


def _typed(
    schemas: SchemaSource,
    name: TableName,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    key: dict[str, Any],
    *,
    written: Mapping[str, Any] | None,
) -> tuple[bool, int | None, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]:
    """The images and key in the source's types, or as they were (``typed`` false) when the
    source's catalog, read at once when the images do not fit the schema held, cannot be
    read in time or does not explain them. ``written``: the new image as DMS wrote it."""
    try:
        typer = schemas.typer(name)
        if typer is not None:
            try:
                typed_before = None if before is None else typer.old_image(before)
                if after is None:
                    typed_after = None
                elif written is None:
                    typed_after = typer.image(after)
                else:
                    typed_after = typer.new_image(after, written)
            except TypingError as exc:
                typer, typed_before, typed_after = _retyped(schemas, name, typer, exc, before, after, written)
        else:
            typer, typed_before, typed_after = _retyped(schemas, name, None, None, before, after, written)
        if typer is None:
            return False, None, before, after, key
    except Exception:  # typing must never hold an event back nor make it poison
        logger.exception("%s: published untyped: typing failed", name.dynamodb_table)
        return False, None, before, after, key
    if typer.converted.isdisjoint(key):
        return True, typer.schema.version, typed_before, typed_after, key
    row = typed_after if typed_after is not None else typed_before
    typed_key = {attribute: row.get(attribute, value) for attribute, value in key.items()} if row else key
    return True, typer.schema.version, typed_before, typed_after, typed_key


def _retyped(  # noqa: PLR0917  # the hot path's own arguments, passed on at a DDL moment
    schemas: SchemaSource,
    name: TableName,
    typer: ImageTyper | None,
    error: TypingError | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    written: Mapping[str, Any] | None,
) -> tuple[ImageTyper | None, dict[str, Any] | None, dict[str, Any] | None]:
    """The DDL moment: the images typed with a schema the source has now (``typer`` None:
    none held), or (None, ...) when it cannot be read in time or does not explain them."""
    for _ in range(_REFRESHES):
        typer = schemas.refreshed(name, typer, error)
        if typer is None:
            break
        try:
            return typer, typer.image(before), typer.image(after, written)
        except TypingError as exc:
            error = exc
    # The columns, never the values: logs are not for the rows' data
    logger.debug("%s: published untyped (%s)", name.dynamodb_table, error)
    return None, None, None


def resync_marker(run: str, consumer_function: str | None) -> str:
    """The marker ``dmsbus resync`` writes: its run, and the consumer it is for, if one."""
    return f"{run}/{consumer_function}" if consumer_function else run


def resync_target(marker: object) -> str | None:
    """The consumer function a resync marker is for (None: every consumer, or a marker
    that is not one ``dmsbus resync`` writes)."""
    if not isinstance(marker, str) or "/" not in marker:
        return None
    return marker.split("/", 1)[1] or None


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"field {exc.args[0]!r} is missing"
    return str(exc)


def describe_stream_record(record: Any) -> str:
    """How error messages name a stream record: sequence number, event id and table."""
    if not isinstance(record, Mapping):
        return f"stream record of type {type(record).__name__}"
    ddb = record.get("dynamodb")
    sequence = ddb.get("SequenceNumber") if isinstance(ddb, Mapping) else None
    table: Any
    try:
        table = table_from_stream_arn(str(record.get("eventSourceARN")))
    except TableNameError:
        table = record.get("eventSourceARN")
    return f"stream record {sequence} (eventID {record.get('eventID')}, table {table})"
