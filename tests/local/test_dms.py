"""The DMS stand-in against a real PostgreSQL and moto's DynamoDB: tables named, keyed and
trimmed by the config's TableMappings, DMS's type mapping, CDC from the slot, resuming."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from config.model import SourceConfig
from dmsbus.ddbjson import STRING_NUMBERS
from local.aws import LocalAws
from local.dms import DmsStandIn
from local.dms_types import TaskError
from local.runtime import StandInRunner

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, vip boolean, since date);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, total numeric(12,2), note text,
                     created_at timestamptz DEFAULT '2026-11-01 10:00:00+00');
CREATE TABLE order_lines (order_id bigint, line_no int, sku text, qty int, PRIMARY KEY (order_id, line_no));
CREATE TABLE products (sku text PRIMARY KEY, title text);
CREATE TABLE shipments (order_id bigint, box int, PRIMARY KEY (order_id, box));
CREATE SCHEMA audit;
CREATE TABLE audit.event_login (id int PRIMARY KEY, who text);
CREATE TABLE audit.other (id int PRIMARY KEY);
"""

SOURCE = SourceConfig.model_validate(
    {
        "name": "legacy",
        "engine": "postgres",
        "server": "127.0.0.1",
        "database": "shop",
        "credentials": {"secret": "dmsbus/legacy"},
        "network": {"create_vpc": True, "egress": "nat"},
        "tables": [
            {
                "schema": "public",
                "table": "customers",
                "key": ["id"],
                "key_types": ["number"],
                "exclude": ["email"],
            },
            {"schema": "public", "table": "orders"},
            {
                "schema": "public",
                "table": "order_lines",
                "key": ["order_id", "line_no"],
                "key_types": ["number", "number"],
            },
            {"schema": "public", "table": "products", "version": 2},
            {"schema": "public", "table": "shipments"},
        ],
        "selections": [{"schema": "audit", "table": "event_%"}],
    }
)


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def source(database: str) -> str:
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute(SCHEMA)
    return database


def run(url: str, statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statements)


def items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    found = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return sorted((STRING_NUMBERS.image(item) for item in found), key=str)


def stand_in(url: str, dynamodb: Any) -> DmsStandIn:
    return DmsStandIn(url=url, bus="demo", source=SOURCE, dynamodb=dynamodb)


def test_full_load_creates_the_tables_dms_would_and_copies_rows(source: str, dynamodb: Any) -> None:
    # Given rows in the source before DMS starts
    run(
        source,
        "INSERT INTO customers VALUES (1, 'Zoë', 'z@example.com', true, '2020-02-29'), (2, 'Al', NULL, NULL, NULL);"
        "INSERT INTO orders (id, customer_id, total, note) VALUES (10, 1, 12.50, 'ünïcode ✓');"
        "INSERT INTO order_lines VALUES (10, 1, 'A-1', 2), (10, 2, 'B-2', 1);"
        "INSERT INTO products VALUES ('A-1', 'Anvil');"
        "INSERT INTO audit.event_login VALUES (1, 'zoe'); INSERT INTO audit.other VALUES (1);",
    )
    dms = stand_in(source, dynamodb)
    # When it starts and loads
    assert dms.start() is True
    assert dms.full_load() == 7
    # Then each selected table is a DynamoDB table named as the bus expects, as DMS creates it
    assert sorted(dynamodb.list_tables()["TableNames"]) == [
        "demo.legacy.audit.event_login",
        "demo.legacy.public.customers",
        "demo.legacy.public.order_lines",
        "demo.legacy.public.orders",
        "demo.legacy.public.products.v2",
    ]
    lines = dynamodb.describe_table(TableName="demo.legacy.public.order_lines")["Table"]
    assert [k["AttributeName"] for k in lines["KeySchema"]] == ["order_id", "line_no"]
    assert lines["ProvisionedThroughput"]["ReadCapacityUnits"] == 200
    assert "StreamSpecification" not in lines
    # And values are mapped as DMS maps them: excluded and NULL columns gone
    assert items(dynamodb, "demo.legacy.public.customers") == [
        {"id": 1, "name": "Zoë", "vip": "true", "since": "2020-02-29"},
        {"id": 2, "name": "Al"},
    ]
    assert items(dynamodb, "demo.legacy.public.orders") == [
        {
            "id": 10,
            "customer_id": 1,
            "total": "12.5",
            "note": "ünïcode ✓",
            "created_at": "2026-11-01 10:00:00.000000",
        }
    ]


def test_changes_flow_from_the_slot_as_put_update_and_delete(source: str, dynamodb: Any) -> None:
    # Given a loaded stand-in
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    # When the source inserts, updates (to NULL too) and deletes
    run(
        source,
        "INSERT INTO orders (id, customer_id, total) VALUES (1, 7, 3.00), (2, 8, 4.25);"
        "UPDATE orders SET total = 5.75, note = 'rush' WHERE id = 1;"
        "UPDATE orders SET customer_id = NULL WHERE id = 2;"
        "INSERT INTO products VALUES ('A-1', 'Anvil');"
        "DELETE FROM orders WHERE id = 2;",
    )
    applied = dms.poll()
    # Then DynamoDB holds the source's state
    assert applied == 6
    assert items(dynamodb, "demo.legacy.public.orders") == [
        {
            "id": 1,
            "customer_id": 7,
            "total": "5.75",
            "note": "rush",
            "created_at": "2026-11-01 10:00:00.000000",
        }
    ]
    assert items(dynamodb, "demo.legacy.public.products.v2") == [{"sku": "A-1", "title": "Anvil"}]


def test_an_update_of_the_primary_key_is_ignored_as_dms_does(source: str, dynamodb: Any) -> None:
    # Given a replicated row
    dms = stand_in(source, dynamodb)
    dms.start()
    run(source, "INSERT INTO products VALUES ('A-1', 'Anvil');")
    dms.full_load()
    # When the source changes its key, and later its other columns
    run(source, "UPDATE products SET sku = 'A-2' WHERE sku = 'A-1';")
    dms.poll()
    # Then DMS ignores the key change ("AWS DMS ignores an attempt to update a primary key
    # segment"): DynamoDB keeps the old row, and nothing is logged as an exception
    assert items(dynamodb, "demo.legacy.public.products.v2") == [{"sku": "A-1", "title": "Anvil"}]
    assert dms.exceptions == 0
    # And a later update of the row under its new key writes it whole (a put)
    run(source, "UPDATE products SET title = 'Big anvil' WHERE sku = 'A-2';")
    dms.poll()
    assert items(dynamodb, "demo.legacy.public.products.v2") == [
        {"sku": "A-1", "title": "Anvil"},
        {"sku": "A-2", "title": "Big anvil"},
    ]


def test_a_restart_resumes_from_the_slot_without_loss(source: str, dynamodb: Any) -> None:
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    run(source, "INSERT INTO orders (id) VALUES (1);")
    dms.poll()
    # Given changes made while the stand-in is down
    run(source, "INSERT INTO orders (id) VALUES (2); UPDATE orders SET note = 'x' WHERE id = 1;")
    # When a new stand-in starts on the same slot
    again = stand_in(source, dynamodb)
    assert again.start() is False  # no second full load
    assert again.poll() == 2
    # Then nothing was lost and nothing applied twice matters
    assert [i["id"] for i in items(dynamodb, "demo.legacy.public.orders")] == [1, 2]
    assert again.poll() == 0


def test_a_table_created_later_that_a_wildcard_selects_is_replicated(source: str, dynamodb: Any) -> None:
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    # When the source creates audit.event_logout mid-run and writes to it
    run(
        source,
        "CREATE TABLE audit.event_logout (id int PRIMARY KEY, who text); INSERT INTO audit.event_logout VALUES (5, 'al');"
        "CREATE TABLE audit.unselected (id int PRIMARY KEY); INSERT INTO audit.unselected VALUES (1);",
    )
    dms.poll()
    # Then its DynamoDB table appears with the row, and the unselected one does not
    assert items(dynamodb, "demo.legacy.audit.event_logout") == [{"id": 5, "who": "al"}]
    assert "demo.legacy.audit.unselected" not in dynamodb.list_tables()["TableNames"]


def test_a_listed_table_with_a_composite_key_and_no_key_in_config_is_suspended(
    source: str, dynamodb: Any
) -> None:
    # Given public.shipments, listed without `key`, whose primary key has two columns
    dms = stand_in(source, dynamodb)
    dms.start()
    run(source, "INSERT INTO shipments VALUES (1, 1); INSERT INTO orders (id) VALUES (1);")
    # When DMS loads and then captures changes
    dms.full_load()
    run(source, "INSERT INTO shipments VALUES (1, 2); INSERT INTO orders (id) VALUES (2);")
    dms.poll()
    # Then it is suspended, saying which config field fixes it, and never mis-keyed; the
    # other tables go on
    assert dms.suspended == {
        ("public", "shipments"): "public.shipments has a composite primary key (order_id, box), which DMS's "
        "DynamoDB target replicates only through an object mapping: give it `key: [order_id, box]` and their `key_types` in "
        "config/sources/legacy.yaml tables[4]"
    }
    assert not any("shipments" in name for name in dynamodb.list_tables()["TableNames"])
    assert [i["id"] for i in items(dynamodb, "demo.legacy.public.orders")] == [1, 2]


def test_wildcard_selected_tables_dms_cannot_key_are_suspended(source: str, dynamodb: Any) -> None:
    # Given tables the audit.event_% selection picks up: a composite, a 3-column and no key
    run(
        source,
        "CREATE TABLE audit.event_pair (a int, b int, PRIMARY KEY (a, b));"
        "CREATE TABLE audit.event_wide (a int, b int, c int, PRIMARY KEY (a, b, c));"
        "CREATE TABLE audit.event_heap (a int); INSERT INTO audit.event_login VALUES (1, 'x');",
    )
    dms = stand_in(source, dynamodb)
    dms.start()
    # When DMS loads them
    dms.full_load()
    # Then each is suspended with how to list it, and event_login is replicated
    assert sorted(key for key in dms.suspended if key[0] == "audit") == [
        ("audit", "event_heap"),
        ("audit", "event_pair"),
        ("audit", "event_wide"),
    ]
    assert dms.suspended[("audit", "event_pair")].endswith(
        "give it `key: [a, b]` and their `key_types` in config/sources/legacy.yaml (list it under tables: schema audit, table event_pair)"
    )
    assert "3-column primary key (a, b, c)" in dms.suspended[("audit", "event_wide")]
    assert "has no primary key" in dms.suspended[("audit", "event_heap")]
    assert items(dynamodb, "demo.legacy.audit.event_login") == [{"id": 1, "who": "x"}]


def test_changes_polled_together_are_batched_and_each_row_ends_in_its_last_state(
    source: str, dynamodb: Any
) -> None:
    # Given the stand-in running CDC
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    # When one poll finds many transactions: the same key in two tables, and one row
    # inserted, updated and deleted, another inserted and updated
    for number in range(1, 31):
        run(source, f"INSERT INTO customers (id, name) VALUES ({number}, 'c{number}')")
        run(source, f"INSERT INTO audit.event_login VALUES ({number}, 'w{number}')")
    run(source, "UPDATE customers SET name = 'renamed' WHERE id = 7; DELETE FROM customers WHERE id = 8")
    run(
        source, "DELETE FROM audit.event_login WHERE id = 8; UPDATE customers SET name = 'again' WHERE id = 7"
    )
    assert dms.poll() == 64
    # Then every row is in its last state
    customers = items(dynamodb, "demo.legacy.public.customers")
    assert len(customers) == 29
    assert {"id": 7, "name": "again"} in customers
    assert len(items(dynamodb, "demo.legacy.audit.event_login")) == 29


def test_a_large_poll_applies_on_several_lanes_and_keeps_each_rows_order(source: str, dynamodb: Any) -> None:
    # Given the stand-in running CDC with four apply lanes
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    assert dms.apply_threads == 4
    # When one poll finds 5 rows inserted, then updated 20 times each in turn, one of them
    # moved to another key half way and updated there, and one deleted at the end
    run(source, "INSERT INTO customers (id, name) SELECT n, 'v0' FROM generate_series(1, 5) AS n")
    for round_ in range(1, 21):
        if round_ == 10:
            run(source, "UPDATE customers SET id = 103 WHERE id = 3")
        for number in (1, 2, 103 if round_ >= 10 else 3, 4, 5):
            run(source, f"UPDATE customers SET name = 'v{round_}' WHERE id = {number}")
    run(source, "DELETE FROM customers WHERE id = 5")
    applied = dms.poll()
    # Then every change was applied and every row holds its last state: no lane reordered a
    # row. The key change itself is ignored, as DMS does: row 3 keeps its state from before
    # it, and row 103 appears with its first update (a put of the whole row)
    assert applied == 5 + 1 + 100 + 1
    assert items(dynamodb, "demo.legacy.public.customers") == sorted(
        [{"id": number, "name": "v20"} for number in (1, 2, 4, 103)] + [{"id": 3, "name": "v9"}], key=str
    )


@pytest.fixture
def served_aws() -> Iterator[LocalAws]:
    aws = LocalAws()
    aws.start()
    yield aws
    aws.stop()


def _wait(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_task_applies_changes_from_a_process_of_its_own(source: str, served_aws: LocalAws) -> None:
    # Given the stand-in's task started (full load here, CDC in its process)
    run(source, "INSERT INTO products VALUES ('SKU-1', 'one')")
    dynamodb = served_aws.client("dynamodb")
    runner = StandInRunner(stand_in(source, dynamodb), served_aws.port, poll_seconds=0.01)
    runner.start()
    try:
        # (the full load runs in the task's process too, before CDC; start() does not wait)
        runner.wait_loaded(timeout=30)
        assert runner.rows_loaded == 1 and not runner.loading
        # When rows change in the source
        run(
            source,
            "INSERT INTO products VALUES ('SKU-2', 'two'); UPDATE products SET title = 'uno' WHERE sku = 'SKU-1'",
        )
        # Then the process writes them and counts them, and reports no error
        _wait(lambda: runner.changes_applied == 2, "the task did not apply the two changes")
        assert items(dynamodb, "demo.legacy.public.products.v2") == [
            {"sku": "SKU-1", "title": "uno"},
            {"sku": "SKU-2", "title": "two"},
        ]
        assert runner.errors == []
    finally:
        runner.stop()


def test_a_task_that_fails_reports_why_and_stops(source: str, served_aws: LocalAws) -> None:
    # Given the task running
    runner = StandInRunner(
        stand_in(source, served_aws.client("dynamodb")), served_aws.port, poll_seconds=0.01
    )
    runner.start()
    try:
        # When its replication slot is dropped under it
        with psycopg.connect(source, autocommit=True) as connection:
            _wait(
                lambda: connection.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND NOT active",
                    (runner.dms.slot,),
                ).fetchall(),
                "the slot was never free to drop",
            )
        # Then the task stops and says the slot is gone
        _wait(lambda: runner.errors != [], "the task did not report its failure")
        assert "dmsbus_demo_legacy" in runner.errors[0] and "does not exist" in runner.errors[0]
    finally:
        runner.stop()


TYPED = """
CREATE TYPE audit.mood AS ENUM ('ok', 'meh');
CREATE DOMAIN audit.percent AS numeric(5,2);
CREATE TABLE audit.event_typed (
    id int PRIMARY KEY, flag boolean, amount numeric(12,2), ratio numeric, huge numeric(45,1),
    price money, score real, code char(6), label varchar(20), body text, doc jsonb, tags text[],
    blob bytea, at timestamptz, local_at timestamp, day date, clock time, zoned timetz,
    mood audit.mood, share audit.percent, span interval, uid uuid, ip inet, ref oid);
"""
TYPED_VALUES = (
    "true, 12.50, 0.611111104488373, 1234567890123456789012345678901234567890.5, 1234.5, 1.5,"
    " 'ab', 'x', 'long text', '{\"b\": 2, \"a\": [1, 2]}', ARRAY['p', 'q'], '\\x0001',"
    " '2026-11-01 12:00:00.5+02', '2026-11-01 12:00:00', '2026-11-01', '08:30:00', '08:30:00+05:30',"
    " 'meh', 12.5, '1 day 02:00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1', 16384"
)


def test_full_load_and_cdc_write_every_type_as_dms_does(source: str, dynamodb: Any) -> None:
    # Given a table of many types, one row loaded and the same values inserted during CDC
    run(source, TYPED + f"INSERT INTO audit.event_typed VALUES (1, {TYPED_VALUES});")
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    run(source, f"INSERT INTO audit.event_typed VALUES (2, {TYPED_VALUES});")
    dms.poll()
    # Then both rows hold the same values, as DMS maps them (docs/dms.md, "Data types")
    loaded, captured = dynamodb.scan(TableName="demo.legacy.audit.event_typed")["Items"][:2]
    assert {k: v for k, v in loaded.items() if k != "id"} == {k: v for k, v in captured.items() if k != "id"}
    assert {k: v for k, v in loaded.items() if k != "id"} == {
        "flag": {"S": "true"},
        "amount": {"N": "12.5"},
        "ratio": {"N": "0.611111"},
        "huge": {"S": "1234567890123456789012345678901234567890.5"},
        "price": {"N": "1234.5"},
        "score": {"N": "1.5"},
        "code": {"S": "ab"},
        "label": {"S": "x"},
        "body": {"S": "long text"},
        "doc": {"S": '{"a": [1, 2], "b": 2}'},
        "tags": {"S": "{p,q}"},
        "at": {"S": "2026-11-01 10:00:00.500000"},
        "local_at": {"S": "2026-11-01 12:00:00.000000"},
        "day": {"S": "2026-11-01"},
        "clock": {"S": "08:30:00.000000"},
        "zoned": {"S": "08:30:00.000000"},
        "mood": {"S": "meh"},
        "share": {"N": "12.5"},
        "span": {"S": "1 day 02:00:00"},
        "uid": {"S": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
        "ip": {"S": "10.0.0.1"},
    }  # blob (bytea) and ref (oid) are not migrated


def _exceptions(dynamodb: Any) -> list[dict[str, Any]]:
    found = dynamodb.scan(TableName="awsdms_apply_exceptions")["Items"]
    return sorted(({k: v["S"] for k, v in item.items()} for item in found), key=lambda e: e["ERROR_TIME"])


def test_a_row_over_dynamodb_item_size_is_logged_and_the_task_goes_on(source: str, dynamodb: Any) -> None:
    # Given rows whose text columns are each within LobMaxSize but together over 400 KB
    big = "x" * (250 * 1024)
    run(
        source,
        "CREATE TABLE audit.event_blob (id int PRIMARY KEY, a text, b text, n int);"
        f"INSERT INTO audit.event_blob VALUES (1, '{big}', '{big}', 0), (2, 'small', NULL, 0);",
    )
    dms = stand_in(source, dynamodb)
    dms.start()
    # When DMS loads them, and a later change makes another row too large
    dms.full_load()
    run(
        source,
        f"INSERT INTO audit.event_blob VALUES (3, '{big}', '{big}', 0); UPDATE audit.event_blob SET n = 9 WHERE id = 2;",
    )
    dms.poll()
    # Then each is an apply exception naming the table, with no values from the row, and
    # every other change is applied (DataErrorPolicy LOG_ERROR: the task goes on)
    errors = _exceptions(dynamodb)
    assert [(e["TASK_NAME"], e["TABLE_OWNER"], e["TABLE_NAME"], e["STATEMENT"]) for e in errors] == [
        ("demo-legacy", "audit", "event_blob", "full load into demo.legacy.audit.event_blob"),
        ("demo-legacy", "audit", "event_blob", "insert into demo.legacy.audit.event_blob"),
    ]
    assert all(
        "over DynamoDB's 409600-byte item limit" in e["ERROR"] and "xxx" not in e["ERROR"] for e in errors
    )
    assert items(dynamodb, "demo.legacy.audit.event_blob") == [{"id": 2, "a": "small", "n": 9}]
    assert dms.exceptions == 2


def test_a_value_dynamodb_cannot_hold_is_logged_not_written(source: str, dynamodb: Any) -> None:
    run(source, "CREATE TABLE audit.event_reading (id int PRIMARY KEY, value double precision);")
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    run(source, "INSERT INTO audit.event_reading VALUES (1, 'NaN'), (2, 1.5);")
    dms.poll()
    assert items(dynamodb, "demo.legacy.audit.event_reading") == [{"id": 2, "value": "1.5"}]
    (error,) = _exceptions(dynamodb)
    assert error["ERROR"] == "column value: 'NaN' has no DynamoDB number"


def test_a_lob_over_lob_max_size_stops_the_task(source: str, dynamodb: Any) -> None:
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    run(source, f"INSERT INTO orders (id, note) VALUES (1, '{'y' * (401 * 1024)}');")  # 802 KB as an NCLOB
    with pytest.raises(TaskError, match="over the task's LobMaxSize"):
        dms.poll()


def test_values_read_the_same_whatever_the_server_s_session_defaults(source: str, dynamodb: Any) -> None:
    # Given a database whose sessions default to another DateStyle and time zone
    with psycopg.connect(source, autocommit=True) as connection:
        name = connection.info.dbname
        connection.execute(f"ALTER DATABASE \"{name}\" SET DateStyle = 'German, DMY'")
        connection.execute(f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Kolkata'")
    run(source, "INSERT INTO customers (id, name, since) VALUES (1, 'a', '2020-02-29');")
    dms = stand_in(source, dynamodb)
    dms.start()
    # When DMS loads one row and captures another
    dms.full_load()
    run(source, "INSERT INTO customers (id, name, since) VALUES (2, 'b', '2020-02-29');")
    dms.poll()
    # Then both dates are DMS's, not the session's 29.02.2020
    assert [i.get("since") for i in items(dynamodb, "demo.legacy.public.customers")] == ["2020-02-29"] * 2


def test_full_load_and_cdc_agree_on_composites_of_nulls_and_generated_columns(
    source: str, dynamodb: Any
) -> None:
    run(
        source,
        "CREATE TYPE audit.pair AS (a int, b int);"
        "CREATE TABLE audit.event_shape (id int PRIMARY KEY, p audit.pair, n int,"
        " twice int GENERATED ALWAYS AS (n * 2) STORED);"
        "INSERT INTO audit.event_shape VALUES (1, ROW(NULL, NULL), 3);",
    )
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    run(source, "INSERT INTO audit.event_shape VALUES (2, ROW(NULL, NULL), 3);")
    dms.poll()
    loaded, captured = sorted(items(dynamodb, "demo.legacy.audit.event_shape"), key=lambda i: i["id"])
    assert {k: v for k, v in loaded.items() if k != "id"} == {k: v for k, v in captured.items() if k != "id"}
    assert loaded == {"id": 1, "p": "(,)", "n": 3}


def test_a_key_dynamodb_refuses_is_logged_not_a_stop(source: str, dynamodb: Any) -> None:
    # Given a CHAR key that trims to nothing, which DynamoDB refuses as a key
    run(source, "CREATE TABLE audit.event_code (code char(4) PRIMARY KEY, n int);")
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    run(source, "INSERT INTO audit.event_code VALUES ('', 1), ('ab', 2);")
    dms.poll()
    assert items(dynamodb, "demo.legacy.audit.event_code") == [{"code": "ab", "n": 2}]
    (error,) = _exceptions(dynamodb)
    assert error["ERROR"] == "key attribute code is empty, which DynamoDB refuses"


def test_a_table_keyed_by_a_type_dms_does_not_write_is_suspended(source: str, dynamodb: Any) -> None:
    run(
        source,
        "CREATE TABLE audit.event_raw (id bytea PRIMARY KEY, n int); INSERT INTO audit.event_raw VALUES ('\\x01', 1);",
    )
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    assert "is of a type DMS does not write to DynamoDB" in dms.suspended[("audit", "event_raw")]
    assert "demo.legacy.audit.event_raw" not in dynamodb.list_tables()["TableNames"]


def test_an_update_that_would_make_the_item_too_large_is_logged(source: str, dynamodb: Any) -> None:
    # Given a row whose large value is stored out of line (an update leaves it out)
    run(
        source,
        "CREATE TABLE audit.event_note (id int PRIMARY KEY, a text, b text);"
        "ALTER TABLE audit.event_note ALTER COLUMN a SET STORAGE EXTERNAL;"
        f"INSERT INTO audit.event_note VALUES (1, '{'a' * 300 * 1024}', 'x'), (2, 'small', 'x');",
    )
    dms = stand_in(source, dynamodb)
    dms.start()
    dms.full_load()
    # When an update adds enough to pass 400 KB without touching the large value
    run(
        source,
        f"UPDATE audit.event_note SET b = '{'b' * 150 * 1024}' WHERE id = 1; UPDATE audit.event_note SET b = 'y' WHERE id = 2;",
    )
    dms.poll()
    # Then DynamoDB's refusal is an exception row and the other change is applied
    assert [e["TABLE_NAME"] for e in _exceptions(dynamodb)] == ["event_note"]
    rows = {i["id"]: i for i in items(dynamodb, "demo.legacy.audit.event_note")}
    assert rows[2]["b"] == "y" and rows[1]["b"] == "x"


def test_during_a_concurrent_full_load_other_tables_stream_and_the_loading_one_waits(
    source: str, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a large table whose load is held until the test lets it go, and small ones
    run(
        source,
        "CREATE TABLE audit.event_big (id int PRIMARY KEY, v text);"
        "INSERT INTO audit.event_big SELECT n, 'v0' FROM generate_series(1, 3000) AS n;",
    )
    dms = stand_in(source, dynamodb)
    dms.start()
    load, gate = dms.full_load, threading.Event()

    def held(*, only: Any = None, progress: Any = None) -> int:
        if only == {("audit", "event_big")}:
            assert gate.wait(30)
        return load(only=only, progress=progress)

    monkeypatch.setattr(dms, "full_load", held)
    loader = threading.Thread(target=dms.load_concurrently)
    loader.start()
    try:
        # (the small tables load first: by size on disk)
        _wait(
            lambda: "demo.legacy.public.orders" in dynamodb.list_tables()["TableNames"],
            "no small table loaded",
        )
        # When both change while the large one loads
        run(
            source, "INSERT INTO orders (id) VALUES (7); UPDATE audit.event_big SET v = 'v1' WHERE id = 3000;"
        )
        dms.poll()
        # Then the small table's change is applied at once, the large one's is held
        assert [i["id"] for i in items(dynamodb, "demo.legacy.public.orders")] == [7]
        assert "demo.legacy.audit.event_big" not in dynamodb.list_tables()["TableNames"]
    finally:
        gate.set()
        loader.join(60)
    # And once its load is done, its held change applies after the loaded rows
    dms.poll()
    big = {i["id"]: i["v"] for i in items(dynamodb, "demo.legacy.audit.event_big")}
    assert len(big) == 3000 and big[3000] == "v1"


def test_a_task_stopped_during_its_full_load_loads_again_at_its_next_start(
    source: str, served_aws: LocalAws
) -> None:
    # Given a table large enough that the load is still running when the task is stopped
    run(
        source,
        "CREATE TABLE audit.event_many (id int PRIMARY KEY, v text);"
        "INSERT INTO audit.event_many SELECT n, 'v' FROM generate_series(1, 20000) AS n;",
    )
    runner = StandInRunner(
        stand_in(source, served_aws.client("dynamodb")), served_aws.port, poll_seconds=0.01
    )
    runner.start()
    _wait(lambda: runner.rows_loaded > 0, "the load did not begin")
    assert runner.loading
    # When it is stopped mid-load
    runner.stop()
    # Then its slot is gone (the changes the load held in memory went with the process), so
    # the next start is a first start again: a whole new full load
    assert not runner.dms.has_slot()
    assert runner.dms.start() is True


def test_the_task_settings_let_dms_create_its_tables() -> None:
    # Given the task settings every source deploys (config/dms-task-settings.json)
    from config.mappings import task_settings

    # Then the prep mode is one under which DMS creates missing target tables: DO_NOTHING
    # "assumes that the target tables are precreated" (docs/dms.md, "Target table preparation")
    assert task_settings()["FullLoadSettings"]["TargetTablePrepMode"] == "DROP_AND_CREATE"


def test_under_do_nothing_dms_creates_no_table_and_suspends_the_tables_it_cannot_write(
    source: str, dynamodb: Any
) -> None:
    # Given rows in the source and a task whose prep mode is DO_NOTHING
    run(source, "INSERT INTO orders (id, customer_id) VALUES (1, 1); INSERT INTO products VALUES ('A', 'a');")
    dms = DmsStandIn(url=source, bus="demo", source=SOURCE, dynamodb=dynamodb, prep_mode="DO_NOTHING")
    # And one target table made beforehand, as that mode assumes
    dynamodb.create_table(
        TableName="demo.legacy.public.orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # When it loads and then applies a change to a table without a target
    assert dms.start() is True
    assert dms.full_load() == 1
    run(source, "INSERT INTO products VALUES ('B', 'b');")
    dms.poll()
    # Then it created no table: only the precreated one exists, loaded
    assert dynamodb.list_tables()["TableNames"] == ["demo.legacy.public.orders"]
    assert [item["id"] for item in items(dynamodb, "demo.legacy.public.orders")] == [1]
    # And every other selected table is suspended, saying why
    assert "demo.legacy.public.products.v2 does not exist" in dms.suspended[("public", "products")]
    assert "TargetTablePrepMode DO_NOTHING" in dms.suspended[("public", "products")]


def test_drop_and_create_loads_an_existing_table_into_a_new_one(source: str, dynamodb: Any) -> None:
    # Given a target table left with an item the source no longer has, and streamed
    run(source, "INSERT INTO products VALUES ('A', 'a');")
    dynamodb.create_table(
        TableName="demo.legacy.public.products.v2",
        KeySchema=[{"AttributeName": "sku", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "sku", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    dynamodb.put_item(TableName="demo.legacy.public.products.v2", Item={"sku": {"S": "gone"}})
    dms = DmsStandIn(url=source, bus="demo", source=SOURCE, dynamodb=dynamodb, prep_mode="DROP_AND_CREATE")
    # When the table is loaded (a reload, or a restarted full load)
    dms.start()
    dms.full_load(only={("public", "products")})
    # Then the table was dropped and created anew, as DMS creates it: no stream, 200/200
    table = dynamodb.describe_table(TableName="demo.legacy.public.products.v2")["Table"]
    assert "StreamSpecification" not in table
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 200
    assert items(dynamodb, "demo.legacy.public.products.v2") == [{"sku": "A", "title": "a"}]


def test_truncate_before_load_deletes_every_item_of_an_existing_table(source: str, dynamodb: Any) -> None:
    # Given a target table holding an item the source no longer has
    run(source, "INSERT INTO products VALUES ('A', 'a');")
    dynamodb.create_table(
        TableName="demo.legacy.public.products.v2",
        KeySchema=[{"AttributeName": "sku", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "sku", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="demo.legacy.public.products.v2", Item={"sku": {"S": "gone"}})
    dms = DmsStandIn(
        url=source, bus="demo", source=SOURCE, dynamodb=dynamodb, prep_mode="TRUNCATE_BEFORE_LOAD"
    )
    # When the table is loaded
    dms.start()
    dms.full_load(only={("public", "products")})
    # Then the same table keeps its settings and holds the source's rows only
    table = dynamodb.describe_table(TableName="demo.legacy.public.products.v2")["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert items(dynamodb, "demo.legacy.public.products.v2") == [{"sku": "A", "title": "a"}]


def test_an_unknown_prep_mode_is_refused(source: str, dynamodb: Any) -> None:
    # Given a prep mode DMS does not have, Then the stand-in refuses to start, naming it
    with pytest.raises(
        Exception, match=r"TargetTablePrepMode .TRUNCATE. \(config/dms-task-settings.json\) is not one of"
    ):
        DmsStandIn(url=source, bus="demo", source=SOURCE, dynamodb=dynamodb, prep_mode="TRUNCATE")


def test_an_object_mapping_keys_items_by_the_attribute_sub_types_config_declares(
    source: str, dynamodb: Any
) -> None:
    # Given an int key declared a string, and a text key holding digits declared a number
    run(
        source,
        "CREATE TABLE audit.pairs (a int, b text, v text, PRIMARY KEY (a, b));"
        "INSERT INTO audit.pairs VALUES (7, '0042', 'x');",
    )
    declared = SOURCE.model_copy(
        update={
            "tables": [
                *SOURCE.tables,
                SOURCE.tables[0].model_validate(
                    {
                        "schema": "audit",
                        "table": "pairs",
                        "key": ["a", "b"],
                        "key_types": ["string", "number"],
                    }
                ),
            ],
            "selections": [],
        }
    )
    dms = DmsStandIn(url=source, bus="demo", source=declared, dynamodb=dynamodb)
    # When DMS loads it, and a change follows
    dms.start()
    dms.full_load(only={("audit", "pairs")})
    run(source, "INSERT INTO audit.pairs VALUES (8, '7', 'y'); INSERT INTO audit.pairs VALUES (9, 'x', 'z');")
    dms.poll()
    # Then the table is keyed S and N, and every item carries its key as declared
    table = dynamodb.describe_table(TableName="demo.legacy.audit.pairs")["Table"]
    assert {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]} == {
        "a": "S",
        "b": "N",
    }
    found = dynamodb.scan(TableName="demo.legacy.audit.pairs", ConsistentRead=True)["Items"]
    assert sorted((i["a"]["S"], i["b"]["N"]) for i in found) == [("7", "42"), ("8", "7")]
    # And a row whose key is not a number is DMS's data error, logged, not written
    assert dms.exceptions == 1
