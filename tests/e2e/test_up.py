"""``dmsbus up`` on a database of one's own: the bus runs until Ctrl-C, delivers what it
took before stopping, and a restart goes on from the replication slot."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from local.demo import create_schema
from local.postgres import SOURCE_URL_VARIABLE

REPO = Path(__file__).resolve().parents[2]


class Up:
    """A running ``dmsbus up``, its output read as it comes."""

    def __init__(self, database: str, state: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dmsbus"),
                "up",
                "--config",
                str(REPO / "config"),
                "--state",
                str(state),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, SOURCE_URL_VARIABLE: database},
            # A session of its own, so that interrupt() signals its whole process group, as
            # a terminal's Ctrl-C does.
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.output.append(self.lines.get(timeout=0.5))
            except queue.Empty:
                assert self.process.poll() is None, "".join(self.output)[-3000:]
                continue
            if text in self.output[-1]:
                return
        raise AssertionError(f"no {text!r} in {''.join(self.output)[-3000:]}")

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=90)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return code


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


@pytest.fixture
def mirror(database: str) -> Iterator[str]:
    name = database.rsplit("/", 1)[1] + "_mirror"
    yield database.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _mirrored(mirror: str, customer: int) -> Any:
    try:
        with psycopg.connect(mirror) as connection:
            row = connection.execute(
                "SELECT name FROM public.customers WHERE id = %s", (customer,)
            ).fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else None


def test_up_runs_until_ctrl_c_and_a_restart_resumes_from_the_slot(
    database: str, mirror: str, tmp_path: Path
) -> None:
    # Given a database of one's own (the sample schema here) and `dmsbus up` on it
    create_schema(database, seed_rows=3)
    state = tmp_path / "state"
    up = Up(database, state)
    up.wait_for("AWS_ENDPOINT_URL=")
    up.wait_for("| tables ")
    # When a row is written, Then the bus's consumers get it (the shipped mirror has it)
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9001, 'first')")
    _until(lambda: _mirrored(mirror, 9001) == "first", "the mirror did not get the row")
    # And `dmsbus verify` finds the database `up` noted and compares it with the mirror
    verified = subprocess.run(
        [
            str(Path(sys.executable).parent / "dmsbus"),
            "verify",
            "--config",
            str(REPO / "config"),
            "--state",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={name: value for name, value in os.environ.items() if name != SOURCE_URL_VARIABLE},
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verify: public.customers: " in verified.stdout and " 0 lost, 0 stale after DDL" in verified.stdout
    # And Ctrl-C right after a commit stops it only once that change is delivered
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9003, 'just before ctrl-c')")
    time.sleep(0.5)  # DMS polls every 20 ms: the change is applied, not yet delivered
    assert up.interrupt() == 130
    assert any("stopping: DMS stopped" in line for line in up.output)
    assert _mirrored(mirror, 9003) == "just before ctrl-c", "".join(up.output)[-3000:]
    # (moto and PostgreSQL, in sessions of their own, kept serving the drain)
    assert not [line for line in up.output if "Traceback" in line or "ConnectionError" in line]
    # Given changes made while it is down
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("UPDATE customers SET name = 'while down' WHERE id = 9001")
        connection.execute("INSERT INTO customers (id, name) VALUES (9002, 'new')")
    # When it starts again on the same state, Then it goes on from its slot: both arrive,
    # and the update is not taken for an older change (stream sequences keep growing)
    again = Up(database, state)
    try:
        _until(lambda: _mirrored(mirror, 9002) == "new", "the row written while down did not arrive")
        _until(lambda: _mirrored(mirror, 9001) == "while down", "the update made while down was skipped")
    finally:
        again.interrupt()


def test_a_second_ctrl_c_while_stopping_skips_the_wait_and_still_stops_everything(
    database: str, mirror: str, tmp_path: Path
) -> None:
    # Given `dmsbus up` running
    create_schema(database, seed_rows=3)
    up = Up(database, tmp_path / "state")
    up.wait_for("AWS_ENDPOINT_URL=")
    endpoint = next(line for line in up.output if "AWS_ENDPOINT_URL=" in line)
    port = int(endpoint.split("AWS_ENDPOINT_URL=http://127.0.0.1:")[1].split()[0])
    up.wait_for("| tables ")
    # When Ctrl-C comes twice, the second while it stops
    os.killpg(up.process.pid, signal.SIGINT)
    up.wait_for("stopping")
    # Then it stops, without a traceback, and leaves no moto server behind
    assert up.interrupt() == 130
    assert not [line for line in up.output if "Traceback" in line], "".join(up.output)[-3000:]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
