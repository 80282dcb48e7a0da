"""Source table schemas: each replicated table's columns as the source's catalog gives
them, versioned, so that the glue can give change events the source's types back
(docs/envelope.md, "Typed values").

A :class:`TableSchema` is read from the source by the schema function (``functions/schema``)
and kept in the bus's schema table (:class:`SchemaStore`): one item per table and version,
a new version whenever the columns change (their :attr:`TableSchema.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

#: How a column's values are typed (``dmsbus.typed``). ``unwritten``: a type DMS does not
#: write to a DynamoDB target (``bytea``, ``oid``), so the column is never in an image.
Kind = Literal[
    "boolean", "integer", "decimal", "float", "timestamptz", "timestamp", "date", "time", "json",
    "text", "unwritten",
]  # fmt: skip

#: PostgreSQL's base type names (pg_type.typname, domains resolved) -> kind; every other
#: type (text, varchar, char, uuid, enums, arrays, intervals ...) is ``text``.
POSTGRES_KINDS: dict[str, Kind] = {
    "bool": "boolean",
    "int2": "integer",
    "int4": "integer",
    "int8": "integer",
    "numeric": "decimal",
    "money": "decimal",
    "float4": "float",
    "float8": "float",
    "timestamptz": "timestamptz",
    "timestamp": "timestamp",
    "date": "date",
    "time": "time",
    "timetz": "time",
    "json": "json",
    "jsonb": "json",
    "bytea": "unwritten",
    "oid": "unwritten",
}


#: MySQL's and MariaDB's data types (information_schema ``DATA_TYPE``) -> kind, by what DMS
#: writes to DynamoDB (docs/dms.md, "MySQL sources"); every other type (char, varchar, the
#: text types, enum, set) is ``text``. A ``BIT(1)`` is DMS's BOOLEAN (DynamoDB's BOOL); a
#: wider ``BIT`` is BYTES, which the DynamoDB target does not write.
MYSQL_KINDS: dict[str, Kind] = {
    **dict.fromkeys(("tinyint", "smallint", "mediumint", "int", "bigint", "year"), "integer"),
    "decimal": "decimal",
    "float": "float",
    "double": "float",
    "bit": "boolean",
    "date": "date",
    # DATETIME is "not converted to UTC"; TIMESTAMP is "converted to UTC on the target"
    "datetime": "timestamp",
    "timestamp": "timestamptz",
    "time": "time",
    "json": "json",
    **dict.fromkeys(
        (
            "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point",
            "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection",
        ),
        "unwritten",
    ),
}  # fmt: skip
#: The engines whose catalogs are MySQL's (config's ``engine``).
MYSQL_ENGINES = frozenset({"mysql", "aurora", "mariadb"})
#: The engines whose catalogs are PostgreSQL's.
POSTGRES_ENGINES = frozenset({"postgres", "aurora-postgresql"})


def qualified(source: str, schema: str, table: str) -> str:
    """``source.schema.table``: a table's key in the schema table."""
    return f"{source}.{schema}.{table}"


class SchemaError(ValueError):
    """A stored schema that cannot be read back; the message names the table and field."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``type`` is the source's own spelling (``numeric(10,2)``,
    ``timestamp with time zone``), ``base`` its base type's name (domains resolved)."""

    name: str
    type: str
    base: str
    nullable: bool
    #: Position in the primary key (1 = first), None when not a key column.
    key: int | None = None
    precision: int | None = None
    scale: int | None = None
    #: Characters of a ``char(n)``/``varchar(n)``.
    length: int | None = None
    #: Whose catalog ``base`` is from (the table's engine; not part of the column's data).
    engine: str = field(default="postgres", compare=False)

    @property
    def kind(self) -> Kind:
        if self.engine in MYSQL_ENGINES:
            if self.base == "bit" and (self.precision or 1) > 1:
                return "unwritten"
            return MYSQL_KINDS.get(self.base, "text")
        return POSTGRES_KINDS.get(self.base, "text")

    @property
    def written(self) -> bool:
        """Whether DMS writes the column to DynamoDB at all (docs/dms.md, "Data types")."""
        return self.kind != "unwritten"

    def to_dict(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"name": self.name, "type": self.type, "base": self.base}
        fields["nullable"] = self.nullable
        for name in ("key", "precision", "scale", "length"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        return fields

    @classmethod
    def from_dict(cls, raw: Any, where: str, engine: str = "postgres") -> Column:
        if not isinstance(raw, dict):
            raise SchemaError(f"{where}: a column must be an object")
        try:
            column = cls(
                name=raw["name"],
                type=raw["type"],
                base=raw["base"],
                nullable=raw["nullable"],
                key=raw.get("key"),
                precision=raw.get("precision"),
                scale=raw.get("scale"),
                length=raw.get("length"),
                engine=engine,
            )
        except KeyError as exc:
            raise SchemaError(f"{where}: field {exc.args[0]!r} is missing") from None
        for name, kind in (("name", str), ("type", str), ("base", str), ("nullable", bool)):
            if not isinstance(getattr(column, name), kind):
                raise SchemaError(f"{where}.{name}: must be {kind.__name__}")
        return column


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A source table's columns, in the source's order. ``version`` is the store's (0:
    not stored yet); it grows by one with every change of the columns."""

    source: str
    schema: str
    table: str
    columns: tuple[Column, ...]
    engine: str = "postgres"
    version: int = 0
    #: When the source's catalog was read (epoch milliseconds).
    read_ms: int = 0
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        self._by_name.update((column.name, column) for column in self.columns)

    @property
    def qualified(self) -> str:
        """``source.schema.table``: the store's key."""
        return qualified(self.source, self.schema, self.table)

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    @property
    def fingerprint(self) -> str:
        """What a version is made of: the columns, in order, and nothing else."""
        canonical = json.dumps(
            [column.to_dict() for column in self.columns], sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "schema": self.schema,
            "table": self.table,
            "engine": self.engine,
            "version": self.version,
            "read_ms": self.read_ms,
            "columns": [column.to_dict() for column in self.columns],
        }

    @classmethod
    def from_dict(cls, raw: Any) -> TableSchema:
        if not isinstance(raw, dict):
            raise SchemaError("a table schema must be an object")
        where = f"schema of {raw.get('source')}.{raw.get('schema')}.{raw.get('table')}"
        columns = raw.get("columns")
        if not isinstance(columns, list):
            raise SchemaError(f"{where}: columns must be a list")
        engine = raw.get("engine", "postgres")
        try:
            return cls(
                source=raw["source"],
                schema=raw["schema"],
                table=raw["table"],
                engine=engine,
                version=int(raw.get("version", 0)),
                read_ms=int(raw.get("read_ms", 0)),
                columns=tuple(
                    Column.from_dict(column, f"{where}.columns[{index}]", engine)
                    for index, column in enumerate(columns)
                ),
            )
        except KeyError as exc:
            raise SchemaError(f"{where}: field {exc.args[0]!r} is missing") from None

    def with_version(self, version: int) -> TableSchema:
        return TableSchema(
            source=self.source,
            schema=self.schema,
            table=self.table,
            columns=self.columns,
            engine=self.engine,
            version=version,
            read_ms=self.read_ms,
        )


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """How a table's columns changed from one version to the next, as far as the catalog
    tells: a rename shows as a column dropped and one added at the same position."""

    added: tuple[str, ...]
    dropped: tuple[str, ...]
    retyped: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...]

    @classmethod
    def between(cls, before: TableSchema | None, after: TableSchema) -> SchemaChange:
        old = {column.name: column for column in before.columns} if before else {}
        new = {column.name: column for column in after.columns}
        added = [name for name in new if name not in old]
        dropped = [name for name in old if name not in new]
        renamed: list[tuple[str, str]] = []
        if before is not None:
            # The same type at the same place, one name gone and one come: a rename.
            positions = {index: column for index, column in enumerate(before.columns)}
            for index, column in enumerate(after.columns):
                previous = positions.get(index)
                if (
                    previous is not None
                    and column.name in added
                    and previous.name in dropped
                    and previous.type == column.type
                ):
                    renamed.append((previous.name, column.name))
            for was, now in renamed:
                added.remove(now)
                dropped.remove(was)
        retyped = [name for name in new if name in old and old[name].type != new[name].type]
        return cls(tuple(added), tuple(dropped), tuple(retyped), tuple(renamed))

    @property
    def empty(self) -> bool:
        return not (self.added or self.dropped or self.retyped or self.renamed)


@dataclass(frozen=True, slots=True)
class Saved:
    """What :meth:`SchemaStore.save` did: ``schema`` is the latest version; ``created``,
    whether this call stored it, replacing ``previous`` (None: the table's first)."""

    schema: TableSchema
    previous: TableSchema | None
    created: bool

    @property
    def change(self) -> SchemaChange | None:
        return SchemaChange.between(self.previous, self.schema) if self.created else None


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """A request to a source's schema function to read tables now, sent as Lambda's
    asynchronous Invoke payload (``{"tables": ["schema.table"], "reason": ...}``) by
    discovery when it finds a table and by the glue when it meets columns a schema lacks.
    No ``tables`` (``{}``, or EventBridge's scheduled event): every selected table."""

    tables: tuple[str, ...] = ()
    reason: str = ""

    def payload(self) -> bytes:
        return json.dumps({"tables": list(self.tables), "reason": self.reason}).encode()

    @classmethod
    def from_event(cls, event: Any) -> RefreshRequest:
        """The request an invocation's event makes; SchemaError naming the field when it
        names tables other than as ``schema.table`` strings."""
        if not isinstance(event, dict) or "tables" not in event:
            return cls()
        tables = event["tables"]
        if not isinstance(tables, list) or not all(
            isinstance(table, str) and table.count(".") == 1 and all(table.split(".")) for table in tables
        ):
            raise SchemaError(
                f"schema refresh request: tables must be a list of 'schema.table', not {tables!r}"
            )
        reason = event.get("reason", "")
        return cls(tuple(tables), reason if isinstance(reason, str) else str(reason))


#: The schema table's key, as CreateTable takes it: ``table`` (``source.schema.table``) and
#: ``version``.
TABLE_KEY: dict[str, Any] = {
    "KeySchema": [
        {"AttributeName": "table", "KeyType": "HASH"},
        {"AttributeName": "version", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "table", "AttributeType": "S"},
        {"AttributeName": "version", "AttributeType": "N"},
    ],
}


#: The schema item's attribute saying its schema-change event is on every shard (when, in
#: epoch milliseconds): the only one the glue writes (its grant allows no other).
ANNOUNCED = "announced_ms"


class SchemaStore:
    """The bus's schema table (:data:`TABLE_KEY`): one item per table and version."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def latest(self, qualified: str) -> TableSchema | None:
        response = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="#t = :t",
            ExpressionAttributeNames={"#t": "table"},
            ExpressionAttributeValues={":t": {"S": qualified}},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = response.get("Items") or []
        return _from_item(items[0]) if items else None

    def latest_announced(self, qualified: str) -> tuple[int, bool] | None:
        """The table's latest version and whether its schema-change event is on every shard
        (None: no version stored), from one consistent Query of those two attributes: no
        schema is parsed. The read costs the whole item all the same ("Projection expression
        has no effect on provisioned throughput consumption", Expressions.ProjectionExpressions):
        one read unit for an item up to 4 KB."""
        response = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="#t = :t",
            ProjectionExpression=f"#v, {ANNOUNCED}",
            ExpressionAttributeNames={"#t": "table", "#v": "version"},
            ExpressionAttributeValues={":t": {"S": qualified}},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = response.get("Items") or []
        if not items:
            return None
        return int(items[0]["version"]["N"]), ANNOUNCED in items[0]

    def version(self, qualified: str, version: int) -> TableSchema | None:
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"table": {"S": qualified}, "version": {"N": str(version)}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return _from_item(item) if item else None

    def announced(self, qualified: str, version: int) -> bool:
        """Whether a schema-change event of the version is on every shard of the bus."""
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"table": {"S": qualified}, "version": {"N": str(version)}},
            ProjectionExpression=ANNOUNCED,
            ConsistentRead=True,
        )
        return ANNOUNCED in (response.get("Item") or {})

    def mark_announced(self, qualified: str, version: int) -> None:
        """Note that the version's schema-change event is on every shard (the item must exist)."""
        self.client.update_item(
            TableName=self.table_name,
            Key={"table": {"S": qualified}, "version": {"N": str(version)}},
            UpdateExpression=f"SET {ANNOUNCED} = :now",
            ConditionExpression="attribute_exists(#v)",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":now": {"N": str(int(time.time() * 1000))}},
        )

    def save(self, schema: TableSchema) -> Saved:
        """Store ``schema`` as a new version unless the latest has the same columns."""
        for _ in range(5):
            latest = self.latest(schema.qualified)
            if latest is not None and latest.fingerprint == schema.fingerprint:
                return Saved(latest, previous=None, created=False)
            stored = schema.with_version((latest.version if latest else 0) + 1)
            try:
                self.client.put_item(
                    TableName=self.table_name,
                    Item=_to_item(stored),
                    ConditionExpression="attribute_not_exists(#v)",
                    ExpressionAttributeNames={"#v": "version"},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                continue  # another reader stored this version first: compare with it
            return Saved(stored, previous=latest, created=True)
        raise RuntimeError(f"schema of {schema.qualified}: five writers raced for its next version")


def _to_item(schema: TableSchema) -> dict[str, Any]:
    return {
        "table": {"S": schema.qualified},
        "version": {"N": str(schema.version)},
        "fingerprint": {"S": schema.fingerprint},
        "stored_ms": {"N": str(int(time.time() * 1000))},
        "schema": {"S": json.dumps(schema.to_dict(), separators=(",", ":"))},
    }


def _from_item(item: dict[str, Any]) -> TableSchema:
    try:
        return TableSchema.from_dict(json.loads(item["schema"]["S"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise SchemaError(f"schema item {item.get('table')} v{item.get('version')}: {exc}") from None
