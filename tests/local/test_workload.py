"""The demo's workload in a process of its own."""

from __future__ import annotations

import threading

import pytest

from local.demo import Workload, WorkloadProcess, create_schema


def test_a_workload_process_carries_on_from_the_workload_it_was_given(database: str) -> None:
    # Given a workload that already made 30 changes in this process
    create_schema(database)
    workload = Workload(database, rate=10_000, seed=4)
    workload.run(changes=30, stop=threading.Event())
    # When it carries on, for 200 more, in a process of its own
    process = WorkloadProcess(workload)
    process.start(changes=200)
    process.join(60)
    # Then it committed them all, numbering its rows after the first ones (no duplicate
    # key, which would fail it), and the counter crossed the process boundary
    assert not process.failed
    assert process.committed == 230


def test_a_failed_workload_process_says_so(database: str) -> None:
    # Given a workload on a database without the demo's schema
    process = WorkloadProcess(Workload(database, rate=10_000))
    # When it runs
    process.start(changes=5)
    # Then it fails, and says so
    with pytest.raises(RuntimeError, match="the workload failed"):
        process.join(60)
    assert process.failed
