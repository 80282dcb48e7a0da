"""Reading table schemas from a source's catalog, the way DMS sees the tables: the columns
it replicates, in order, with their types, nullability and key. PostgreSQL's from
pg_catalog; MySQL's and MariaDB's from information_schema (a MySQL database is the
``schema`` of DMS's table mappings).

Generated columns are left out (DMS does not write them: pgoutput does not send them; on
MySQL dmsbus assumes the same), as are the columns the config excludes (its object
mapping drops them).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dmsbus.schemas import MYSQL_ENGINES, Column, Saved, SchemaStore, TableSchema
from dmsbus.table_mappings import like, pattern

# One row per column of the named tables: its type as PostgreSQL spells it, its base type
# (domains resolved to the end, as DMS reads them), its type modifier (precision and
# scale, length: the column's, or its nearest domain's), whether it may be NULL (a domain
# on the way may forbid it) and its place in the primary key.
CATALOG_QUERY = """
SELECT n.nspname, c.relname, a.attname,
       format_type(a.atttypid, a.atttypmod),
       d.base,
       CASE WHEN a.atttypmod >= 0 THEN a.atttypmod ELSE coalesce(d.typmod, -1) END,
       NOT (a.attnotnull OR d.notnull),
       (SELECT k.n FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n)
         WHERE i.indrelid = c.oid AND i.indisprimary AND k.attnum = a.attnum)
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL (
    WITH RECURSIVE chain(typtype, typbasetype, typtypmod, typnotnull, typname, depth) AS (
        SELECT t.typtype, t.typbasetype, t.typtypmod, t.typnotnull, t.typname, 0
          FROM pg_type t WHERE t.oid = a.atttypid
        UNION ALL
        SELECT b.typtype, b.typbasetype, b.typtypmod, b.typnotnull, b.typname, chain.depth + 1
          FROM chain JOIN pg_type b ON b.oid = chain.typbasetype
         WHERE chain.typtype = 'd'
    )
    SELECT (SELECT typname FROM chain WHERE typtype <> 'd' LIMIT 1) AS base,
           (SELECT typtypmod FROM chain WHERE typtype = 'd' AND typtypmod >= 0 ORDER BY depth LIMIT 1) AS typmod,
           coalesce(bool_or(typtype = 'd' AND typnotnull), false) AS notnull
      FROM chain
  ) d
 WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
   AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 ORDER BY n.nspname, c.relname, a.attnum
"""


@dataclass(frozen=True, slots=True)
class TableRef:
    """A replicated table: its source schema and name, and the columns config excludes."""

    schema: str
    table: str
    exclude: frozenset[str] = frozenset()


#: MySQL's and MariaDB's columns of the named tables of one database (``{tables}``: a
#: placeholder per table): their type as declared, their data type, nullability, precision
#: and scale (of a DECIMAL; a BIT's width), length (of a CHAR or VARCHAR) and place in the
#: primary key. One database per query, named as a constant on both sides: MySQL 5.7 and
#: MariaDB scan information_schema's tables only where such constants narrow them.
MYSQL_CATALOG_QUERY = """
SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, LOWER(c.DATA_TYPE),
       c.IS_NULLABLE = 'YES', c.NUMERIC_PRECISION, c.NUMERIC_SCALE, c.CHARACTER_MAXIMUM_LENGTH,
       k.ORDINAL_POSITION
  FROM information_schema.COLUMNS c
  LEFT JOIN information_schema.KEY_COLUMN_USAGE k
    ON k.CONSTRAINT_NAME = 'PRIMARY' AND k.TABLE_SCHEMA = %s
   AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME
 WHERE c.TABLE_SCHEMA = %s AND c.TABLE_NAME IN ({tables})
   AND COALESCE(c.GENERATION_EXPRESSION, '') = ''
 ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION
"""
#: Generated columns have a GENERATION_EXPRESSION ('' otherwise on MySQL, NULL on MariaDB);
#: EXTRA is no guide: MySQL 8 says DEFAULT_GENERATED of a plain column with an expression
#: default (``created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP``).
#: MySQL 8.0.19+ drops integers' display widths (``int``), MariaDB and 5.7 keep them
#: (``int(11)``): without them, an upgrade is no new schema version. ``tinyint(1)`` (MySQL's
#: BOOLEAN) and ZEROFILL keep theirs on both.
_DISPLAY_WIDTH = re.compile(r"^(tinyint|smallint|mediumint|int|bigint)\(\d+\)")


def _integer_type(declared: str) -> str:
    if "zerofill" in declared or declared.startswith("tinyint(1)"):
        return declared
    return _DISPLAY_WIDTH.sub(r"\1", declared)


def read_schemas(
    connection: Any, source: str, tables: Iterable[TableRef], *, engine: str = "postgres"
) -> dict[tuple[str, str], TableSchema]:
    """The schemas of ``tables`` from ``connection`` (psycopg, or pymysql for a MySQL-family
    ``engine``); a table the catalog does not have is left out of the result (dropped, or
    not created yet)."""
    wanted = {(ref.schema, ref.table): ref for ref in tables}
    if not wanted:
        return {}
    make: Callable[..., Column]
    if engine in MYSQL_ENGINES:
        per_database: dict[str, list[str]] = {}
        for schema, table in wanted:
            per_database.setdefault(schema, []).append(table)
        rows: list[tuple[Any, ...]] = []
        for database, tables_of in sorted(per_database.items()):
            query = MYSQL_CATALOG_QUERY.format(tables=", ".join(["%s"] * len(tables_of)))
            rows += _fetch(connection, query, [database, database, *tables_of])
        make = functools.partial(_mysql_column, engine=engine)
    else:
        schemas, names = zip(*wanted, strict=True)
        rows = _fetch(connection, CATALOG_QUERY, (list(schemas), list(names)))
        make = _column
    columns: dict[tuple[str, str], list[Column]] = {}
    for schema, table, *row in rows:
        if row[0] in wanted[(schema, table)].exclude:
            continue
        columns.setdefault((schema, table), []).append(make(*row))
    read_ms = int(time.time() * 1000)
    return {
        where: TableSchema(
            source=source,
            schema=where[0],
            table=where[1],
            columns=tuple(found),
            engine=engine,
            read_ms=read_ms,
        )
        for where, found in columns.items()
    }


def _fetch(connection: Any, query: str, parameters: Any) -> list[tuple[Any, ...]]:
    """Rows of a query, through a DB-API cursor (psycopg's and pymysql's alike)."""
    with connection.cursor() as cursor:
        cursor.execute(query, parameters)
        return list(cursor.fetchall())


def _mysql_column(*row: Any, engine: str) -> Column:
    """A MySQL catalog row (after its schema and table) as a column."""
    name, type_, base, nullable, precision, scale, length, key = row
    return Column(
        name=str(name),
        type=_integer_type(str(type_)),
        base=str(base),
        nullable=bool(nullable),
        key=int(key) if key is not None else None,
        precision=int(precision) if base in ("decimal", "bit") and precision is not None else None,
        scale=int(scale) if base == "decimal" and scale is not None else None,
        length=int(length) if base in ("char", "varchar") and length is not None else None,
        engine=engine,
    )


def _column(*row: Any) -> Column:
    """A catalog row (after its schema and table) as a column."""
    name, type_, base, typmod, nullable, key = row
    precision = scale = length = None
    if base == "numeric" and typmod >= 4:
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
    elif base in ("bpchar", "varchar") and typmod >= 4:
        length = typmod - 4
    return Column(
        name=name,
        type=type_,
        base=base,
        nullable=bool(nullable),
        key=key,
        precision=precision,
        scale=scale,
        length=length,
    )


def refresh(
    connection: Any, store: SchemaStore, source: str, tables: Iterable[TableRef], *, engine: str = "postgres"
) -> list[Saved]:
    """Read ``tables`` and store each schema that changed as a new version."""
    return [store.save(schema) for schema in read_schemas(connection, source, tables, engine=engine).values()]


#: The tables of a source schema; which a pattern selects is dmsbus.table_mappings's to say.
TABLES_QUERY = """
SELECT n.nspname, c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname = %s
 ORDER BY 1, 2
"""
MYSQL_TABLES_QUERY = """
SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
 WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA = %s
 ORDER BY 1, 2
"""


def selected_tables(
    connection: Any, patterns: Iterable[str], exclude: Iterable[str] = (), *, engine: str = "postgres"
) -> list[TableRef]:
    """The source's tables that ``patterns`` (``schema.table``, config patterns: ``%`` the
    one wildcard) select, as the task's rendered object locators select them (``_`` is
    written ``[_]``: "Wildcards in table mapping", CHAP_Tasks.CustomizingTasks.TableMapping.
    SelectionTransformation.Wildcards), each with the columns ``exclude``
    (``schema.table.column``) names."""
    excluded: dict[tuple[str, str], set[str]] = {}
    for entry in exclude:
        schema, table, column = entry.split(".", 2)
        excluded.setdefault((schema, table), set()).add(column)
    query = MYSQL_TABLES_QUERY if engine in MYSQL_ENGINES else TABLES_QUERY
    listed: dict[str, list[tuple[Any, ...]]] = {}  # each schema's tables, listed once
    found: dict[tuple[str, str], TableRef] = {}
    for selected in patterns:
        schema, table = selected.split(".", 1)
        locator = pattern(table)
        if schema not in listed:
            listed[schema] = _fetch(connection, query, (schema,))
        for where in listed[schema]:
            if like(locator, where[1]):
                found[where] = TableRef(where[0], where[1], frozenset(excluded.get(where, ())))
    return list(found.values())


def refresh_source(
    connection: Any,
    store: SchemaStore,
    source: str,
    patterns: Iterable[str],
    exclude: Iterable[str] = (),
    *,
    only: Iterable[str] = (),
    engine: str = "postgres",
) -> list[Saved]:
    """Every selected table of the source (or those of them ``only`` names, ``schema.table``)
    read and stored, a new version where it changed. A table ``only`` names that the
    source's patterns do not select is not read: DMS does not replicate it."""
    tables = selected_tables(connection, patterns, exclude, engine=engine)
    wanted = set(only)
    if wanted:
        tables = [ref for ref in tables if f"{ref.schema}.{ref.table}" in wanted]
    return refresh(connection, store, source, tables, engine=engine)
