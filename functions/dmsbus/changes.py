"""DynamoDB Streams records -> change events (envelope v1), and events -> Kinesis user records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmsbus.ddbjson import DecodeError, Decoder, NumberMode
from dmsbus.envelope import STREAM_OPS, ChangeEvent, Source
from dmsbus.names import TableName, TableNameError, bus_table, table_from_stream_arn
from dmsbus.partition import hash_key, partition_key_with_prefix

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

    def __init__(self, bus: str, *, numbers: NumberMode = "string") -> None:
        self.bus = bus
        self._decoder = Decoder(numbers)
        self._tables: dict[str, _Table] = {}

    def from_stream_record(self, record: Mapping[str, Any]) -> ChangeEvent:
        """A Lambda DynamoDB Streams record -> its change event; StreamRecordError if poison."""
        try:
            return self._from_stream_record(record)
        except StreamRecordError:
            raise
        except Exception as exc:
            raise StreamRecordError(f"{describe_stream_record(record)}: {_reason(exc)}") from exc

    def _from_stream_record(self, record: Mapping[str, Any]) -> ChangeEvent:
        table = self._table(record["eventSourceARN"])
        ddb = record["dynamodb"]
        event_name = record["eventName"]
        op = STREAM_OPS.get(event_name)
        if op is None:
            raise StreamRecordError(
                f"{describe_stream_record(record)}: eventName {event_name!r} is not INSERT, MODIFY or REMOVE"
            )
        sequence = ddb["SequenceNumber"]
        if type(sequence) is not str:
            raise DecodeError(f"dynamodb.SequenceNumber {sequence!r} is not a string")
        name = table.name
        dynamodb_table = name.dynamodb_table
        ttl = False
        if op == "d":
            identity = record.get("userIdentity")
            ttl = bool(identity) and identity.get("principalId") == _TTL_PRINCIPAL  # type: ignore[union-attr]
        decode = self._decoder.image
        before = None if op == "c" else _image(decode, ddb, "OldImage")
        after = None if op == "d" else _image(decode, ddb, "NewImage")
        keys = ddb["Keys"]
        try:
            # The images hold the key attributes: take them decoded rather than decode twice.
            image = before if after is None else after
            key = {name: image[name] for name in keys}  # type: ignore[index]
        except (KeyError, TypeError):
            key = _image(decode, ddb, "Keys")
        return ChangeEvent(
            id=f"{dynamodb_table}/{sequence}",
            op=op,
            ts_ms=_millis(ddb["ApproximateCreationDateTime"]),
            source=Source(
                bus=name.bus,
                source=name.source,
                schema=name.schema,
                table=name.table,
                version=name.version,
                dynamodb_table=dynamodb_table,
                sequence=sequence,
                ttl=ttl,
            ),
            key=key,
            before=before,
            after=after,
        )

    def encode_stream_record(self, record: Mapping[str, Any], origin: int) -> UserRecord:
        """``from_stream_record`` then ``user_record``: the glue's one call per record."""
        return self.user_record(self.from_stream_record(record), origin)

    def user_record(self, event: ChangeEvent, origin: int) -> UserRecord:
        """Serialize and route one event; StreamRecordError when it exceeds Kinesis's limit."""
        table = self._tables.get(event.source.dynamodb_table) or self._remember(event.source.dynamodb_table)
        data = event.to_json()
        pk = partition_key_with_prefix(table.prefix, event.key)
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


def _image(decode: Any, ddb: Mapping[str, Any], field: str) -> dict[str, Any]:
    image = ddb.get(field)
    if image is None:
        raise DecodeError(
            f"dynamodb.{field} is missing (the table's stream must be NEW_AND_OLD_IMAGES, "
            f"it is {ddb.get('StreamViewType', 'unknown')})"
        )
    try:
        result: dict[str, Any] = decode(image)
    except DecodeError as exc:
        raise DecodeError(f"dynamodb.{field}.{exc}") from None
    return result


def _millis(seconds: Any) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise DecodeError(f"dynamodb.ApproximateCreationDateTime {seconds!r} is not epoch seconds")
    return round(seconds * 1000)


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
