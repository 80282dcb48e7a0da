"""The schema function on a MySQL-family source: MariaDB's information_schema read into the
same table schemas, and a row typed and mirrored end to end. Local mode's DMS stand-in
replicates PostgreSQL only, so the row is written to DynamoDB's shape here by hand, by
docs/dms.md's table for MySQL sources (DATETIME as written, TIMESTAMP in UTC, BIT(1) a
BOOL, binary types not written), then decoded by the glue's decoder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import psycopg
import pymysql
import pytest
from moto import mock_aws

from consumers.pg_mirror.mirror import Mirror
from consumers.pg_mirror.schema import source_type
from dmsbus import testing
from dmsbus.ddbjson import Decoder
from dmsbus.schemas import TABLE_KEY, Column, SchemaStore, TableSchema
from dmsbus.typed import ImageTyper
from local.functions import LambdaContext
from source_schema.core import TableRef, read_schemas, selected_tables
from tests.schema.conftest import MariaDB

TABLE = """
CREATE TABLE {db}.every_type (
    id INT NOT NULL PRIMARY KEY,
    small SMALLINT,
    tiny TINYINT(1),
    big BIGINT UNSIGNED,
    price DECIMAL(10,2),
    ratio FLOAT,
    exact DOUBLE,
    flag BIT(1),
    mask BIT(8),
    code CHAR(4),
    label VARCHAR(20) NOT NULL DEFAULT '',
    body TEXT,
    kind ENUM('a', 'b'),
    day DATE,
    at TIME(6),
    moment DATETIME(6),
    instant TIMESTAMP(6) NULL,
    photo BLOB,
    doubled INT GENERATED ALWAYS AS (id * 2) STORED,
    secret VARCHAR(10)
)
"""
ROW = """
INSERT INTO {db}.every_type (id, small, tiny, big, price, ratio, exact, flag, mask, code, label, body,
    kind, day, at, moment, instant, photo, secret)
VALUES (1, 7, 1, 18446744073709551615, 19.90, 1.5, 2.25, b'1', b'10101010', 'AB', 'label', 'long text',
    'b', '2026-11-01', '08:30:00', '2026-11-01 12:00:00', '2026-11-01 10:00:00.5', x'deadbeef', 's3cr3t')
"""


@pytest.fixture
def source(mariadb: MariaDB, mysql_database: str) -> Iterator[pymysql.Connection[Any]]:
    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute(TABLE.format(db=mysql_database))
        cursor.execute(ROW.format(db=mysql_database))
        cursor.execute(
            f"CREATE TABLE {mysql_database}.order_lines (order_id INT, line_no INT, qty INT, "
            "PRIMARY KEY (order_id, line_no))"
        )
    with mariadb.connect() as connection:
        yield connection


def every_type(source: pymysql.Connection[Any], db: str) -> TableSchema:
    (schema,) = read_schemas(
        source, "shop", [TableRef(db, "every_type", frozenset({"secret"}))], engine="mariadb"
    ).values()
    return schema


def test_the_catalog_gives_the_columns_dms_replicates_in_order(
    source: pymysql.Connection[Any], mysql_database: str
) -> None:
    # When the table's schema is read from information_schema, one column excluded by config
    schema = every_type(source, mysql_database)
    columns = {column.name: column for column in schema.columns}
    # Then the generated and excluded columns are not there, the rest in order
    assert list(columns) == [
        "id", "small", "tiny", "big", "price", "ratio", "exact", "flag", "mask", "code", "label", "body",
        "kind", "day", "at", "moment", "instant", "photo",
    ]  # fmt: skip
    # And each has its declared type, data type, nullability, precision, length and key
    # (integers without MariaDB's display widths, as MySQL 8 gives them; TINYINT(1) keeps its)
    assert columns["id"] == Column("id", "int", "int", nullable=False, key=1)
    assert columns["tiny"].type == "tinyint(1)"
    assert columns["price"] == Column(
        "price", "decimal(10,2)", "decimal", nullable=True, precision=10, scale=2
    )
    assert columns["label"] == Column("label", "varchar(20)", "varchar", nullable=False, length=20)
    assert columns["big"].type == "bigint unsigned"
    # And their kinds are what DMS writes: DATETIME as written, TIMESTAMP in UTC, BIT(1) a
    # boolean, a wider BIT and BLOB not at all, TINYINT(1) a number
    assert {name: column.kind for name, column in columns.items()} | {} == {
        "id": "integer", "small": "integer", "tiny": "integer", "big": "integer", "price": "decimal",
        "ratio": "float", "exact": "float", "flag": "boolean", "mask": "unwritten", "code": "text",
        "label": "text", "body": "text", "kind": "text", "day": "date", "at": "time",
        "moment": "timestamp", "instant": "timestamptz", "photo": "unwritten",
    }  # fmt: skip
    assert (schema.engine, schema.table, schema.schema) == ("mariadb", "every_type", mysql_database)


def test_a_composite_key_is_in_key_order(source: pymysql.Connection[Any], mysql_database: str) -> None:
    (schema,) = read_schemas(
        source, "shop", [TableRef(mysql_database, "order_lines")], engine="mysql"
    ).values()
    assert [(column.name, column.key) for column in schema.columns] == [
        ("order_id", 1),
        ("line_no", 2),
        ("qty", None),
    ]


def test_the_schema_reads_back_from_the_store_with_its_engine(
    source: pymysql.Connection[Any], mysql_database: str
) -> None:
    schema = every_type(source, mysql_database)
    again = TableSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert again == schema
    assert [column.kind for column in again.columns] == [column.kind for column in schema.columns]


def test_selection_patterns_name_the_databases_tables(
    source: pymysql.Connection[Any], mysql_database: str
) -> None:
    refs = selected_tables(
        source, [f"{mysql_database}.order%", f"{mysql_database}.every_type"], engine="mysql"
    )
    assert [ref.table for ref in refs] == ["order_lines", "every_type"]


def dms_item(row: dict[str, Any], schema: TableSchema) -> dict[str, Any]:
    """The row as DMS's DynamoDB target writes a MySQL row (docs/dms.md, "MySQL sources")."""
    item: dict[str, Any] = {}
    for column in schema.columns:
        value = row[column.name]
        if value is None or not column.written:
            continue  # NULL and the types DMS does not write to DynamoDB
        if column.kind in ("integer", "decimal", "float"):
            # as DynamoDB keeps a number: no trailing zeros
            item[column.name] = {"N": format(Decimal(str(value)).normalize(), "f")}
        elif column.kind == "boolean":
            item[column.name] = {"BOOL": value == b"\x01"}
        elif isinstance(value, datetime):
            item[column.name] = {"S": value.strftime("%Y-%m-%d %H:%M:%S.%f")}
        elif isinstance(value, timedelta):
            item[column.name] = {"S": (datetime(2000, 1, 1) + value).strftime("%H:%M:%S.%f")}
        else:
            item[column.name] = {"S": str(value)}
    return item


def test_a_row_typed_end_to_end_and_mirrored_is_the_source_row(
    source: pymysql.Connection[Any], mysql_database: str, database: str
) -> None:
    # Given the row as DMS writes it (TIMESTAMP read in UTC, as DMS converts it)
    schema = every_type(source, mysql_database).with_version(1)
    with source.cursor(pymysql.cursors.DictCursor) as cursor:
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute(f"SELECT * FROM {mysql_database}.every_type WHERE id = 1")
        row = cursor.fetchone()
    assert row is not None
    # When the glue decodes and types it
    typed = ImageTyper(schema).image(Decoder("string").image(dms_item(row, schema)))
    assert typed is not None
    # Then each value is the source's, in the typed event's forms
    assert typed == {
        "id": 1, "small": 7, "tiny": 1, "big": 18446744073709551615, "price": "19.9", "ratio": "1.5",
        "exact": "2.25", "flag": True, "code": "AB", "label": "label", "body": "long text", "kind": "b",
        "day": "2026-11-01", "at": "08:30:00.000000", "moment": "2026-11-01T12:00:00.000000",
        "instant": "2026-11-01T10:00:00.500000Z",
    }  # fmt: skip
    # And pg_mirror makes PostgreSQL's types of them, and holds the source's values
    assert {column.name: source_type(column) for column in schema.columns} == {
        "id": "integer", "small": "smallint", "tiny": "smallint", "big": "numeric(20,0)",
        "price": "numeric(10,2)", "ratio": "real", "exact": "double precision", "flag": "boolean",
        "mask": None, "code": "character(4)", "label": "character varying(20)", "body": "text",
        "kind": "text", "day": "date", "at": "interval",
        "moment": "timestamp without time zone", "instant": "timestamp with time zone", "photo": None,
    }  # fmt: skip
    event = testing.change(f"{mysql_database}.every_type", "c", key={"id": 1}, after=typed, schema=schema)
    with psycopg.connect(database, autocommit=True) as mirror:
        Mirror().apply(mirror, [event])
        with mirror.cursor(row_factory=psycopg.rows.dict_row) as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
            got = cursor.execute(f'SELECT * FROM "{mysql_database}".every_type').fetchone()
    assert got is not None
    assert got == {
        "id": 1, "small": 7, "tiny": 1, "big": Decimal("18446744073709551615"), "price": Decimal("19.90"),
        "ratio": 1.5, "exact": 2.25, "flag": True, "code": "AB  ", "label": "label", "body": "long text",
        "kind": "b", "day": date(2026, 11, 1), "at": timedelta(hours=8, minutes=30),
        "moment": datetime(2026, 11, 1, 12, 0), "instant": datetime.fromisoformat("2026-11-01T10:00:00.5+00:00"),
    }  # fmt: skip


def test_the_handler_reads_a_mysql_source_with_dms_credentials(
    mariadb: MariaDB, source: pymysql.Connection[Any], mysql_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the schema function of a MariaDB source, its secret as RDS keeps it, and the store
    environment = {
        "BUS_NAME": "demo",
        "DMSBUS_SOURCE": "shop",
        "DMSBUS_SOURCE_ENGINE": "mariadb",
        "DMSBUS_SOURCE_DATABASE": mysql_database,
        "DMSBUS_SECRET": "dmsbus/shop",
        "BUS_SCHEMA_TABLE": "demo-schemas",
        "DMSBUS_SOURCE_TABLES": f"{mysql_database}.%",
        "DMSBUS_SOURCE_EXCLUDE": f"{mysql_database}.every_type.secret",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    secret = {
        "host": mariadb.host,
        "port": mariadb.port,
        "username": mariadb.user,
        "password": mariadb.password,
    }
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(TableName="demo-schemas", BillingMode="PAY_PER_REQUEST", **TABLE_KEY)
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="dmsbus/shop", SecretString=json.dumps({**secret, "sslmode": "disable"})
        )
        from source_schema import handler as schema_handler

        schema_handler.settings.cache_clear()
        try:
            # When it runs, and again after a column is added
            first = schema_handler.handler({}, LambdaContext("demo-shop-schema", 256, 120))
            with mariadb.admin() as admin, admin.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {mysql_database}.order_lines ADD COLUMN note VARCHAR(40)")
            second = schema_handler.handler(
                {"tables": [f"{mysql_database}.order_lines"]}, LambdaContext("demo-shop-schema", 256, 120)
            )
            latest = SchemaStore(dynamodb, "demo-schemas").latest(f"shop.{mysql_database}.order_lines")
        finally:
            schema_handler.settings.cache_clear()
    # Then both tables were stored, then the changed one again as version 2
    assert first == {
        "tables": 2,
        "changed": {f"shop.{mysql_database}.every_type": 1, f"shop.{mysql_database}.order_lines": 1},
    }
    assert second == {"tables": 1, "changed": {f"shop.{mysql_database}.order_lines": 2}}
    assert latest is not None and latest.engine == "mariadb" and latest.columns[-1].name == "note"
