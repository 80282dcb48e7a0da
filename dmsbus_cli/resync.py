"""``dmsbus resync TABLE [--consumer NAME]``: publish a table's rows again, as ``r`` events,
to every consumer or to one: a consumer that joined late, or one that lost its state.

Like Debezium's signal-based snapshots, the resync goes through the data path rather than
around it: it sets a marker attribute (``dmsbus_resync``, the run and the consumer) on each
item of the table's current DynamoDB table, so that the item's stream carries the row, and
the glue publishes it as an ``r`` event (``source.snapshot``, ``source.resync_for``) in the
row's own stream order. A row's resync read can therefore never overtake, or be overtaken
by, a change of that row. The glue strips the marker from every image; a consumer drops
reads meant for another.

The scan reads keys only and marks each row once (a row already carrying this run's marker
is skipped), ``--rate`` rows a second at most. Its position is saved after every page in
the state folder, so an interrupted resync goes on where it stopped (``--restart`` starts
over with a new run). A row deleted meanwhile is skipped.

Rows stale after an ``ADD COLUMN ... DEFAULT`` are stale in DynamoDB too (no change carried
the new values): reload the table in DMS first (a version bump, or ``aws dms
reload-tables``); the reload's writes reach every consumer by themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from config.functions import consumer_name
from config.mappings import render_table_mappings
from config.model import SourceConfig
from dmsbus.changes import resync_marker
from dmsbus.consumer import Selection
from dmsbus.envelope import RESYNC_ATTRIBUTE
from dmsbus.table_mappings import resolve
from dmsbus_cli.connect import add_arguments, connect

#: Keys read per Scan page (each page's position is saved).
PAGE = 500


class ResyncError(RuntimeError):
    """A resync that cannot go on; the message says why."""


@dataclass
class Progress:
    marked: int = 0
    skipped: int = 0
    pages: int = 0


@dataclass
class Resync:
    """Marks every item of ``table`` with ``marker``, resumably (``state``)."""

    dynamodb: Any
    table: str
    marker: str
    state: Path
    rate: float = 500.0
    say: Callable[[str], None] = print
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def run(self, cursor: dict[str, Any] | None = None) -> Progress:
        description = self.dynamodb.describe_table(TableName=self.table)["Table"]
        keys = [element["AttributeName"] for element in description["KeySchema"]]
        if not (description.get("StreamSpecification") or {}).get("StreamEnabled"):
            raise ResyncError(f"{self.table} has no stream yet: discovery has not taken it up")
        total = int(description.get("ItemCount", 0))
        self._save(cursor, done=False)  # the run's marker, before any row carries it
        names = {f"#k{index}": key for index, key in enumerate(keys)} | {"#m": RESYNC_ATTRIBUTE}
        progress, started = Progress(), self.clock()
        while True:
            page = self.dynamodb.scan(
                TableName=self.table,
                ProjectionExpression=", ".join(f"#k{index}" for index in range(len(keys))),
                ExpressionAttributeNames={name: value for name, value in names.items() if name != "#m"},
                Limit=PAGE,
                **({"ExclusiveStartKey": cursor} if cursor else {}),
            )
            for item in page.get("Items", []):
                self._mark(item, names, progress)
                self._pace(progress, started)
            progress.pages += 1
            cursor = page.get("LastEvaluatedKey")
            self._save(cursor, done=cursor is None)
            rate = progress.marked / max(self.clock() - started, 1e-3)
            self.say(
                f"resync {self.table}: {progress.marked} rows marked, {progress.skipped} skipped "
                f"({rate:.0f}/s; the table held about {total})"
            )
            if not cursor:
                return progress

    def _mark(self, key: dict[str, Any], names: dict[str, str], progress: Progress) -> None:
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET #m = :m",
                # The row still exists (no resurrection of a deleted row), and this run has
                # not marked it yet (a resumed page marks nothing twice).
                ConditionExpression="attribute_exists(#k0) AND (attribute_not_exists(#m) OR #m <> :m)",
                ExpressionAttributeNames={"#k0": names["#k0"], "#m": RESYNC_ATTRIBUTE},
                ExpressionAttributeValues={":m": {"S": self.marker}},
            )
            progress.marked += 1
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            progress.skipped += 1

    def _pace(self, progress: Progress, started: float) -> None:
        ahead = progress.marked / self.rate - (self.clock() - started)
        if ahead > 0:
            self.sleep(ahead)

    def _save(self, cursor: dict[str, Any] | None, *, done: bool) -> None:
        """The run and its position, replaced whole (never half written)."""
        self.state.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state.with_name(self.state.name + ".partial")
        partial.write_text(
            json.dumps({"table": self.table, "marker": self.marker, "cursor": cursor, "done": done}),
            encoding="utf-8",
        )
        os.replace(partial, self.state)


def saved_run(state: Path) -> dict[str, Any]:
    """What an earlier run of this resync saved, or nothing; ResyncError naming the file."""
    if not state.is_file():
        return {}
    try:
        saved = json.loads(state.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ResyncError(
            f"{state} is not a resync's saved position ({exc}): delete it, or pass --restart"
        ) from exc
    if not isinstance(saved, dict) or not isinstance(saved.get("marker"), str):
        raise ResyncError(f"{state} is not a resync's saved position: delete it, or pass --restart")
    return saved


def target_table(bus_name: str, source: SourceConfig, qualified: str) -> str:
    """The DynamoDB table DMS writes ``schema.table`` of ``source`` to, per the config."""
    schema, dot, table = qualified.partition(".")
    if not dot or "." in table:
        raise ResyncError(f"{qualified!r} is not schema.table")
    target = resolve(render_table_mappings(bus_name, source), schema, table)
    if target is None:
        raise ResyncError(f"{qualified} is not selected by source {source.name}")
    return target.name


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "resync",
        help="publish a table's rows again as r events, to every consumer or one",
        description=__doc__.split("\n\n")[1],
    )
    add_arguments(command, repository)
    command.add_argument("table", metavar="TABLE", help="schema.table")
    command.add_argument("--consumer", help="only this consumer (its name in bus.yaml)")
    command.add_argument("--source", help="source name in config/sources (default: the first)")
    command.add_argument("--state", type=Path, default=Path(".dmsbus"), help="where progress is kept")
    command.add_argument("--rate", type=float, default=500.0, help="rows a second at most (default 500)")
    command.add_argument("--restart", action="store_true", help="start over with a new run")
    command.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    bus = connect(arguments, "resync")
    if bus is None:
        return 2
    config = bus.config
    sources = {source.name: source for source in config.sources}
    if not sources:
        print(f"resync: {arguments.config}/sources has no source", file=sys.stderr)
        return 2
    source = sources.get(arguments.source) if arguments.source else config.sources[0]
    if source is None:
        print(f"resync: --source {arguments.source!r}: not one of {', '.join(sources)}", file=sys.stderr)
        return 2
    function = None
    if arguments.consumer:
        consumers = {entry.name: entry for entry in config.bus.consumers}
        if arguments.consumer not in consumers:
            print(
                f"resync: --consumer {arguments.consumer!r}: not one of {', '.join(consumers)}",
                file=sys.stderr,
            )
            return 2
        entry = consumers[arguments.consumer]
        wants = Selection.of(entry.tables, entry.ops)
        if (wants.ops is not None and "r" not in wants.ops) or (
            wants.tables is not None and not any(fnmatchcase(arguments.table, p) for p in wants.tables)
        ):
            print(
                f"resync: consumer {arguments.consumer} does not take r events of {arguments.table} "
                f"(its bus.yaml entry: tables {entry.tables}, ops {entry.ops})",
                file=sys.stderr,
            )
            return 2
        function = consumer_name(config.bus.name, entry)
    if arguments.rate <= 0:
        print("resync: --rate must be above 0", file=sys.stderr)
        return 2
    try:
        table = target_table(config.bus.name, source, arguments.table)
    except ResyncError as exc:
        print(f"resync: {exc}", file=sys.stderr)
        return 2
    state = arguments.state / f"resync-{table}-{function or 'all'}.json"
    try:
        saved = {} if arguments.restart else saved_run(state)
    except ResyncError as exc:
        print(f"resync: {exc}", file=sys.stderr)
        return 2
    if saved.get("done"):
        saved = {}
    marker = saved.get("marker") or resync_marker(uuid.uuid4().hex[:12], function)
    if saved:
        print(f"resync: resuming {table} where it stopped (run {marker})")
    resync = Resync(bus.client("dynamodb"), table, marker, state, rate=arguments.rate)
    try:
        progress = resync.run(saved.get("cursor"))
    except (ResyncError, ClientError) as exc:
        print(f"resync: {table}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"resync: stopped; run it again to go on from {state}", file=sys.stderr)
        return 130
    who = f"consumer {arguments.consumer}" if arguments.consumer else "every consumer"
    print(f"resync: {progress.marked} rows of {arguments.table} ({table}) go to {who} in stream order")
    return 0
