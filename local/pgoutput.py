"""A reader of PostgreSQL's ``pgoutput`` logical replication messages (protocol version 1).

The DMS stand-in reads its slot with ``pg_logical_slot_peek_binary_changes`` and decodes
the messages here: Begin, Commit, Relation, Insert, Update, Delete, Truncate. Column values
arrive in PostgreSQL's text format; ``None`` is NULL and ``UNCHANGED`` an unchanged TOAST
value (not sent).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: Marks a TOASTed value the update did not change (pgoutput does not send it).
UNCHANGED = object()
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class PgOutputError(ValueError):
    """A message this reader does not understand."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    key: bool
    #: The type modifier: NUMERIC's precision and scale, CHAR's length; -1 when none.
    typmod: int = -1


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    table: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Change:
    """An insert, update or delete of one row. ``old`` holds the key (or the whole old row
    with REPLICA IDENTITY FULL) when PostgreSQL sends it; ``new`` is None for deletes."""

    kind: str  # "insert" | "update" | "delete"
    relation: Relation
    new: dict[str, object] | None
    old: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    relations: tuple[Relation, ...]


Message = Begin | Commit | Relation | Change | Truncate


@dataclass
class Decoder:
    """Decodes one slot's messages; remembers relations across calls (as the slot sends a
    Relation only before its first use in a session)."""

    relations: dict[int, Relation] = field(default_factory=dict)

    def decode(self, data: bytes) -> Message | None:
        reader = _Reader(data)
        kind = reader.byte()
        if kind == b"B":
            return Begin(reader.int64(), _timestamp(reader.int64()), reader.int32())
        if kind == b"C":
            reader.byte()  # flags, unused
            return Commit(reader.int64(), reader.int64(), _timestamp(reader.int64()))
        if kind == b"R":
            oid = reader.int32()
            schema, table = reader.string(), reader.string()
            reader.byte()  # replica identity setting
            columns = []
            for _ in range(reader.int16()):
                flags = reader.byte()[0]
                name = reader.string()
                type_oid = reader.int32()
                typmod = reader.int32()
                columns.append(Column(name, type_oid, bool(flags & 1), typmod))
            relation = Relation(oid, schema, table, tuple(columns))
            self.relations[oid] = relation
            return relation
        if kind == b"I":
            relation = self._relation(reader.int32())
            if reader.byte() != b"N":
                raise PgOutputError("insert without a new tuple")
            return Change("insert", relation, _tuple(reader, relation))
        if kind == b"U":
            relation = self._relation(reader.int32())
            marker = reader.byte()
            old = None
            if marker in (b"K", b"O"):
                old = _tuple(reader, relation)
                marker = reader.byte()
            if marker != b"N":
                raise PgOutputError("update without a new tuple")
            return Change("update", relation, _tuple(reader, relation), old)
        if kind == b"D":
            relation = self._relation(reader.int32())
            if reader.byte() not in (b"K", b"O"):
                raise PgOutputError("delete without an old key")
            return Change("delete", relation, None, _tuple(reader, relation))
        if kind == b"T":
            count = reader.int32()
            reader.byte()  # options
            return Truncate(tuple(self._relation(reader.int32()) for _ in range(count)))
        if kind in (b"Y", b"O", b"M"):
            return None  # type, origin and logical messages carry no row change
        raise PgOutputError(f"unknown pgoutput message {kind!r}")

    def _relation(self, oid: int) -> Relation:
        try:
            return self.relations[oid]
        except KeyError:
            raise PgOutputError(f"change of relation {oid} before its Relation message") from None


def _timestamp(microseconds: int) -> datetime:
    return _POSTGRES_EPOCH + timedelta(microseconds=microseconds)


def _tuple(reader: _Reader, relation: Relation) -> dict[str, object]:
    count = reader.int16()
    values: dict[str, object] = {}
    for index in range(count):
        kind = reader.byte()
        name = relation.columns[index].name
        if kind == b"n":
            values[name] = None
        elif kind == b"u":
            values[name] = UNCHANGED
        elif kind == b"t":
            values[name] = reader.take(reader.int32()).decode("utf-8")
        else:
            raise PgOutputError(f"tuple value of kind {kind!r} (binary mode is not requested)")
    return values


class _Reader:
    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, size: int) -> bytes:
        chunk = self._data[self._at : self._at + size]
        if len(chunk) != size:
            raise PgOutputError("message ends early")
        self._at += size
        return chunk

    def byte(self) -> bytes:
        return self.take(1)

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack(">q", self.take(8))[0])

    def string(self) -> str:
        end = self._data.index(b"\0", self._at)
        text = self._data[self._at : end].decode("utf-8")
        self._at = end + 1
        return text
