"""Reading table schemas from a PostgreSQL source's catalog (pg_catalog), the way DMS sees
the tables: the columns it replicates, in order, with their types, nullability and key.

Generated columns are left out (DMS does not write them: pgoutput does not send them), as
are the columns the config excludes (its object mapping drops them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dmsbus.schemas import Column, Saved, SchemaStore, TableSchema
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


def read_schemas(
    connection: Any, source: str, tables: Iterable[TableRef]
) -> dict[tuple[str, str], TableSchema]:
    """The schemas of ``tables`` from ``connection`` (psycopg); a table the catalog does not
    have is left out of the result (dropped, or not created yet)."""
    wanted = {(ref.schema, ref.table): ref for ref in tables}
    if not wanted:
        return {}
    schemas, names = zip(*wanted, strict=True)
    rows = connection.execute(CATALOG_QUERY, (list(schemas), list(names))).fetchall()
    columns: dict[tuple[str, str], list[Column]] = {}
    for schema, table, *row in rows:
        if row[0] in wanted[(schema, table)].exclude:
            continue
        columns.setdefault((schema, table), []).append(_column(*row))
    read_ms = int(time.time() * 1000)
    return {
        where: TableSchema(
            source=source, schema=where[0], table=where[1], columns=tuple(found), read_ms=read_ms
        )
        for where, found in columns.items()
    }


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


def refresh(connection: Any, store: SchemaStore, source: str, tables: Iterable[TableRef]) -> list[Saved]:
    """Read ``tables`` and store each schema that changed as a new version."""
    return [store.save(schema) for schema in read_schemas(connection, source, tables).values()]


#: The tables of a source schema; which a pattern selects is dmsbus.table_mappings's to say.
TABLES_QUERY = """
SELECT n.nspname, c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname = %s
 ORDER BY 1, 2
"""


def selected_tables(connection: Any, patterns: Iterable[str], exclude: Iterable[str] = ()) -> list[TableRef]:
    """The source's tables that ``patterns`` (``schema.table``, config patterns: ``%`` the
    one wildcard) select, as the task's rendered object locators select them (``_`` is
    written ``[_]``: "Wildcards in table mapping", CHAP_Tasks.CustomizingTasks.TableMapping.
    SelectionTransformation.Wildcards), each with the columns ``exclude``
    (``schema.table.column``) names."""
    excluded: dict[tuple[str, str], set[str]] = {}
    for entry in exclude:
        schema, table, column = entry.split(".", 2)
        excluded.setdefault((schema, table), set()).add(column)
    found: dict[tuple[str, str], TableRef] = {}
    for selected in patterns:
        schema, table = selected.split(".", 1)
        locator = pattern(table)
        for where in connection.execute(TABLES_QUERY, (schema,)).fetchall():
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
) -> list[Saved]:
    """Every selected table of the source (or those of them ``only`` names, ``schema.table``)
    read and stored, a new version where it changed. A table ``only`` names that the
    source's patterns do not select is not read: DMS does not replicate it."""
    tables = selected_tables(connection, patterns, exclude)
    wanted = set(only)
    if wanted:
        tables = [ref for ref in tables if f"{ref.schema}.{ref.table}" in wanted]
    return refresh(connection, store, source, tables)
