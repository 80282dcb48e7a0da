"""``dmsbus verify``'s core: the source, as DMS writes it, against the reporting mirror, per
table, on a sample of rows (or all of them).

Each sampled source row is mapped as DMS maps it (the stand-in's own mapping) and decoded
as the glue decodes it, then looked up in the mirror by its key; and a sample of the
mirror's keys is looked up in the source. Values compare as the mirror's columns hold them
(:func:`as_mirror_holds`): cast to each column's type, as pg_mirror writes them, so a mirror
with the source's types (a typed bus) checks as one of inferred types does. A row is:
- **lost** when the mirror lacks it, holds another value for a column both have, or holds
  it when the source does not (a lost delete);
- **stale after DDL** when the only differences are columns the source has a value for and
  the mirror has not (no such column, or NULL): ``ALTER TABLE ... ADD COLUMN ... DEFAULT``
  fills existing rows without writing WAL, so no change ever carried those values (DMS and
  Debezium behave the same), nor into DynamoDB. A reload of the table in DMS, or an update
  of such a row, sends them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from psycopg import errors, sql

from consumers.pg_mirror.schema import TEXT, as_text
from dmsbus.ddbjson import Decoder, NumberMode
from dmsbus.envelope import RESYNC_ATTRIBUTE
from dmsbus.names import parse_table_name
from local.dms import DmsStandIn, TargetSchema

#: Rows per table a check reads unless told otherwise.
DEFAULT_SAMPLE = 1000
#: Keys looked up in the mirror per query.
_KEYS_PER_QUERY = 500
#: Rows cast to the mirror's types per query.
_ROWS_PER_CAST = 200


@dataclass
class TableCheck:
    """One table's result: rows compared, and the keys of lost and stale rows."""

    table: str
    compared: int = 0
    lost: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    stale_columns: set[str] = field(default_factory=set)
    #: The mirror has no such table.
    no_mirror_table: bool = False

    def describe(self, limit: int = 3) -> list[str]:
        lines = [
            f"{self.table}: {self.compared} rows compared, {len(self.lost)} lost, "
            f"{len(self.stale)} stale after DDL" + (" (no mirror table)" if self.no_mirror_table else "")
        ]
        lines += [f"  lost: {problem}" for problem in self.lost[:limit]]
        if self.stale:
            columns = ", ".join(sorted(self.stale_columns))
            lines.append(
                f"  stale after DDL: {len(self.stale)} rows whose {columns} the source filled without a change "
                f"(ALTER TABLE ... ADD COLUMN ... DEFAULT writes no WAL, so DMS never saw it, and DynamoDB "
                f"lacks them too: `dmsbus resync` would send the same). Repair: reload the table in DMS "
                f"(`aws dms reload-tables`, or bump its version), or an UPDATE of those rows (UPDATE "
                f"{self.table} SET {sorted(self.stale_columns)[0]} = {sorted(self.stale_columns)[0]})"
            )
            lines += [f"  stale: {key}" for key in self.stale[:limit]]
        return lines


def check_mirror(
    dms: DmsStandIn,
    mirror_url: str,
    *,
    numbers: NumberMode = "string",
    schema_template: str = "{schema}",
    sample: int | None = DEFAULT_SAMPLE,
    tables: set[tuple[str, str]] | None = None,
) -> list[TableCheck]:
    """Each selected table (or those of ``tables``): ``sample`` rows of the source (None:
    all) against the mirror."""
    decoder = Decoder(numbers)
    expected: dict[str, tuple[TargetSchema, dict[tuple[str, ...], dict[str, str]]]] = {}
    with dms.connect() as connection:
        for schema, table in dms.source_tables(connection):
            target = dms.target_schema(connection, schema, table)
            if target is not None and (tables is None or (schema, table) in tables):
                expected[target.target.name] = (target, {})  # reported even when empty
    decoded: dict[str, list[dict[str, Any]]] = {}
    for target, item in dms.items(only=tables, sample=sample):
        decoded.setdefault(target.target.name, []).append(decoder.image(item))
    checks = []
    with mirror_connection(mirror_url) as connection:
        for name, (target, rows) in sorted(expected.items()):
            parsed = parse_table_name(name)
            where = (
                schema_template.format(schema=parsed.schema, source=parsed.source, bus=parsed.bus),
                parsed.table,
            )
            columns = mirror_columns(connection, *where)
            for row in as_mirror_holds(connection, decoded.get(name, []), columns):
                rows[tuple(row.get(part, "") for part in target.key)] = row
            check = TableCheck(f"{parsed.schema}.{parsed.table}", compared=len(rows))
            if not columns:
                check.no_mirror_table = bool(rows)
                check.lost = [f"{check.table} {list(key)}: no mirror table" for key in rows]
            else:
                added = dms.added_with_default(parsed.schema, parsed.table)
                found = _mirror_rows(connection, where, list(target.key), columns, rows.keys())
                for key, row in rows.items():
                    _classify(check, key, row, found.get(key), columns=columns, added=added)
                # And the other way: a sample of the mirror's keys, each still in the source
                # (a row the source deleted and the mirror kept is a lost delete).
                kept = _mirror_keys(connection, where, list(target.key), sample)
                missing = kept - _source_keys(dms, (parsed.schema, parsed.table), list(target.key), kept)
                check.lost += [
                    f"{check.table} {list(k)}: in the mirror, not in the source" for k in sorted(missing)
                ]
            checks.append(check)
    return checks


def _classify(
    check: TableCheck,
    key: tuple[str, ...],
    row: Mapping[str, Any],
    got: Mapping[str, Any] | None,
    *,
    columns: Mapping[str, str],
    added: set[str],
) -> None:
    """Lost, stale after DDL, or fine. A value the mirror lacks is stale only in a column the
    mirror has not made, or one the source added with a default (``atthasmissing``);
    otherwise it is a lost update."""
    label = f"{check.table} {list(key)}"
    if got is None:
        check.lost.append(f"{label}: not in the mirror")
        return
    lacking = sorted(name for name in row if name not in columns or name not in got)
    stale = [name for name in lacking if name not in columns or name in added]
    unexplained = [name for name in lacking if name not in stale]
    different = (
        sorted(name for name in row if name in got and row[name] != got[name])
        + sorted(name for name in got if name not in row)
        + unexplained
    )
    if different:
        check.lost.append(f"{label}: {', '.join(different)} differ")
    elif stale:
        check.stale.append(label)
        check.stale_columns.update(stale)


def mirror_connection(url: str) -> psycopg.Connection[Any]:
    """A connection to the mirror in UTC, the zone pg_mirror writes in (DMS's)."""
    connection = psycopg.connect(url)
    connection.execute("SET TIME ZONE 'UTC'")
    return connection


def mirror_columns(connection: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str]:
    """A mirror table's columns and their types (``format_type``), in order; empty when
    the table is not there."""
    return dict(
        connection.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (schema, table),
        ).fetchall()
    )


def mirror_selection(columns: Mapping[str, str]) -> sql.Composable:
    """The mirror's columns as text, the form :func:`as_mirror_holds` gives."""
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(name)) for name in columns)


def as_mirror_holds(
    connection: psycopg.Connection[Any], rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]
) -> list[dict[str, str]]:
    """Each row's non-null values as the mirror's columns hold them, as text: cast to the
    column's type in the mirror's database and back (pg_mirror writes through the same
    casts); a value of a column the mirror lacks, as its text. A value that does not cast
    is kept with a note, so that it differs from whatever the mirror holds."""
    texts = [{name: as_text(value) for name, value in row.items() if value is not None} for row in rows]
    cast = sorted({name for row in texts for name in row if columns.get(name, TEXT) != TEXT})
    if cast:
        types = {name: columns[name] for name in cast}
        for start in range(0, len(texts), _ROWS_PER_CAST):
            _cast_in_mirror(connection, texts[start : start + _ROWS_PER_CAST], types)
    return texts


def _cast_in_mirror(
    connection: psycopg.Connection[Any], rows: list[dict[str, str]], types: dict[str, str]
) -> None:
    names = list(types)
    query = sql.SQL("SELECT {} FROM (VALUES {}) AS v({})").format(
        sql.SQL(", ").join(
            sql.SQL("v.{}::{}::text").format(sql.Identifier(f"c{index}"), sql.SQL(types[name]))
            for index, name in enumerate(names)
        ),
        sql.SQL(", ").join(
            sql.SQL("({})").format(sql.SQL(", ").join([sql.SQL("%s::text")] * len(names))) for _ in rows
        ),
        sql.SQL(", ").join(sql.Identifier(f"c{index}") for index in range(len(names))),
    )
    try:
        with connection.transaction():
            found = connection.execute(query, [row.get(name) for row in rows for name in names]).fetchall()
    except (errors.DataError, errors.CannotCoerce):
        for row in rows:  # one by one, to tell which value
            for name in names:
                if name in row:
                    row[name] = _cast_one(connection, row[name], types[name])
        return
    for row, values in zip(rows, found, strict=True):
        for name, value in zip(names, values, strict=True):
            if name in row:
                row[name] = value


def _cast_one(connection: psycopg.Connection[Any], value: str, kind: str) -> str:
    try:
        with connection.transaction():
            found = connection.execute(sql.SQL("SELECT %s::text::{}::text").format(sql.SQL(kind)), (value,))
            return str(found.fetchone()[0])  # type: ignore[index]
    except (errors.DataError, errors.CannotCoerce) as exc:
        return f"{value} (does not cast to {kind}: {exc.diag.message_primary})"


def _typed_keys(
    key: list[str], chunk: list[tuple[str, ...]], types: Mapping[str, str], *, numbered: bool = False
) -> sql.Composable:
    """``(v1::type1, ...)`` per key of ``chunk`` (``(n, v1::type1, ...)`` when numbered):
    compared in the columns' own types, a table's key index serves the lookup."""
    return sql.SQL(", ").join(
        sql.SQL("({})").format(
            sql.SQL(", ").join(
                ([sql.Literal(index)] if numbered else [])
                + [
                    sql.SQL("{}::{}").format(sql.Literal(part), sql.SQL(types.get(name, "text")))
                    for name, part in zip(key, wanted, strict=True)
                ]
            )
        )
        for index, wanted in enumerate(chunk)
    )


def _mirror_rows(
    connection: psycopg.Connection[Any],
    where: tuple[str, str],
    key: list[str],
    columns: Mapping[str, str],
    keys: Iterable[tuple[str, ...]],
) -> dict[tuple[str, ...], dict[str, Any]]:
    """The mirror's rows with those keys: non-NULL columns, as text."""
    schema, table = where
    names = list(columns)
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    wanted = list(keys)
    for start in range(0, len(wanted), _KEYS_PER_QUERY):
        query = sql.SQL("SELECT {} FROM {}.{} WHERE ({}) IN ({})").format(
            mirror_selection(columns),
            sql.Identifier(schema),
            sql.Identifier(table),
            sql.SQL(", ").join(sql.Identifier(name) for name in key),
            _typed_keys(key, wanted[start : start + _KEYS_PER_QUERY], columns),
        )
        for values in connection.execute(query):
            row = {name: value for name, value in zip(names, values, strict=True) if value is not None}
            found[tuple(str(row.get(name)) for name in key)] = row
    return found


def _mirror_keys(
    connection: psycopg.Connection[Any], where: tuple[str, str], key: list[str], sample: int | None
) -> set[tuple[str, ...]]:
    """Keys of the mirror's rows (a random ``sample`` of them, or all), as text."""
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(name)) for name in key),
        sql.Identifier(where[0]),
        sql.Identifier(where[1]),
    )
    if sample is not None:
        query += sql.SQL(" ORDER BY random() LIMIT {}").format(sql.Literal(sample))
    return {tuple(str(part) for part in row) for row in connection.execute(query)}


def _source_keys(
    dms: DmsStandIn, table: tuple[str, str], key: list[str], keys: set[tuple[str, ...]]
) -> set[tuple[str, ...]]:
    """Those of ``keys`` (text) that the source table has, compared in its columns' types."""
    present: set[tuple[str, ...]] = set()
    wanted = sorted(keys)
    with dms.connect() as connection:
        types = mirror_columns(connection, *table)
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start : start + _KEYS_PER_QUERY]
            # Matched by position in the chunk: the text stays the mirror's, whatever the type.
            query = sql.SQL(
                "SELECT w.i FROM (VALUES {}) AS w(i, {}) WHERE EXISTS (SELECT 1 FROM {}.{} AS t WHERE {})"
            ).format(
                _typed_keys(key, chunk, types, numbered=True),
                sql.SQL(", ").join(sql.Identifier(name) for name in key),
                sql.Identifier(table[0]),
                sql.Identifier(table[1]),
                sql.SQL(" AND ").join(sql.SQL("t.{0} = w.{0}").format(sql.Identifier(name)) for name in key),
            )
            present.update(chunk[index] for (index,) in connection.execute(query))
    return present


# ---- the source against DynamoDB, where DMS writes ----------------------------------------

#: Keys per BatchGetItem (DynamoDB's limit).
_KEYS_PER_GET = 100


@dataclass
class TargetCheck:
    """One table's source rows against their DynamoDB items, as DMS wrote them."""

    table: str
    compared: int = 0
    #: Rows DynamoDB lacks, and rows whose attributes hold other values (both may be lag).
    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    #: Rows whose only difference is a column the source filled without a change (``ADD
    #: COLUMN ... DEFAULT``): no change carried it, to DynamoDB either.
    stale: list[str] = field(default_factory=list)
    #: Attributes an item holds that its source row has as NULL: column -> keys. DMS applying
    #: an UPDATE as an UpdateItem that leaves NULL columns out would leave them (docs/dms.md,
    #: open question 12).
    kept: dict[str, list[str]] = field(default_factory=dict)
    #: Attributes of columns the source no longer has (dropped): column -> keys.
    dropped: dict[str, list[str]] = field(default_factory=dict)
    #: The DynamoDB table is not there.
    no_table: bool = False

    def describe(self, limit: int = 3) -> list[str]:
        kept = sum(len(keys) for keys in self.kept.values())
        lines = [
            f"{self.table}: {self.compared} rows compared, {len(self.missing)} missing, "
            f"{len(self.different)} different, {len(self.stale)} stale after DDL, {kept} values kept after NULL"
            + (" (no such DynamoDB table)" if self.no_table else "")
        ]
        lines += [f"  missing: {key}" for key in self.missing[:limit]]
        lines += [f"  different: {problem}" for problem in self.different[:limit]]
        lines += [
            f"  kept after NULL: {column} of {', '.join(keys[:limit])}"
            for column, keys in sorted(self.kept.items())
        ]
        lines += [
            f"  a dropped column's value kept: {column} of {', '.join(keys[:limit])}"
            for column, keys in sorted(self.dropped.items())
        ]
        return lines


def check_target(
    dms: DmsStandIn,
    dynamodb: Any,
    *,
    sample: int | None = DEFAULT_SAMPLE,
    tables: set[tuple[str, str]] | None = None,
) -> list[TargetCheck]:
    """A sample of each selected table's rows (None: all), mapped as DMS maps them, against
    the items of its DynamoDB table, read consistently by key."""
    expected: dict[str, tuple[TargetSchema, tuple[str, str], list[dict[str, Any]]]] = {}
    columns: dict[str, set[str]] = {}
    with dms.connect() as connection:
        for schema, table in dms.source_tables(connection):
            target = dms.target_schema(connection, schema, table)
            if target is not None and (tables is None or (schema, table) in tables):
                expected[target.target.name] = (target, (schema, table), [])  # reported even when empty
                columns[target.target.name] = set(mirror_columns(connection, schema, table))
    for target, item in dms.items(only=tables, sample=sample):
        expected[target.target.name][2].append(item)
    checks = []
    for name, (target, source_table, items) in sorted(expected.items()):
        check = TargetCheck(name, compared=len(items))
        checks.append(check)
        try:
            found = _get_items(dynamodb, name, [{key: item[key] for key in target.key} for item in items])
        except dynamodb.exceptions.ResourceNotFoundException:
            check.no_table = True
            check.missing = [", ".join(f"{key}={_plain(item[key])}" for key in target.key) for item in items]
            continue
        added: set[str] | None = None
        for item in items:
            label = ", ".join(f"{key}={_plain(item[key])}" for key in target.key)
            actual = found.get(_key_text(item, target.key))
            if actual is None:
                check.missing.append(label)
                continue
            actual = {
                attribute: value for attribute, value in actual.items() if attribute != RESYNC_ATTRIBUTE
            }
            for attribute in sorted(actual.keys() - item.keys()):
                where = check.kept if attribute in columns[name] else check.dropped
                where.setdefault(attribute, []).append(label)
            differ = sorted(a for a in item.keys() & actual.keys() if not _same(item[a], actual[a]))
            lacking = sorted(item.keys() - actual.keys())
            if lacking and not differ:
                if added is None:
                    added = dms.added_with_default(*source_table)
                if set(lacking) <= added:
                    check.stale.append(label)
                    continue
            if differ or lacking:
                check.different.append(f"{label}: {', '.join(differ + lacking)}")
    return checks


def _get_items(
    dynamodb: Any, table: str, keys: list[dict[str, Any]], *, attempts: int = 8, sleep: Any = time.sleep
) -> dict[str, dict[str, Any]]:
    """The items of ``keys``, read consistently; unprocessed keys are asked again with a
    growing pause (BatchGetItem's UnprocessedKeys: "we strongly recommend that you use an
    exponential backoff algorithm", API_BatchGetItem), ``attempts`` times at most."""
    found: dict[str, dict[str, Any]] = {}
    names = list(keys[0]) if keys else []
    for start in range(0, len(keys), _KEYS_PER_GET):
        request: dict[str, Any] = {
            table: {"Keys": keys[start : start + _KEYS_PER_GET], "ConsistentRead": True}
        }
        for attempt in range(attempts):
            response = dynamodb.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(table, []):
                found[_key_text(item, names)] = item
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            sleep(min(2.0, 0.05 * 2**attempt))
        else:
            raise RuntimeError(f"{table}: DynamoDB left keys unprocessed {attempts} times (throttled)")
    return found


def _key_text(item: Mapping[str, Any], names: Iterable[str]) -> str:
    return "|".join(_plain(item[name]) for name in names)


def _plain(value: Mapping[str, Any]) -> str:
    ((kind, raw),) = value.items()
    return str(raw) if kind in ("S", "N") else repr(raw)


def _same(want: Mapping[str, Any], got: Mapping[str, Any]) -> bool:
    """Equal DynamoDB values; numbers as numbers (DynamoDB normalizes ``12.50`` to ``12.5``)."""
    if "N" in want and "N" in got:
        try:
            return Decimal(want["N"]) == Decimal(got["N"])
        except InvalidOperation:
            return False
    return dict(want) == dict(got)
