"""The schema function's catalog reader on a real PostgreSQL, and every type of a table
typed end to end: the source row -> what DMS writes to DynamoDB (the stand-in's
conversion) -> the glue's decoding -> typed values, compared with the row psycopg reads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from consumers.pg_mirror.mirror import Mirror
from dmsbus import testing
from dmsbus.ddbjson import Decoder
from dmsbus.schemas import TABLE_KEY, Column, RefreshRequest, SchemaStore
from dmsbus.typed import ImageTyper
from local.dms_types import ColumnType, TypeInfo, dms_type, dynamodb_value
from local.functions import LambdaContext
from local.runtime import store_secret
from source_schema.core import TableRef, read_schemas, selected_tables

TABLE = """
CREATE DOMAIN positive_money AS numeric(12,2) NOT NULL CHECK (VALUE >= 0);
CREATE DOMAIN yes_no AS boolean;
CREATE DOMAIN agreed AS yes_no NOT NULL;
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE TABLE public.every_type (
    id integer PRIMARY KEY,
    small smallint,
    big bigint,
    price numeric(10,2),
    wide numeric(40,3),
    loose numeric,
    cash money,
    ratio real,
    exact double precision,
    flag boolean,
    code character(4),
    label varchar(20),
    body text,
    doc jsonb,
    raw json,
    tags text[],
    day date,
    at time,
    at_zone timetz,
    moment timestamp,
    instant timestamptz,
    span interval,
    uid uuid,
    feeling mood,
    amount positive_money,
    photo bytea,
    consent agreed,
    secret text,
    doubled integer GENERATED ALWAYS AS (id * 2) STORED
);
ALTER TABLE public.every_type ADD COLUMN gone integer;
ALTER TABLE public.every_type DROP COLUMN gone;
"""

ROWS = """
INSERT INTO public.every_type VALUES
 (1, 7, 9007199254740993, 19.90, 1234567890123456789012345678901234567.125, 0.6111111044,
  '$1,234.50', 1.5, 2.25, true, 'AB', 'label', 'long text', '{"b": [1, 2], "a": null}', '{"x": 1}',
  '{p,q}', '2026-11-01', '08:30:00', '08:30:00+02', '2026-11-01 12:00:00', '2026-11-01 12:00:00.5+02',
  '1 day 02:00:00', '6f1c8f3a-2b1e-4c5d-9e8f-0a1b2c3d4e5f', 'sad', 12.50, '\\xdeadbeef', true, 's3cr3t'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, false, NULL);
"""


@pytest.fixture
def source(database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute(TABLE)
        connection.execute(ROWS)
        yield connection


def test_the_catalog_gives_the_columns_dms_replicates_in_order(source: psycopg.Connection[Any]) -> None:
    # When the schema of the table is read, with one column excluded by config
    schemas = read_schemas(source, "legacy", [TableRef("public", "every_type", frozenset({"secret"}))])
    columns = {column.name: column for column in schemas[("public", "every_type")].columns}
    # Then the generated, dropped and excluded columns are not there, and the rest is in order
    assert list(columns)[:4] == ["id", "small", "big", "price"]
    assert {"doubled", "gone", "secret"} & set(columns) == set()
    assert len(columns) == 27
    # And each column has its type, base type, nullability, precision and key
    assert columns["id"] == Column(name="id", type="integer", base="int4", nullable=False, key=1)
    assert columns["price"] == Column(
        name="price", type="numeric(10,2)", base="numeric", nullable=True, precision=10, scale=2
    )
    assert columns["amount"] == Column(
        name="amount", type="positive_money", base="numeric", nullable=False, precision=12, scale=2
    )
    # A domain over a domain over boolean: its base type and the NOT NULL on the way
    assert columns["consent"] == Column(name="consent", type="agreed", base="bool", nullable=False)
    assert columns["code"] == Column(name="code", type="character(4)", base="bpchar", nullable=True, length=4)
    assert (columns["instant"].kind, columns["moment"].kind, columns["flag"].kind) == (
        "timestamptz",
        "timestamp",
        "boolean",
    )
    assert (columns["tags"].kind, columns["feeling"].kind, columns["photo"].written) == (
        "text",
        "text",
        False,
    )


def test_a_table_the_catalog_does_not_have_is_left_out(source: psycopg.Connection[Any]) -> None:
    assert read_schemas(source, "legacy", [TableRef("public", "not_there")]) == {}


def dms_image(connection: psycopg.Connection[Any], row_id: int) -> dict[str, Any]:
    """The row as DMS writes it to DynamoDB, as the stand-in converts it, then decoded by
    the glue (string numbers)."""
    columns = connection.execute(
        "SELECT attname, atttypid::int, atttypmod FROM pg_attribute WHERE attrelid = 'public.every_type'::regclass "
        "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
    ).fetchall()

    def lookup(oid: int) -> TypeInfo:
        found = connection.execute(
            "SELECT typtype::text, typcategory::text, typbasetype::int, typtypmod FROM pg_type WHERE oid = %s",
            (oid,),
        ).fetchone()
        assert found is not None
        return TypeInfo(*found)

    texts = connection.execute(
        "SELECT "
        + ", ".join(f"{name}::text" for name, _, _ in columns)
        + " FROM public.every_type WHERE id = %s",
        (row_id,),
    ).fetchone()
    assert texts is not None
    item: dict[str, Any] = {}
    for (name, oid, typmod), text in zip(columns, texts, strict=True):
        if text is None:
            continue  # "NULL data from the source are ignored on the target"
        kind, read_as = dms_type(ColumnType(oid, typmod), lookup)
        value = dynamodb_value(text, kind, read_as, lob_max_bytes=400_000)
        if value is not None:
            item[name] = value
    return Decoder("string").image(item)


def as_typed(value: Any) -> Any:
    """A value psycopg reads, as the typed event writes it."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None).isoformat("T", "microseconds") + "Z"
        return value.isoformat("T", "microseconds")
    if isinstance(value, time):
        return value.replace(tzinfo=None).isoformat("microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


@pytest.mark.parametrize("row_id", [1, 2], ids=["values", "nulls"])
def test_every_type_typed_end_to_end_is_the_source_row(source: psycopg.Connection[Any], row_id: int) -> None:
    # Given the table's schema and the row as DMS wrote it
    (schema,) = read_schemas(source, "legacy", [TableRef("public", "every_type")]).values()
    # When the glue types the image
    typed = ImageTyper(schema).image(dms_image(source, row_id))
    assert typed is not None
    # Then every column DMS writes is there, NULLs as null, and each value is the source's
    with source.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        row = cursor.execute("SELECT * FROM public.every_type WHERE id = %s", (row_id,)).fetchone()
    assert row is not None
    assert set(typed) == set(row) - {"photo", "doubled"}  # bytea: DMS writes none
    for name, value in typed.items():
        expected = row[name]
        if expected is None or name in ("tags", "span", "uid", "feeling"):
            # Types DMS writes as PostgreSQL's text; NULL as null
            assert value == (
                None
                if expected is None
                else source.execute(
                    f"SELECT {name}::text FROM public.every_type WHERE id = %s", (row_id,)
                ).fetchone()[0]
            ), name  # type: ignore[index]
        elif name in ("doc", "raw"):
            assert json.loads(value) == expected, name
        elif name == "loose":
            # numeric without precision: DMS's NUMERIC(28,6) rounds to 6 decimals
            assert Decimal(value) == expected.quantize(Decimal("0.000001")), name
        elif name == "cash":
            assert Decimal(str(value)) == Decimal("1234.50"), name
        elif name == "code":
            assert value == expected.rstrip(" "), name  # TrimSpaceInChar
        elif name == "at_zone":
            assert value == "08:30:00.000000", name  # DMS TIME drops the offset
        elif isinstance(expected, Decimal | float):
            assert Decimal(str(value)) == Decimal(str(expected)), name
        else:
            assert value == as_typed(expected), name


#: The mirror's column for each source column whose type it does not keep as it is: DMS
#: writes money as a number and timetz without its offset; arrays, intervals and enums
#: arrive as PostgreSQL's text of them; a domain becomes its base type.
MIRROR_TYPE_OF = {
    "cash": "numeric",
    "at_zone": "time without time zone",
    "tags": "text",
    "span": "text",
    "feeling": "text",
    "amount": "numeric(12,2)",
    "consent": "boolean",
}


def test_every_type_mirrored_from_typed_events_is_the_source_row(source: psycopg.Connection[Any]) -> None:
    # Given both rows typed as the glue types them, as events of schema v1
    (schema,) = read_schemas(source, "legacy", [TableRef("public", "every_type")]).values()
    typer = ImageTyper(schema.with_version(1))
    events = []
    for row_id in (1, 2):
        typed = typer.image(dms_image(source, row_id))
        assert typed is not None
        events.append(
            testing.change(
                "public.every_type", "c", key={"id": row_id}, after=typed, schema=schema.with_version(1)
            )
        )
    # When pg_mirror applies them (to another schema of the same database)
    Mirror(schema_template="mirror_{schema}").apply(source, events)
    # Then each mirror column has the source's type (bytea, which DMS never writes, has none)
    types = {
        (where, name): kind
        for where, name, kind in source.execute(
            "SELECT attrelid::regclass::text, attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid IN ('public.every_type'::regclass, 'mirror_public.every_type'::regclass) "
            "AND attnum > 0 AND NOT attisdropped"
        ).fetchall()
    }
    mirrored = {name: kind for (where, name), kind in types.items() if where.startswith("mirror_")}
    sourced = {name: kind for (where, name), kind in types.items() if not where.startswith("mirror_")}
    assert set(mirrored) == set(sourced) - {"photo", "doubled"}
    assert mirrored == {name: MIRROR_TYPE_OF.get(name, sourced[name]) for name in mirrored}
    # And each value is the source's, as far as DMS keeps it
    with source.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        for row_id in (1, 2):
            want = cursor.execute("SELECT * FROM public.every_type WHERE id = %s", (row_id,)).fetchone()
            got = cursor.execute("SELECT * FROM mirror_public.every_type WHERE id = %s", (row_id,)).fetchone()
            assert want is not None and got is not None
            as_text = cursor.execute(
                "SELECT tags::text, span::text, feeling::text FROM public.every_type WHERE id = %s", (row_id,)
            ).fetchone()
            assert as_text is not None
            expected = want | {
                "loose": None if want["loose"] is None else want["loose"].quantize(Decimal("0.000001")),
                "cash": None if want["cash"] is None else Decimal("1234.50"),
                "at_zone": None if want["at_zone"] is None else want["at_zone"].replace(tzinfo=None),
                **as_text,
            }
            assert got == {name: expected[name] for name in got}, row_id


def test_selection_patterns_and_exclusions_name_the_tables_and_columns(
    source: psycopg.Connection[Any],
) -> None:
    # Given two tables a wildcard selects, and one the selection does not
    source.execute("CREATE SCHEMA audit; CREATE TABLE audit.event_a (id int PRIMARY KEY, who text)")
    source.execute("CREATE TABLE audit.event_b (id int PRIMARY KEY); CREATE TABLE audit.other (id int)")
    # When the source's patterns are expanded
    refs = selected_tables(source, ["audit.event_%", "public.every_type"], ["audit.event_a.who"])
    # Then each selected table is there once, with its excluded columns
    assert refs == [
        TableRef("audit", "event_a", frozenset({"who"})),
        TableRef("audit", "event_b"),
        TableRef("public", "every_type"),
    ]


SCHEMA_CONTEXT = LambdaContext("demo-legacy-schema", 256, 120)


@contextmanager
def schema_function(
    database: str, monkeypatch: pytest.MonkeyPatch, tables: str, exclude: str | None = None
) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """The schema function's handler with its environment, its source's secret and the
    schema table (moto); the store's client as it reads the table."""
    environment = {
        "BUS_NAME": "demo",
        "DMSBUS_SOURCE": "legacy",
        "DMSBUS_SOURCE_ENGINE": "postgres",
        "DMSBUS_SOURCE_DATABASE": database.rsplit("/", 1)[1],
        "DMSBUS_SECRET": "dmsbus/legacy",
        "BUS_SCHEMA_TABLE": "demo-schemas",
        "DMSBUS_SOURCE_TABLES": tables,
        **({"DMSBUS_SOURCE_EXCLUDE": exclude} if exclude else {}),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="demo-schemas", BillingMode="PAY_PER_REQUEST", **TABLE_KEY
        )
        store_secret(boto3.client("secretsmanager", region_name="us-east-1"), "dmsbus/legacy", database)
        from source_schema import handler as schema_handler

        schema_handler.settings.cache_clear()
        try:
            yield lambda event: schema_handler.handler(event, SCHEMA_CONTEXT)
        finally:
            schema_handler.settings.cache_clear()


def test_the_handler_stores_each_tables_schema_once_and_again_when_it_changes(
    source: psycopg.Connection[Any], database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the schema function, its source's secret and the schema table (moto)
    with schema_function(
        database, monkeypatch, "public.every_type", exclude="public.every_type.secret"
    ) as invoke:
        # When it runs twice, and again after a column is added
        first = invoke({})
        second = invoke({})
        source.execute("ALTER TABLE public.every_type ADD COLUMN coupon varchar(12)")
        third = invoke({})
        latest = SchemaStore(boto3.client("dynamodb", region_name="us-east-1"), "demo-schemas").latest(
            "legacy.public.every_type"
        )
    # Then the schema was stored as version 1, left alone, then stored as version 2
    assert (first, second, third) == (
        {"tables": 1, "changed": {"legacy.public.every_type": 1}},
        {"tables": 1, "changed": {}},
        {"tables": 1, "changed": {"legacy.public.every_type": 2}},
    )
    assert latest is not None and latest.columns[-1].name == "coupon"
    assert "secret" not in {column.name for column in latest.columns}


def test_an_underscore_in_a_pattern_is_itself_not_any_character(source: psycopg.Connection[Any]) -> None:
    # DMS's patterns have one wildcard, %: both patterns would take orderxlines too, were _
    # LIKE's any-character
    source.execute(
        "CREATE TABLE public.order_lines (id int PRIMARY KEY); CREATE TABLE public.orderxlines (id int)"
    )
    refs = selected_tables(source, ["public.order_lines", "public.order_l%"])
    assert [ref.table for ref in refs] == ["order_lines"]


def test_a_request_naming_a_table_reads_that_table_only_and_only_if_it_is_selected(
    source: psycopg.Connection[Any], database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a schema function whose source selects public.% (every_type and lines)
    source.execute("CREATE TABLE public.lines (id int PRIMARY KEY, qty int)")
    source.execute("CREATE SCHEMA audit; CREATE TABLE audit.events (id int PRIMARY KEY)")
    with schema_function(database, monkeypatch, "public.%") as invoke:
        # When the glue asks for lines, and someone asks for a table the source does not select
        asked = invoke(json.loads(RefreshRequest(("public.lines",), "new columns").payload()))
        unselected = invoke({"tables": ["audit.events"], "reason": "by hand"})
    # Then only lines was read and stored; the unselected table was not read at all
    assert asked == {"tables": 1, "changed": {"legacy.public.lines": 1}}
    assert unselected == {"tables": 0, "changed": {}}
