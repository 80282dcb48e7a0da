"""Typed events end to end in local mode: the schema function reads the local source's
catalog into the schema table, and the glue gives consumers the source's types."""

from __future__ import annotations

import threading
import time
from datetime import UTC
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from config.functions import schema_function_name, schema_table_name, stream_name
from dmsbus.consumer import ChangeEvent
from local.demo import Workload
from tests.e2e.conftest import BUS, SOURCE, Pipeline
from tests.plans import typed_bus
from tests.streams import events_in, read_shards

TYPED = typed_bus(BUS)
#: The customers columns DMS replicates (config excludes email and phone).
CUSTOMER_COLUMNS = ["id", "name", "city", "vip", "since", "country", "score", "prefs", "changed_at"]


def typed_events_of(pipeline: Pipeline, customer: int, timeout: float = 60.0) -> list[ChangeEvent]:
    """The customer's events, once one of them is typed: the glue types a table's events
    once the schema function has stored its schema and the glue's cache has read it. Until
    then the row is touched again every two seconds (untyped events go out meanwhile)."""
    seen: list[ChangeEvent] = []
    pipeline.faults.append(lambda event: seen.append(event) if event.key.get("id") == customer else None)
    deadline = time.monotonic() + timeout
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        db.execute(
            "INSERT INTO customers (id, name, vip, city, since, country) "
            "VALUES (%s, 'Typed', true, NULL, '2026-11-01', 'DE')",
            (customer,),
        )
        while not any(event.source.table == "customers" and event.source.typed for event in seen):
            assert time.monotonic() < deadline, f"no typed event in {timeout} s: {[e.source for e in seen]}"
            time.sleep(2)
            db.execute("UPDATE customers SET score = coalesce(score, 0) + 1 WHERE id = %s", (customer,))
    return seen


@pytest.mark.parametrize("pipeline", [TYPED], indirect=True)
def test_a_typed_bus_gives_consumers_the_sources_types_and_nulls(pipeline: Pipeline) -> None:
    # Given a bus that types its events, with its source's schema function on a schedule
    assert schema_function_name(TYPED, SOURCE) in pipeline.runtime.local_bus.functions  # type: ignore[union-attr]
    # When a customer is written with a NULL city, then the city set and cleared again
    seen = typed_events_of(pipeline, 9001)
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        db.execute("UPDATE customers SET city = 'Łódź' WHERE id = 9001")
        db.execute("UPDATE customers SET city = NULL, vip = false WHERE id = 9001")
        source = db.cursor(row_factory=dict_row).execute("SELECT * FROM customers WHERE id = 9001").fetchone()
    assert source is not None
    deadline = time.monotonic() + 30
    while not (seen and seen[-1].source.typed and seen[-1].after and seen[-1].after["vip"] is False):
        assert time.monotonic() < deadline, [event.after for event in seen[-3:]]
        time.sleep(0.2)
    # Then the last event is typed with the table's first schema version
    last = seen[-1]
    assert (last.source.typed, last.source.schema_version) == (True, 1)
    after: dict[str, Any] = last.after  # type: ignore[assignment]
    # And every replicated column is there, the excluded ones not, NULL as null
    assert sorted(after) == sorted(CUSTOMER_COLUMNS)
    assert (after["city"], after["vip"], after["prefs"]) == (None, False, None)
    # And the values are the source row's, in their types
    assert (after["id"], after["name"], after["since"], after["country"]) == (
        9001,
        "Typed",
        "2026-11-01",
        "DE",
    )
    assert (
        after["changed_at"]
        == source["changed_at"].astimezone(UTC).replace(tzinfo=None).isoformat("T", "microseconds") + "Z"
    )
    # And the city's NULL and value came through in order: set, then cleared
    cities = [event.after["city"] for event in seen if event.source.typed and event.after]
    assert cities[-2:] == ["Łódź", None]
    # And the schema table holds what the schema function read from the local source
    stored = pipeline.runtime.aws.client("dynamodb").scan(TableName=schema_table_name(TYPED))["Items"]
    assert "legacy.public.customers" in {item["table"]["S"] for item in stored}


def typed_version_of(pipeline: Pipeline, customer: int, version: int, timeout: float = 90.0) -> ChangeEvent:
    """The customer's first event typed with ``version``: the row is touched every two
    seconds until the schema function (every sweep) and the glue's cache have it."""
    seen: list[ChangeEvent] = []
    pipeline.faults.append(lambda event: seen.append(event) if event.key.get("id") == customer else None)
    deadline = time.monotonic() + timeout
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        while True:
            found = [event for event in seen if event.source.typed and event.source.schema_version == version]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no event of schema v{version} in {timeout} s"
            db.execute("UPDATE customers SET score = coalesce(score, 0) + 1 WHERE id = %s", (customer,))
            time.sleep(2)


@pytest.mark.parametrize("pipeline", [TYPED], indirect=True)
def test_columns_added_and_dropped_mid_run_reach_consumers_with_the_next_schema_versions(
    pipeline: Pipeline,
) -> None:
    # Given a customer whose events are typed with the table's first schema
    typed_events_of(pipeline, 9002)
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        # When a column with a default and one without are added
        db.execute("ALTER TABLE customers ADD COLUMN tier text DEFAULT 'basic', ADD COLUMN referrer int")
    # Then the row's events come typed with version 2: the default, and NULL for the other
    grown = typed_version_of(pipeline, 9002, 2)
    assert grown.after is not None and (grown.after["tier"], grown.after["referrer"]) == ("basic", None)
    # And the consumer has the version's schema (event.schema, read from the schema table)
    assert grown.schema is not None and grown.schema.version == 2
    tier = grown.schema.column("tier")
    assert tier is not None and (tier.type, tier.nullable) == ("text", True)
    # When a column is dropped
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        db.execute("ALTER TABLE customers DROP COLUMN city")
    # Then the row's events come typed with version 3, without it
    shrunk = typed_version_of(pipeline, 9002, 3)
    assert shrunk.after is not None and "city" not in shrunk.after and shrunk.after["tier"] == "basic"
    assert shrunk.schema is not None and shrunk.schema.column("city") is None
    # And the schema table holds the three versions
    stored = pipeline.runtime.aws.client("dynamodb").query(
        TableName=schema_table_name(TYPED),
        KeyConditionExpression="#t = :t",
        ExpressionAttributeNames={"#t": "table"},
        ExpressionAttributeValues={":t": {"S": "legacy.public.customers"}},
    )["Items"]
    assert sorted(int(item["version"]["N"]) for item in stored) == [1, 2, 3]
    # And on every shard of the bus stream, each version's schema-change event (op s, which
    # consumers ask for) comes before any row typed with it
    on_shards = {
        shard: events_in(records)
        for shard, records in read_shards(pipeline.runtime.aws.client("kinesis"), stream_name(TYPED)).items()
    }
    for shard, events in on_shards.items():
        for version in (1, 2, 3):
            announced = [
                i
                for i, e in enumerate(events)
                if e.op == "s" and e.source.schema_version == version and e.source.table == "customers"
            ]
            rows = [
                i
                for i, e in enumerate(events)
                if e.op != "s" and e.source.schema_version == version and e.source.table == "customers"
            ]
            assert announced, (shard, version)
            assert not rows or announced[0] < rows[0], (shard, version)
    (dropped,) = {
        e.id: e
        for events in on_shards.values()
        for e in events
        if e.op == "s" and e.source.schema_version == 3 and e.source.table == "customers"
    }.values()
    assert dropped.schema_change is not None and dropped.schema_change["dropped"] == ["city"]


@pytest.mark.parametrize("pipeline", [TYPED], indirect=True)
def test_a_typed_bus_mirrors_the_sources_types_and_both_checks_find_nothing_lost(pipeline: Pipeline) -> None:
    # Given a typed bus whose glue types the customers' events (rows loaded before the
    # schema was read went out untyped, and the mirror inferred their columns)
    typed_events_of(pipeline, 9003)
    # When a workload runs on every table
    Workload(pipeline.url, rate=400).run(changes=200, stop=threading.Event())
    # Then the rebuilt state (typed events) and the mirror both equal the source, as the
    # demo checks them and as `dmsbus verify` does
    assert list(pipeline.converge(timeout=90).describe()) == []
    verified = pipeline.verify(sample=None)
    assert verified and all(lost == stale == 0 for _, lost, stale in verified.values()), verified
    # And the mirror's customers have the source's column types
    with psycopg.connect(pipeline.runtime.mirror_url) as mirror:
        types = dict(
            mirror.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'public.customers'::regclass AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
        )
    with psycopg.connect(pipeline.url) as source:
        declared = dict(
            source.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'public.customers'::regclass AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
        )
    assert types == {name: declared[name] for name in CUSTOMER_COLUMNS}


@pytest.mark.parametrize("pipeline", [(TYPED, 900)], indirect=True)
def test_the_glue_meeting_a_new_column_asks_for_the_schema_long_before_the_next_sweep(
    pipeline: Pipeline,
) -> None:
    # Given a typed bus whose schema function is scheduled every 15 minutes only (it ran at
    # the start), and a customer whose events are typed with the first schema
    typed_events_of(pipeline, 9004)
    # When a column is added and the row's next changes carry it (DMS leaves NULLs out: a
    # column only ever NULL gives the glue no sign, and waits for the sweep)
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        db.execute("ALTER TABLE customers ADD COLUMN tier text DEFAULT 'basic'")
    # Then the glue's first event with it goes out untyped and asks the schema function
    # (Lambda's asynchronous Invoke, run by the local Lambda service), so the row's events
    # come typed with version 2 within the cache's retry, not the next sweep
    grown = typed_version_of(pipeline, 9004, 2, timeout=60)
    assert grown.after is not None and grown.after["tier"] == "basic"
    assert pipeline.runtime.service is not None and pipeline.runtime.service.scheduled_errors == []


@pytest.mark.parametrize("pipeline", [(TYPED, 900)], indirect=True)
def test_a_table_created_mid_run_is_typed_without_waiting_for_the_sweep(pipeline: Pipeline) -> None:
    # Given a typed bus whose schema function is scheduled every 15 minutes only
    pipeline.wait_attached()
    seen: list[ChangeEvent] = []
    pipeline.faults.append(lambda event: seen.append(event) if event.source.table == "event_refund" else None)
    # When a table the source's pattern selects (audit.event_%) is created and written
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        db.execute("CREATE TABLE audit.event_refund (id int PRIMARY KEY, amount numeric(10,2), ok boolean)")
        deadline = time.monotonic() + 60
        row = 0
        while not any(event.source.typed for event in seen):
            assert time.monotonic() < deadline, [event.source for event in seen]
            row += 1
            db.execute("INSERT INTO audit.event_refund VALUES (%s, 12.50, true)", (row,))
            time.sleep(2)
    # Then discovery, attaching its DynamoDB table, asked the schema function for it, and
    # its events come typed
    typed = next(event for event in seen if event.source.typed)
    assert typed.after is not None and (typed.after["ok"], typed.source.schema_version) == (True, 1)
