"""dmsbus resync on the running local data path: a table's rows go again, as r events in
each row's stream order, to one consumer, while changes keep flowing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg

from dmsbus.consumer import ChangeEvent
from dmsbus_cli.resync import Resync, target_table
from local.demo import Workload
from tests.e2e.conftest import BUS, SOURCE, Pipeline
from tests.e2e.test_faults import assert_converged


def test_given_live_changes_when_a_table_is_resynced_to_one_consumer_then_it_gets_every_row_in_order(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    # Given the rebuilding consumer ("rebuild") records the resync reads it receives
    pipeline.wait_attached()
    reads: list[ChangeEvent] = []
    pipeline.faults.append(lambda event: reads.append(event) if event.source.resync_for else None)
    table = target_table(BUS.name, SOURCE, "public.customers")
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        for number in range(40):
            connection.execute(
                "INSERT INTO customers (id, name) VALUES (%s, %s)", (8000 + number, f"c{number}")
            )
        rows = connection.execute("SELECT count(*) FROM customers").fetchone()[0]
    assert_converged(pipeline)

    # When customers is resynced to "rebuild" while the workload changes rows
    stop = threading.Event()
    workload = threading.Thread(
        target=lambda: Workload(pipeline.url, rate=200, seed=5).run(changes=300, stop=stop)
    )
    workload.start()
    messages: list[str] = []
    progress = Resync(
        pipeline.runtime.aws.client("dynamodb"),
        table,
        "run-1/demo-rebuild",
        tmp_path / "resync.json",
        say=messages.append,
    ).run()
    workload.join()

    # Then every row present was marked once, its read reached "rebuild" alone, as an r
    # event of the table's stream, and the rebuilt state still equals the source
    assert progress.marked + progress.skipped >= rows > 0
    deadline = time.monotonic() + 30
    while len({str(event.key) for event in reads}) < progress.marked:
        assert time.monotonic() < deadline, f"{len(reads)} of {progress.marked} reads arrived"
        time.sleep(0.2)
    assert {(event.op, event.source.snapshot, event.source.resync_for) for event in reads} == {
        ("r", True, "demo-rebuild")
    }
    assert all(event.source.sequence != "0" for event in reads)  # a stream position, not a backfill's
    assert_converged(pipeline)
    assert messages and messages[-1].startswith(f"resync {table}: {progress.marked} rows marked")


def test_a_resumed_resync_marks_nothing_twice(pipeline: Pipeline, tmp_path: Path) -> None:
    # Given a resync of customers ran to its end
    pipeline.wait_attached()
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (8100, 'a'), (8101, 'b')")
    assert_converged(pipeline)
    dynamodb = pipeline.runtime.aws.client("dynamodb")
    table = target_table(BUS.name, SOURCE, "public.customers")
    first = Resync(dynamodb, table, "run-2", tmp_path / "a.json", say=lambda _: None).run()
    # When the same run goes again from the start (as after a crash before saving)
    again = Resync(dynamodb, table, "run-2", tmp_path / "b.json", say=lambda _: None).run()
    # Then every row is skipped: already marked by this run
    assert first.marked >= 2
    assert (again.marked, again.skipped) == (0, first.marked)
