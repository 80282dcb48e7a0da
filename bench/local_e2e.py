"""Local end to end: commit in PostgreSQL -> consumer function called (BENCHMARKS.md).

One run, one machine: the whole local data path (embedded PostgreSQL, DMS stand-in, moto,
the local Lambda service running the deployed discovery, glue, the sample config's
consumers and the bench's own, with the workload in a process of its own). Latency is
measured per change from the ``changed_at`` PostgreSQL writes into the row to the moment the
consumer function is called, at a fixed 200 changes/s; throughput is the changes per second
from the first commit until the consumer's rebuilt state equals the source (nothing lost).

    python bench/local_e2e.py [--latency-changes 3000] [--throughput-changes 6000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "functions")]

from config.loader import load_config  # noqa: E402
from config.model import ConsumerConfig  # noqa: E402
from local.demo import Rebuilt, Verification, Workload, WorkloadProcess, create_schema, verify  # noqa: E402
from local.dms import DmsStandIn  # noqa: E402
from local.runtime import LocalRuntime, local_bus  # noqa: E402


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-changes", type=int, default=3000)
    parser.add_argument("--throughput-changes", type=int, default=6000)
    arguments = parser.parse_args()

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
