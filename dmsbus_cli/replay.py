"""Replay: read a range of the S3 archive (tables, time window) and hand the events again
to a bus stream or straight to a consumer, in each row's order.

The archive (``functions/consumers/s3_archive``) keeps each table's events per UTC hour.
Replay reads one table-hour at a time and orders it by (reload version, DynamoDB stream
sequence): the order of each row's changes in its DynamoDB stream, whichever batch and
object they were archived in. A row's changes stay in order across hours because the
hour comes from the change's own time. Memory holds one table-hour.

Targets:
- ``KinesisTarget``: PutRecords to a stream with the events' own partition keys
  (aggregated, through the glue's publisher), so a stream keeps each row in order;
- ``ConsumerTarget``: a consumer's handler called with Kinesis-shaped batches, as Lambda
  would, stopping at a failure it still reports after retries.

Consumers dedup by event id (the pg_mirror by sequence per row), so replaying what they
already have changes nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from consumers.s3_archive.archive import SUFFIX, read_lines
from dmsbus.changes import UserRecord
from dmsbus.envelope import ChangeEvent, EnvelopeError
from dmsbus.names import version_rank
from dmsbus.partition import hash_key, partition_key
from dmsbus.publisher import KinesisPublisher
from dmsbus_cli.connect import add_arguments, connect, consumer_function
from local.functions import ACCOUNT, REGION, FunctionError
from local.streams import lambda_kinesis_record

logger = logging.getLogger("dmsbus.replay")

#: Events per PutRecords publish / per consumer invocation (a consumer's own batch size
#: applies when given).
CHUNK = 500


#: What a consumer sees as the records' source when replay calls it directly.
REPLAY_STREAM_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/dmsbus-replay"


class ReplayError(RuntimeError):
    """A replay that could not deliver something; the message names the event."""


@dataclass(frozen=True, slots=True)
class Archived:
    """One archived event: parsed, and its bytes exactly as archived."""

    event: ChangeEvent
    data: bytes

    @property
    def order(self) -> tuple[int, int, int]:
        source = self.event.source
        return (version_rank(source.version), int(source.sequence), self.event.ts_ms)


@dataclass(frozen=True)
class ReplayRange:
    """Which part of the archive: ``schema.table`` patterns (``*`` wildcards; None: all)
    and a half-open UTC time window ``[since, until)`` (None: unbounded)."""

    bus: str
    tables: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{moment.isoformat()} has no time zone; give UTC like 2026-11-22T10:00:00Z")
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since {self.since.isoformat()} is not before until {self.until.isoformat()}")
        for pattern in self.tables or ():
            if pattern.count(".") != 1:
                raise ValueError(f"table {pattern!r} must be 'schema.table' (wildcards allowed: 'public.*')")

    def wants_table(self, schema: str, table: str) -> bool:
        return self.tables is None or any(fnmatch.fnmatchcase(f"{schema}.{table}", p) for p in self.tables)

    def wants_hour(self, date: str, hour: str) -> bool:
        start = datetime.strptime(f"{date} {hour}", "%Y-%m-%d %H").replace(tzinfo=UTC)
        if self.until is not None and start >= self.until:
            return False
        return self.since is None or start + timedelta(hours=1) > self.since

    def wants_event(self, event: ChangeEvent) -> bool:
        moment = datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC)
        return (self.since is None or moment >= self.since) and (self.until is None or moment < self.until)


class ArchiveReader:
    """Reads the archive bucket's partitions (``{root}bus=/schema=/table=/date=/hour=/``)."""

    def __init__(self, s3: Any, bucket: str, *, root: str = "") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.root = root

    def table_hours(self, selection: ReplayRange) -> Iterator[tuple[str, str, list[str]]]:
        """(``schema.table``, ``date/hour``, object keys) per wanted table-hour, in order."""
        bus = f"{self.root}bus={selection.bus}/"
        for schema_prefix in self._folders(bus, "schema="):
            schema = _value(schema_prefix)
            for table_prefix in self._folders(schema_prefix, "table="):
                table = _value(table_prefix)
                if not selection.wants_table(schema, table):
                    continue
                for date_prefix in self._folders(table_prefix, "date="):
                    for hour_prefix in self._folders(date_prefix, "hour="):
                        if selection.wants_hour(_value(date_prefix), _value(hour_prefix)):
                            keys = [key for key in self._keys(hour_prefix) if key.endswith(SUFFIX)]
                            yield f"{schema}.{table}", f"{_value(date_prefix)}/{_value(hour_prefix)}", keys

    def events(self, selection: ReplayRange) -> Iterator[list[Archived]]:
        """Each wanted table-hour's events in row order (see the module's docstring)."""
        for table, hour, keys in self.table_hours(selection):
            batch: list[Archived] = []
            for key in keys:
                body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                for number, line in enumerate(read_lines(body), start=1):
                    try:
                        event = ChangeEvent.from_json(line)
                    except EnvelopeError as exc:
                        raise ReplayError(f"s3://{self.bucket}/{key} line {number}: {exc}") from None
                    if selection.wants_event(event):
                        batch.append(Archived(event, line))
            batch.sort(key=lambda item: item.order)
            logger.info("replaying %s %s: %d events from %d objects", table, hour, len(batch), len(keys))
            if batch:
                yield batch

    def _folders(self, prefix: str, name: str) -> list[str]:
        folders: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            folders.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
        return sorted(folder for folder in folders if folder[len(prefix) :].startswith(name))

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)


def _value(prefix: str) -> str:
    """``.../table=orders/`` -> ``orders``."""
    return prefix.rstrip("/").rsplit("/", 1)[-1].split("=", 1)[1]


class Target(Protocol):
    def deliver(self, events: Sequence[Archived]) -> None: ...


class KinesisTarget:
    """Republishes to a Kinesis stream, each event under its row's partition key."""

    def __init__(self, kinesis: Any, stream: str, *, publisher: KinesisPublisher | None = None) -> None:
        self.publisher = publisher or KinesisPublisher(kinesis, stream)

    def deliver(self, events: Sequence[Archived]) -> None:
        for start in range(0, len(events), CHUNK):
            chunk = events[start : start + CHUNK]
            records = []
            for origin, item in enumerate(chunk):
                source = item.event.source
                key = partition_key(source.schema, source.table, item.event.key)
                records.append(
                    UserRecord(data=item.data, partition_key=key, hash_key=hash_key(key), origin=origin)
                )
            result = self.publisher.publish(records)
            if result.failed_from is not None:
                raise ReplayError(
                    f"{self.publisher.stream_name} did not take event {chunk[result.failed_from].event.id}: "
                    + "; ".join(result.errors[-3:])
                )


Handler = Callable[[dict[str, Any]], Any]


class ConsumerTarget:
    """Calls a consumer's handler with Kinesis-shaped batches (plain records)."""

    def __init__(self, invoke: Handler, *, batch_size: int = CHUNK, attempts: int = 3) -> None:
        self.invoke = invoke
        self.batch_size = batch_size
        self.attempts = attempts
        self._sequence = 0

    def deliver(self, events: Sequence[Archived]) -> None:
        for start in range(0, len(events), self.batch_size):
            pending = list(self._records(events[start : start + self.batch_size]))
            for attempt in range(1, self.attempts + 1):
                response = self.invoke({"Records": [record for record, _ in pending]}) or {}
                failures = {item["itemIdentifier"] for item in response.get("batchItemFailures") or []}
                if not failures:
                    break
                first = next(
                    i
                    for i, (record, _) in enumerate(pending)
                    if record["kinesis"]["sequenceNumber"] in failures
                )
                pending = pending[first:]
                if attempt == self.attempts:
                    raise ReplayError(
                        f"the consumer failed on event {pending[0][1].event.id} {self.attempts} times"
                    )
                logger.warning("the consumer failed from event %s; retrying", pending[0][1].event.id)

    def _records(self, events: Iterable[Archived]) -> Iterator[tuple[dict[str, Any], Archived]]:
        for item in events:
            self._sequence += 1
            source = item.event.source
            yield (
                lambda_kinesis_record(
                    stream_arn=REPLAY_STREAM_ARN,
                    shard_id="shardId-000000000000",
                    partition_key=partition_key(source.schema, source.table, item.event.key),
                    sequence_number=f"{self._sequence:056d}",
                    data=item.data,
                    arrival=item.event.ts_ms / 1000,
                ),
                item,
            )


@dataclass
class ReplayReport:
    events: int = 0
    table_hours: int = 0


def replay(reader: ArchiveReader, selection: ReplayRange, target: Target) -> ReplayReport:
    report = ReplayReport()
    for batch in reader.events(selection):
        target.deliver(batch)
        report.events += len(batch)
        report.table_hours += 1
    return report


# -- the command line: dmsbus replay ----------------------------------------------------


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "replay",
        help="republish a range of the S3 archive to a stream or a consumer",
        description=(
            "Read the archive's events for some tables and a time window and hand them, in each "
            "row's order, to a Kinesis stream (--stream) or a consumer's handler (--consumer)."
        ),
    )
    add_arguments(command, repository)
    command.add_argument("--bucket", required=True, help="the archive bucket")
    command.add_argument("--prefix", default="", help="the archive's ARCHIVE_PREFIX, if it has one")
    command.add_argument("--tables", help="schema.table patterns, comma-separated (default: all)")
    command.add_argument("--since", type=_moment, help="UTC start, inclusive: 2026-11-22T10:00:00Z")
    command.add_argument("--until", type=_moment, help="UTC end, exclusive")
    target = command.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--stream", help="republish to this Kinesis stream (e.g. the bus's, or a replay stream)"
    )
    target.add_argument("--consumer", help="call this configured consumer's handler here (e.g. pg-mirror)")
    command.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for the consumer (e.g. DMSBUS_SECRET=<the secret of another mirror>); repeatable",
    )
    command.set_defaults(run=run)


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time like 2026-11-22T10:00:00Z") from None


def run(arguments: argparse.Namespace) -> int:
    """Run ``dmsbus replay``; returns the exit status."""
    bus = connect(arguments, "replay")
    if bus is None:
        return 2
    try:
        selection = ReplayRange(
            bus=bus.bus.name,
            tables=tuple(t.strip() for t in arguments.tables.split(",") if t.strip())
            if arguments.tables
            else None,
            since=arguments.since,
            until=arguments.until,
        )
        environment = {**bus.environment, **dict(_assignment(item) for item in arguments.env)}
    except ValueError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    reader = ArchiveReader(bus.client("s3"), arguments.bucket, root=arguments.prefix)
    target: Target
    if arguments.stream:
        target = KinesisTarget(bus.client("kinesis"), arguments.stream)
    else:
        consumers = {entry.name: entry for entry in bus.bus.consumers}
        if arguments.consumer not in consumers:
            print(
                f"replay: no consumer {arguments.consumer!r} in {arguments.config}/bus.yaml", file=sys.stderr
            )
            return 2
        if bus.endpoint_url:
            environment.setdefault("AWS_ENDPOINT_URL", bus.endpoint_url)
        function = consumer_function(bus.bus, consumers[arguments.consumer], environment)
        target = ConsumerTarget(function.invoke, batch_size=consumers[arguments.consumer].batch_size)
    try:
        report = replay(reader, selection, target)
    except (ReplayError, FunctionError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    print(f"replay: {report.events} events from {report.table_hours} table-hours")
    return 0


def _assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise ValueError(f"--env {text!r} is not NAME=VALUE")
    return name, value
