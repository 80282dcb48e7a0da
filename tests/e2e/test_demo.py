"""The demo's scenario at small scale: a workload with a table added half way, every
change through DMS stand-in -> DynamoDB Streams -> glue -> Kinesis -> consumer."""

from __future__ import annotations

import threading

from local.demo import Workload
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
