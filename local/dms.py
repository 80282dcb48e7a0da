"""The DMS stand-in: full load, then CDC from a logical replication slot, into DynamoDB the
way DMS's DynamoDB target writes it.

- Tables: selected, named, keyed and trimmed by the source's TableMappings, rendered by the
  same ``config`` code the CDK task uses (``config.mappings.resolve``). DMS creates each
  target table itself: provisioned 200/200, no stream. A table DMS cannot key (a composite
  or missing primary key without an object mapping) is suspended, as DMS does, and listed
  in ``suspended`` with the config change that fixes it.
- Types as DMS maps them: numbers -> N, booleans -> BOOL, everything else (dates,
  timestamps, text, uuid, json ...) -> S in PostgreSQL's text form; NULL columns dropped;
  excluded columns removed.
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
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from psycopg import sql

from config.mappings import TargetTable, render_table_mappings, resolve
from config.model import SourceConfig
from local.pgoutput import UNCHANGED, Change, Commit, Decoder, Truncate

logger = logging.getLogger("dmsbus.local.dms")

DMS_CAPACITY = {"ReadCapacityUnits": 200, "WriteCapacityUnits": 200}
#: Polls with fewer changes are applied on one lane: threads would cost more than they save.
PARALLEL_APPLY_FROM = 50
#: PostgreSQL type OIDs DMS writes as DynamoDB numbers, and booleans.
NUMERIC_TYPES = {20, 21, 23, 26, 700, 701, 1700}
BOOLEAN_TYPE = 16


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
    _mappings: dict[str, Any] = field(default_factory=dict)
    _schemas: dict[tuple[str, str], TargetSchema | None] = field(default_factory=dict)
    _created: set[str] = field(default_factory=set)
    #: Tables DMS would suspend (a key it cannot map), with why: they are not replicated.
    suspended: dict[tuple[str, str], str] = field(default_factory=dict)
    _decoder: Decoder = field(default_factory=Decoder)

    def __post_init__(self) -> None:
        self.slot = self.slot or f"dmsbus_{self.bus}_{self.source.name}".replace("-", "_").lower()
        self.publication = self.publication or self.slot
        self._mappings = render_table_mappings(self.bus, self.source)

    # --- setup and full load --------------------------------------------------------

    def start(self) -> bool:
        """Create the publication and the slot if new; True when this is the first start
        (a full load is due), False when resuming from an existing slot."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
            ).fetchone()
            if exists:
                return False
            if not connection.execute(
                "SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)
            ).fetchone():
                connection.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(self.publication))
                )
            connection.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))
        return True

    def full_load(self, *, only: set[tuple[str, str]] | None = None) -> int:
        """Copy every selected table (or the ``(schema, table)`` pairs in ``only``, as a
        reload does) as it is now, with BatchWriteItem. Returns the rows written."""
        loaded = 0
        with psycopg.connect(self.url) as connection:
            for target, rows in self._tables(connection, only):
                self.ensure_table(target)
                batch: list[dict[str, Any]] = []
                for item in rows:
                    batch.append({"PutRequest": {"Item": item}})
                    if len(batch) == 25:
                        self._batch_write(target.target.name, batch)
                        batch = []
                    loaded += 1
                if batch:
                    self._batch_write(target.target.name, batch)
        self.rows_loaded += loaded
        return loaded

    def items(
        self, *, only: set[tuple[str, str]] | None = None
    ) -> Iterator[tuple[TargetSchema, dict[str, Any]]]:
        """Every selected source row as DMS writes it to its target table, read now."""
        with psycopg.connect(self.url) as connection:
            for target, rows in self._tables(connection, only):
                for item in rows:
                    yield target, item

    def _tables(
        self, connection: psycopg.Connection[Any], only: set[tuple[str, str]] | None
    ) -> Iterator[tuple[TargetSchema, Iterator[dict[str, Any]]]]:
        for schema, table in self._source_tables(connection):
            if only is not None and (schema, table) not in only:
                continue
            target = self.target_schema(connection, schema, table)
            if target is not None:
                yield target, self._rows(connection, schema, table, target)

    def _rows(
        self, connection: psycopg.Connection[Any], schema: str, table: str, target: TargetSchema
    ) -> Iterator[dict[str, Any]]:
        columns = self._columns(connection, schema, table)
        names = [name for name, _ in columns]
        query = sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(name)) for name in names),
            sql.Identifier(schema),
            sql.Identifier(table),
        )
        types = dict(columns)
        for row in connection.execute(query).fetchall():
            yield self.item(target, dict(zip(names, row, strict=True)), types)

    def _source_tables(self, connection: psycopg.Connection[Any]) -> list[tuple[str, str]]:
        rows = connection.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY 1, 2"
        ).fetchall()
        return [
            (schema, table) for schema, table in rows if resolve(self._mappings, schema, table) is not None
        ]

    def _columns(self, connection: psycopg.Connection[Any], schema: str, table: str) -> list[tuple[str, int]]:
        return [
            (str(name), int(type_oid))
            for name, type_oid in connection.execute(
                "SELECT attname, atttypid::int FROM pg_attribute "
                "WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND attnum > 0 AND NOT attisdropped "
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
            own = connection or psycopg.connect(self.url)
            try:
                columns = dict(self._columns(own, schema, table))
                key = target.key or self._primary_key(own, schema, table)
            finally:
                if connection is None:
                    own.close()
            why = None if target.key is not None else self._unsupported_key(schema, table, key)
            if why is not None:
                # DMS suspends the table (TableErrorPolicy SUSPEND_TABLE) and goes on with
                # the others; it never invents a key.
                logger.warning("table suspended: %s", why)
                self.suspended[(schema, table)] = why
                self._schemas[(schema, table)] = None
                return None
            result = TargetSchema(
                target, tuple(key), tuple("N" if columns.get(name) in NUMERIC_TYPES else "S" for name in key)
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
            f"replicates only through an object mapping: give it `key: [{', '.join(key)}]` in {where}"
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

    def ensure_table(self, schema: TargetSchema) -> None:
        """Create the target table as DMS does (provisioned 200/200, no stream) if absent."""
        name = schema.target.name
        if name in self._created:
            return
        try:
            self.dynamodb.create_table(
                TableName=name,
                KeySchema=[
                    {"AttributeName": attribute, "KeyType": kind}
                    for attribute, kind in zip(schema.key, ("HASH", "RANGE"), strict=False)
                ],
                AttributeDefinitions=[
                    {"AttributeName": attribute, "AttributeType": kind}
                    for attribute, kind in zip(schema.key, schema.key_types, strict=True)
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
            with psycopg.connect(self.url, autocommit=True) as own:
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
        # Written, then the slot moves past them: a restart repeats at most this poll.
        applied = self._apply_all(connection, changes)
        if committed is not None:
            connection.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, committed))
        return applied

    def _apply_all(self, connection: psycopg.Connection[Any], changes: list[Change]) -> int:
        """Write committed changes, on ``apply_threads`` lanes at once: a row's changes all go
        to one lane, in commit order, so each row's writes apply in order (as DMS's own apply
        keeps them); a change that moves a row to another key waits for every lane."""
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
                if lane is None:
                    continue
                if lane < 0:
                    applied += run() + self.apply(connection, change)
                else:
                    queued[lane].append(change)
            applied += run()
        return applied

    def _apply_lane(self, connection: psycopg.Connection[Any] | None, changes: list[Change]) -> int:
        writer = BatchWriter(self.dynamodb)
        applied = sum(self._apply(connection, change, writer) for change in changes)
        writer.flush()
        return applied

    def _lane(self, connection: psycopg.Connection[Any], change: Change, lanes: int) -> int | None:
        """The lane of the row a change writes; None: not replicated; -1: it moves the row to
        another key (two rows). Resolves and creates the target table here, in the task's thread."""
        relation = change.relation
        schema = self.target_schema(connection, relation.schema, relation.table)
        if schema is None:
            return None
        self.ensure_table(schema)
        types = {column.name: column.type_oid for column in relation.columns}
        row = change.new if change.kind != "delete" else change.old
        assert row is not None
        key = self._key(schema, row, types)
        if change.kind == "update" and change.old is not None and self._key(schema, change.old, types) != key:
            return -1
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
        if schema is None:
            return 0
        self.ensure_table(schema)
        types = {column.name: column.type_oid for column in relation.columns}
        name = schema.target.name
        if change.kind == "delete":
            assert change.old is not None
            writer.delete(name, self._key(schema, change.old, types))
            return 1
        assert change.new is not None
        new = change.new
        if change.kind == "insert" or UNCHANGED not in new.values():
            if change.old is not None and self._key(schema, change.old, types) != self._key(
                schema, new, types
            ):
                writer.delete(name, self._key(schema, change.old, types))
            item = self.item(schema, new, types)
            writer.put(name, {attribute: item[attribute] for attribute in schema.key}, item)
            return 1
        # An update leaving TOASTed values out: write what changed, keep the rest.
        present = {column: value for column, value in new.items() if value is not UNCHANGED}
        item = self.item(schema, present, types)
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
        return 1

    def item(
        self, schema: TargetSchema, row: Mapping[str, object], types: Mapping[str, int]
    ) -> dict[str, Any]:
        """A row as DMS writes it: NULLs dropped, excluded columns removed, typed values."""
        item = {}
        for column, value in row.items():
            if value is None or value is UNCHANGED or column in schema.target.exclude:
                continue
            item[column] = attribute_value(str(value), types.get(column, 25))
        missing = [attribute for attribute in schema.key if attribute not in item]
        if missing:
            raise DmsError(f"{schema.target.name}: a row without its key attributes {missing}")
        return item

    def _key(
        self, schema: TargetSchema, row: Mapping[str, object], types: Mapping[str, int]
    ) -> dict[str, Any]:
        return {
            attribute: attribute_value(str(row[attribute]), types.get(attribute, 25))
            for attribute in schema.key
        }

    def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        pending = {table: requests}
        while pending:
            pending = self.dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    def drop_slot(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
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


def attribute_value(text: str, type_oid: int) -> dict[str, Any]:
    """One column in PostgreSQL's text form -> its DynamoDB attribute value, as DMS maps it."""
    if type_oid == BOOLEAN_TYPE:
        return {"BOOL": text in ("t", "true")}
    if type_oid in NUMERIC_TYPES:
        try:
            number = Decimal(text)
        except InvalidOperation:
            return {"S": text}
        if number.is_finite():
            # DynamoDB stores numbers normalized (12.50 reads back as 12.5); moto keeps the
            # text it is given, so write what DynamoDB would return.
            return {"N": format(number.normalize(), "f")}
        return {"S": text}
    return {"S": text}
