"""The demo's check runs beside its status line: started when due, its result handed once."""

from __future__ import annotations

import threading
import time

import pytest

from local.demo import BackgroundCheck


def test_a_check_runs_in_its_own_thread_and_repeats_only_when_something_arrived() -> None:
    # Given a slow check and a consumer's event count
    release = threading.Event()
    runs: list[int] = []
    events = [0]

    def slow() -> str:
        runs.append(1)
        assert release.wait(5)
        return f"result {len(runs)}"

    checker = BackgroundCheck(slow, lambda: events[0], every=60)
    # When polled, Then it starts the check and does not wait for it
    started = time.monotonic()
    assert checker.poll() is None
    assert checker.poll() is None
    assert time.monotonic() - started < 1
    release.set()
    deadline = time.monotonic() + 5
    result = None
    while result is None and time.monotonic() < deadline:
        result = checker.poll()
        time.sleep(0.01)
    # And hands its result once; nothing arrived since, so no second check runs
    assert result == "result 1"
    assert checker.poll() is None and len(runs) == 1
    # Until the consumer receives more
    events[0] = 1
    checker.poll()
    assert len(runs) == 2


def test_a_check_that_raises_raises_at_the_next_poll() -> None:
    def broken() -> None:
        raise ConnectionError("the mirror is down")

    checker = BackgroundCheck(broken, lambda: 0)
    checker.poll()
    deadline = time.monotonic() + 5
    with pytest.raises(ConnectionError, match="the mirror is down"):
        while time.monotonic() < deadline:
            checker.poll()
            time.sleep(0.01)
