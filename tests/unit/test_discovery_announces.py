"""Discovery's sweep announces schema versions the schema function stored and no row
announced (a ``DROP COLUMN`` with no row change after it): moto's DynamoDB (the bus tables
as DMS creates them, the schema table), Lambda and a two-shard Kinesis stream, read back
shard by shard."""

from __future__ import annotations

from collections import Counter
from typing import Any

import boto3
import pytest

from config.model import DiscoveryConfig, GlueConfig
from discovery.core import Discovery, RunReport
from discovery.settings import DiscoverySettings
from dmsbus.envelope import ChangeEvent
from dmsbus.publisher import KinesisPublisher
from dmsbus.schema_events import SchemaAnnouncer
from dmsbus.schemas import TABLE_KEY, Column, SchemaStore, TableSchema
from tests.streams import BUS, events_in, read_shards
from tests.unit.conftest import deploy_function
from tests.unit.test_discovery import (
    GLUE,
    GLUE_DEFAULTS,
    LINES,
    ORDERS,
    SWEEP,
    Clock,
    create_dms_table,
    create_table_event,
)

REGION = "us-east-1"
STREAM = "demo-bus-two-shards"
SCHEMAS = "demo-schemas"
ORDERS_KEY = "legacy.public.orders"
LINES_KEY = "legacy.public.order_lines"

ID = Column(name="id", type="integer", base="int4", nullable=False, key=1)
PAID = Column(name="paid", type="boolean", base="bool", nullable=False)
COUPON = Column(name="coupon", type="varchar(12)", base="varchar", nullable=True, length=12)


def orders(*columns: Column) -> TableSchema:
    return TableSchema(source="legacy", schema="public", table="orders", columns=(ID, *columns))


def order_lines(*columns: Column) -> TableSchema:
    return TableSchema(source="legacy", schema="public", table="order_lines", columns=(ID, *columns))


class Counting:
    """Wraps a boto3 client and counts the calls made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith(("get_paginator", "meta", "exceptions")):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return call


class ThrottlesKey:
    """A Kinesis client whose stream refuses every record of one partition key, as a
    throttled stream refuses entries (ProvisionedThroughputExceededException)."""

    def __init__(self, client: Any, partition_key: str) -> None:
        self._client = client
        self.partition_key = partition_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        kept = [record for record in Records if record["PartitionKey"] != self.partition_key]
        response = self._client.put_records(StreamName=StreamName, Records=kept) if kept else {"Records": []}
        landed = iter(response["Records"])
        refused = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
        outcomes = [refused if r["PartitionKey"] == self.partition_key else next(landed) for r in Records]
        return {"FailedRecordCount": sum("ErrorCode" in o for o in outcomes), "Records": outcomes}


# ---- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def kinesis(aws: None) -> Any:
    client = boto3.client("kinesis", region_name=REGION)
    client.create_stream(StreamName=STREAM, ShardCount=2)
    return client


@pytest.fixture
def dynamodb(aws: None) -> Any:
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(TableName=SCHEMAS, BillingMode="PAY_PER_REQUEST", **TABLE_KEY)
    return client


@pytest.fixture
def store(dynamodb: Any) -> SchemaStore:
    return SchemaStore(dynamodb, SCHEMAS)


@pytest.fixture
def lambda_client(aws: None) -> Any:
    client = boto3.client("lambda", region_name=REGION)
    deploy_function(client, GLUE, "glue.handler.handler")
    return client


@pytest.fixture
def clock() -> Clock:
    return Clock()


def typed_discovery(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> Discovery:
    """Discovery of a typed bus, as its handler builds it: one publisher, and an announcer
    over the bus's schema table (a new one: no version known announced beforehand)."""
    settings = DiscoverySettings(
        bus=BUS,
        stream_name=STREAM,
        glue_function_name=GLUE,
        mapping=GLUE_DEFAULTS,
        aggregate=GlueConfig().aggregate,
        typed=True,
        numbers=GlueConfig().numbers,
        keep_provisioned=DiscoveryConfig().keep_provisioned,
        backfill=DiscoveryConfig().backfill,
    )
    publisher = KinesisPublisher(kinesis, STREAM, sleep=clock.sleep, clock=clock)
    return Discovery(
        settings=settings,
        dynamodb=dynamodb,
        lambda_client=lambda_client,
        publisher=publisher,
        announcer=SchemaAnnouncer(store, publisher, BUS),
        clock=clock,
        sleep=clock.sleep,
    )


def shards(kinesis: Any) -> dict[str, list[ChangeEvent]]:
    """Each shard's events, deaggregated and parsed, in shard order."""
    return {shard: events_in(records) for shard, records in read_shards(kinesis, STREAM).items()}


def report_of(run: RunReport, table: str) -> Any:
    return next(report for report in run.tables if report.table == table)


# ---- the store's latest version ---------------------------------------------------------------


def test_the_latest_version_and_whether_it_is_announced_take_one_query(store: SchemaStore) -> None:
    # Given orders stored twice (v2: coupon dropped), v1 announced
    store.save(orders(PAID, COUPON))
    store.save(orders(PAID))
    store.mark_announced(ORDERS_KEY, 1)
    counting = Counting(store.client)
    reader = SchemaStore(counting, SCHEMAS)  # type: ignore[arg-type]
    # When its latest version is asked for, and a table's with none stored
    latest = reader.latest_announced(ORDERS_KEY)
    nothing = reader.latest_announced(LINES_KEY)
    # Then v2, not announced, from one Query each; None for the table without schema
    assert (latest, nothing) == ((2, False), None)
    assert counting.calls == Counter({"query": 2})
    # And once announced, it says so
    store.mark_announced(ORDERS_KEY, 2)
    assert store.latest_announced(ORDERS_KEY) == (2, True)


# ---- the sweep --------------------------------------------------------------------------------


def test_a_sweep_announces_a_stored_version_no_row_followed_on_every_shard(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> None:
    # Given orders on the bus with v1 announced, then a DROP COLUMN the schema function
    # stored as v2, and no row change after it
    create_dms_table(dynamodb, ORDERS)
    store.save(orders(PAID, COUPON))
    store.mark_announced(ORDERS_KEY, 1)
    store.save(orders(PAID))
    # When discovery sweeps
    run = typed_discovery(dynamodb, lambda_client, kinesis, clock, store).run(SWEEP, deadline=clock.later())
    # Then each of the two shards has v2's schema change, once, saying what was dropped
    on_stream = shards(kinesis)
    assert len(on_stream) == 2
    for shard, events in on_stream.items():
        assert [(event.op, event.id) for event in events] == [("s", f"{BUS}.{ORDERS_KEY}/schema/2")], shard
        (event,) = events
        assert event.schema_change == {
            "version": 2,
            "previous_version": 1,
            "added": [],
            "dropped": ["coupon"],
            "retyped": [],
            "renamed": [],
        }
        assert (event.source.dynamodb_table, event.source.schema_version) == (ORDERS, 2)
    # And the schema table notes v2 announced; the run counts and reports it
    assert store.latest_announced(ORDERS_KEY) == (2, True)
    assert (run.schema_changes_announced, run.errors) == (1, [])
    assert report_of(run, ORDERS).actions[-1] == "schema change v2 announced on every shard"


def test_a_sweep_announces_earlier_unannounced_versions_first(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> None:
    # Given two DDLs the schema function stored (v1 and v2), neither announced
    create_dms_table(dynamodb, ORDERS)
    store.save(orders(PAID, COUPON))
    store.save(orders(PAID))
    # When discovery sweeps
    run = typed_discovery(dynamodb, lambda_client, kinesis, clock, store).run(SWEEP, deadline=clock.later())
    # Then every shard has v1's change, then v2's
    for shard, events in shards(kinesis).items():
        assert [(event.op, event.source.schema_version) for event in events] == [("s", 1), ("s", 2)], shard
    assert run.schema_changes_announced == 2
    assert report_of(run, ORDERS).actions[-1] == "schema change v1 to v2 announced on every shard"


def test_a_reloaded_table_is_announced_once_under_its_newest_reload(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> None:
    # Given orders and its reload .v2 on the bus, one source table with an unannounced v1
    create_dms_table(dynamodb, ORDERS)
    create_dms_table(dynamodb, f"{ORDERS}.v2")
    store.save(orders(PAID))
    # When discovery sweeps
    run = typed_discovery(dynamodb, lambda_client, kinesis, clock, store).run(SWEEP, deadline=clock.later())
    # Then each shard has the change once, named after the reload
    for shard, events in shards(kinesis).items():
        assert [(e.op, e.source.dynamodb_table, e.source.version) for e in events] == [
            ("s", f"{ORDERS}.v2", "v2")
        ], shard
    assert run.schema_changes_announced == 1


def test_a_version_already_announced_is_not_put_again(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> None:
    # Given v1 of orders announced by a sweep
    create_dms_table(dynamodb, ORDERS)
    store.save(orders(PAID))
    typed_discovery(dynamodb, lambda_client, kinesis, clock, store).run(SWEEP, deadline=clock.later())
    # When the next sweep runs in a new container (it knows nothing announced beforehand)
    run = typed_discovery(dynamodb, lambda_client, kinesis, clock, store).run(SWEEP, deadline=clock.later())
    # Then the schema table's note is enough: each shard still has v1's change once
    for shard, events in shards(kinesis).items():
        assert [(event.op, event.source.schema_version) for event in events] == [("s", 1)], shard
    assert (run.schema_changes_announced, report_of(run, ORDERS).actions) == (0, [])


def test_an_announcement_that_fails_for_one_table_leaves_the_others_announced(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> None:
    # Given order_lines and orders, each with an unannounced v1, and a stream that throttles
    # every record of order_lines' schema changes (order_lines is looked at first)
    create_dms_table(dynamodb, LINES)
    create_dms_table(dynamodb, ORDERS)
    store.save(order_lines(PAID))
    store.save(orders(PAID))
    throttled = ThrottlesKey(kinesis, "public.order_lines|schema")
    # When discovery sweeps
    run = typed_discovery(dynamodb, lambda_client, throttled, clock, store).run(SWEEP, deadline=clock.later())
    # Then orders is announced on every shard, order_lines is an error of the run and not
    # noted announced (the next sweep tries again), and both are on the bus
    for shard, events in shards(kinesis).items():
        assert [(event.op, event.source.table) for event in events] == [("s", "orders")], shard
    assert store.latest_announced(ORDERS_KEY) == (1, True)
    assert store.latest_announced(LINES_KEY) == (1, False)
    assert run.schema_changes_announced == 1
    (error,) = run.errors
    assert error.table == LINES
    assert error.detail is not None
    assert error.detail.startswith(f"schema of {LINES_KEY} not announced (")
    assert "ProvisionedThroughputExceededException" in error.detail
    assert error.detail.endswith("the next sweep tries again")
    assert "glue attached" in error.actions
    # And once the stream takes it, the next sweep announces it
    again = typed_discovery(dynamodb, lambda_client, kinesis, clock, store).run(SWEEP, deadline=clock.later())
    assert (again.schema_changes_announced, again.errors) == (1, [])
    assert store.latest_announced(LINES_KEY) == (1, True)


def test_a_sweep_without_time_left_reports_the_tables_it_did_not_look_at(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> None:
    # Given two source tables with unannounced versions
    create_dms_table(dynamodb, LINES)
    create_dms_table(dynamodb, ORDERS)
    store.save(order_lines(PAID))
    store.save(orders(PAID))
    # When a sweep starts with no time left
    run = typed_discovery(dynamodb, lambda_client, kinesis, clock, store).run(SWEEP, deadline=clock.now)
    # Then nothing is announced, and the run says how many tables are left to the next sweep
    assert all(events == [] for events in shards(kinesis).values())
    assert (run.schema_changes_announced, run.schema_tables_unchecked) == (0, 2)
    assert store.latest_announced(ORDERS_KEY) == (1, False)


def test_a_run_for_a_create_table_event_does_not_look_for_stored_versions(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> None:
    # Given orders, empty, with a stored v2 not announced
    create_dms_table(dynamodb, ORDERS)
    store.save(orders(PAID, COUPON))
    store.save(orders(PAID))
    # When discovery runs for orders' CreateTable event
    run = typed_discovery(dynamodb, lambda_client, kinesis, clock, store).run(
        create_table_event(ORDERS), deadline=clock.later()
    )
    # Then the table is on the bus, and no schema change went out: that is the sweep's
    assert report_of(run, ORDERS).status == "done"
    assert all(events == [] for events in shards(kinesis).values())
    assert (run.schema_changes_announced, store.latest_announced(ORDERS_KEY)) == (None, (2, False))


def test_sweeps_that_run_out_of_time_leave_other_tables_each_time(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, store: SchemaStore
) -> None:
    # Given two source tables with unannounced versions, and time for one look a sweep
    create_dms_table(dynamodb, LINES)
    create_dms_table(dynamodb, ORDERS)
    store.save(order_lines(PAID))
    store.save(orders(PAID))
    discovery = typed_discovery(dynamodb, lambda_client, kinesis, clock, store)
    looked: list[str] = []
    latest = store.latest_announced

    def slow(qualified: str) -> tuple[int, bool] | None:
        looked.append(qualified)
        clock.now += 10  # a look takes the time left
        return latest(qualified)

    store.latest_announced = slow  # type: ignore[method-assign]
    # When sweeps scheduled a minute apart each have time for one
    for minute in (0, 1):
        event = {**SWEEP, "time": f"2026-12-08T01:0{minute}:00Z"}
        discovery.run(event, deadline=clock.now + 5)
    # Then each looked at another table: both are announced after two sweeps
    assert sorted(looked) == sorted({ORDERS_KEY, "legacy.public.order_lines"})
    assert store.latest_announced(ORDERS_KEY) == (1, True)
