"""The deployed entry point: Kinesis records in, mirror rows out; the connection from the
Secrets Manager secret ``DMSBUS_SECRET`` names (moto's here)."""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Iterator
from decimal import Decimal
from types import ModuleType
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from consumers.pg_mirror.connection import MirrorConnection, secret_conninfo
from consumers.pg_mirror.settings import PgMirrorSettings
from dmsbus import variables
from dmsbus.envelope import ChangeEvent
from dmsbus.schemas import TABLE_KEY, Column, SchemaStore, TableSchema
from dmsbus.settings import SettingsError
from local.runtime import store_secret
from tests.consumers.conftest import change


def kinesis_event(events: list[ChangeEvent]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:kinesis",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/demo-bus",
                "kinesis": {
                    "partitionKey": f"{event.qualified_table}|{json.dumps(event.key)}",
                    "sequenceNumber": str(49_000 + index),
                    "data": base64.b64encode(event.to_json()).decode(),
                },
            }
            for index, event in enumerate(events)
        ]
    }


@pytest.fixture
def pg_mirror(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The handler module loaded as at a cold start, its mirror ``database`` reached
    through its secret in moto's Secrets Manager."""
    monkeypatch.setenv("DMSBUS_SECRET", "dmsbus/mirror")
    with mock_aws():
        store_secret(boto3.client("secretsmanager", region_name="us-east-1"), "dmsbus/mirror", database)
        module = importlib.reload(importlib.import_module("consumers.pg_mirror.handler"))
        yield module
        module.DATABASE.close()


@pytest.fixture
def mirror_url(database: str, pg_mirror: ModuleType) -> str:
    return database


@pytest.fixture
def typed_pg_mirror(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, SchemaStore]]:
    """The handler module of a typed bus (its schema table in moto's DynamoDB), loaded as at
    a cold start, and the schema table."""
    monkeypatch.setenv("DMSBUS_SECRET", "dmsbus/mirror")
    monkeypatch.setenv(variables.SCHEMA_TABLE, "demo-schemas")
    with mock_aws():
        store_secret(boto3.client("secretsmanager", region_name="us-east-1"), "dmsbus/mirror", database)
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(TableName="demo-schemas", BillingMode="PAY_PER_REQUEST", **TABLE_KEY)
        module = importlib.reload(importlib.import_module("consumers.pg_mirror.handler"))
        yield module, SchemaStore(dynamodb, "demo-schemas")
        module.DATABASE.close()


def test_given_kinesis_records_when_the_handler_runs_then_the_mirror_holds_the_rows(
    pg_mirror: ModuleType, mirror_url: str
) -> None:
    # Given a Lambda batch of three changes
    event = kinesis_event(
        [
            change("c", "public.orders", {"id": 1}, {"status": "new"}, sequence=1),
            change("c", "public.orders", {"id": 2}, {"status": "new"}, sequence=2),
            change("u", "public.orders", {"id": 1}, {"status": "paid"}, sequence=3),
        ]
    )

    # When the handler runs
    response = pg_mirror.handler(event, None)

    # Then nothing failed and the mirror has both rows in their last state
    assert response == {"batchItemFailures": []}
    with psycopg.connect(mirror_url) as db:
        assert db.execute("SELECT id, status FROM public.orders ORDER BY id").fetchall() == [
            (1, "paid"),
            (2, "new"),
        ]


def test_given_a_batch_that_fails_when_the_handler_runs_then_every_record_is_reported(
    pg_mirror: ModuleType, mirror_url: str
) -> None:
    # Given a batch whose second change has an attribute name PostgreSQL cannot hold
    event = kinesis_event(
        [
            change("c", "public.orders", {"id": 1}, {"status": "new"}, sequence=1),
            change("c", "public.orders", {"id": 2}, {"s" * 80: "x"}, sequence=2),
        ]
    )

    # When the handler runs
    response = pg_mirror.handler(event, None)

    # Then the whole batch is reported (one transaction: nothing of it was applied)
    assert response == {"batchItemFailures": [{"itemIdentifier": "49000"}, {"itemIdentifier": "49001"}]}
    with psycopg.connect(mirror_url) as db:
        assert db.execute("SELECT to_regclass('public.orders')").fetchone() == (None,)


def test_given_a_typed_bus_when_a_new_column_is_not_in_the_schema_table_yet_then_the_batch_is_retried_until_it_is(
    typed_pg_mirror: tuple[ModuleType, SchemaStore], database: str
) -> None:
    # Given a typed bus whose schema table has public.orders without its new column yet
    pg_mirror, schemas = typed_pg_mirror
    key = Column("id", "integer", "int4", nullable=False, key=1)
    weight = Column("weight", "numeric(10,3)", "numeric", nullable=True, precision=10, scale=3)
    schemas.save(TableSchema(source="legacy", schema="public", table="orders", columns=(key,)))
    event = kinesis_event([change("c", "public.orders", {"id": 1}, {"weight": "1.250"}, sequence=1)])

    # When an untyped event using the column is handed to the handler
    first = pg_mirror.handler(event, None)

    # Then every record is reported for Lambda to hand again, and nothing is written
    assert first == {"batchItemFailures": [{"itemIdentifier": "49000"}]}
    with psycopg.connect(database) as db:
        assert db.execute("SELECT to_regclass('public.orders')").fetchone() == (None,)

    # And when the schema function has stored the column and Lambda hands the batch again
    schemas.save(TableSchema(source="legacy", schema="public", table="orders", columns=(key, weight)))
    again = pg_mirror.handler(event, None)

    # Then it is applied, the column with the source's type
    assert again == {"batchItemFailures": []}
    with psycopg.connect(database) as db:
        assert db.execute("SELECT id, weight FROM public.orders").fetchall() == [(1, Decimal("1.250"))]
        assert db.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.orders'::regclass AND attname = 'weight'"
        ).fetchone() == ("numeric(10,3)",)


def test_given_a_typed_bus_when_an_untyped_event_brings_a_column_dropped_since_then_it_takes_an_earlier_type(
    typed_pg_mirror: tuple[ModuleType, SchemaStore], database: str
) -> None:
    # Given a typed bus whose schema table has public.orders with weight (v1), then
    # without it (v2: dropped), and no mirror table yet (the consumer starts after the DROP)
    pg_mirror, schemas = typed_pg_mirror
    key = Column("id", "integer", "int4", nullable=False, key=1)
    weight = Column("weight", "numeric(10,3)", "numeric", nullable=True, precision=10, scale=3)
    schemas.save(TableSchema(source="legacy", schema="public", table="orders", columns=(key, weight)))
    schemas.save(TableSchema(source="legacy", schema="public", table="orders", columns=(key,)))
    event = kinesis_event([change("c", "public.orders", {"id": 1}, {"weight": "1.250"}, sequence=1)])

    # When an untyped event written before the DROP, with weight, is handed to the handler
    result = pg_mirror.handler(event, None)

    # Then it is applied, weight with v1's type, and the mirror follows v2
    assert result == {"batchItemFailures": []}
    with psycopg.connect(database) as db:
        assert db.execute("SELECT id, weight FROM public.orders").fetchall() == [(1, Decimal("1.250"))]
        assert db.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.orders'::regclass AND attname = 'weight'"
        ).fetchone() == ("numeric(10,3)",)
        assert db.execute("SELECT schema_version FROM dmsbus_mirror.typed_tables").fetchall() == [(2,)]


def test_given_an_rds_secret_in_secrets_manager_when_the_handler_connects_then_it_uses_it(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the mirror's connection in a Secrets Manager secret (moto), no URL
    parts = conninfo_to_dict(database)
    monkeypatch.setenv("DMSBUS_SECRET", "dmsbus/mirror")
    with mock_aws():
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="dmsbus/mirror",
            SecretString=json.dumps(
                {
                    "engine": "postgres",
                    "host": parts["host"],
                    "port": int(parts["port"]),
                    "dbname": parts["dbname"],
                    "username": parts["user"],
                    "password": parts.get("password", ""),
                    "sslmode": "disable",  # the test server has no TLS; AWS defaults to require
                }
            ),
        )
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        connection = MirrorConnection(
            "dmsbus/mirror", lambda secret: str(secrets.get_secret_value(SecretId=secret)["SecretString"])
        )

        # When the handler's connection opens
        db = connection.get()

    # Then it is the secret's database
    assert db.execute("SELECT current_database()").fetchone() == (parts["dbname"],)
    connection.close()


def test_given_a_secret_without_a_password_then_the_error_names_the_secret_and_field() -> None:
    with pytest.raises(SettingsError, match=r"^secret dmsbus/mirror: missing password$"):
        secret_conninfo(
            "dmsbus/mirror", json.dumps({"host": "db", "username": "report"}), application_name="t"
        )


def test_given_a_secret_that_is_not_json_then_the_error_shows_no_content() -> None:
    with pytest.raises(SettingsError) as raised:
        secret_conninfo("dmsbus/mirror", "hunter2-not-json", application_name="t")
    assert "hunter2" not in str(raised.value)


def test_given_a_complete_secret_then_tls_is_required_by_default() -> None:
    info = conninfo_to_dict(
        secret_conninfo(
            "s",
            json.dumps({"host": "db", "username": "u", "password": "p", "dbname": "reports"}),
            application_name="t",
        )
    )
    assert (info["host"], info["port"], info["dbname"], info["sslmode"], info["application_name"]) == (
        "db",
        "5432",
        "reports",
        "require",
        "t",
    )


def test_given_no_secret_then_the_error_names_the_variable_and_the_config_field() -> None:
    with pytest.raises(SettingsError) as raised:
        PgMirrorSettings.from_environ({"MIRROR_SCHEMA": "{source}_{schema}"})
    assert str(raised.value) == (
        "environment variable DMSBUS_SECRET is required by the pg_mirror consumer and is not set: "
        "the name of a Secrets Manager secret of the mirror database: "
        "set `secret` on the consumer in config/bus.yaml"
    )


def test_given_a_mirror_schema_then_the_settings_hold_it() -> None:
    settings = PgMirrorSettings.from_environ(
        {"DMSBUS_SECRET": "dmsbus/mirror", "MIRROR_SCHEMA": "{source}_x"}
    )
    assert (settings.secret, settings.mirror_schema) == ("dmsbus/mirror", "{source}_x")
