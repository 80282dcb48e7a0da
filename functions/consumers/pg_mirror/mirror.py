"""The mirror's core: apply a batch of change events to PostgreSQL in one transaction.

Pure database code: it takes a psycopg connection and events, and touches no AWS.

- Each source table ``schema.table`` has a mirror table of the same name (the schema name
  from ``schema_template``, ``"{schema}"`` by default), created on first sight with the
  event's key as its primary key. Versions of a reloaded table go to the same mirror table
  when their key columns match; otherwise to ``{table}_{version}``.
- New attributes add columns; a value that does not fit its column widens the column
  (``schema.py``). Nothing is ever dropped.
- Typed events (``glue.typed``) carry their table's schema (``event.schema``): the mirror
  table takes the source's column types, and again at each newer schema version (the one
  applied is in ``dmsbus_mirror.typed_tables``). A typed table's columns are not widened: a
  value that does not match (an untyped event's DMS form) is cast. The session is in UTC,
  the zone of DMS's timestamps.
- On a typed bus (``latest`` given), a column or table that an event without a schema (an
  untyped one, published before the glue could read the schema) would create takes the
  source's types from the table's latest schema in the schema table, read once per table
  and batch, and only then. A column the latest schema lacks but an earlier version has
  (``version`` given) was dropped from the source after the event was written (a replay,
  a redrive, a consumer started after the DROP): it takes the type of the newest version
  that has it, which is not recorded as the version followed. When no version has the
  column yet, the batch fails (:class:`SchemaNotReadyError`) and Lambda hands it again,
  rather than a column typed from DMS's text.
- Order and duplicates: ``dmsbus_mirror.applied`` holds, per mirror row, the position of
  the last change applied to it: (version rank, DynamoDB stream sequence). A change is
  applied only when its position is at least that one, so a duplicate or an older change
  (a retry, a replay, a stale backfill read, whose sequence is 0) changes nothing. Deleted
  rows keep their position (a tombstone) so a late older change cannot bring them back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from consumers.pg_mirror.schema import (
    MANAGED,
    TEXT,
    MirrorSchemaError,
    SchemaNotReadyError,
    check_identifier,
    column_value,
    source_type,
    value_type,
    widen,
)
from dmsbus.envelope import ChangeEvent
from dmsbus.names import version_rank
from dmsbus.partition import canonical_json
from dmsbus.schemas import TableSchema, qualified

__all__ = ["Applied", "Mirror", "MirrorSchemaError", "SchemaNotReadyError", "row_key", "version_rank"]

logger = logging.getLogger("dmsbus.pg_mirror")

STATE_SCHEMA = "dmsbus_mirror"
#: Row keys longer than this are stored hashed (a btree entry holds about 2.7 KB).
MAX_ROW_KEY_CHARS = 1_000
#: Deadlocks and serialization failures between concurrent batches are retried this often.
ATTEMPTS = 4

_STATE_DDL: LiteralString = """
CREATE SCHEMA IF NOT EXISTS dmsbus_mirror;
CREATE TABLE IF NOT EXISTS dmsbus_mirror.applied (
    mirror_table   text        NOT NULL,
    row_key        text        NOT NULL,
    dynamodb_table text        NOT NULL,
    version_rank   integer     NOT NULL,
    sequence       numeric     NOT NULL,
    event_id       text        NOT NULL,
    deleted        boolean     NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mirror_table, row_key)
);
CREATE TABLE IF NOT EXISTS dmsbus_mirror.typed_tables (
    mirror_table   text        PRIMARY KEY,
    source_table   text        NOT NULL,
    schema_version integer     NOT NULL,
    columns        jsonb       NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now()
)
"""
_RECORD_TYPED: LiteralString = """
INSERT INTO dmsbus_mirror.typed_tables (mirror_table, source_table, schema_version, columns)
VALUES (%s, %s, %s, %s)
ON CONFLICT (mirror_table) DO UPDATE SET
    source_table = EXCLUDED.source_table, schema_version = EXCLUDED.schema_version,
    columns = EXCLUDED.columns, applied_at = now()
WHERE typed_tables.schema_version <= EXCLUDED.schema_version
"""
#: DMS writes timestamps with time zone in UTC, without an offset (docs/dms.md).
_ZONE = "UTC"
#: What a column that cannot be cast to the source's type raises: it keeps its type (a
#: view or rule on it also forbids the ALTER).
_NO_CAST = (
    errors.DataError,
    errors.CannotCoerce,
    errors.DatatypeMismatch,
    errors.FeatureNotSupported,
    errors.DependentObjectsStillExist,
)
#: A value too wide for a typed column: typed with an older schema version than the one
#: that widened the column in the source (the glue learns of a retype at its next read).
_TOO_WIDE = (errors.StringDataRightTruncation, errors.NumericValueOutOfRange)
#: Integer and float types narrower than the one before them: an inferred ``bigint`` or
#: ``double precision`` column is left as it is rather than rewritten narrower.
_NARROWER = {
    "bigint": frozenset({"integer", "smallint"}),
    "integer": frozenset({"smallint"}),
    "double precision": frozenset({"real"}),
}
# Returns the rows whose change is applied: newer than (or the same as) the last one.
_CLAIM: LiteralString = """
INSERT INTO dmsbus_mirror.applied AS a
    (mirror_table, row_key, dynamodb_table, version_rank, sequence, event_id, deleted)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::integer[], %s::numeric[], %s::text[], %s::boolean[])
ON CONFLICT (mirror_table, row_key) DO UPDATE SET
    dynamodb_table = EXCLUDED.dynamodb_table, version_rank = EXCLUDED.version_rank,
    sequence = EXCLUDED.sequence, event_id = EXCLUDED.event_id, deleted = EXCLUDED.deleted,
    applied_at = now()
WHERE a.version_rank < EXCLUDED.version_rank
   OR (a.version_rank = EXCLUDED.version_rank AND a.dynamodb_table = EXCLUDED.dynamodb_table
       AND a.sequence <= EXCLUDED.sequence)
RETURNING mirror_table, row_key
"""


def row_key(key: dict[str, Any]) -> str:
    text = canonical_json(key)
    if len(text) <= MAX_ROW_KEY_CHARS:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Typed:
    """The schema version a typed mirror table follows, and the type each of its columns
    was given from it (name -> type)."""

    version: int
    columns: dict[str, str]


@dataclass
class Shape:
    """A mirror table as the catalog has it: columns (name -> type) and primary key; and
    the schema version it follows, when events with a schema created or altered it."""

    columns: dict[str, str]
    key: tuple[str, ...]
    typed: Typed | None = None

    def follows(self, schema: TableSchema) -> bool:
        """Whether the table has this schema version (or a newer one) applied."""
        return self.typed is not None and self.typed.version >= schema.version


@dataclass(frozen=True, slots=True)
class TableRef:
    schema: str
    table: str

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    def identifier(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))


@dataclass
class Applied:
    """What one batch did."""

    events: int = 0
    upserted: int = 0
    deleted: int = 0
    #: Changes not applied: an equal or newer change of the row was applied before.
    skipped: int = 0
    #: Changes superseded by a later change of the same row in the same batch.
    coalesced: int = 0
    created_tables: list[str] = field(default_factory=list)
    altered_columns: list[str] = field(default_factory=list)


@dataclass
class _Wanted:
    """What a batch's rows ask of one mirror table: its key, each attribute's type as the
    values ask (None: only nulls), and the newest schema the rows carry. On a typed bus also
    the source table (``source.schema.table``), the attributes of rows without a schema, and
    the source's types of new columns from a schema version the table already follows."""

    key: tuple[str, ...]
    source: str
    values: dict[str, str | None] = field(default_factory=dict)
    schema: TableSchema | None = None
    loose: set[str] = field(default_factory=set)
    sourced: dict[str, str] = field(default_factory=dict)


@dataclass
class _Row:
    table: TableRef
    key: str
    event: ChangeEvent
    position: tuple[int, int]


class Mirror:
    """Applies change events to a mirror database; keeps the catalog it has read."""

    def __init__(
        self,
        *,
        schema_template: str = "{schema}",
        latest: Callable[[str], TableSchema | None] | None = None,
        version: Callable[[str, int], TableSchema | None] | None = None,
    ) -> None:
        """``latest``: a table's latest schema by ``source.schema.table`` (the schema table),
        given on a typed bus: for a value too wide for a column typed with an older version,
        and for the types of a column or table an untyped event brings. ``version``: one
        stored version of it, for the type of such a column the latest version no longer has
        (dropped from the source since the event was written)."""
        if "{schema}" not in schema_template and "{source}" not in schema_template:
            logger.warning("schema template %r puts every source schema in one schema", schema_template)
        self.schema_template = schema_template
        self.latest = latest
        self.version = version
        # Stored versions never change: each is read once per container
        self._versions: dict[tuple[str, int], TableSchema] = {}
        self._shapes: dict[TableRef, Shape | None] = {}
        self._state_ready = False

    # -- the batch ---------------------------------------------------------------------

    def apply(self, connection: psycopg.Connection[Any], events: Sequence[ChangeEvent]) -> Applied:
        """Apply ``events`` (in stream order) in one transaction. ``connection`` is in
        autocommit mode; schema changes are committed first, each in its own transaction."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._apply(connection, events)
            except (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable) as exc:
                if attempt == ATTEMPTS:
                    raise
                logger.warning("mirror batch attempt %d: %s; retrying", attempt, exc)
            except (errors.UndefinedTable, errors.UndefinedColumn, errors.DatatypeMismatch) as exc:
                # The catalog changed under us (an operator altered a table): read it again.
                if attempt == ATTEMPTS:
                    raise
                logger.warning("mirror catalog changed (%s); reading it again", exc)
                self._shapes.clear()
            except _TOO_WIDE as exc:
                # Typed with an older version than the source has now: apply the latest.
                if attempt == ATTEMPTS or not self._follow_latest(connection, events):
                    raise
                logger.warning("a value too wide for its column (%s); the latest schema applied", exc)
        raise AssertionError("unreachable")

    def _follow_latest(self, connection: psycopg.Connection[Any], events: Sequence[ChangeEvent]) -> bool:
        """Apply each typed table's latest schema where the mirror follows an older one;
        whether any was."""
        if self.latest is None:
            return False
        applied = Applied()
        seen: set[TableRef] = set()
        for event in events:
            if not event.source.typed:
                continue
            table = self._target(connection, event)
            if table in seen:
                continue
            seen.add(table)
            source = event.source
            latest = self.latest(qualified(source.source, source.schema, source.table))
            shape = self._shape(connection, table, fresh=True)
            if latest is not None and shape is not None and not shape.follows(latest):
                wanted = _Wanted(tuple(event.key), latest.qualified, schema=latest)
                self._change(connection, table, wanted, applied)
        return bool(applied.altered_columns)

    def _apply(self, connection: psycopg.Connection[Any], events: Sequence[ChangeEvent]) -> Applied:
        result = Applied(events=len(events))
        if not events:
            return result
        self._ensure_state(connection)
        if connection.info.parameter_status("TimeZone") != _ZONE:
            connection.execute(f"SET TIME ZONE '{_ZONE}'")
        rows = self._coalesce(connection, events, result)
        self._evolve(connection, rows, result)
        with connection.transaction():
            winners = self._claim(connection, rows)
            result.skipped = len(rows) - len(winners)
            upserts: dict[TableRef, list[_Row]] = {}
            deletes: dict[TableRef, list[_Row]] = {}
            for row in rows:
                if (row.table.label, row.key) in winners:
                    (deletes if row.event.op == "d" else upserts).setdefault(row.table, []).append(row)
            for table, batch in deletes.items():
                self._delete(connection, table, batch)
                result.deleted += len(batch)
            for table, batch in upserts.items():
                self._upsert(connection, table, batch)
                result.upserted += len(batch)
        return result

    def _coalesce(
        self, connection: psycopg.Connection[Any], events: Sequence[ChangeEvent], result: Applied
    ) -> list[_Row]:
        """The newest change per mirror row (the later one when two are equal)."""
        newest: dict[tuple[TableRef, str], _Row] = {}
        targets: dict[tuple[str, tuple[str, ...]], TableRef] = {}  # one lookup per table and key
        for event in events:
            where = (event.source.dynamodb_table, tuple(event.key))
            table = targets.get(where)
            if table is None:
                table = targets[where] = self._target(connection, event)
            key = row_key(event.key)
            position = (version_rank(event.source.version), _sequence(event))
            current = newest.get((table, key))
            if current is None or position >= current.position:
                newest[(table, key)] = _Row(table, key, event, position)
        result.coalesced = len(events) - len(newest)
        return list(newest.values())

    # -- where an event goes -----------------------------------------------------------------

    def _target(self, connection: psycopg.Connection[Any], event: ChangeEvent) -> TableRef:
        source = event.source
        schema = check_identifier(
            self.schema_template.format(schema=source.schema, source=source.source, bus=source.bus),
            f"mirror schema of {source.dynamodb_table}",
        )
        key_names = tuple(event.key)
        base = TableRef(schema, check_identifier(source.table, f"table of {source.dynamodb_table}"))
        # A reload whose key differs goes to its own mirror table.
        versioned = TableRef(
            schema, check_identifier(f"{source.table}_{source.version or 'v0'}", "mirror table")
        )
        keys: list[str] = []
        for candidate in (base, versioned):
            shape = self._shape(connection, candidate)
            if shape is None:
                # Not created yet: claim it for this key, so a batch holding two versions
                # with different keys does not send both to one table.
                self._shapes[candidate] = Shape({}, key_names)
                return candidate
            if set(shape.key) == set(key_names):
                return candidate
            keys.append(f"{candidate.label} (key {list(shape.key)})")
        raise MirrorSchemaError(
            f"{source.dynamodb_table}: key {list(key_names)} matches neither mirror table {' nor '.join(keys)}"
        )

    # -- schema ------------------------------------------------------------------------------

    def _ensure_state(self, connection: psycopg.Connection[Any]) -> None:
        if self._state_ready:
            return
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext('dmsbus_mirror.state'))")
            connection.execute(_STATE_DDL)
        self._state_ready = True

    def _shape(
        self, connection: psycopg.Connection[Any], table: TableRef, *, fresh: bool = False
    ) -> Shape | None:
        if fresh or table not in self._shapes:
            self._shapes[table] = _read_shape(connection, table)
        return self._shapes[table]

    def _evolve(self, connection: psycopg.Connection[Any], rows: Iterable[_Row], result: Applied) -> None:
        """Create tables, give them their schema's types, and add or widen columns for the
        values about to be written."""
        wanted: dict[TableRef, _Wanted] = {}
        typed_bus = self.latest is not None
        for row in rows:
            want = wanted.get(row.table)
            if want is None:
                source = row.event.source
                want = wanted[row.table] = _Wanted(
                    tuple(row.event.key), qualified(source.source, source.schema, source.table)
                )
            schema = row.event.schema if row.event.source.typed else None
            values = _values(row.event)
            if schema is None:
                if typed_bus:
                    want.loose.update(values)
            elif want.schema is None or schema.version > want.schema.version:
                want.schema = schema
            for name, value in values.items():
                want.values[name] = widen(want.values.get(name), value_type(value))
        tables = sorted(wanted, key=lambda ref: ref.label)
        if typed_bus:
            # Every table's types are settled before any is altered: a batch that fails
            # here has changed nothing.
            for table in tables:
                self._source_types(connection, table, wanted[table])
        for table in tables:
            want = wanted[table]
            if self._needs_change(self._shape(connection, table), want):
                self._change(connection, table, want, result)

    def _source_types(self, connection: psycopg.Connection[Any], table: TableRef, want: _Wanted) -> None:
        """On a typed bus: the source's types of the columns that rows without a schema bring
        and neither the mirror table nor the batch's schema has (every column, for a table
        not created yet), from the table's latest schema. That schema is applied as a typed
        event's would be when it is newer than the one the table follows; otherwise only the
        new columns take its types. A column it does not have takes the type of the newest
        earlier version that has it (:meth:`_dropped_types`), never recorded as the version
        followed. Without a type: :class:`SchemaNotReadyError`."""
        assert self.latest is not None
        shape = self._shape(connection, table)
        have = set(shape.columns) if shape is not None else set()
        if want.schema is not None:
            have.update(column.name for column in want.schema.columns if source_type(column))
        new = sorted(want.loose - have)
        if not new:
            return
        exists = shape is not None and bool(shape.columns)
        what = f"mirror table {table.label}" if exists else f"mirror table {table.label} (not created yet)"
        try:
            latest = self.latest(want.source)
        except Exception as exc:
            raise SchemaNotReadyError(
                f"{what}: columns {new} of an untyped event: on a typed bus a new column takes the"
                f" source's type from the schema table, which could not be read ({exc!r});"
                " the batch is handed again"
            ) from exc
        types: dict[str, str] = {}
        dropped: dict[str, str] = {}
        if latest is not None:
            types = {
                name: kind
                for name in new
                if (column := latest.column(name)) and (kind := source_type(column))
            }
            gone = [name for name in new if latest.column(name) is None]
            if gone:
                dropped = self._dropped_types(want.source, latest.version, gone, what)
        lacking = [name for name in new if name not in types and name not in dropped]
        if latest is None or lacking:
            if latest is None:
                found = f"no schema of {want.source}"
            else:
                found = f"latest {want.source} is version {latest.version}"
                if latest.version > 1 and self.version is not None:
                    found += "; no earlier version has it either"
            raise SchemaNotReadyError(
                f"{what}: columns {lacking} of an untyped event: on a typed bus a new column takes"
                f" the source's type from the schema table, which does not have it yet ({found});"
                " the batch is handed again"
            )
        followed = shape.typed.version if shape is not None and shape.typed is not None else 0
        if latest.version > max(followed, want.schema.version if want.schema is not None else 0):
            want.schema = latest
        else:
            want.sourced.update(types)
        # Never applied as a version: only the columns, which the mirror keeps (none is dropped)
        want.sourced.update(dropped)
        if types:
            logger.info(
                "%s: columns %s of untyped events take the source's types of %s version %d",
                what, sorted(types), want.source, latest.version,
            )  # fmt: skip

    def _dropped_types(self, source: str, latest: int, names: list[str], what: str) -> dict[str, str]:
        """The source's types of columns that the table's latest schema (version ``latest``)
        does not have, from the newest earlier version that has each: such a column was
        dropped from the source after the event was written (a replay, a redrive, a consumer
        started after the DROP), so the latest version will never have it. Versions are read
        newest first and only until every column is found; a column none has is left out."""
        found: dict[str, str] = {}
        if self.version is None:
            return found
        for number in range(latest - 1, 0, -1):
            older = self._versions.get((source, number))
            if older is None:
                try:
                    older = self.version(source, number)
                except Exception as exc:
                    raise SchemaNotReadyError(
                        f"{what}: columns {names} of an untyped event: on a typed bus a column the"
                        f" latest schema lacks takes the source's type from an earlier version, and"
                        f" {source} version {number} could not be read ({exc!r}); the batch is handed again"
                    ) from exc
                if older is None:
                    continue
                self._versions[(source, number)] = older
            here = {
                name: kind
                for name in names
                if name not in found and (column := older.column(name)) and (kind := source_type(column))
            }
            if here:
                found.update(here)
                logger.info(
                    "%s: columns %s of untyped events are no longer in the source's latest schema;"
                    " they take the types of version %d, the newest that has them",
                    what, sorted(here), number,
                )  # fmt: skip
            if len(found) == len(names):
                break
        return found

    @staticmethod
    def _needs_change(shape: Shape | None, want: _Wanted) -> bool:
        if shape is None:
            return True
        if want.schema is not None and not shape.follows(want.schema):
            return True
        for name, inferred in want.values.items():
            current = shape.columns.get(name)
            if current is None:
                return True
            if (shape.typed is None or name not in shape.typed.columns) and _widens(current, inferred):
                return True
        return False

    def _change(
        self, connection: psycopg.Connection[Any], table: TableRef, want: _Wanted, result: Applied
    ) -> None:
        """One short transaction, serialized with other batches by an advisory lock."""
        for name in want.values:
            check_identifier(name, f"column of {table.label}")
        schema_types = (
            {column.name: kind for column in want.schema.columns if (kind := source_type(column))}
            if want.schema is not None
            else {}
        )
        for name in (*schema_types, *want.sourced):
            check_identifier(name, f"column of {table.label}")
        key = want.key
        with connection.transaction():
            connection.execute("SET LOCAL lock_timeout = '10s'")
            connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"dmsbus_mirror:{table.label}",)
            )
            shape = _read_shape(connection, table)
            schema = want.schema
            if schema is not None and shape is not None and shape.follows(schema):
                # Another batch applied it, or a newer one: only the columns the table lacks
                # (dropped in the source since, and a replay brings them) take its types
                schema = None
                schema_types = {
                    name: kind for name, kind in schema_types.items() if name not in shape.columns
                }
            # New columns of untyped events, with the types of a version the table follows
            schema_types.update(
                (name, kind) for name, kind in want.sourced.items() if name not in schema_types
            )
            columns = {name: want.values.get(name) for name in key}
            columns.update(schema_types)
            columns.update((name, kind) for name, kind in want.values.items() if name not in schema_types)
            if shape is None:
                definitions = [
                    sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(columns[name] or TEXT))
                    for name in key
                ]
                connection.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema))
                )
                connection.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
                        table.identifier(),
                        sql.SQL(", ").join(definitions),
                        sql.SQL(", ").join(map(sql.Identifier, key)),
                    )
                )
                result.created_tables.append(table.label)
                shape = Shape({name: columns[name] or TEXT for name in key}, key)
            typed = shape.typed
            retypes: dict[str, tuple[str, str]] = {}  # to the source's types: one rewrite
            ours: set[str] = set()  # the mirror's columns, typed now or left (narrower)
            for name, wanted in columns.items():
                current = shape.columns.get(name)
                if current is None:
                    connection.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            table.identifier(), sql.Identifier(name), sql.SQL(wanted or TEXT)
                        )
                    )
                    result.altered_columns.append(f"{table.label}.{name} {wanted or TEXT} (new)")
                elif name in schema_types:
                    # The source's type, over the mirror's own choice (an earlier version's,
                    # or inferred from values); a type an operator gave the column stays.
                    assert wanted is not None
                    given = typed.columns.get(name) if typed is not None else None
                    if current == given if given is not None else current in MANAGED:
                        ours.add(name)
                        if current != wanted and wanted not in _NARROWER.get(current, ()):
                            retypes[name] = (current, wanted)
                elif (typed is None or name not in typed.columns) and _widens(current, wanted):
                    # A column of the mirror's own, typed from values: it widens as ever
                    wider = widen(current, wanted)
                    assert wider is not None
                    self._retype(
                        connection, table, name, current=current, wanted=wider, result=result, exact=False
                    )
            if retypes:
                self._retype_all(connection, table, retypes, result)
            if schema is not None:
                _record_typed(
                    connection, table, schema.qualified, schema.version,
                    schema_types=schema_types, typed=typed, ours=ours,
                )  # fmt: skip
            elif want.sourced and typed is not None:
                _record_typed(
                    connection, table, want.source, typed.version,
                    schema_types=schema_types, typed=typed, ours=ours,
                )  # fmt: skip
        self._shape(connection, table, fresh=True)

    def _retype_all(
        self,
        connection: psycopg.Connection[Any],
        table: TableRef,
        retypes: dict[str, tuple[str, str]],
        result: Applied,
    ) -> None:
        """Every column to its source type in one ``ALTER TABLE``, which rewrites the table
        once; when one of them cannot be cast, column by column, so the others still are."""
        if len(retypes) > 1:
            statement = sql.SQL("ALTER TABLE {} {}").format(
                table.identifier(),
                sql.SQL(", ").join(
                    sql.SQL("ALTER COLUMN {} TYPE {} USING {}::{}").format(
                        sql.Identifier(name), sql.SQL(wanted), sql.Identifier(name), sql.SQL(wanted)
                    )
                    for name, (_, wanted) in retypes.items()
                ),
            )
            try:
                with connection.transaction():
                    connection.execute(statement)
            except _NO_CAST:
                pass  # column by column, below: the one that does not cast is named there
            else:
                for name, (current, wanted) in retypes.items():
                    result.altered_columns.append(f"{table.label}.{name} {current} -> {wanted}")
                logger.info("mirror table %s typed: %s", table.label, sorted(retypes))
                return
        for name, (current, wanted) in retypes.items():
            self._retype(connection, table, name, current=current, wanted=wanted, result=result, exact=True)

    @staticmethod
    def _retype(
        connection: psycopg.Connection[Any],
        table: TableRef,
        name: str,
        *,
        current: str,
        wanted: str,
        result: Applied,
        exact: bool,
    ) -> None:
        """``ALTER COLUMN ... TYPE``, casting the values it holds. To the source's type
        (``exact``), a value that does not cast leaves the column as it is, with a warning:
        every later value is then written through a cast to it."""
        statement = sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
            table.identifier(), sql.Identifier(name), sql.SQL(wanted), sql.Identifier(name), sql.SQL(wanted)
        )
        if not exact:
            connection.execute(statement)
            result.altered_columns.append(f"{table.label}.{name} {current} -> {wanted}")
            logger.info("mirror column %s.%s widened from %s to %s", table.label, name, current, wanted)
            return
        try:
            with connection.transaction():  # a savepoint: the failure leaves the rest
                connection.execute(statement)
        except _NO_CAST as exc:
            logger.warning(
                "mirror column %s.%s stays %s: its values do not cast to the source's %s (%s)",
                table.label, name, current, wanted, exc.diag.message_primary,
            )  # fmt: skip
            return
        result.altered_columns.append(f"{table.label}.{name} {current} -> {wanted}")
        logger.info("mirror column %s.%s typed from %s to %s", table.label, name, current, wanted)

    # -- data --------------------------------------------------------------------------------

    def _claim(self, connection: psycopg.Connection[Any], rows: list[_Row]) -> set[tuple[str, str]]:
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        for row in rows:
            source = row.event.source
            for values, value in zip(
                columns,
                (
                    row.table.label,
                    row.key,
                    source.dynamodb_table,
                    row.position[0],
                    str(row.position[1]),
                    row.event.id,
                    row.event.op == "d",
                ),
                strict=True,
            ):
                values.append(value)
        claimed = connection.execute(_CLAIM, columns).fetchall()
        return {(table, key) for table, key in claimed}

    def _upsert(self, connection: psycopg.Connection[Any], table: TableRef, rows: list[_Row]) -> None:
        shape = self._shape(connection, table)
        assert shape is not None, f"{table.label} was created before its rows are written"
        names = list(shape.columns)
        others = [name for name in names if name not in shape.key]
        conflict = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(name), sql.Identifier(name))
                    for name in others
                )
            )
            if others
            else sql.SQL("DO NOTHING")
        )
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
            table.identifier(),
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
            sql.SQL(", ").join(map(sql.Identifier, shape.key)),
            conflict,
        )
        parameters = []
        for row in rows:
            values = _values(row.event)
            parameters.append([column_value(values.get(name), shape.columns[name]) for name in names])
        with connection.cursor() as cursor:
            cursor.executemany(statement, parameters)

    def _delete(self, connection: psycopg.Connection[Any], table: TableRef, rows: list[_Row]) -> None:
        shape = self._shape(connection, table)
        if shape is None:
            return  # never written: nothing to delete (the tombstone is recorded)
        statement = sql.SQL("DELETE FROM {} WHERE {}").format(
            table.identifier(),
            sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(name)) for name in shape.key),
        )
        parameters = [
            [column_value(row.event.key.get(name), shape.columns[name]) for name in shape.key] for row in rows
        ]
        with connection.cursor() as cursor:
            cursor.executemany(statement, parameters)


def _record_typed(
    connection: psycopg.Connection[Any],
    table: TableRef,
    source_table: str,
    version: int,
    *,
    schema_types: dict[str, str],
    typed: Typed | None,
    ours: set[str],
) -> None:
    """Note the version of ``source_table`` applied and the types now in place. A column of
    the mirror's (``ours``) whose retype failed, or was left wider, is retried at the next
    version; an operator's keeps what the mirror gave it before, so that it stays the
    operator's."""
    now = _read_shape(connection, table)
    assert now is not None
    given = dict(typed.columns) if typed is not None else {}
    for name, kind in schema_types.items():
        if now.columns.get(name) == kind:
            given[name] = kind
        elif name in ours:
            given.pop(name, None)
    connection.execute(_RECORD_TYPED, (table.label, source_table, version, Jsonb(given)))


def _widens(current: str, inferred: str | None) -> bool:
    """Whether a value of the ``inferred`` type widens a column the mirror chose."""
    return inferred is not None and current in MANAGED and widen(current, inferred) != current


def _values(event: ChangeEvent) -> dict[str, Any]:
    """The row as the mirror writes it: the new image (or, for a delete, the key)."""
    return {**event.key, **(event.after or {})}


def _sequence(event: ChangeEvent) -> int:
    sequence = event.source.sequence
    if not sequence.isdigit():
        raise MirrorSchemaError(f"change event {event.id!r}: source.sequence {sequence!r} is not a number")
    return int(sequence)


def _read_shape(connection: psycopg.Connection[Any], table: TableRef) -> Shape | None:
    name = table.identifier().as_string(connection)
    columns = connection.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (name,),
    ).fetchall()
    if not columns:
        return None
    key = connection.execute(
        "SELECT a.attname FROM pg_index i"
        " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.position",
        (name,),
    ).fetchall()
    typed = connection.execute(
        "SELECT schema_version, columns FROM dmsbus_mirror.typed_tables WHERE mirror_table = %s",
        (table.label,),
    ).fetchone()
    return Shape(
        {column: kind for column, kind in columns},
        tuple(column for (column,) in key),
        Typed(typed[0], typed[1]) if typed else None,
    )
