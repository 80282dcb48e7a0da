"""Typing at DDL: commit -> consumer latency of the rows right after an ALTER TABLE (BENCHMARKS.md).

One run, one machine: the whole local data path (embedded PostgreSQL, DMS stand-in, moto,
the local Lambda service running discovery, the glue, the schema function, the sample
config's consumers and the bench's own) on a typed bus (``glue.typed: true``). A table of
hard types the source's ``audit.event_%`` selection picks up is created and its first row
waited for, typed. Then each round runs one DDL and one or two row changes right after it,
cycling through:

- ``add_default``: ``ADD COLUMN k<n> int NOT NULL DEFAULT <n>`` (the column a later round drops);
- ``add_null``: ``ADD COLUMN q<n> int`` (no default), then a change that sets it;
- ``retype``: ``ALTER COLUMN q<n> TYPE numeric(12,3)``, then a change with a fraction;
- ``drop``: ``DROP COLUMN k<n>`` (NOT NULL: its absence from an image cannot be a NULL).

Each row's latency runs from the client's clock right after its statement returned
(autocommit: committed) to the bench consumer's call with its event; the event must be typed
with the schema version one above the version before the DDL. A nullable column's DROP is
learned at the next sweep only, so it is not one of the rounds; the sweep runs every
``--sweep-seconds`` (120 by default) to stay out of the way. Before the rounds,
``--baseline`` changes without a DDL give the same latency for comparison.

    python bench/ddl_latency.py [--rounds 20] [--baseline 10] [--pause 1.0]

The last line, exactly:
``ddl_bench: rows=<n> typed=<k> p50_ms=<x> p99_ms=<y> target_p99_ms=3000 ok=<true|false>``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from config.loader import load_config
from config.model import BusConfig, ConsumerConfig
from dmsbus.consumer import ChangeEvent, ConsumerHandler, consumer
from local.demo import create_schema
from local.runtime import LocalRuntime, StandInRunner, local_bus

REPOSITORY = Path(__file__).resolve().parent.parent
SCHEMA = "audit"
#: Picked up by the sample source's ``audit.event_%`` selection when created.
TABLE = "event_ddl_bench"
QUALIFIED = f"{SCHEMA}.{TABLE}"
TARGET_P99_MS = 3000.0
KINDS = ("add_default", "add_null", "retype", "drop")
#: The row every round updates; each round's second change inserts a row of its own.
ROW = 1


def typed_bus(bus: BusConfig) -> BusConfig:
    """``bus`` with ``glue.typed`` (as tests/plans.py's ``typed_bus``)."""
    return bus.model_copy(update={"glue": bus.glue.model_copy(update={"typed": True})})


@dataclass(frozen=True)
class Seen:
    """One event of the bench table as the bench consumer got it."""

    received: float
    op: str
    key: int | None
    typed: bool | None
    version: int | None
    after: dict[str, Any] | None


@dataclass
class Watched:
    """The bench table's events, in the order the consumer was called with them."""

    events: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> ConsumerHandler:
        @consumer(tables=[QUALIFIED], ops=["c", "u", "d", "r", "s"])
        def watch(event: ChangeEvent) -> None:
            received = time.time()
            key = event.key.get("id") if event.key else None
            seen = Seen(
                received=received,
                op=event.op,
                key=int(key) if key is not None else None,
                typed=event.source.typed,
                version=event.source.schema_version,
                after=dict(event.after) if event.after is not None else None,
            )
            with self._lock:
                self.events.append(seen)

        return watch

    def since(self, index: int) -> list[Seen]:
        with self._lock:
            return self.events[index:]

    def count(self) -> int:
        with self._lock:
            return len(self.events)


@dataclass
class Change:
    """One measured row change and, once it came, its event."""

    round: int
    kind: str
    key: int
    op: str
    committed: float
    expected_version: int
    event: Seen | None = None

    @property
    def latency_ms(self) -> float:
        assert self.event is not None
        return max(0.0, (self.event.received - self.committed) * 1000)

    @property
    def typed_as_expected(self) -> bool:
        return (
            self.event is not None
            and self.event.typed is True
            and self.event.version == self.expected_version
        )


@dataclass(frozen=True)
class Round:
    kind: str
    ddl: str
    #: (SQL, parameters, the row's key, the op its event carries)
    changes: list[tuple[str, tuple[Any, ...], int, str]]


def plan_rounds(rounds: int) -> list[Round]:
    """Cycles of ADD (default), ADD (none) + set, retype + fraction, DROP of the NOT NULL
    column the cycle added; one change after each DDL in even cycles, two in odd ones."""
    planned: list[Round] = []
    for index in range(rounds):
        cycle, kind = divmod(index, len(KINDS))
        n = cycle + 1
        update = f"UPDATE {QUALIFIED} SET note = %s WHERE id = %s"
        insert_id = 100 + index
        first: tuple[str, tuple[Any, ...]]
        insert: tuple[str, tuple[Any, ...]] = (
            f"INSERT INTO {QUALIFIED} (id, flag, ts, amount, note) VALUES (%s, true, now(), 1.5, %s)",
            (insert_id, f"round {index}"),
        )
        if KINDS[kind] == "add_default":
            ddl = f"ALTER TABLE {QUALIFIED} ADD COLUMN k{n} int NOT NULL DEFAULT {n}"
            first = (update, (f"round {index}", ROW))
        elif KINDS[kind] == "add_null":
            ddl = f"ALTER TABLE {QUALIFIED} ADD COLUMN q{n} int"
            first = (f"UPDATE {QUALIFIED} SET q{n} = %s WHERE id = %s", (n, ROW))
            insert = (
                f"INSERT INTO {QUALIFIED} (id, flag, ts, q{n}) VALUES (%s, false, now(), %s)",
                (insert_id, n),
            )
        elif KINDS[kind] == "retype":
            ddl = f"ALTER TABLE {QUALIFIED} ALTER COLUMN q{n} TYPE numeric(12,3)"
            first = (f"UPDATE {QUALIFIED} SET q{n} = %s WHERE id = %s", (f"{n}.125", ROW))
            insert = (
                f"INSERT INTO {QUALIFIED} (id, flag, ts, q{n}) VALUES (%s, true, now(), %s)",
                (insert_id, f"{n}.5"),
            )
        else:
            ddl = f"ALTER TABLE {QUALIFIED} DROP COLUMN k{n}"
            first = (update, (f"round {index}", ROW))
        changes = [(first[0], first[1], ROW, "u")]
        if cycle % 2 == 1:
            changes.append((insert[0], insert[1], insert_id, "c"))
        planned.append(Round(KINDS[kind], ddl, changes))
    return planned


class DataPathError(RuntimeError):
    """The local data path failed: the bench's figures would mean nothing."""


def check(stand_in: StandInRunner) -> None:
    if stand_in.errors:
        raise DataPathError(f"the DMS stand-in failed: {stand_in.errors}")


def wait_events(
    watched: Watched, changes: list[Change], since: int, stand_in: StandInRunner, timeout: float
) -> None:
    """Until each change's event (its key and op, the first after ``since``) has come."""
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in watched.since(since) if e.op != "s"]
        for change in changes:
            if change.event is None:
                change.event = next((e for e in events if e.key == change.key and e.op == change.op), None)
        if all(change.event is not None for change in changes):
            return
        check(stand_in)
        if time.monotonic() > deadline:
            missing = [(c.kind, c.key, c.op) for c in changes if c.event is None]
            raise DataPathError(f"no event within {timeout:.0f} s for {missing}")
        time.sleep(0.005)


def create_table(db: psycopg.Connection[Any], watched: Watched, stand_in: StandInRunner) -> int:
    """The table of hard types and its first row; returns the schema version its first typed
    event carries. The row is touched every 2 s until an event of it comes typed."""
    db.execute(
        f"CREATE TABLE {QUALIFIED} (id int PRIMARY KEY, flag boolean NOT NULL, ts timestamptz, "
        "amount numeric(12,3), note text, qty int)"
    )
    db.execute(f"INSERT INTO {QUALIFIED} VALUES (%s, false, '2026-12-01 00:00:00+00', 1.5, NULL, 7)", (ROW,))
    deadline = time.monotonic() + 120
    touched = time.monotonic()
    while True:
        typed = [e for e in watched.since(0) if e.op != "s" and e.typed is True and e.version is not None]
        if typed:
            untyped = [e for e in watched.since(0) if e.op != "s" and not e.typed]
            if untyped:
                print(
                    f"note: {len(untyped)} event(s) of the new table came untyped before the first typed one"
                )
            assert typed[0].version is not None
            return typed[0].version
        check(stand_in)
        if time.monotonic() > deadline:
            raise DataPathError(f"no typed event of {QUALIFIED} in 120 s: {watched.since(0)}")
        if time.monotonic() - touched > 2:
            touched = time.monotonic()
            db.execute(f"UPDATE {QUALIFIED} SET qty = qty + 1 WHERE id = %s", (ROW,))
        time.sleep(0.05)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def figures(values: list[float]) -> str:
    if not values:
        return "no rows"
    return (
        f"p50={statistics.median(values):.0f} ms p99={percentile(values, 0.99):.0f} ms "
        f"max={max(values):.0f} ms ({len(values)} rows)"
    )


def run(rounds: int, *, baseline: int, pause: float, sweep_seconds: float, timeout: float) -> list[Change]:
    config = load_config(REPOSITORY / "config")
    bus = typed_bus(local_bus(config.bus))
    state = Path(tempfile.mkdtemp(prefix="dmsbus-ddl-bench-"))
    runtime = LocalRuntime.from_environment(bus, config.sources[0], state, sweep_seconds=sweep_seconds)
    watched = Watched()
    measured: list[Change] = []
    try:
        url = runtime.start_database()
        create_schema(url, seed_rows=5)
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {QUALIFIED}")  # an external source's leftover
        runtime.start_aws()
        assert runtime.local_bus is not None
        runtime.local_bus.add_consumer(ConsumerConfig(name="bench", code="bench"), handler=watched.handler())
        stand_in = runtime.start_dms()
        runtime.start_lambda()
        stand_in.wait_loaded()
        with psycopg.connect(url, autocommit=True) as db:
            version = create_table(db, watched, stand_in)
            print(f"{QUALIFIED}: first row typed with schema v{version}", flush=True)
            # Without a DDL, for comparison: the same table, the same pause
            for _ in range(baseline):
                time.sleep(pause)
                since = watched.count()
                db.execute(f"UPDATE {QUALIFIED} SET qty = qty + 1 WHERE id = %s", (ROW,))
                change = Change(-1, "no_ddl", ROW, "u", time.time(), version)
                wait_events(watched, [change], since, stand_in, timeout)
                measured.append(change)
            for index, planned in enumerate(plan_rounds(rounds)):
                time.sleep(pause)
                since = watched.count()
                db.execute(planned.ddl)
                version += 1
                changes: list[Change] = []
                for statement, parameters, key, op in planned.changes:
                    db.execute(statement, parameters)
                    changes.append(Change(index, planned.kind, key, op, time.time(), version))
                wait_events(watched, changes, since, stand_in, timeout)
                measured.extend(changes)
                got = sorted({c.event.version for c in changes if c.event is not None}, key=str)
                print(
                    f"round {index:>2} {planned.kind:<11} v{version}: "
                    + ", ".join(
                        f"{c.op} {c.latency_ms:.0f} ms {'typed' if c.event and c.event.typed else 'UNTYPED'}"
                        for c in changes
                    )
                    + ("" if got == [version] else f"  (versions {got}, expected v{version})"),
                    flush=True,
                )
                # The next round's version counts from what the rows carried
                carried = [c.event.version for c in changes if c.event is not None and c.event.version]
                if carried and max(carried) != version:
                    version = max(carried)
        announced = {e.version for e in watched.since(0) if e.op == "s"}
        ddl_versions = {c.expected_version for c in measured if c.kind != "no_ddl"}
        print(
            f"schema changes (op s) received by the bench consumer: {len(ddl_versions & announced)} of "
            f"{len(ddl_versions)} DDL versions"
        )
        check(stand_in)
        print(f"logs: {state / 'logs'} (the schema function's log lists each read the glue asked for)")
        return measured
    finally:
        runtime.stop()
        if runtime.source_url:  # the embedded server went with stop(); an external one stays
            runtime.drop_mirror()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="DDL rounds (each one DDL and 1-2 rows)")
    parser.add_argument("--baseline", type=int, default=10, help="changes without a DDL, for comparison")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument(
        "--sweep-seconds", type=float, default=120.0, help="discovery's and the schema function's sweep"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a row's event")
    arguments = parser.parse_args()
    try:
        measured = run(
            arguments.rounds,
            baseline=arguments.baseline,
            pause=arguments.pause,
            sweep_seconds=arguments.sweep_seconds,
            timeout=arguments.timeout,
        )
    except DataPathError as exc:
        print(f"ddl_bench: the local data path failed: {exc}", file=sys.stderr)
        return 1
    rows = [c for c in measured if c.kind != "no_ddl"]
    baseline = [c.latency_ms for c in measured if c.kind == "no_ddl"]
    print(f"without DDL: {figures(baseline)}")
    for kind in KINDS:
        of_kind = [c for c in rows if c.kind == kind]
        if of_kind:
            typed_ok = sum(c.typed_as_expected for c in of_kind)
            print(
                f"{kind:<11}: {figures([c.latency_ms for c in of_kind])}, {typed_ok} typed with the new version"
            )
    first = [c.latency_ms for c in rows if c.key == ROW]
    print(f"first row after each DDL: {figures(first)}")
    latencies = [c.latency_ms for c in rows]
    typed = sum(c.typed_as_expected for c in rows)
    print(f"after DDL, all: {figures(latencies)}, {typed} typed with the new version")
    p50 = statistics.median(latencies) if latencies else 0.0
    p99 = percentile(latencies, 0.99) if latencies else 0.0
    ok = bool(rows) and p99 <= TARGET_P99_MS and typed == len(rows)
    print(
        f"ddl_bench: rows={len(rows)} typed={typed} p50_ms={p50:.0f} p99_ms={p99:.0f} "
        f"target_p99_ms={TARGET_P99_MS:.0f} ok={'true' if ok else 'false'}"
    )
    # Non-zero only when the data path failed; a missed target is the last line's ok=false
    return 0


if __name__ == "__main__":
    sys.exit(main())
