"""``dmsbus up [--config DIR] [--source NAME] [--state DIR]``: your bus on this machine,
against your database, until Ctrl-C.

The source is ``DMSBUS_SOURCE_URL`` (PostgreSQL >= 12, ``wal_level=logical``); without it an
embedded PostgreSQL with the sample schema, kept in the state folder. ``up`` first runs
``dmsbus doctor``'s checks on it and says what would fail in AWS. The DMS stand-in
replicates the source's tables that the config selects, and every consumer of
``bus.yaml`` runs on the local Lambda service. A line a second says what moved; an edit of
a consumer's code takes effect at its next batch.

State (``--state``, default ``.dmsbus/``): the functions' logs, the embedded database and
its replication slot. moto's state lives in memory, so a restart starts AWS afresh: DMS
resumes from its slot, and consumers get the changes made since it stopped, on a new
stream (their own stores, such as the mirror, keep what they had). Ctrl-C drains first: the
stand-in stops, then the bus runs until every change it took has reached every consumer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from config.functions import consumer_name, discovery_name, glue_name
from config.model import BusConfig, SourceConfig
from dmsbus.metrics import NAMESPACE, SERVICE_DIMENSION, UNTYPED_EVENTS
from dmsbus_cli.connect import UP_FILE
from dmsbus_cli.doctor import startup_warnings
from local.__main__ import config_and_source, full_load, table_errors
from local.demo import create_schema
from local.dms import DmsStandIn
from local.lambda_service import LocalLambdaService
from local.postgres import SOURCE_URL_VARIABLE
from local.runtime import LocalRuntime, local_bus

#: How long Ctrl-C waits for the bus to deliver what DMS has applied, at most.
DRAIN_SECONDS = 30.0


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "up", help="run your bus on this machine against your database", description=__doc__.split("\n\n")[1]
    )
    command.add_argument("--config", type=Path, default=repository / "config", help="config folder")
    command.add_argument("--source", help="source name in config/sources (default: the first)")
    command.add_argument(
        "--state", type=Path, default=Path(".dmsbus"), help="state folder (default .dmsbus/)"
    )
    command.add_argument("--verbose", action="store_true", help="show the functions' logs here")
    command.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)  # tests: stop after
    command.set_defaults(run=run)


@dataclass
class SourceActivity:
    """Row changes the source's statistics count on the selected tables since ``start``."""

    url: str
    tables: list[tuple[str, str]]
    baseline: int = 0
    _started: bool = field(default=False, repr=False)

    def changes(self) -> int:
        if not self.tables:
            return 0
        query = sql.SQL(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables "
            "WHERE (schemaname, relname) IN ({})"
        ).format(
            sql.SQL(", ").join(
                sql.SQL("({}, {})").format(sql.Literal(s), sql.Literal(t)) for s, t in self.tables
            )
        )
        with psycopg.connect(self.url, autocommit=True) as connection:
            row = connection.execute(query).fetchone()
        total = int(row[0]) if row else 0
        if not self._started:
            self.baseline, self._started = total, True
        return total - self.baseline


def run(arguments: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    chosen = config_and_source(arguments.config, arguments.source, "up")
    if chosen is None:
        return 2
    config, source = chosen
    state: Path = arguments.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    return serve(local_bus(config.bus), source, state, verbose=arguments.verbose, seconds=arguments.seconds)


def serve(bus: BusConfig, source: SourceConfig, state: Path, *, verbose: bool, seconds: float | None) -> int:
    runtime = LocalRuntime.from_environment(bus, source, state, keep_database=True, function_logs=not verbose)
    started = time.monotonic()
    stopping: list[int] = []
    #: Ctrl-C while stopping: the drain stops waiting, and the stop itself goes on.
    hurry: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    def again(signum: int, frame: FrameType | None) -> None:
        hurry.append(signum)

    # Restored at the end, whatever they were (a caller may have its own).
    originals = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, stop)
    try:
        url = _start_database_and_aws(runtime, state)
        # What would fail in AWS, said before the stand-in starts (it runs regardless)
        warnings = startup_warnings(url, source)
        if warnings:
            _say(started, warnings)
        resumed = _targets_as_they_were(runtime, source)
        service = runtime.start_lambda()
        _wait_attached(service, resumed)
        stand_in = runtime.start_dms()
        _say(started, _startup(runtime, url, state, verbose))
        with stand_in.dms.connect(autocommit=True) as connection:
            activity = SourceActivity(url, stand_in.dms.source_tables(connection))
        consumers = [consumer_name(bus.name, entry) for entry in bus.consumers]
        glue = glue_name(bus)
        activity.changes()
        while not stopping and (seconds is None or time.monotonic() - started < seconds):
            time.sleep(1.0)
            _say(started, _status(runtime, activity, glue, consumers))
            if stand_in.errors:
                print(f"up: the DMS stand-in stopped: {stand_in.errors[-1]}", file=sys.stderr)
                return 1
        _hurried_by_signals(again)
        _drain(runtime, started, glue, consumers, hurry=hurry)
        return 0
    except KeyboardInterrupt:
        _hurried_by_signals(again)
        _say(started, "stopping (Ctrl-C again: without waiting for the bus to deliver)")
        consumers = [consumer_name(bus.name, e) for e in bus.consumers]
        _drain(runtime, started, glue_name(bus), consumers, hurry=hurry)
        return 130
    finally:
        # Whatever comes now, everything is stopped: moto and PostgreSQL run in sessions of
        # their own, so nothing else would stop them. Ctrl-C or SIGTERM meanwhile only hurry.
        _hurried_by_signals(again)
        try:
            (state / UP_FILE).unlink(missing_ok=True)
            runtime.stop()
        finally:
            for number, handler in originals.items():
                signal.signal(number, handler)


def _start_database_and_aws(runtime: LocalRuntime, state: Path) -> str:
    """The source (the sample schema in the embedded one) and moto, noted in ``up.json``
    for the other commands; returns the source's URL."""
    url = runtime.start_database()
    if SOURCE_URL_VARIABLE not in os.environ:
        create_schema(url)
    # AWS starts afresh (moto keeps its state in memory): old checkpoints name old mappings.
    (state / "checkpoints.json").unlink(missing_ok=True)
    runtime.start_aws()
    assert runtime.local_bus is not None
    for function in runtime.local_bus.functions.values():
        function.watch_code = True
    noted = {"source_url": url, "mirror_url": runtime.mirror_url, "aws_endpoint": runtime.aws.endpoint_url}
    (state / UP_FILE).write_text(json.dumps(noted), encoding="utf-8")
    return url


def _hurried_by_signals(again: Any) -> None:
    """From now on Ctrl-C and SIGTERM call ``again`` (the stop goes on, without waiting)."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, again)


def _targets_as_they_were(runtime: LocalRuntime, source: SourceConfig) -> list[str]:
    """On a restart, the DynamoDB tables an earlier run had, before DMS resumes.

    In AWS they would still be there, streamed and attached. moto's are gone, and DMS would
    create them again only as it writes: a resumed change would land before discovery turns
    the stream on, reach consumers only as a backfill read, and lose to the newer-looking
    positions consumers such as pg_mirror kept from the first run. So the tables come
    first, discovery attaches them, then DMS resumes."""
    probe = DmsStandIn(
        runtime.database_url, runtime.bus.name, source, runtime.aws.client("dynamodb", validate=False)
    )
    return probe.create_targets() if probe.has_slot() else []


def _wait_attached(service: LocalLambdaService, tables: list[str], timeout: float = 60.0) -> None:
    """Until discovery has attached the glue to each table's stream."""
    deadline = time.monotonic() + timeout
    while tables and time.monotonic() < deadline:
        attached = {
            m["EventSourceArn"].split(":table/")[1].split("/stream/")[0]
            for m in service.mappings()
            if ":table/" in m["EventSourceArn"]
        }
        if set(tables) <= attached:
            return
        time.sleep(0.2)
    if tables:
        raise RuntimeError(f"discovery did not attach {sorted(tables)} within {timeout:.0f} s")


def _startup(runtime: LocalRuntime, url: str, state: Path, verbose: bool) -> str:
    endpoint = runtime.aws.endpoint_url
    where = "your database" if SOURCE_URL_VARIABLE in os.environ else "the embedded PostgreSQL, sample schema"
    logs = "here (--verbose)" if verbose else str(state / "logs")
    return (
        f"source {url.rsplit('@', 1)[-1]} ({where}); mirror {runtime.mirror_url.rsplit('@', 1)[-1]}\n"
        f"moto {endpoint}: point boto3 or the AWS CLI at it with\n"
        f"  export AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
        f"AWS_DEFAULT_REGION=us-east-1\n"
        f"functions' logs: {logs}; state: {state}; Ctrl-C stops"
    )


def _status(runtime: LocalRuntime, activity: SourceActivity, glue: str, consumers: list[str]) -> str:
    stand_in, service = runtime.stand_in, runtime.service
    assert stand_in is not None and service is not None
    lag = max([service.lag_seconds(glue), *(service.lag_seconds(name) for name in consumers)])
    handled = " ".join(f"| {name} {service.handled(name)}" for name in consumers)
    tables = len([m for m in service.mappings() if ":dynamodb:" in m.get("EventSourceArn", "")])
    return (
        f"source {activity.changes():>6} | dms {stand_in.changes_applied:>6} | glue {service.handled(glue):>6} "
        f"{handled} | lag {lag * 1000:5.0f} ms | tables {tables}{_untyped(runtime)}"
        f"{full_load(stand_in)}{table_errors(stand_in)}"
    )


def _untyped(runtime: LocalRuntime) -> str:
    """On a typed bus, the events the glue and discovery put on the stream untyped since
    start: their ``UntypedEvents`` totals (the service-only dimension set, the alarm's)."""
    if not runtime.bus.glue.typed:
        return ""
    metrics = runtime.metrics
    count = 0.0
    if metrics is not None:
        for service in (glue_name(runtime.bus), discovery_name(runtime.bus)):
            count += metrics.total(NAMESPACE, UNTYPED_EVENTS, {SERVICE_DIMENSION: service})
    return f" | untyped {count:.0f}"


def _drain(
    runtime: LocalRuntime, started: float, glue: str, consumers: list[str], *, hurry: list[int]
) -> None:
    """Stop DMS, then let the bus deliver what DMS applied before it, for a while at most
    (until ``hurry`` holds something: a Ctrl-C while stopping)."""
    service = runtime.service
    runtime.stop_dms()
    if service is None:
        return
    _say(started, "stopping: DMS stopped; delivering what it applied to every consumer")
    deadline = time.monotonic() + DRAIN_SECONDS
    seen: list[tuple[int, ...]] = []
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if hurry:
            _say(started, "stopping: not waiting for the bus any longer")
            return
        seen.append(tuple(service.handled(name) for name in (glue, *consumers)))
        # Nothing moved for two seconds: the glue's and consumers' pollers hold nothing more.
        if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            return
    _say(started, f"stopping: the bus had not caught up after {DRAIN_SECONDS:.0f} s")


def _say(started: float, message: str) -> None:
    stamp = f"[{time.monotonic() - started:6.1f}s]"
    print("\n".join(f"{stamp} {line}" for line in message.splitlines()), flush=True)
