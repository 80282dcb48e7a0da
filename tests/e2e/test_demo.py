"""The demo's scenario at small scale: a workload with a table added half way, every
change through DMS stand-in -> DynamoDB Streams -> glue -> Kinesis -> consumer."""

from __future__ import annotations

import json
import re
import threading

from local.demo import OVERSIZED_SKU, Workload
from tests.e2e.conftest import Pipeline


def test_given_a_running_workload_with_a_late_table_when_it_ends_then_the_rebuilt_state_equals_the_source(
    pipeline: Pipeline,
) -> None:
    # Given a workload of inserts, updates and deletes on five tables, a sixth created half way
    workload = Workload(pipeline.url, rate=400)

    # When it has run
    workload.run(changes=300, stop=threading.Event(), late_table_at=150)

    # Then every table on the bus is rebuilt exactly from the events
    result = pipeline.converge()
    assert list(result.describe()) == []
    assert result.tables == 6
    assert "audit.event_payment" in pipeline.rebuilt.tables

    # And changes made once every table is attached reach the consumer through the streams
    # with their commit time (the first ones may all have come by discovery's backfill, as
    # reads, when the workload outran it)
    workload.run(changes=30, stop=threading.Event())
    assert list(pipeline.converge().describe()) == []
    assert pipeline.rebuilt.latencies_ms, "changes carry changed_at: latency is measured"


def test_consumers_receive_what_dms_writes_for_each_source_type(pipeline: Pipeline) -> None:
    # Given the sample schema's typed columns, a composite-key table the audit.event_%
    # wildcard selects, and a product too large for a DynamoDB item
    workload = Workload(pipeline.url, rate=400)
    # When customers are written and the pipeline converges
    workload.run(changes=120, stop=threading.Event())
    assert list(pipeline.converge().describe()) == []
    # Then a consumer gets DMS's values (docs/envelope.md): booleans and timestamps as
    # strings, char(n) trimmed, jsonb as text, unbounded numerics at 6 decimals, no bytea
    customers = list(pipeline.rebuilt.tables["public.customers"].values())
    assert customers
    for row in customers:
        assert row.get("vip") in ("true", "false", None)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}", row["changed_at"])
        assert row.get("country") in ("PL", "DK", "JP", None)
        assert isinstance(json.loads(row["prefs"]), dict)
        assert len(str(row["score"]).partition(".")[2]) <= 6
    products = pipeline.rebuilt.tables["public.products"]
    assert all("thumbnail" not in row for row in products.values())
    # And what DMS does not write never arrives: the suspended table, the oversized row
    assert "audit.event_session" not in pipeline.rebuilt.tables
    assert all(row["sku"] != OVERSIZED_SKU for row in products.values())
    stand_in = pipeline.runtime.stand_in
    assert stand_in is not None
    assert list(stand_in.suspended) == ["audit.event_session"]
    assert stand_in.exceptions == 1
