"""Local functions: each a container of its own, running beside the others."""

from __future__ import annotations

import io
import os
import shutil
import sys
import threading
import time
import uuid
from typing import Any

import pytest

from local.functions import CODE_CHECK_SECONDS, FUNCTIONS_ROOT, LocalFunction


def _function(name: str, handler: Any, log: io.StringIO | None = None) -> LocalFunction:
    return LocalFunction(name=name, environment={"WHO": name}, handler=handler, log=log)


def test_functions_run_at_once_each_in_its_own_environment_and_log() -> None:
    # Given a slow function that waits inside its invocation, and another one
    release, entered = threading.Event(), threading.Event()
    seen: dict[str, str | None] = {}
    slow_log, quick_log = io.StringIO(), io.StringIO()

    def slow(event: dict[str, Any], context: Any) -> None:
        entered.set()
        assert release.wait(10)
        seen["slow"] = os.environ.get("WHO")
        print("slow says hi")

    def quick(event: dict[str, Any], context: Any) -> str:
        seen["quick"] = os.environ.get("WHO")
        print("quick says hi")
        return "done"

    slow_function, quick_function = _function("slow", slow, slow_log), _function("quick", quick, quick_log)
    # When the slow one is running and the quick one is invoked
    thread = threading.Thread(target=slow_function.invoke, args=({},))
    thread.start()
    assert entered.wait(10)
    result = quick_function.invoke({})
    release.set()
    thread.join(10)
    # Then the quick one finished without waiting, each saw its own environment and wrote to
    # its own log, and the process's environment has neither
    assert result == "done"
    assert seen == {"slow": "slow", "quick": "quick"}
    assert (slow_log.getvalue(), quick_log.getvalue()) == ("slow says hi\n", "quick says hi\n")
    assert "WHO" not in os.environ


def test_one_function_runs_one_invocation_at_a_time() -> None:
    # Given a function that records how many of its invocations overlap
    lock = threading.Lock()
    running, most = 0, 0
    start = threading.Barrier(4)

    def handler(event: dict[str, Any], context: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        threading.Event().wait(0.02)
        with lock:
            running -= 1

    function = _function("one", handler)

    def invoke() -> None:
        start.wait(10)
        for _ in range(5):
            function.invoke({})

    # When four pollers invoke it at once
    threads = [threading.Thread(target=invoke) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then its invocations never overlapped: it is one container
    assert most == 1


def test_a_stream_kept_from_an_invocation_writes_where_stdout_goes_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a function that keeps the stdout it saw (as a logging handler made at import does)
    kept: list[Any] = []
    function = _function("keeper", lambda event, context: kept.append(sys.stdout), io.StringIO())
    function.invoke({})
    # When, outside any invocation, stdout is replaced (a test's capture) and the kept stream written
    replaced = io.StringIO()
    monkeypatch.setattr(sys, "stdout", replaced)
    kept[0].write("after\n")
    # Then the write lands where stdout goes now
    assert replaced.getvalue() == "after\n"


def test_a_watched_function_runs_its_edited_code_at_the_next_invocation() -> None:
    # Given a consumer whose handler imports a module of its own package, run by `dmsbus up`
    folder = FUNCTIONS_ROOT / "consumers" / f"watch_{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        (folder / "__init__.py").write_text("", encoding="utf-8")
        (folder / "answer.py").write_text("VALUE = 'v1'\n", encoding="utf-8")
        package = f"consumers.{folder.name}"
        (folder / "handler.py").write_text(
            f"from {package}.answer import VALUE\n\ndef handler(event, context):\n    return VALUE\n",
            encoding="utf-8",
        )
        function = LocalFunction(
            name="watched", environment={}, folder=f"consumers/{folder.name}", watch_code=True
        )
        assert function.invoke({}) == "v1"
        # When its code is edited (a module it imports, not the handler file)
        time.sleep(0.01)
        (folder / "answer.py").write_text("VALUE = 'v2'\n", encoding="utf-8")
        os.utime(folder / "answer.py", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        time.sleep(CODE_CHECK_SECONDS)
        # Then the next invocation runs the new code, without a restart
        assert function.invoke({}) == "v2"
    finally:
        shutil.rmtree(folder)
        for name in [n for n in sys.modules if folder.name in n]:
            del sys.modules[name]
