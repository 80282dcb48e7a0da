"""@consumer's overloads: mypy checks a handler's argument against the mode it is made for."""

from __future__ import annotations

from pathlib import Path

from mypy import api

HANDLERS = """from dmsbus.consumer import ChangeEvent, Received, consumer

@consumer()
def one(event: ChangeEvent) -> None: ...

@consumer(batch=True)
def batch(events: list[ChangeEvent]) -> None: ...

@consumer(records=True)
def record(item: Received) -> None: ...

@consumer(batch=True, records=True)
def records(items: list[Received]) -> None: ...

@consumer(batch=True)  # wrong: a batch handler takes a list
def wrong_batch(event: ChangeEvent) -> None: ...

@consumer()  # wrong: one event at a time
def wrong_one(events: list[ChangeEvent]) -> None: ...

@consumer(records=True)  # wrong: records mode hands Received values
def wrong_record(event: ChangeEvent) -> None: ...
"""


def test_mypy_accepts_each_modes_handler_and_refuses_the_others(tmp_path: Path) -> None:
    module = tmp_path / "handlers.py"
    module.write_text(HANDLERS, encoding="utf-8")
    out, _, _ = api.run(["--strict", "--no-incremental", "--follow-imports=silent", str(module)])
    errors = [line for line in out.splitlines() if line.startswith(str(module)) and ": error:" in line]
    wrong_lines = [number + 1 for number, text in enumerate(HANDLERS.splitlines()) if "# wrong" in text]
    assert [int(line.split(":")[1]) for line in errors] == wrong_lines, out
    assert all("incompatible type" in line for line in errors), out
