"""Local end to end: commit in PostgreSQL -> consumer function called (BENCHMARKS.md).

One run, one machine: the whole local data path (embedded PostgreSQL, DMS stand-in, moto,
the local Lambda service running the deployed discovery, glue, the sample config's
consumers and the bench's own, with the workload in a process of its own). Latency is
measured per change from the ``changed_at`` PostgreSQL writes into the row to the moment the
consumer function is called, at a fixed 200 changes/s; throughput is the changes per second
from the first commit until the consumer's rebuilt state equals the source (nothing lost).

    python bench/local_e2e.py [--latency-changes 3000] [--throughput-changes 6000]

On a real database (BENCHMARKS.md, "Local end to end on a real database"): pgbench's tables
(``pgbench -i -s 1``, ``pgbench_accounts`` cut to N rows) selected beside the demo's,
pgbench's TPC-B-like script at T transactions/s for the whole run, on the PostgreSQL of
``DMSBUS_SOURCE_URL`` (not the embedded one: Debian's postgresql-15 works; pgbench on PATH):

    DMSBUS_SOURCE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        python bench/local_e2e.py --source-rows 20000 --background-tps 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from config.functions import glue_name
from config.loader import load_config
from config.model import ConsumerConfig, TableConfig
from local.demo import Rebuilt, Verification, Workload, WorkloadProcess, create_schema, verify
from local.dms import DmsStandIn
from local.postgres import SOURCE_URL_VARIABLE
from local.runtime import LocalRuntime, StandInRunner, local_bus

REPOSITORY = Path(__file__).resolve().parent.parent
PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers")


def run(changes: int, rate: float, *, seed: int) -> tuple[float, Rebuilt, int]:
    """Changes at ``rate``; returns (seconds from first commit to converged, rebuilt, lost)."""
    config = load_config(REPOSITORY / "config")
    bus = local_bus(config.bus)
    state = Path(tempfile.mkdtemp(prefix="dmsbus-bench-"))
    runtime = LocalRuntime.from_environment(bus, config.sources[0], state)
    rebuilt = Rebuilt()
    try:
        url = runtime.start_database()
        create_schema(url)
        runtime.start_aws()
        assert runtime.local_bus is not None
        runtime.local_bus.add_consumer(ConsumerConfig(name="bench", code="bench"), handler=rebuilt.handler())
        stand_in = runtime.start_dms()
        service = runtime.start_lambda()
        # Warm: every initial table attached (glue mappings + the consumer's own).
        workload = Workload(url, rate=50, seed=seed)
        workload.run(changes=20, stop=threading.Event())
        workload.rate = rate
        deadline = time.monotonic() + 60
        while len(service.mappings()) < 5 + 1 + len(bus.consumers) or verify(stand_in.dms, rebuilt).lost:
            if time.monotonic() > deadline:
                raise RuntimeError("the data path did not settle in 60 s")
            time.sleep(0.2)
        rebuilt.latencies_ms.clear()
        rebuilt_events = rebuilt.events
        # The measured workload runs in a process of its own, as the application writing the
        # source database would: at full speed it commits as fast as PostgreSQL takes it.
        writer = WorkloadProcess(workload)
        started = time.monotonic()
        writer.start(changes=changes)
        writer.join()
        result = converge(stand_in.dms, rebuilt, events=rebuilt_events + changes, until=started + 300)
        return time.monotonic() - started, rebuilt, result.lost
    finally:
        runtime.stop()


def converge(dms: DmsStandIn, rebuilt: Rebuilt, *, events: int, until: float) -> Verification:
    """Wait until the rebuilt state equals the source. The comparison reads every source row,
    so it runs once the consumer has received ``events`` (one per change; more with
    redeliveries) and at most every 0.1 s, or every 5 s before (in case fewer events than
    changes arrive): checking at full speed would take the interpreter from the data path
    being measured."""
    last = 0.0
    while True:
        now = time.monotonic()
        if now - last >= (0.1 if rebuilt.events >= events else 5.0):
            last = now
            result = verify(dms, rebuilt)
            if not result.lost or now > until:
                return result
        time.sleep(0.01)


def pgbench_database(server_url: str, rows: int) -> str:
    """A new database on the server with pgbench's tables, accounts cut to ``rows``."""
    name = f"dmsbus_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    # pgbench makes 100,000 accounts per unit of scale; BENCHMARKS.md's runs use scale 1.
    scale = max(1, -(-rows // 100_000))
    subprocess.run(["pgbench", "-i", "-s", str(scale), "-q", url], check=True, capture_output=True)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DELETE FROM pgbench_accounts WHERE aid > %s", (rows,))
        connection.execute("VACUUM ANALYZE")
    return url


def drop_database(server_url: str, url: str) -> None:
    """The bench's database and its replication slot (slots are the server's, by name)."""
    name = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
            (name,),
        )
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class Progress:
    """What the real-database run watches each second: the full load, the backfill's reads,
    and the gaps between status lines."""

    started: float = field(default_factory=time.monotonic)
    printed: float = field(default_factory=time.monotonic)
    gaps: list[float] = field(default_factory=list)
    load_seconds: float = 0.0
    load_end: float = 0.0
    backfill_start: float = 0.0
    scan_end: float = 0.0
    backfill_end: float = 0.0
    last_reads: int = 0
    quiet_since: float = field(default_factory=time.time)

    def tick(self, stand_in: StandInRunner, rebuilt: Rebuilt, glue: int) -> None:
        now = time.monotonic()
        self.gaps.append(now - self.printed)
        self.printed = now
        print(
            f"[{now - self.started:6.1f}s] loaded {stand_in.rows_loaded:>7} | dms {stand_in.changes_applied:>7} "
            f"| glue {glue:>6} | consumer {rebuilt.events:>7} | reads {rebuilt.reads:>7}",
            flush=True,
        )
        if not self.load_seconds and not stand_in.loading:
            self.load_seconds, self.load_end = now - self.started, time.time()
        if rebuilt.reads and not self.backfill_start:
            self.backfill_start = time.time()
        if rebuilt.reads != self.last_reads:
            self.last_reads, self.quiet_since = rebuilt.reads, time.time()
        # The backfill has ended once the load is done and no read came for 5 s. Its
        # rows are the table's rows at selection: those discovery reads and those the
        # full load writes after the table's stream is on, which the stream carries. So
        # it ends with the later of its last read and the load's end.
        if self.load_seconds and not self.backfill_end and time.time() - self.quiet_since > 5:
            self.scan_end = rebuilt.last_read_at or time.time()
            self.backfill_end = max(self.scan_end, self.load_end)

    def done(self, after: float) -> bool:
        """Both over, and ``after`` seconds measured since."""
        return bool(self.backfill_end) and time.time() > self.backfill_end + after


def quantiles(values: list[float]) -> str:
    if not values:
        return "no changes"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50={statistics.median(ordered):.0f} ms p99={p99:.0f} ms ({len(ordered)} changes)"


def real_database(rows: int, tps: float, *, rate: float, after_backfill: float) -> int:
    """The demo's workload at ``rate`` beside pgbench at ``tps`` on pgbench's tables of
    ``rows`` accounts; prints the figures of BENCHMARKS.md; returns the rows lost."""
    server_url = os.environ.get(SOURCE_URL_VARIABLE)
    if not server_url:
        raise SystemExit(
            f"set {SOURCE_URL_VARIABLE} to a PostgreSQL (wal_level=logical) that is not the embedded one"
        )
    url = pgbench_database(server_url, rows)
    create_schema(url)
    config = load_config(REPOSITORY / "config")
    sample = config.sources[0]
    pgbench = [TableConfig(schema="public", table=name) for name in PGBENCH_TABLES]
    source = sample.model_copy(update={"tables": [*sample.tables, *pgbench]})
    state = Path(tempfile.mkdtemp(prefix="dmsbus-bench-"))
    runtime = LocalRuntime(bus=local_bus(config.bus), source=source, state_dir=state, source_url=url)
    rebuilt = Rebuilt()
    background = subprocess.Popen(
        ["pgbench", "-n", "-c", "2", "-j", "1", "-R", str(tps), "-T", "3600", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    writer: WorkloadProcess | None = None
    try:
        runtime.start_database()
        runtime.start_aws()
        assert runtime.local_bus is not None
        runtime.local_bus.add_consumer(ConsumerConfig(name="bench", code="bench"), handler=rebuilt.handler())
        progress = Progress()
        stand_in = runtime.start_dms()
        service = runtime.start_lambda()
        writer = WorkloadProcess(Workload(url, rate=rate, seed=21))
        writer.start(changes=10**7)
        while not progress.done(after_backfill):
            time.sleep(1.0)
            progress.tick(stand_in, rebuilt, service.handled(glue_name(config.bus)))
            if stand_in.errors or time.monotonic() - progress.started > 900:
                raise RuntimeError(f"the run did not settle: {stand_in.errors}")
        writer.stop()
        background.terminate()
        background.wait(30)
        result = converge(stand_in.dms, rebuilt, events=0, until=time.monotonic() + 300)
    finally:
        if writer is not None:
            writer.stop()
        background.kill()
        runtime.stop()
        runtime.drop_mirror()
        drop_database(server_url, url)
    after = [latency for written, latency in rebuilt.samples if written > progress.backfill_end]
    after_scan = [latency for written, latency in rebuilt.samples if written > progress.scan_end]
    every = [latency for _, latency in rebuilt.samples]
    reads = rebuilt.reads
    backfill_rate = reads / max(progress.scan_end - progress.backfill_start, 1.0) if reads else 0.0
    print(
        f"local_e2e real database: rows={rows} tps={tps:.0f} | full load {stand_in.rows_loaded} rows in "
        f"{progress.load_seconds:.1f} s = {stand_in.rows_loaded / max(progress.load_seconds, 1e-3):.0f} rows/s "
        f"| backfill {reads} reads = {backfill_rate:.0f} rows/s | longest status gap {max(progress.gaps):.2f} s "
        f"| after backfill {quantiles(after)} | after discovery's scan {quantiles(after_scan)} | all {quantiles(every)} "
        f"| lost={result.lost} (targets: 0 lost, gap<=2 s, p50<=500 ms, p99<=2000 ms after backfill)"
    )
    return result.lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-changes", type=int, default=3000)
    parser.add_argument("--throughput-changes", type=int, default=6000)
    parser.add_argument("--source-rows", type=int, help="pgbench_accounts rows: the real-database run")
    parser.add_argument("--background-tps", type=float, default=100.0, help="pgbench's TPC-B transactions/s")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="the demo's changes/s in the real-database run"
    )
    parser.add_argument(
        "--after-backfill", type=float, default=30.0, help="seconds measured after the backfill"
    )
    arguments = parser.parse_args()
    if arguments.source_rows is not None:
        lost = real_database(
            arguments.source_rows,
            arguments.background_tps,
            rate=arguments.rate,
            after_backfill=arguments.after_backfill,
        )
        return 0 if lost == 0 else 1

    _, at_200, lost_latency = run(arguments.latency_changes, 200.0, seed=11)
    p50, p99 = at_200.median(), at_200.percentile(0.99)
    print(
        f"latency at 200 changes/s: {len(at_200.latencies_ms)} changes, p50={p50:.0f} ms, p99={p99:.0f} ms, lost={lost_latency}"
    )

    elapsed, _, lost_throughput = run(arguments.throughput_changes, 1_000_000.0, seed=12)
    sustained = arguments.throughput_changes / elapsed
    print(
        f"sustained: {arguments.throughput_changes} changes in {elapsed:.1f} s = {sustained:.0f} changes/s, lost={lost_throughput}"
    )

    lost = lost_latency + lost_throughput
    print(
        f"local_e2e: sustained={sustained:.0f}/s p50={p50:.0f}ms p99={p99:.0f}ms lost={lost} "
        f"(targets: >=1000/s, p50<=250ms, p99<=1000ms)"
    )
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
