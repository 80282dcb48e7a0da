"""The DMS stand-in: full load, then CDC from a logical replication slot, into DynamoDB the
way DMS's DynamoDB target writes it.

- Tables: selected, named, keyed and trimmed by the source's TableMappings, rendered by the
  same ``config`` code the CDK task uses (``config.mappings.resolve``). DMS creates each
  target table itself: provisioned 200/200, no stream. A table DMS cannot key (a composite
  or missing primary key without an object mapping) is suspended, as DMS does, and listed
  in ``suspended`` with the config change that fixes it.
- Types as DMS maps them (``local.dms_types``, the table in docs/dms.md): numbers -> N,
  booleans -> "true"/"false", CHAR(n) trimmed, unbounded numerics rounded to 6 decimals,
  dates and times in DMS's string form (timestamptz in UTC), LOBs (text, json, arrays ...)
  -> S within LobMaxSize, bytea and oid not migrated; NULL columns dropped; excluded
  columns removed. The same in full load and CDC.
- Errors as the task settings say: a row DMS cannot write (a value DynamoDB cannot hold,
  an item over 400 KB) is logged to the ``awsdms_apply_exceptions`` table and the task goes
  on (DataErrorPolicy LOG_ERROR); a table it cannot key is suspended (TableErrorPolicy
  SUSPEND_TABLE); a LOB over LobMaxSize stops the task (FailTasksOnLobTruncation).
- An UPDATE of a primary key is ignored, as DMS's PostgreSQL source does.
- Writes: BatchWriteItem for the full load and for changes' puts and deletes (UpdateItem
  for an update that leaves TOASTed values out), a large poll's changes on several lanes at
  once, each row always on the same lane so its writes apply in commit order.
- CDC: ``pgoutput`` through ``pg_logical_slot_peek_binary_changes``; after a transaction
  is applied the slot is advanced past it, so a restart resumes from the slot, repeating
  at most the transaction in flight (its writes are idempotent).

The slot is created before the full load: changes made during the load are applied again
after it, which converges because every write carries the row's full new state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from threading import Lock
from typing import Any
from uuid import uuid4

import psycopg
from botocore.exceptions import ClientError
from psycopg import sql

from config.endpoints import POSTGRES_SOURCE_SETTINGS
from config.functions import replication_identifier
from config.mappings import TargetTable, render_table_mappings, resolve, task_settings
from config.model import SourceConfig
from dmsbus.names import DMS_EXCEPTIONS_TABLE
from local.dms_types import (
    MAX_ITEM_BYTES,
    ColumnType,
    DataError,
    DmsType,
    TypeInfo,
    dms_type,
    dynamodb_number,
    dynamodb_value,
    item_bytes,
)
from local.pgoutput import UNCHANGED, Change, Commit, Decoder, Truncate

logger = logging.getLogger("dmsbus.local.dms")

DMS_CAPACITY = {"ReadCapacityUnits": 200, "WriteCapacityUnits": 200}
#: Polls with fewer changes are applied on one lane: threads would cost more than they save.
PARALLEL_APPLY_FROM = 50
#: DMS types that land in DynamoDB as numbers (a key attribute's type: N, else S).
NUMBER_TYPES: frozenset[DmsType] = frozenset(
    {"INT2", "INT4", "INT8", "REAL4", "REAL8", "NUMERIC", "NUMERIC(28,6)", "NUMERIC(38,4)"}
)
#: DMS's control table for rows it could not apply. Its DynamoDB key is not documented:
#: the stand-in keys it by task and time.
EXCEPTIONS_TABLE = DMS_EXCEPTIONS_TABLE
Types = Mapping[str, ColumnType]
NO_ERROR_YET = datetime.min.replace(tzinfo=UTC)
#: Every stand-in session reads values in one text form, whatever the server's defaults:
#: pgoutput writes a change's values with the decoding session's settings, and the type
#: mapping parses them (money without a locale's separators, ISO dates).
SESSION_OPTIONS = "-c lc_monetary=C -c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC"


#: ``TargetTablePrepMode`` (CHAP_Tasks.CustomizingTasks.TaskSettings.FullLoad; docs/dms.md,
#: "Target table preparation"): what a table's full load does to its target first.
#: DO_NOTHING "assumes that the target tables are precreated": DMS creates none, and a
#: change or a load for a table that is not there is a table error (TableErrorPolicy
#: SUSPEND_TABLE). TRUNCATE_BEFORE_LOAD empties an existing table (item by item on
#: DynamoDB: a REMOVE per row in its stream) and creates a missing one. DROP_AND_CREATE
#: drops an existing table and creates it anew (a new stream, which discovery attaches).
PREP_MODES = frozenset({"DO_NOTHING", "TRUNCATE_BEFORE_LOAD", "DROP_AND_CREATE"})


class DmsError(RuntimeError):
    """A source table the stand-in cannot replicate (its message says why and how to fix)."""


@dataclass(frozen=True, slots=True)
class TargetSchema:
    """A source table's DynamoDB target: name, key attributes with their types, excluded columns."""

    target: TargetTable
    key: tuple[str, ...]
    key_types: tuple[str, ...]


@dataclass
class DmsStandIn:
    url: str
    bus: str
    source: SourceConfig
    dynamodb: Any
    slot: str = ""
    publication: str = ""
    rows_loaded: int = 0
    #: Writers applying a poll's changes at once (DMS's apply is not one request at a time).
    apply_threads: int = 4
    #: ``FullLoadSettings.TargetTablePrepMode``; empty: the task settings' (what AWS runs).
    prep_mode: str = ""
    _mappings: dict[str, Any] = field(default_factory=dict)
    _schemas: dict[tuple[str, str], TargetSchema | None] = field(default_factory=dict)
    _created: set[str] = field(default_factory=set)
    #: Tables DMS would suspend (a key it cannot map), with why: they are not replicated.
    suspended: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Rows logged to ``awsdms_apply_exceptions`` by this stand-in.
    exceptions: int = 0
    _types: dict[int, TypeInfo] = field(default_factory=dict)
    _kinds: dict[ColumnType, tuple[DmsType, ColumnType]] = field(default_factory=dict)
    _not_migrated: set[tuple[str, str]] = field(default_factory=set)
    _lock: Lock = field(default_factory=Lock)
    _last_error_time: datetime = NO_ERROR_YET
    #: A concurrent full load (``load_concurrently``): tables not loaded yet, their cached
    #: changes, and cached changes whose table is now loaded, to apply next.
    _loading: set[tuple[str, str]] = field(default_factory=set)
    _cached: dict[tuple[str, str], list[Change]] = field(default_factory=dict)
    _ready: list[Change] = field(default_factory=list)
    _load_lock: Lock = field(default_factory=Lock)
    _decoder: Decoder = field(default_factory=Decoder)

    def __post_init__(self) -> None:
        self.slot = self.slot or f"dmsbus_{self.bus}_{self.source.name}".replace("-", "_").lower()
        self.publication = self.publication or self.slot
        self._mappings = render_table_mappings(self.bus, self.source)
        self.task_name = replication_identifier(self.bus, self.source.name)
        # The task's and the endpoint's settings, as the source stack deploys them.
        self.lob_max_bytes = int(task_settings()["TargetMetadata"]["LobMaxSize"]) * 1024
        self.prep_mode = self.prep_mode or str(task_settings()["FullLoadSettings"]["TargetTablePrepMode"])
        if self.prep_mode not in PREP_MODES:
            raise DmsError(
                f"FullLoadSettings.TargetTablePrepMode {self.prep_mode!r} (config/dms-task-settings.json) "
                f"is not one of {sorted(PREP_MODES)}"
            )
        self.fail_on_lob_truncation = bool(POSTGRES_SOURCE_SETTINGS["failTasksOnLobTruncation"])

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A session of the stand-in's (its settings pinned: ``SESSION_OPTIONS``)."""
        return psycopg.connect(self.url, autocommit=autocommit, options=SESSION_OPTIONS)

    # --- setup and full load --------------------------------------------------------

    def has_slot(self) -> bool:
        """Whether the task has run before: its replication slot exists."""
        with self.connect(autocommit=True) as connection:
            return (
                connection.execute(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                ).fetchone()
                is not None
            )

    def create_targets(self) -> list[str]:
        """Create the target table of every selected table now (as they stand after an
        earlier run of the task); returns their names."""
        names = []
        with self.connect() as connection:
            for schema, table in self.source_tables(connection):
                target = self.target_schema(connection, schema, table)
                if target is not None:
                    # They were there in AWS (whatever the prep mode): not DMS creating them.
                    self._create_table(target.target.name, self._key_schema(target))
                    names.append(target.target.name)
        return names

    def start(self) -> bool:
        """Create the publication and the slot if new; True when this is the first start
        (a full load is due), False when resuming from an existing slot."""
        if self.has_slot():
            return False
        with self.connect(autocommit=True) as connection:
            if not connection.execute(
                "SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)
            ).fetchone():
                connection.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(self.publication))
                )
            connection.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))
        return True

    def full_load(
        self, *, only: set[tuple[str, str]] | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Copy every selected table (or the ``(schema, table)`` pairs in ``only``, as a
        reload does) as it is now, with BatchWriteItem. Returns the rows written;
        ``progress`` hears the count after each batch."""
        loaded = 0
        with self.connect() as connection:
            for target, rows in self._tables(connection, only):
                if not self._prepare_for_load(target):
                    continue
                batch: list[dict[str, Any]] = []
                for item in rows:
                    if isinstance(item, DataError):
                        self.log_exception(target, "full load", item)
                        continue
                    batch.append({"PutRequest": {"Item": item}})
                    loaded += 1
                    if len(batch) == 25:
                        self._batch_write(target.target.name, batch)
                        batch = []
                        if progress is not None:
                            progress(self.rows_loaded + loaded)
                if batch:
                    self._batch_write(target.target.name, batch)
        self.rows_loaded += loaded
        return loaded

    def items(
        self, *, only: set[tuple[str, str]] | None = None, sample: int | None = None
    ) -> Iterator[tuple[TargetSchema, dict[str, Any]]]:
        """Every selected source row as DMS writes it to its target table, read now (rows
        DMS cannot write are left out: they are apply exceptions); with ``sample``, about
        that many rows of each table, picked at random by PostgreSQL."""
        with self.connect() as connection:
            for target, rows in self._tables(connection, only, sample):
                for item in rows:
                    if not isinstance(item, DataError):
                        yield target, item

    def _tables(
        self,
        connection: psycopg.Connection[Any],
        only: set[tuple[str, str]] | None,
        sample: int | None = None,
    ) -> Iterator[tuple[TargetSchema, Iterator[dict[str, Any] | DataError]]]:
        for schema, table in self.source_tables(connection):
            if only is not None and (schema, table) not in only:
                continue
            target = self.target_schema(connection, schema, table)
            if target is not None:
                yield target, self._rows(connection, schema, table, target, sample)

    def _rows(
        self,
        connection: psycopg.Connection[Any],
        schema: str,
        table: str,
        target: TargetSchema,
        sample: int | None = None,
    ) -> Iterator[dict[str, Any] | DataError]:
        """The table's rows as items, or the DataError that makes a row an exception."""
        columns = self._columns(connection, schema, table)
        names = [name for name, _ in columns]
        # Each value through its type's output function, as pgoutput sends it in CDC
        # (format's %s uses it; a cast to text need not: inet's adds the mask, CHAR's cuts
        # the padding), so the type mapping sees the same text in full load and CDC. NULL
        # by num_nulls: a composite of NULL fields IS NULL, and pgoutput sends it as (,).
        query = sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(
                sql.SQL("CASE WHEN num_nulls({0}) = 1 THEN NULL ELSE format('%s', {0}) END").format(
                    sql.Identifier(name)
                )
                for name in names
            ),
            sql.Identifier(schema),
            sql.Identifier(table),
        )
        if sample is not None:
            # Uniform over the whole table (TABLESAMPLE ... LIMIT keeps the first rows on disk).
            query += sql.SQL(" ORDER BY random() LIMIT {}").format(sql.Literal(sample))
        types = dict(columns)
        # A named (server-side) cursor: a large table streams instead of filling memory.
        with connection.cursor(name=f"dmsbus_rows_{uuid4().hex[:8]}") as cursor:
            cursor.itersize = 2000
            cursor.execute(query)
            for row in cursor:
                try:
                    yield self.item(target, dict(zip(names, row, strict=True)), types, connection)
                except DataError as error:
                    yield error

    def added_with_default(self, schema: str, table: str) -> set[str]:
        """Columns PostgreSQL fills for existing rows without writing them (``ADD COLUMN ...
        DEFAULT``: ``atthasmissing``), so no change carries their values to those rows."""
        with self.connect() as connection:
            return {
                str(name)
                for (name,) in connection.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass"
                    " AND atthasmissing AND NOT attisdropped",
                    (schema, table),
                )
            }

    def source_tables(self, connection: psycopg.Connection[Any]) -> list[tuple[str, str]]:
        """The source's tables this task selects, ``(schema, table)``."""
        rows = connection.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY 1, 2"
        ).fetchall()
        return [
            (schema, table) for schema, table in rows if resolve(self._mappings, schema, table) is not None
        ]

    def _columns(
        self, connection: psycopg.Connection[Any], schema: str, table: str
    ) -> list[tuple[str, ColumnType]]:
        return [
            (str(name), ColumnType(int(type_oid), int(typmod)))
            for name, type_oid, typmod in connection.execute(
                "SELECT attname, atttypid::int, atttypmod FROM pg_attribute "
                "WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND attnum > 0 AND NOT attisdropped "
                # pgoutput leaves generated columns out (publish_generated_columns is off)
                "AND attgenerated = '' "
                "ORDER BY attnum",
                (schema, table),
            )
        ]

    def target_schema(
        self, connection: psycopg.Connection[Any] | None, schema: str, table: str
    ) -> TargetSchema | None:
        """The table's target, key and key types (cached); None when not selected."""
        cached = self._schemas.get((schema, table), ...)
        if cached is not ...:
            return cached
        target = resolve(self._mappings, schema, table)
        result = None
        if target is not None:
            own = connection or self.connect()
            try:
                columns = dict(self._columns(own, schema, table))
                key = target.key or self._primary_key(own, schema, table)
            finally:
                if connection is None:
                    own.close()
            why = None if target.key is not None else self._unsupported_key(schema, table, key)
            unwritten = [
                name
                for name in key
                if name in columns
                and self._dms_type(connection, columns[name])[0] in ("BLOB", "NOT MIGRATED")
            ]
            if why is None and unwritten:
                why = (
                    f"{schema}.{table}: its key {unwritten} is of a type DMS does not write to DynamoDB "
                    "(bytea, oid): give it another `key` in config"
                )
            if why is not None:
                # DMS suspends the table (TableErrorPolicy SUSPEND_TABLE) and goes on with
                # the others; it never invents a key.
                logger.warning("table suspended: %s", why)
                self.suspended[(schema, table)] = why
                self._schemas[(schema, table)] = None
                return None
            declared = dict(target.key_types)
            result = TargetSchema(
                target,
                tuple(key),
                tuple(
                    # an object mapping's attribute-sub-type, else DMS's type for the column
                    ("N" if declared[name] == "number" else "S")
                    if name in declared
                    else "N"
                    if name in columns and self._dms_type(connection, columns[name])[0] in NUMBER_TYPES
                    else "S"
                    for name in key
                ),
            )
        self._schemas[(schema, table)] = result
        return result

    def _unsupported_key(self, schema: str, table: str, key: Sequence[str]) -> str | None:
        """Why DMS cannot key a table that has no object mapping, or None. "AWS DMS only
        supports replication of tables with non-composite primary keys, unless you specify an
        object mapping for the target table with a custom partition key or sort key, or both"
        (CHAP_Target.DynamoDB)."""
        if len(key) == 1:
            return None
        listed = next(
            (index for index, t in enumerate(self.source.tables) if (t.schema_, t.table) == (schema, table)),
            None,
        )
        where = f"config/sources/{self.source.name}.yaml " + (
            f"tables[{listed}]"
            if listed is not None
            else f"(list it under tables: schema {schema}, table {table})"
        )
        if not key:
            return f"{schema}.{table} has no primary key: give it a `key` naming the columns that identify a row, in {where}"
        if len(key) > 2:
            return (
                f"{schema}.{table} has a {len(key)}-column primary key ({', '.join(key)}); DynamoDB keys have one "
                f"or two attributes: give it a `key` of at most two columns that identify a row, in {where}"
            )
        return (
            f"{schema}.{table} has a composite primary key ({', '.join(key)}), which DMS's DynamoDB target "
            f"replicates only through an object mapping: give it `key: [{', '.join(key)}]` and their "
            f"`key_types` in {where}"
        )

    @staticmethod
    def _primary_key(connection: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
        return [
            str(name)
            for (name,) in connection.execute(
                "SELECT a.attname FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey, a.attnum)",
                (schema, table),
            )
        ]

    def ensure_table(self, schema: TargetSchema) -> bool:
        """A change's target table: created as DMS creates it (provisioned 200/200, no
        stream) if absent, unless the prep mode creates none; False when the table is not
        there and so suspended."""
        if self.prep_mode != "DO_NOTHING":
            self._create_table(schema.target.name, self._key_schema(schema))
            return True
        if schema.target.name in self._created or self._exists(schema.target.name):
            self._created.add(schema.target.name)
            return True
        self._suspend_missing(schema)
        return False

    def _prepare_for_load(self, schema: TargetSchema) -> bool:
        """What ``prep_mode`` does to a table before its full load; False when the table
        cannot be loaded (suspended)."""
        name = schema.target.name
        if self.prep_mode == "DO_NOTHING":
            return self.ensure_table(schema)
        exists = self._exists(name)
        if exists and self.prep_mode == "DROP_AND_CREATE":
            self.dynamodb.delete_table(TableName=name)
            self.dynamodb.get_waiter("table_not_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
            self._created.discard(name)
            logger.info("dropped DynamoDB table %s (TargetTablePrepMode DROP_AND_CREATE)", name)
        elif exists:  # TRUNCATE_BEFORE_LOAD
            self._truncate(schema)
        self._create_table(name, self._key_schema(schema))
        return True

    def _truncate(self, schema: TargetSchema) -> None:
        """Delete every item of an existing target table (DynamoDB has no TRUNCATE)."""
        name = schema.target.name
        paginator = self.dynamodb.get_paginator("scan")
        pages = paginator.paginate(
            TableName=name,
            ProjectionExpression=", ".join(f"#k{i}" for i in range(len(schema.key))),
            ExpressionAttributeNames={f"#k{i}": attribute for i, attribute in enumerate(schema.key)},
            ConsistentRead=True,
        )
        for page in pages:
            requests = [{"DeleteRequest": {"Key": item}} for item in page["Items"]]
            for start in range(0, len(requests), 25):
                self._batch_write(name, requests[start : start + 25])
        logger.info("emptied DynamoDB table %s (TargetTablePrepMode TRUNCATE_BEFORE_LOAD)", name)

    def _exists(self, name: str) -> bool:
        try:
            self.dynamodb.describe_table(TableName=name)
        except self.dynamodb.exceptions.ResourceNotFoundException:
            return False
        return True

    def _suspend_missing(self, schema: TargetSchema) -> None:
        source = _source_of(schema.target.name)
        why = (
            f"{source[0]}.{source[1]}: its target table {schema.target.name} does not exist, and "
            "TargetTablePrepMode DO_NOTHING assumes the target tables are precreated; DMS creates none "
            "(config/dms-task-settings.json)"
        )
        logger.warning("table suspended: %s", why)
        self.suspended[source] = why
        self._schemas[source] = None

    @staticmethod
    def _key_schema(schema: TargetSchema) -> list[tuple[str, str]]:
        return list(zip(schema.key, schema.key_types, strict=True))

    def _create_table(self, name: str, key: list[tuple[str, str]]) -> None:
        if name in self._created:
            return
        try:
            self.dynamodb.create_table(
                TableName=name,
                KeySchema=[
                    {"AttributeName": attribute, "KeyType": kind}
                    for (attribute, _), kind in zip(key, ("HASH", "RANGE"), strict=False)
                ],
                AttributeDefinitions=[
                    {"AttributeName": attribute, "AttributeType": kind} for attribute, kind in key
                ],
                ProvisionedThroughput=DMS_CAPACITY,
            )
            logger.info("created DynamoDB table %s", name)
        except self.dynamodb.exceptions.ResourceInUseException:
            pass
        self._created.add(name)

    # --- CDC ------------------------------------------------------------------------

    def poll(self, *, limit: int = 10_000, connection: psycopg.Connection[Any] | None = None) -> int:
        """Apply the committed transactions waiting in the slot; returns changes applied.
        ``connection`` (autocommit) is used when given, else one is opened for the call: a
        task polling every few milliseconds should keep one."""
        if connection is None:
            with self.connect(autocommit=True) as own:
                return self.poll(limit=limit, connection=own)
        rows = connection.execute(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes("
            "%s, NULL, %s, 'proto_version', '1', 'publication_names', %s)",
            (self.slot, limit, self.publication),
        ).fetchall()
        pending: list[Change] = []
        changes: list[Change] = []
        committed = None
        for lsn, data in rows:
            message = self._decoder.decode(bytes(data))
            if isinstance(message, Change):
                pending.append(message)
            elif isinstance(message, Truncate):
                logger.warning(
                    "TRUNCATE of %s ignored (DMS's HandleSourceTableTruncated is false)",
                    [f"{r.schema}.{r.table}" for r in message.relations],
                )
            elif isinstance(message, Commit):
                changes += pending
                pending = []
                committed = lsn
        changes = self._hold_loading(changes)
        # Written, then the slot moves past them: a restart repeats at most this poll.
        applied = self._apply_all(connection, changes)
        if committed is not None:
            connection.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, committed))
        return applied

    def _hold_loading(self, changes: list[Change]) -> list[Change]:
        """The changes to apply now: those of tables a concurrent full load has not finished
        are cached until it has ("cached changes", applied per table after its load, as DMS
        does), then applied first, in order, before anything newer of theirs."""
        with self._load_lock:
            ready, self._ready = self._ready, []
            if not self._loading:
                return ready + changes
            live = []
            for change in changes:
                table = (change.relation.schema, change.relation.table)
                if table in self._loading:
                    self._cached.setdefault(table, []).append(change)
                else:
                    live.append(change)
        return ready + live

    def holding(self) -> bool:
        """A concurrent full load still has tables to load or changes to hand back."""
        with self._load_lock:
            return bool(self._loading or self._ready)

    def load_concurrently(self, progress: Callable[[int], None] | None = None) -> int:
        """The full load while CDC goes on (``poll`` from another thread): each table's
        changes wait until its own load is done; the smallest tables load first, so most
        start streaming soon. Returns the rows written."""
        with self.connect() as connection:
            tables = self._by_size(connection, self.source_tables(connection))
        with self._load_lock:
            self._loading = set(tables)
        loaded = 0
        try:
            for table in tables:
                loaded += self.full_load(only={table}, progress=progress)
                with self._load_lock:
                    self._loading.discard(table)
                    self._ready.extend(self._cached.pop(table, []))
        finally:
            with self._load_lock:
                for table in list(self._loading):
                    self._ready.extend(self._cached.pop(table, []))
                self._loading = set()
        return loaded

    @staticmethod
    def _by_size(connection: psycopg.Connection[Any], tables: list[tuple[str, str]]) -> list[tuple[str, str]]:
        sizes = dict(
            ((schema, table), float(size))
            for schema, table, size in connection.execute(
                # pages on disk, not the planner's row estimate (unknown before an ANALYZE)
                "SELECT n.nspname, c.relname, pg_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
            )
        )
        return sorted(tables, key=lambda table: (sizes.get(table, 0.0), table))

    def _apply_all(self, connection: psycopg.Connection[Any], changes: list[Change]) -> int:
        """Write committed changes, on ``apply_threads`` lanes at once: a row's changes all go
        to one lane, in commit order, so each row's writes apply in order (as DMS's own apply
        keeps them). A change never moves a row to another key: DMS ignores key updates."""
        lanes = self.apply_threads if len(changes) >= PARALLEL_APPLY_FROM else 1
        if lanes == 1:
            return self._apply_lane(connection, changes)
        applied = 0
        queued: list[list[Change]] = [[] for _ in range(lanes)]
        with ThreadPoolExecutor(lanes, thread_name_prefix="dms-apply") as pool:

            def run() -> int:
                done = sum(pool.map(lambda lane: self._apply_lane(None, lane), queued))
                for lane in queued:
                    lane.clear()
                return done

            for change in changes:
                lane = self._lane(connection, change, lanes)
                if lane is not None:
                    queued[lane].append(change)
            applied += run()
        return applied

    def _apply_lane(self, connection: psycopg.Connection[Any] | None, changes: list[Change]) -> int:
        writer = BatchWriter(self.dynamodb)
        applied = sum(self._apply(connection, change, writer) for change in changes)
        writer.flush()
        return applied

    def _lane(self, connection: psycopg.Connection[Any], change: Change, lanes: int) -> int | None:
        """The lane of the row a change writes (the new key's: a key update is ignored, so
        it writes nothing); None: not replicated. Resolves and creates the target table here,
        in the task's thread."""
        relation = change.relation
        schema = self.target_schema(connection, relation.schema, relation.table)
        if schema is None or not self.ensure_table(schema):
            return None
        types = _types(change)
        row = _new_row(change) if change.kind != "delete" else change.old
        assert row is not None
        try:
            key = self._key(schema, row, types, connection)
        except DataError:
            return 0  # a lane of its own does not matter: it is logged, not written
        return hash((schema.target.name, repr(sorted(key.items())))) % lanes

    def apply(
        self, connection: psycopg.Connection[Any], change: Change, writer: BatchWriter | None = None
    ) -> int:
        """Write one change; through ``writer`` puts and deletes are batched (flushed by the caller)."""
        own = writer is None
        writer = writer or BatchWriter(self.dynamodb)
        applied = self._apply(connection, change, writer)
        if own:
            writer.flush()
        return applied

    def _apply(self, connection: psycopg.Connection[Any] | None, change: Change, writer: BatchWriter) -> int:
        relation = change.relation
        schema = self.target_schema(connection, relation.schema, relation.table)
        if schema is None or not self.ensure_table(schema):
            return 0
        try:
            self._write(connection, change, schema, writer)
        except DataError as error:
            self.log_exception(schema, change.kind, error)
        return 1

    def _write(
        self,
        connection: psycopg.Connection[Any] | None,
        change: Change,
        schema: TargetSchema,
        writer: BatchWriter,
    ) -> None:
        types = _types(change)
        name = schema.target.name
        if change.kind == "delete":
            assert change.old is not None
            writer.delete(name, self._key(schema, change.old, types, connection))
            return
        new = _new_row(change)
        if change.old is not None and self._key(schema, change.old, types, connection) != self._key(
            schema, new, types, connection
        ):
            # "AWS DMS ignores an attempt to update a primary key segment ... no records are
            # written to the exceptions table" (CHAP_Source.PostgreSQL, limitations).
            logger.warning("%s: an UPDATE of the primary key is ignored, as DMS does", name)
            return
        if change.kind == "insert" or UNCHANGED not in new.values():
            item = self.item(schema, new, types, connection)
            writer.put(name, {attribute: item[attribute] for attribute in schema.key}, item)
            return
        # An update leaving TOASTed values out: write what changed, keep the rest.
        present = {column: value for column, value in new.items() if value is not UNCHANGED}
        item = self.item(schema, present, types, connection)
        key = {attribute: item.pop(attribute) for attribute in schema.key}
        removed = [
            c
            for c, v in present.items()
            if v is None and c not in schema.target.exclude and c not in schema.key
        ]
        names = {f"#a{index}": column for index, column in enumerate([*item, *removed])}
        by_column = {column: alias for alias, column in names.items()}
        expression = []
        if item:
            expression.append("SET " + ", ".join(f"{by_column[c]} = :v{i}" for i, c in enumerate(item)))
        if removed:
            expression.append("REMOVE " + ", ".join(by_column[c] for c in removed))
        writer.flush()  # the update applies after every earlier write
        try:
            self._update(name, key, expression, names, item)
        except ClientError as error:
            # DynamoDB refuses the update (the whole item would pass 400 KB): a data error.
            if error.response["Error"]["Code"] != "ValidationException":
                raise
            raise DataError(error.response["Error"]["Message"]) from None

    def _update(
        self,
        name: str,
        key: dict[str, Any],
        expression: list[str],
        names: dict[str, str],
        item: dict[str, Any],
    ) -> None:
        self.dynamodb.update_item(
            TableName=name,
            Key=key,
            UpdateExpression=" ".join(expression),
            ExpressionAttributeNames=names,
            **(
                {"ExpressionAttributeValues": {f":v{i}": v for i, v in enumerate(item.values())}}
                if item
                else {}
            ),
        )

    def item(
        self,
        schema: TargetSchema,
        row: Mapping[str, object],
        types: Types,
        connection: psycopg.Connection[Any] | None = None,
    ) -> dict[str, Any]:
        """A row as DMS writes it: NULLs dropped, excluded and not-migrated columns removed,
        values in DMS's types. DataError: DMS cannot write it (an exception row)."""
        item = {}
        for column, value in row.items():
            if value is None or value is UNCHANGED or column in schema.target.exclude:
                continue
            attribute = self._value(schema, column, str(value), types, connection)
            if attribute is not None:
                item[column] = attribute
        missing = [attribute for attribute in schema.key if attribute not in item]
        if missing:
            raise DmsError(f"{schema.target.name}: a row without its key attributes {missing}")
        _check_key({attribute: item[attribute] for attribute in schema.key}, schema.key)
        size = item_bytes(item)
        if size > MAX_ITEM_BYTES:
            raise DataError(f"the item is {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte item limit")
        return item

    def _key(
        self,
        schema: TargetSchema,
        row: Mapping[str, object],
        types: Types,
        connection: psycopg.Connection[Any] | None = None,
    ) -> dict[str, Any]:
        key = {}
        for attribute in schema.key:
            value = self._value(schema, attribute, str(row[attribute]), types, connection)
            if value is None:
                raise DataError(f"key attribute {attribute} is of a type DMS does not migrate")
            key[attribute] = value
        _check_key(key, schema.key)
        return key

    def _value(
        self,
        schema: TargetSchema,
        column: str,
        text: str,
        types: Types,
        connection: psycopg.Connection[Any] | None,
    ) -> dict[str, Any] | None:
        kind, read_as = self._dms_type(connection, types.get(column, ColumnType(25)))
        try:
            value = dynamodb_value(
                text,
                kind,
                read_as,
                lob_max_bytes=self.lob_max_bytes,
                fail_on_lob_truncation=self.fail_on_lob_truncation,
            )
        except DataError as error:
            raise DataError(f"column {column}: {error}") from None
        if value is not None and schema.target.key_types:
            value = _as_declared(value, column, schema.target.key_types)
        if value is None and (schema.target.name, column) not in self._not_migrated:
            self._not_migrated.add((schema.target.name, column))
            logger.warning(
                "%s.%s (%s) is not migrated to DynamoDB, as DMS does", schema.target.name, column, kind
            )
        return value

    def _dms_type(
        self, connection: psycopg.Connection[Any] | None, column: ColumnType
    ) -> tuple[DmsType, ColumnType]:
        # Once per column type, not per value: this is on the path of every value written.
        known = self._kinds.get(column)
        if known is None:
            known = self._kinds[column] = dms_type(column, lambda oid: self._type_info(connection, oid))
        return known

    def _type_info(self, connection: psycopg.Connection[Any] | None, oid: int) -> TypeInfo:
        """What pg_type says of a type that is not built in (cached)."""
        with self._lock:
            known = self._types.get(oid)
        if known is not None:
            return known
        own = connection or self.connect()
        try:
            found = own.execute(
                "SELECT t.typtype::text, t.typcategory::text, t.typbasetype::int, t.typtypmod "
                "FROM pg_type t WHERE t.oid = %s",
                (oid,),
            ).fetchone()
        finally:
            if connection is None:
                own.close()
        info = TypeInfo("b", "S") if found is None else TypeInfo(found[0], found[1], found[2], found[3])
        with self._lock:
            self._types[oid] = info
        return info

    def log_exception(self, schema: TargetSchema, statement: str, error: Exception) -> None:
        """A row DMS could not write goes to ``awsdms_apply_exceptions`` (DataErrorPolicy
        LOG_ERROR): the task names, the table and the error; the row's values stay out."""
        schema_name, table = _source_of(schema.target.name)
        logger.warning(
            "%s: %s not applied, logged to %s: %s", schema.target.name, statement, EXCEPTIONS_TABLE, error
        )
        with self._lock:
            # The time keys the item (with the task): a later error never reuses one.
            moment = max(datetime.now(UTC), self._last_error_time + timedelta(microseconds=1))
            self._last_error_time = moment
            error_time = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
            self.exceptions += 1
        self._create_table(EXCEPTIONS_TABLE, [("TASK_NAME", "S"), ("ERROR_TIME", "S")])
        self.dynamodb.put_item(
            TableName=EXCEPTIONS_TABLE,
            Item={
                "TASK_NAME": {"S": self.task_name},
                "ERROR_TIME": {"S": error_time},
                "TABLE_OWNER": {"S": schema_name},
                "TABLE_NAME": {"S": table},
                "STATEMENT": {"S": f"{statement} into {schema.target.name}"},
                "ERROR": {"S": str(error)},
            },
        )

    def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        pending = {table: requests}
        while pending:
            pending = self.dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    def drop_slot(self) -> None:
        with self.connect(autocommit=True) as connection:
            connection.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            )


class BatchWriter:
    """Puts and deletes in BatchWriteItem requests (25 writes, any tables), in order: a row
    (table and key) written twice, or ``flush()``, sends what is waiting first, so each row's
    writes apply in commit order."""

    def __init__(self, dynamodb: Any) -> None:
        self.dynamodb = dynamodb
        self._requests: dict[str, list[dict[str, Any]]] = {}
        self._rows: set[tuple[str, str]] = set()
        self._by_key: dict[str, list[dict[str, Any]]] = {}

    def put(self, table: str, key: Mapping[str, Any], item: dict[str, Any]) -> None:
        self._add(table, key, {"PutRequest": {"Item": item}})

    def delete(self, table: str, key: dict[str, Any]) -> None:
        self._add(table, key, {"DeleteRequest": {"Key": key}})

    def _add(self, table: str, key: Mapping[str, Any], request: dict[str, Any]) -> None:
        identity = repr(sorted(key.items()))
        # DynamoDB refuses a request that writes one row twice. moto also refuses one with two
        # equal deletes (keys) or two equal puts (items) in different tables.
        if (table, identity) in self._rows or request in self._by_key.get(identity, ()):
            self.flush()
        self._rows.add((table, identity))
        self._by_key.setdefault(identity, []).append(request)
        self._requests.setdefault(table, []).append(request)
        if len(self._rows) == 25:
            self.flush()

    def flush(self) -> None:
        pending = self._requests
        self._requests, self._rows, self._by_key = {}, set(), {}
        while pending:
            pending = self.dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


#: DynamoDB's limits on key values ("Service, account, and table quotas"): bytes of a
#: partition and a sort key value; an empty string is refused in a key.
KEY_LIMITS = (2048, 1024)


def _as_declared(value: dict[str, Any], column: str, declared: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A key attribute as its object mapping declares it (``attribute-sub-type``): a
    ``string`` takes the value's text, a ``number`` needs a value that is one."""
    kind = next((sub_type for attribute, sub_type in declared if attribute == column), None)
    if kind is None:
        return value
    text = str(next(iter(value.values())))
    if kind == "string":
        return {"S": text}
    if "N" in value:
        return value
    try:
        return {"N": dynamodb_number(text)}
    except DataError as error:
        raise DataError(f"key attribute {column} (attribute-sub-type number): {error}") from None


def _check_key(key: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> None:
    """DataError for a key DynamoDB refuses: an empty string, or a value over its size."""
    for name, limit in zip(names, KEY_LIMITS, strict=False):
        value = key[name]
        text = value.get("S")
        if text == "":
            raise DataError(f"key attribute {name} is empty, which DynamoDB refuses")
        size = len(str(text if text is not None else value.get("N", "")).encode("utf-8"))
        if size > limit:
            raise DataError(f"key attribute {name} is {size} bytes, over DynamoDB's {limit}")


def _new_row(change: Change) -> dict[str, object]:
    """An insert's or update's new row; a column it leaves out as an unchanged TOAST value
    is taken from the old tuple when PostgreSQL sent one (a key column, so that the key is
    known)."""
    assert change.new is not None
    if change.old is None:
        return change.new
    old = change.old
    return {
        column: old[column] if value is UNCHANGED and column in old else value
        for column, value in change.new.items()
    }


def _types(change: Change) -> dict[str, ColumnType]:
    return {column.name: ColumnType(column.type_oid, column.typmod) for column in change.relation.columns}


def _source_of(target_name: str) -> tuple[str, str]:
    """The source schema and table a target table name carries (``bus.source.schema.table``)."""
    parts = target_name.split(".")
    return (parts[2], parts[3]) if len(parts) >= 4 else ("", target_name)
