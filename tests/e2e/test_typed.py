"""Typed events end to end in local mode: the schema function reads the local source's
catalog into the schema table, and the glue gives consumers the source's types."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.rows import dict_row

from config.functions import glue_name, schema_function_name, schema_table_name, stream_name
from dmsbus.consumer import ChangeEvent
from local.demo import Workload
from local.runtime import store_secret
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


@pytest.mark.parametrize("pipeline", [TYPED], indirect=True)
def test_a_typed_bus_mirrors_the_sources_types_and_both_checks_find_nothing_lost(pipeline: Pipeline) -> None:
    # Given a typed bus whose glue types the customers' events
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


#: A table of hard types the source's ``audit.event_%`` selection picks up when created.
HARD = "event_hard"


class Watched:
    """The events of one table as the rebuilding consumer gets them."""

    def __init__(self, pipeline: Pipeline, table: str) -> None:
        self.events: list[ChangeEvent] = []
        pipeline.faults.append(
            lambda event: self.events.append(event) if event.source.table == table else None
        )

    def of(
        self, keys: list[int], since: int, timeout: float = 30.0, ops: tuple[str, ...] = ("c", "u", "d")
    ) -> list[ChangeEvent]:
        """The first event of each key after the first ``since`` events, in ``keys``' order
        (rows on other shards arrive in any order). A table created mid-run may have its
        first rows read by discovery's backfill (op ``r``) beside or instead of their
        changes: only a test's first step takes them."""
        deadline = time.monotonic() + timeout
        while True:
            found = {event.key["id"]: event for event in reversed(self.events[since:]) if event.op in ops}
            if all(key in found for key in keys):
                return [found[key] for key in keys]
            seen = [(e.op, e.key) for e in self.events]
            assert time.monotonic() < deadline, f"events of {keys} in {timeout} s: {seen}"
            time.sleep(0.05)


def ddl_step(
    db: psycopg.Connection[Any], watched: Watched, ddl: str, *changes: tuple[int, str], first: bool = False
) -> list[ChangeEvent]:
    """One DDL, then the row changes right after it (each of another row, ``(id, SQL)``);
    their events, once delivered, in that order (``first``: the table's creation)."""
    since = len(watched.events)
    db.execute(ddl)
    for _, change in changes:
        db.execute(change)
    return watched.of(
        [key for key, _ in changes], since, ops=("c", "u", "d", "r") if first else ("c", "u", "d")
    )


def source_columns(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as db:
        return dict(
            db.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
        )


@pytest.mark.parametrize("pipeline", [(TYPED, 10)], indirect=True)
def test_every_row_after_a_ddl_is_typed_with_the_new_version_announced_before_it(pipeline: Pipeline) -> None:
    # Given a typed bus, its sweep (schema function and discovery) every 10 s
    pipeline.wait_attached()
    watched = Watched(pipeline, HARD)
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        # When a table of hard types is created and a row written, before any sweep read it
        created = ddl_step(
            db,
            watched,
            f"CREATE TABLE audit.{HARD} (id int PRIMARY KEY, flag boolean NOT NULL, ts timestamptz NOT NULL, "
            "price numeric(10,3), doc jsonb, note text)",
            (
                1,
                f"INSERT INTO audit.{HARD} VALUES (1, false, '2026-12-01 00:00:00+00', 1.5, '{{\"a\": 1}}', NULL)",
            ),
            first=True,
        )
        # Then its first row is typed with v1: JSON boolean, UTC timestamp, NULL as null
        assert [(e.source.typed, e.source.schema_version) for e in created] == [(True, 1)]
        assert created[0].after == {
            "id": 1,
            "flag": False,
            "ts": "2026-12-01T00:00:00.000000Z",
            "price": "1.5",
            "doc": '{"a": 1}',
            "note": None,
        }
        # When a column with a default is added, and two rows change
        grown = ddl_step(
            db,
            watched,
            f"ALTER TABLE audit.{HARD} ADD COLUMN qty int NOT NULL DEFAULT 5",
            (1, f"UPDATE audit.{HARD} SET note = 'a' WHERE id = 1"),
            (2, f"INSERT INTO audit.{HARD} (id, flag, ts) VALUES (2, true, '2026-12-02 10:00:00+02')"),
        )
        # Then both are typed with v2, the default in both
        assert [(e.source.typed, e.source.schema_version, e.after["qty"]) for e in grown] == [  # type: ignore[index]
            (True, 2, 5),
            (True, 2, 5),
        ]
        assert grown[1].after["ts"] == "2026-12-02T08:00:00.000000Z"  # type: ignore[index]
        # When a column without a default is added and the next change sets it
        labelled = ddl_step(
            db,
            watched,
            f"ALTER TABLE audit.{HARD} ADD COLUMN label text",
            (2, f"UPDATE audit.{HARD} SET label = 'x' WHERE id = 2"),
        )
        assert [(e.source.typed, e.source.schema_version, e.after["label"]) for e in labelled] == [  # type: ignore[index]
            (True, 3, "x")
        ]
        # When a column is retyped, and the next change needs the new type
        retyped = ddl_step(
            db,
            watched,
            f"ALTER TABLE audit.{HARD} ALTER COLUMN qty TYPE numeric(10,3)",
            (1, f"UPDATE audit.{HARD} SET qty = 2.5 WHERE id = 1"),
        )
        assert [(e.source.typed, e.source.schema_version, e.after["qty"]) for e in retyped] == [  # type: ignore[index]
            (True, 4, "2.5")
        ]
        assert retyped[0].schema is not None and retyped[0].schema.column("qty").type == "numeric(10,3)"  # type: ignore[union-attr]
        # When a NOT NULL column is dropped (its absence from an image cannot be a NULL)
        dropped = ddl_step(
            db,
            watched,
            f"ALTER TABLE audit.{HARD} DROP COLUMN flag",
            (1, f"UPDATE audit.{HARD} SET price = 2 WHERE id = 1"),
        )
        assert [(e.source.typed, e.source.schema_version) for e in dropped] == [(True, 5)]
        assert "flag" not in dropped[0].after  # type: ignore[operator]
        # When a nullable column is dropped, and no row changes after it
        db.execute(f"ALTER TABLE audit.{HARD} DROP COLUMN note")
    # Then its version is announced on every shard within one sweep (the sweep stores it,
    # discovery's next sweep puts its change on the stream)
    kinesis = pipeline.runtime.aws.client("kinesis")
    deadline = time.monotonic() + 30
    while True:
        on_shards = {
            shard: events_in(records) for shard, records in read_shards(kinesis, stream_name(TYPED)).items()
        }
        announced = [
            any(e.op == "s" and e.source.table == HARD and e.source.schema_version == 6 for e in events)
            for events in on_shards.values()
        ]
        if all(announced):
            break
        assert time.monotonic() < deadline, f"v6 (note dropped) not announced on every shard: {announced}"
        time.sleep(1)
    # And on every shard, each version's change comes before the rows typed with it, and
    # every row event of the table is typed
    for shard, events in on_shards.items():
        ours = [e for e in events if e.source.table == HARD]
        assert all(e.source.typed for e in ours if e.op != "s"), shard
        for version in range(1, 7):
            changes = [i for i, e in enumerate(ours) if e.op == "s" and e.source.schema_version == version]
            rows = [i for i, e in enumerate(ours) if e.op != "s" and e.source.schema_version == version]
            assert changes, (shard, version)
            assert not rows or changes[0] < rows[0], (shard, version)
    (note,) = {
        e.id: e
        for events in on_shards.values()
        for e in events
        if e.op == "s" and e.source.table == HARD and e.source.schema_version == 6
    }.values()
    assert note.schema_change is not None and note.schema_change["dropped"] == ["note"]
    # And the mirror's columns have the source's types (it keeps the dropped ones)
    mirrored: dict[str, str] = {}
    deadline = time.monotonic() + 30
    declared = source_columns(pipeline.url, f"audit.{HARD}")
    while {name: mirrored.get(name) for name in declared} != declared:
        assert time.monotonic() < deadline, (mirrored, declared)
        time.sleep(0.5)
        try:
            mirrored = source_columns(pipeline.runtime.mirror_url, f"audit.{HARD}")
        except psycopg.errors.UndefinedTable:
            continue
    assert declared == {
        "id": "integer",
        "ts": "timestamp with time zone",
        "price": "numeric(10,3)",
        "doc": "jsonb",
        "qty": "numeric(10,3)",
        "label": "text",
    }


@pytest.mark.parametrize("pipeline", [(typed_bus(BUS, wait=3), 900)], indirect=True)
def test_when_the_schema_function_fails_a_row_after_a_ddl_waits_at_most_the_wait_then_goes_untyped_counted(
    pipeline: Pipeline,
) -> None:
    # Given a typed bus waiting 3 s at most, and a table whose rows are typed
    pipeline.wait_attached()
    watched = Watched(pipeline, HARD)
    bus = typed_bus(BUS, wait=3)
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        (first,) = ddl_step(
            db,
            watched,
            f"CREATE TABLE audit.{HARD} (id int PRIMARY KEY, flag boolean NOT NULL)",
            (1, f"INSERT INTO audit.{HARD} VALUES (1, true)"),
            first=True,
        )
        assert (first.source.typed, first.source.schema_version) == (True, 1)
        # When the schema function cannot reach the source (its secret names a closed port)
        store_secret(
            pipeline.runtime.aws.client("secretsmanager"),
            SOURCE.credentials.secret,
            closed_port(pipeline.url),
        )
        # And a column is added, and a row change uses it
        since = len(watched.events)
        db.execute(f"ALTER TABLE audit.{HARD} ADD COLUMN qty int")
        committed = time.time()
        db.execute(f"UPDATE audit.{HARD} SET qty = 7, flag = false WHERE id = 1")
        (late,) = watched.of([1], since)
        delivered = time.time()
    # Then the row went out untyped, as DMS wrote it, after trying within the wait (3 s)
    assert (late.source.typed, late.after) == (False, {"id": 1, "flag": "false", "qty": 7})
    assert 1 <= delivered - committed < 3 + 15, delivered - committed
    # And it is counted, per table, on CloudWatch (the glue's EMF, as in AWS)
    cloudwatch = pipeline.runtime.aws.client("cloudwatch")
    deadline = time.monotonic() + 10
    while True:
        points = cloudwatch.get_metric_statistics(
            Namespace="dmsbus",
            MetricName="UntypedEvents",
            Dimensions=[
                {"Name": "table", "Value": late.source.dynamodb_table},
                {"Name": "service", "Value": glue_name(bus)},
            ],
            StartTime=datetime.now(UTC) - timedelta(minutes=10),
            EndTime=datetime.now(UTC) + timedelta(minutes=1),
            Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
        if points:
            break
        assert time.monotonic() < deadline, "no UntypedEvents on CloudWatch"
        time.sleep(0.5)
    assert sum(point["Sum"] for point in points) == 1


def closed_port(url: str) -> str:
    """``url`` with a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{port}"))
