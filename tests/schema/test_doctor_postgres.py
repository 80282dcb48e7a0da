"""``dmsbus doctor``'s PostgreSQL checks (source_admin.core) on a real PostgreSQL: the
embedded server the tests start, read as the source admin function reads it. Settings that
only a restart changes (wal_level, slots, senders) are evaluated from values as the server
reports them; everything else is read from the server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dmsbus import variables
from dmsbus.settings import SettingsError
from local.functions import LambdaContext
from local.net import free_port
from local.postgres import _binaries
from local.runtime import database_name, store_secret
from source_admin.core import (
    PostgresServer,
    Report,
    Selection,
    doctor,
    drop_slot,
    inactive_retained_bytes,
    logical_slots,
    postgres_findings,
    read_postgres,
)
from source_admin.settings import SourceAdminSettings

SHOP = """
CREATE TABLE public.customers (id int PRIMARY KEY, email text NOT NULL UNIQUE, city text);
CREATE TABLE public.order_lines (order_id int, line_no int, qty int, PRIMARY KEY (order_id, line_no));
CREATE TABLE public.visits (id int PRIMARY KEY, customer_id int NOT NULL, at timestamptz);
CREATE TABLE public.notes (body text);
CREATE SCHEMA audit;
CREATE TABLE audit.event_login (id bigint PRIMARY KEY, ok boolean);
CREATE TABLE audit.event_click (customer_id int, at timestamptz);
"""
READY = Selection.from_settings(
    ["public.customers", "public.order_lines", "audit.event_login"],
    ["public.order_lines=order_id:number+line_no:number"],
)


@pytest.fixture
def shop(database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute(SHOP)
        yield connection


def findings(report: Report, check: str) -> list[str]:
    return [f.found for f in report.findings if f.check == check]


def test_a_ready_source_passes_every_check(shop: psycopg.Connection[Any]) -> None:
    # Given the embedded server (wal_level=logical, free slots and senders, a superuser) and
    # tables that each have a one-column primary key or a key config gives that is unique
    # When the doctor reads it
    report = doctor(shop, "postgres", READY)
    # Then nothing is missing, and it says what it looked at
    assert report.findings == ()
    assert report.ready
    assert "wal_level: logical" in report.checked
    assert any(line.startswith("replication slots: ") for line in report.checked)
    assert any(line.startswith("tables: 3 selected (3 listed, 0 by a wildcard)") for line in report.checked)


def test_a_table_without_primary_key_or_key_is_named(shop: psycopg.Connection[Any]) -> None:
    # Given public.notes, listed without a key, and audit.event_click, matched by a wildcard:
    # neither has a primary key
    selection = Selection.from_settings(["public.notes", "audit.event_%"])
    # When the doctor reads them
    report = doctor(shop, "postgres", selection)
    # Then both are named as missing their DynamoDB key, with the page that says so
    missing = [f for f in report.missing if f.check == "primary_key"]
    assert [f.found.split(" ")[0] for f in missing] == ["audit.event_click", "public.notes"]
    assert {f.page for f in missing} == {"CHAP_Target.DynamoDB"}
    assert missing[0].assessment == "postgres-check-pk"
    # and the wildcard's table is told to leave the selection for a listed table with a key
    assert "narrow selection audit.event_%" in missing[0].fix
    # and event_login, which the wildcard matches too and has a primary key, is fine
    assert not any("event_login" in f.found for f in report.findings)


def test_a_composite_primary_key_without_key_is_named_with_the_key_to_give(
    shop: psycopg.Connection[Any],
) -> None:
    # Given order_lines (primary key order_id, line_no) listed without a key
    report = doctor(shop, "postgres", Selection.from_settings(["public.order_lines"]))
    # Then the doctor names it and the two-column key that fixes it
    (finding,) = report.missing
    assert finding.check == "primary_key" and "composite" in finding.found
    assert "[order_id, line_no]" in finding.fix


def test_a_key_that_is_not_unique_is_named(shop: psycopg.Connection[Any]) -> None:
    # Given visits keyed by customer_id in config: many visits share a customer
    selection = Selection.from_settings(["public.visits"], ["public.visits=customer_id"])
    # When the doctor reads the catalog
    report = doctor(shop, "postgres", selection)
    # Then the key is named as not unique, so that items would overwrite each other
    (finding,) = report.missing
    assert finding.check == "key"
    assert finding.found.startswith("public.visits: key [customer_id] is not unique")
    assert "CREATE UNIQUE INDEX visits_dmsbus_key ON public.visits (customer_id);" in finding.fix


def test_a_key_a_unique_index_covers_passes_and_a_nullable_one_is_named(
    shop: psycopg.Connection[Any],
) -> None:
    # Given customers keyed by email (UNIQUE NOT NULL) and by city (a unique index, NULLs allowed)
    shop.execute("CREATE UNIQUE INDEX customers_city ON public.customers (city)")
    by_email = Selection.from_settings(["public.customers"], ["public.customers=email"])
    by_city = Selection.from_settings(["public.customers"], ["public.customers=city"])
    # Then email is a key DynamoDB can take as it is
    assert doctor(shop, "postgres", by_email).findings == ()
    # and city is named for its NULLs, with the command that forbids them
    (finding,) = doctor(shop, "postgres", by_city).missing
    assert finding.check == "key" and "may be NULL" in finding.found
    assert finding.fix == "ALTER TABLE public.customers ALTER COLUMN city SET NOT NULL;"


def test_key_types_are_checked_against_what_dms_writes_of_each_column(shop: psycopg.Connection[Any]) -> None:
    # Given customers keyed by email (text: DMS writes a string) declared a number, visits
    # keyed by id (int: a number) declared a string, and a bytea key DMS does not write
    shop.execute("ALTER TABLE public.notes ADD COLUMN digest bytea PRIMARY KEY")
    selection = Selection.from_settings(
        ["public.customers", "public.visits", "public.notes"],
        ["public.customers=email:number", "public.visits=id:string", "public.notes=digest:string"],
    )
    # When the doctor reads their column types
    report = doctor(shop, "postgres", selection)
    # Then the number declared of a text column is missing (its rows would fail)
    (missing, unwritten) = report.missing
    assert missing.found == (
        "public.customers: key column email is text, which DMS writes as a string, and config's key_types "
        "declare a number: a row whose value is not a number fails"
    )
    assert missing.fix == "key_types: [string] in config"
    # and the bytea key cannot be a key at all
    assert unwritten.found.startswith("public.notes: key column digest is bytea, which DMS does not write")
    # and the string declared of an integer is advice: the key is the number's text
    (advice,) = report.advice
    assert advice.found.startswith("public.visits: key column id is int4, which DMS writes as a number")


def test_a_keyed_table_without_primary_key_needs_replica_identity_full(shop: psycopg.Connection[Any]) -> None:
    # Given notes keyed by a unique NOT NULL column but without a primary key
    shop.execute("ALTER TABLE public.notes ADD COLUMN id int NOT NULL UNIQUE")
    selection = Selection.from_settings(["public.notes"], ["public.notes=id"])
    # Then DMS would not see its UPDATEs and DELETEs: the replica identity is named
    (finding,) = doctor(shop, "postgres", selection).missing
    assert finding.check == "replica_identity"
    assert finding.fix.endswith("ALTER TABLE public.notes REPLICA IDENTITY FULL;")
    # and once it is FULL, nothing is missing
    shop.execute("ALTER TABLE public.notes REPLICA IDENTITY FULL")
    assert doctor(shop, "postgres", selection).ready


def test_a_text_primary_key_is_advice_naming_dms_lob_assessment(shop: psycopg.Connection[Any]) -> None:
    # Given a table keyed by text, which DMS maps to NCLOB (a LOB)
    shop.execute("CREATE TABLE public.products (sku text PRIMARY KEY, title varchar(80))")
    report = doctor(shop, "postgres", Selection.from_settings(["public.products"]))
    # Then it is advice, with DMS's own assessment to settle it, and not a reason to fail
    (finding,) = report.findings
    assert not finding.blocking and finding.assessment == "postgres-check-pk-lob"
    assert finding.found.startswith(
        "public.products: primary key column sku (text) is a type DMS maps to a LOB"
    )
    assert report.ready


def test_a_listed_table_the_source_lacks_is_advice_not_missing(shop: psycopg.Connection[Any]) -> None:
    report = doctor(shop, "postgres", Selection.from_settings(["public.refunds"]))
    (finding,) = report.findings
    assert not finding.blocking and "public.refunds" in finding.found
    assert report.ready


@contextmanager
def as_role(connection: psycopg.Connection[Any], *attributes: str) -> Iterator[str]:
    """The connection acting as a new role (SET ROLE: no password needed), dropped after."""
    role = f"doctor_{uuid.uuid4().hex[:8]}"
    connection.execute(sql.SQL("CREATE ROLE {} " + " ".join(attributes)).format(sql.Identifier(role)))
    try:
        connection.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        yield role
    finally:
        connection.execute("RESET ROLE")
        connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_user_that_is_not_a_superuser_is_named(shop: psycopg.Connection[Any]) -> None:
    # Given a self-managed server and a user with neither SUPERUSER nor REPLICATION nor SELECT
    with as_role(shop, "LOGIN NOSUPERUSER NOREPLICATION") as role:
        # When the doctor reads the source as that user
        report = doctor(shop, "postgres", Selection.from_settings(["public.customers"]))
    # Then its privileges and the table it cannot read are named, each with the command
    privileges = next(f for f in report.missing if f.check == "privileges")
    assert privileges.found.startswith(f"user {role} is not a superuser (nor has it REPLICATION)")
    assert privileges.fix == f"ALTER ROLE {role} WITH SUPERUSER;"
    select = next(f for f in report.missing if f.check == "select")
    assert select.fix == f"GRANT SELECT ON public.customers TO {role};"
    assert select.assessment == "postgres-check-select-object-privileges"


def test_a_replication_user_is_still_not_enough_on_a_self_managed_server(
    shop: psycopg.Connection[Any],
) -> None:
    with as_role(shop, "LOGIN REPLICATION"):
        report = doctor(shop, "postgres", Selection())
    assert any("it has REPLICATION, which is not enough" in f for f in findings(report, "privileges"))


# --- settings that need a restart: evaluated from what the server reports -----------------


@pytest.fixture
def server(shop: psycopg.Connection[Any]) -> PostgresServer:
    """What the embedded server reports, as read: the base the cases below change."""
    return read_postgres(shop)


def test_wal_level_replica_is_named_with_the_setting_to_change(server: PostgresServer) -> None:
    replica = replace(server, settings={**server.settings, "wal_level": "replica"})
    _, found = postgres_findings(replica)
    (finding,) = found
    assert finding.check == "wal_level" and finding.found.startswith("wal_level is replica")
    assert finding.fix.startswith("wal_level = logical in postgresql.conf")
    assert finding.assessment == "postgres-check-wallevel"
    # and on RDS the fix is the parameter group's rds.logical_replication
    on_rds = replace(replica, rds=True, rds_superuser=True, rds_replication=True)
    (rds,) = postgres_findings(on_rds)[1]
    assert rds.fix.startswith("rds.logical_replication = 1 in the DB parameter group")


def test_no_free_slot_or_wal_sender_is_named(server: PostgresServer) -> None:
    full = replace(
        server,
        settings={**server.settings, "max_replication_slots": "4", "max_wal_senders": "4"},
        slots_used=4,
        senders_used=4,
    )
    checks = {f.check: f for f in postgres_findings(full)[1]}
    assert checks["replication_slots"].found.startswith("max_replication_slots is 4 and 4 slots exist")
    assert checks["wal_senders"].found.startswith("max_wal_senders is 4 and 4 are in use")
    assert all(f.blocking for f in checks.values())


def test_one_wal_sender_is_advice_as_the_guide_asks_for_more(server: PostgresServer) -> None:
    one = replace(server, settings={**server.settings, "max_wal_senders": "1"}, senders_used=0)
    (finding,) = postgres_findings(one)[1]
    assert finding.check == "wal_senders" and not finding.blocking


@pytest.mark.parametrize(
    ("timeout", "blocking"),
    [("0", None), ("10000", None), ("9999", True), ("60000", None), ("600000", False)],
)
def test_wal_sender_timeout_is_0_or_at_least_10_seconds(
    server: PostgresServer, timeout: str, blocking: bool | None
) -> None:
    found = postgres_findings(replace(server, settings={**server.settings, "wal_sender_timeout": timeout}))[1]
    assert [f.blocking for f in found] == ([] if blocking is None else [blocking])


def test_on_rds_the_user_needs_rds_superuser_and_rds_replication(server: PostgresServer) -> None:
    rds = replace(server, rds=True, superuser=False, rds_superuser=True, rds_replication=False)
    (finding,) = postgres_findings(rds)[1]
    assert finding.found.endswith("is not a member of rds_replication")
    assert finding.fix == "as the master user: GRANT rds_replication TO postgres;"


# --- dropping DMS's replication slot ------------------------------------------------------


def test_an_inactive_slot_is_dropped_and_then_absent(shop: psycopg.Connection[Any]) -> None:
    # Given a logical slot left behind by a stopped task
    shop.execute("SELECT pg_create_logical_replication_slot('dms_left_behind', 'test_decoding')")
    # When it is dropped, then it is gone; a second drop finds nothing to do
    assert drop_slot(shop, "dms_left_behind").result == "dropped"
    assert shop.execute(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'dms_left_behind'"
    ).fetchone() == (0,)
    assert drop_slot(shop, "dms_left_behind").result == "absent"


def test_an_active_slot_is_refused_with_the_command_to_run_after_the_task(
    shop: psycopg.Connection[Any], database: str
) -> None:
    # Given a slot a process is reading (pg_recvlogical, as DMS's task reads it)
    shop.execute("SELECT pg_create_logical_replication_slot('dms_reading', 'test_decoding')")
    reader = subprocess.Popen(
        [str(_binaries() / "pg_recvlogical"), "-d", database, "--slot", "dms_reading", "--start", "-f", os.devnull,
         "--no-loop"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not shop.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'dms_reading'"
        ).fetchone()[0]:  # type: ignore[index]
            assert reader.poll() is None and time.monotonic() < deadline, reader.stderr
            time.sleep(0.05)
        # When it is asked to drop it, then it refuses, saying why and what to run later
        result = drop_slot(shop, "dms_reading")
        assert result.result == "refused" and result.active
        assert (
            "is active" in result.message
            and "SELECT pg_drop_replication_slot('dms_reading');" in result.message
        )
    finally:
        reader.terminate()
        reader.wait(timeout=10)
    # and the slot is still there
    assert shop.execute(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'dms_reading'"
    ).fetchone() == (1,)


def test_the_slots_list_tells_the_wal_an_unread_slot_keeps(shop: psycopg.Connection[Any]) -> None:
    # Given a logical slot no process reads, and WAL written after it
    shop.execute("SELECT pg_create_logical_replication_slot('dms_stopped_task', 'test_decoding')")
    try:
        shop.execute(
            "CREATE TABLE public.wal_filler AS SELECT n, repeat('x', 500) AS pad FROM generate_series(1, 2000) n"
        )
        shop.execute("DROP TABLE public.wal_filler")
        # When the slots are listed
        slots = {slot.slot: slot for slot in logical_slots(shop)}
        # Then the slot is there, inactive, keeping the WAL written since (about 1 MB here)
        assert slots["dms_stopped_task"].active is False
        assert slots["dms_stopped_task"].retained_bytes > 500_000
        assert inactive_retained_bytes(slots.values()) >= slots["dms_stopped_task"].retained_bytes
    finally:
        shop.execute("SELECT pg_drop_replication_slot('dms_stopped_task')")


def test_the_scheduled_watch_emits_the_wal_unread_slots_keep(
    shop: psycopg.Connection[Any],
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an unread slot on the source
    shop.execute("SELECT pg_create_logical_replication_slot('dms_watched', 'test_decoding')")
    # (the stack names the function as the service, which the alarm's dimension names too)
    monkeypatch.setenv(variables.POWERTOOLS_SERVICE, "demo-shop-admin")
    try:
        with admin_function(database, monkeypatch, "public.customers") as invoke:
            # When EventBridge's schedule invokes the admin function
            answer = invoke({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}})
    finally:
        shop.execute("SELECT pg_drop_replication_slot('dms_watched')")
    # Then it lists the slots and emits the metric the source stack alarms on
    assert answer["action"] == "watch" and "dms_watched" in [slot["slot"] for slot in answer["slots"]]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    metric = emf[-1]["_aws"]["CloudWatchMetrics"][0]
    assert metric["Namespace"] == "dmsbus"
    assert metric["Metrics"][0]["Name"] == "InactiveSlotRetainedBytes"
    assert metric["Dimensions"] == [["service"]] and emf[-1]["service"] == "demo-shop-admin"
    assert emf[-1]["InactiveSlotRetainedBytes"][0] >= 0


def test_a_slot_name_that_is_not_one_is_refused_before_any_query(shop: psycopg.Connection[Any]) -> None:
    with pytest.raises(ValueError, match="is not a replication slot name"):
        drop_slot(shop, "x'); DROP TABLE public.customers; --")


# --- the handler: the secret DMS reads, TLS as the secret says ----------------------------

CONTEXT = LambdaContext("demo-shop-admin", 256, 60)


@contextmanager
def admin_function(
    database: str, monkeypatch: pytest.MonkeyPatch, tables: str, keys: str = ""
) -> Iterator[Any]:
    environment = {
        variables.BUS_NAME: "demo",
        variables.SOURCE_NAME: "shop",
        variables.SOURCE_ENGINE: "postgres",
        variables.SOURCE_DATABASE: database_name(database),
        variables.CREDENTIALS_NAME: "dmsbus/shop",
        variables.SOURCE_TABLES: tables,
        variables.SOURCE_KEYS: keys,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        store_secret(boto3.client("secretsmanager", region_name="us-east-1"), "dmsbus/shop", database)
        from source_admin import handler as admin_handler

        admin_handler.settings.cache_clear()
        admin_handler.secretsmanager.cache_clear()
        try:
            yield lambda event: admin_handler.handler(event, CONTEXT)
        finally:
            admin_handler.settings.cache_clear()
            admin_handler.secretsmanager.cache_clear()


def test_the_handler_reports_with_dms_credentials(
    shop: psycopg.Connection[Any], database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the admin function of a source whose listed public.notes has no primary key
    with admin_function(database, monkeypatch, "public.customers,public.notes,audit.event_%") as invoke:
        # When it is asked for the doctor's report
        answer = invoke({"action": "doctor"})
    # Then it answers JSON the CLI reads back, naming the table
    report = Report.from_json(answer)
    assert answer["ready"] is False
    assert [f.found.split(" ")[0] for f in report.missing] == ["audit.event_click", "public.notes"]


def test_the_handler_drops_a_slot_and_refuses_a_bad_request(
    shop: psycopg.Connection[Any], database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop.execute("SELECT pg_create_logical_replication_slot('dms_task_slot', 'pgoutput')")
    with admin_function(database, monkeypatch, "public.customers") as invoke:
        assert invoke({"action": "drop-slot", "slot": "dms_task_slot"})["result"] == "dropped"
        with pytest.raises(ValueError, match="drop-slot needs slot"):
            invoke({"action": "drop-slot"})
        with pytest.raises(ValueError, match="action 'heal'"):
            invoke({"action": "heal"})


def test_a_source_the_credentials_do_not_reach_is_the_finding(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a secret whose port nothing listens on
    closed = make_conninfo(database, port=str(free_port()))
    # When the doctor is asked, then the connection is what is missing
    with admin_function(closed, monkeypatch, "public.customers") as invoke:
        report = Report.from_json(invoke({"action": "doctor"}))
    (finding,) = report.missing
    assert finding.check == "connection" and "cannot connect" in finding.found


def test_a_malformed_key_in_the_environment_is_refused_at_cold_start() -> None:
    # Given a key for a table the selection does not list, and one that is not schema.table=...
    environment = {
        variables.BUS_NAME: "demo",
        variables.SOURCE_NAME: "shop",
        variables.SOURCE_ENGINE: "postgres",
        variables.SOURCE_DATABASE: "shop",
        variables.CREDENTIALS_NAME: "dmsbus/shop",
        variables.SOURCE_TABLES: "public.orders",
    }
    # Then each is one error naming the variables and the entry
    with pytest.raises(
        SettingsError,
        match=re.escape("DMSBUS_SOURCE_KEYS: keys of tables that are not listed: public.visits"),
    ):
        SourceAdminSettings.from_environ({**environment, variables.SOURCE_KEYS: "public.visits=id"})
    with pytest.raises(
        SettingsError, match=re.escape("'public.orders=id:text' is not schema.table=partition")
    ):
        SourceAdminSettings.from_environ({**environment, variables.SOURCE_KEYS: "public.orders=id:text"})
