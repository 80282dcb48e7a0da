"""``python -m local demo``: the whole data path on this machine (``make demo``).

Starts PostgreSQL (or uses ``DMSBUS_SOURCE_URL``), moto, the DMS stand-in and the local
Lambda service; creates the sample schema; runs the workload with a table added half way;
prints progress every second; then checks that the state rebuilt from the events equals
the source and prints, last:

    demo: <N> changes, <M> tables, 0 lost, p50=<ms> ms, p99=<ms> ms

Exit status 1 when anything is lost, 130 on Ctrl-C; everything started is stopped either way.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from config.functions import glue_name
from config.loader import ConfigError, load_config
from config.model import BusConfig, Config, ConsumerConfig, SourceConfig
from local.demo import (
    BackgroundCheck,
    Rebuilt,
    Verification,
    Workload,
    WorkloadProcess,
    create_schema,
    mirror_schema_template,
    verify,
    verify_mirror,
)
from local.lambda_service import LocalLambdaService
from local.runtime import LocalRuntime, StandInRunner, local_bus

REPOSITORY = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """``python -m local demo``: kept for existing scripts; ``dmsbus demo`` is the same."""
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_demo_command(commands, REPOSITORY)
    arguments = parser.parse_args(argv)
    return run_command(arguments)


def run_command(arguments: argparse.Namespace) -> int:
    """Run a parsed ``demo`` command; returns the exit status."""
    logging.basicConfig(
        level=logging.INFO if getattr(arguments, "verbose", False) else logging.WARNING,
        format="%(name)s: %(message)s",
    )
    return demo_command(arguments)


def add_demo_command(commands: Any, repository: Path) -> None:
    """The ``demo`` command's arguments."""
    demo = commands.add_parser(
        "demo",
        help="run the whole data path on this machine and verify it",
        description=__doc__.split("\n\n")[1],
    )
    demo.add_argument(
        "--config", type=Path, default=repository / "config", help="config folder (default: config/)"
    )
    demo.add_argument("--source", help="source name in config/sources (default: the first)")
    demo.add_argument("--rate", type=float, default=200.0, help="workload changes per second (default 200)")
    demo.add_argument("--changes", type=int, default=3000, help="workload changes in all (default 3000)")
    demo.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the consumers to catch up"
    )
    demo.add_argument("--verbose", action="store_true", help="show the functions' logs")


def demo_command(arguments: argparse.Namespace) -> int:
    chosen = config_and_source(arguments.config, arguments.source, "demo")
    if chosen is None:
        return 2
    config, source = chosen
    return run_demo(local_bus(config.bus), source, arguments)


def config_and_source(folder: Path, name: str | None, command: str) -> tuple[Config, SourceConfig] | None:
    """The config in ``folder`` and its source ``name`` (default: the first); None once the
    problem is said on stderr."""
    try:
        config = load_config(folder)
    except ConfigError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None
    sources = {source.name: source for source in config.sources}
    if not sources or (name and name not in sources):
        print(f"{command}: no source {name or ''} in {folder}/sources", file=sys.stderr)
        return None
    return config, sources[name] if name else config.sources[0]


def run_demo(bus: BusConfig, source: SourceConfig, arguments: argparse.Namespace) -> int:
    state = Path(tempfile.mkdtemp(prefix="dmsbus-demo-"))
    runtime = LocalRuntime.from_environment(bus, source, state)
    rebuilt = Rebuilt()
    workload: WorkloadProcess | None = None
    started = time.monotonic()
    try:
        url, stand_in, service = start_demo(runtime, rebuilt, started)
        show_full_load(started, stand_in)
        # The check reads every source row: in a thread, so the status line goes on.
        checker = BackgroundCheck(lambda: check(runtime, rebuilt), lambda: rebuilt.events)
        workload = WorkloadProcess(Workload(url, rate=arguments.rate))
        workload.start(changes=arguments.changes, late_table_at=arguments.changes // 2)
        last, last_at = 0, time.monotonic()
        deadline = None
        result: Verification | None = None
        mirror: Verification | None = None
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            done = not workload.is_alive()
            consumed = rebuilt.events
            glue = glue_name(bus)
            say(
                started,
                f"committed {workload.committed:>6} | dms {stand_in.changes_applied:>6} "
                f"| glue {service.handled(glue):>6} | consumer {consumed:>6} "
                f"({(consumed - last) / (now - last_at):6.0f}/s) | lag {service.lag_seconds(glue) * 1000:5.0f} ms "
                f"| tables {len(rebuilt.tables)}{full_load(stand_in)}{table_errors(stand_in)}",
            )
            last, last_at = consumed, now
            if stand_in.errors:
                print(f"demo: the DMS stand-in stopped: {stand_in.errors[-1]}", file=sys.stderr)
                break
            if not done:
                continue
            if workload.failed:
                print("demo: the workload failed (its traceback is above)", file=sys.stderr)
                return 1
            deadline = deadline or now + arguments.timeout
            checked = checker.poll()
            if checked is not None:
                result, mirror = checked
                if result.lost == 0 and (mirror is None or mirror.lost == 0):
                    break
            if now > deadline and result is not None:
                break
        if result is None:
            return 1
        lost = report(started, result, mirror, runtime.mirror_url, stand_in)
        print(
            f"demo: {workload.committed} changes, {result.tables} tables, {lost} lost, "
            f"p50={rebuilt.median():.0f} ms, p99={rebuilt.percentile(0.99):.0f} ms",
            file=TERMINAL,
            flush=True,
        )
        return 0 if lost == 0 else 1
    except KeyboardInterrupt:
        print("demo: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        if workload is not None:
            workload.stop()
        runtime.stop()


def start_demo(
    runtime: LocalRuntime, rebuilt: Rebuilt, started: float
) -> tuple[str, StandInRunner, LocalLambdaService]:
    """The source with the sample schema, moto, the stand-in and the Lambda service with the
    demo's verifying consumer; returns the source's URL, the stand-in and the service."""
    say(started, "starting PostgreSQL, moto, the DMS stand-in and the local Lambda service")
    url = runtime.start_database()
    create_schema(url)
    runtime.start_aws()
    assert runtime.local_bus is not None
    runtime.local_bus.add_consumer(
        ConsumerConfig(name="demo-verifier", code="local"), handler=rebuilt.handler()
    )
    stand_in = runtime.start_dms()
    service = runtime.start_lambda()
    say(
        started,
        f"source {url.rsplit('@', 1)[-1]}; bus {runtime.bus.name}; moto {runtime.aws.endpoint_url}\n"
        f"function logs: {runtime.state_dir / 'logs'}",
    )
    return url, stand_in, service


def show_full_load(started: float, stand_in: StandInRunner) -> None:
    """A line a second until the full load (in the stand-in's own process) is done."""
    while stand_in.loading:
        time.sleep(1.0)
        say(started, f"dms full load {stand_in.rows_loaded} rows{table_errors(stand_in)}")


def full_load(stand_in: StandInRunner) -> str:
    """The full load's progress while it runs (CDC starts after it, in the task's process)."""
    return f" | full load {stand_in.rows_loaded} rows" if stand_in.loading else ""


def table_errors(stand_in: StandInRunner) -> str:
    """DMS's table errors, as its task would show them: suspended tables and rows logged to
    ``awsdms_apply_exceptions`` (neither replicated; never a stall of the other tables)."""
    suspended, exceptions = stand_in.suspended, stand_in.exceptions
    if not suspended and not exceptions:
        return ""
    return f" | dms: {len(suspended)} suspended, {exceptions} changes to awsdms_apply_exceptions"


def report_table_errors(started: float, stand_in: StandInRunner) -> None:
    for table, why in stand_in.suspended.items():
        say(started, f"dms suspended {table}: {why}")
    if stand_in.exceptions:
        say(
            started,
            f"dms could not write {stand_in.exceptions} changes: they are in moto's awsdms_apply_exceptions table",
        )


def check(runtime: LocalRuntime, rebuilt: Rebuilt) -> tuple[Verification, Verification | None]:
    """The rebuilt state and, when the bus has a pg_mirror consumer, its mirror, against the source."""
    assert runtime.stand_in is not None
    numbers = runtime.bus.glue.numbers
    result = verify(runtime.stand_in.dms, rebuilt, numbers=numbers, schemas=runtime.schema_store())
    template = mirror_schema_template(runtime.bus)
    if template is None:
        return result, None
    return result, verify_mirror(
        runtime.stand_in.dms, runtime.mirror_url, numbers=numbers, schema_template=template
    )


def report(
    started: float,
    result: Verification,
    mirror: Verification | None,
    mirror_url: str,
    stand_in: StandInRunner,
) -> int:
    """Print DMS's table errors and what differs; returns the rows lost (rebuilt state and
    mirror together)."""
    report_table_errors(started, stand_in)
    for line in result.describe():
        print(f"demo: {line}", file=sys.stderr)
    if mirror is None:
        return result.lost
    for line in mirror.describe():
        print(f"demo: {line}", file=sys.stderr)
    verdict = "equal to the source" if mirror.lost == 0 else f"{mirror.lost} differ from the source"
    where = mirror_url.rsplit("@", 1)[-1]
    say(started, f"mirror ({where}): {mirror.rows} rows in {mirror.tables} tables, {verdict}")
    return result.lost + mirror.lost


#: Functions' stdout goes to their log files while they run; the demo's lines do not.
TERMINAL = sys.stdout


def say(started: float, message: str) -> None:
    """Each line of ``message``, stamped with the seconds since ``started``."""
    stamp = f"[{time.monotonic() - started:6.1f}s]"
    print("\n".join(f"{stamp} {line}" for line in message.splitlines()), file=TERMINAL, flush=True)


if __name__ == "__main__":
    sys.exit(main())
