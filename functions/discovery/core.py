"""Discovery: find the tables DMS creates for this bus and put them on the bus.

For each table whose name parses under the bus's prefix (``awsdms_*`` control tables and
foreign tables are never touched, not even described):

1. wait until ACTIVE, within the invocation's time (else the next run finishes it);
2. switch billing to PAY_PER_REQUEST unless configured to keep it provisioned (one change
   per UpdateTable call). DynamoDB allows four switches to on-demand per 24 hours: dmsbus
   switches a table once, and never again once it has been on-demand (a person who set it
   back to provisioned meant it); a refusal (LimitExceeded) defers it to the next run;
3. enable the stream with NEW_AND_OLD_IMAGES (another view type is an error, not replaced);
4. backfill, **before** the mapping exists: scan (consistent reads) and publish every item
   as an ``r`` event, then tag the table ``dmsbus:backfilled = <stream label>``;
5. create the glue's event source mapping at TRIM_HORIZON, replacing mappings of an older
   stream of the same table name (a recreated table).

Why the backfill comes before the mapping: the stream holds every change made since it
was enabled, and the glue starts reading it from its horizon only after the ``r`` events
are on Kinesis. A row's later changes therefore reach its shard after its ``r`` event (same
partition key as the glue's, so same shard), and a consumer never ends on a scanned image
older than the row's last change. The converse would break it: an ``r`` event published
after the glue put a newer change of its row would leave consumers on the older image. So
a table whose mapping exists is never backfilled, and a backfill stops as soon as it sees
a mapping another run created meanwhile.

Tables advance independently, in passes: a table that must wait (CREATING, or UPDATING
after a change) leaves the others to go on, and is looked at again in the next pass (at
once after a change, else after a short pause) until the deadline leaves it ``pending``
for the next run. One CREATING table never holds up a sweep.

A backfill that runs out of time records where it stopped in a tag
(``dmsbus:backfill-cursor = <stream label> <items> <base64 key>``) and the next run goes on
from there, so a table too big for one invocation still finishes. Redone pages repeat the
same event ids (``{table}/r/{stream label}/{key}``), which consumers dedup.

Idempotent, and safe when two runs overlap (a CreateTable event and a sweep): a second run
finds everything done and changes nothing; a change another run is making is waited for,
a mapping another run created is taken as done.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from discovery.settings import GLUE_STARTING_POSITION, DiscoverySettings
from dmsbus.backfill import read_records
from dmsbus.changes import ChangeBuilder
from dmsbus.event_sources import mapping_request
from dmsbus.names import (
    DMS_EXCEPTIONS_TABLE,
    TableName,
    TableNameError,
    bus_table,
    table_from_stream_arn,
    version_rank,
)
from dmsbus.publisher import KinesisPublisher
from dmsbus.schema_events import AnnouncementError, SchemaAnnouncer
from dmsbus.schemas import qualified
from dmsbus.typed import SchemaRefresher, SchemaSource

logger = logging.getLogger("dmsbus.discovery")

BACKFILL_TAG = "dmsbus:backfilled"
CURSOR_TAG = "dmsbus:backfill-cursor"
VIEW_TYPE = "NEW_AND_OLD_IMAGES"
#: Pause between two passes over the tables that wait (CREATING, UPDATING).
POLL_SECONDS = 5.0


def _scheduled_time(event: Mapping[str, Any]) -> datetime | None:
    """When EventBridge scheduled this sweep (its ``time``), so that sweeps count back-to-back
    periods however long each takes; None for a sweep by hand."""
    try:
        return datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


#: GetMetricData takes at most 500 queries a call.
METRIC_QUERIES_PER_CALL = 500
#: How late a sweep counts DynamoDB's metrics, which CloudWatch receives a few minutes late.
METRIC_DELAY = timedelta(minutes=5)

#: DynamoDB's longest tag value.
MAX_TAG_VALUE = 256

Status = Literal["done", "pending", "gone", "error"]


@dataclass(slots=True)
class TableReport:
    """What discovery found and did for one table."""

    table: str
    #: ``done`` (streaming into the glue), ``pending`` (left to the next run), ``gone``
    #: (deleted, or never created) or ``error`` (``detail`` says why).
    status: Status = "pending"
    actions: list[str] = field(default_factory=list)
    backfilled: int = 0
    #: Backfill reads of a typed bus that went out untyped (the schema not read in time).
    untyped: int = 0
    billing_switched: bool = False
    stream_enabled: bool = False
    mapping_created: bool = False
    detail: str | None = None


@dataclass(slots=True)
class RunReport:
    """One run: a report per table of the bus, and how many other tables were skipped."""

    tables: list[TableReport] = field(default_factory=list)
    skipped: int = 0
    #: A sweep's count of the bus tables' read and write throttle events over its period
    #: (None: not counted: not a sweep, or no CloudWatch client).
    throttle_events: int | None = None
    #: What was done to DMS's ``awsdms_apply_exceptions`` table, when the run met it.
    control_table: str | None = None
    #: A typed bus's sweep: the schema-change events it put on every shard for versions the
    #: schema function stored and no row announced (None: not a sweep, or an untyped bus).
    schema_changes_announced: int | None = None
    #: Source tables whose latest version the sweep had no time left to look at.
    schema_tables_unchecked: int = 0

    @property
    def errors(self) -> list[TableReport]:
        return [table for table in self.tables if table.status == "error"]


class TableError(Exception):
    """A table discovery cannot put on the bus as it is (reported, never silently fixed)."""


class Pending(Exception):  # noqa: N818 - a state, not a failure
    """Not finished within this invocation; the next run goes on."""


class Gone(Exception):  # noqa: N818 - a state, not a failure
    """The table does not exist (any more)."""


@dataclass(slots=True)
class _Work:
    """A table in progress during one run."""

    table: TableName
    report: TableReport
    waiting_for: str = ""
    billing_deferred: bool = False
    #: Changed something in this pass (then the next pass comes without a pause).
    progressed: bool = False


def tables_in_event(event: Mapping[str, Any]) -> list[str] | None:
    """The table a CloudTrail CreateTable event names, or None for a sweep (schedule, ``{}``)."""
    detail = event.get("detail") or {}
    if event.get("detail-type") == "AWS API Call via CloudTrail" and detail.get("eventName") == "CreateTable":
        if detail.get("errorCode"):
            return []  # CloudTrail records refused calls too: nothing was created
        name = (detail.get("requestParameters") or {}).get("tableName") or (
            ((detail.get("responseElements") or {}).get("tableDescription") or {}).get("tableName")
        )
        return [name] if isinstance(name, str) and name else []
    return None


class Discovery:
    """Runs discovery with the clients it is given (boto3 in Lambda, moto in tests).
    ``clock`` and ``sleep`` work in seconds; deadlines are on ``clock``."""

    def __init__(
        self,
        *,
        settings: DiscoverySettings,
        dynamodb: Any,
        lambda_client: Any,
        publisher: KinesisPublisher,
        cloudwatch: Any = None,
        schemas: SchemaSource | None = None,
        refresher: SchemaRefresher | None = None,
        announcer: SchemaAnnouncer | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.settings = settings
        self.dynamodb = dynamodb
        self.lambda_client = lambda_client
        self.publisher = publisher
        self.cloudwatch = cloudwatch
        # ``schemas``: backfill reads are typed as the glue types the table's changes
        self.builder = ChangeBuilder(settings.bus, numbers=settings.numbers, schemas=schemas)
        #: Asked to read each table discovery finds, before the glue meets its changes.
        self.refresher = refresher
        #: Puts a schema version's change on every shard before the first read typed with it.
        self.announcer = announcer
        self.clock = clock
        self.sleep = sleep
        self.poll_seconds = poll_seconds
        self._mappings: list[dict[str, Any]] | None = None

    def run(self, event: Mapping[str, Any], *, deadline: float) -> RunReport:
        """Put every table the event names (or, for a sweep, every table of the bus) on the bus."""
        named = tables_in_event(event)
        run = RunReport()
        work: list[_Work] = []
        for name in self._all_tables() if named is None else named:
            if name == DMS_EXCEPTIONS_TABLE:
                run.control_table = self._control_table(name)
                continue
            table = bus_table(name, self.settings.bus)
            if table is None:
                run.skipped += 1
                logger.debug("skipped %s: not a table of bus %s", name, self.settings.bus)
                continue
            report = TableReport(table.dynamodb_table)
            run.tables.append(report)
            work.append(_Work(table, report))
        listed = list(work)
        self._mappings = None  # listed at most once per run, when a mapping is to be created
        while work:
            for item in work:
                item.progressed = False
            waiting = [item for item in work if not self._step(item, deadline)]
            if not waiting:
                break
            # After a change, look again at once (it may be done already); else pause.
            pause = 0.0 if any(item.progressed for item in waiting) else self.poll_seconds
            if self.clock() + pause >= deadline:
                for item in waiting:
                    item.report.status = "pending"
                    item.report.detail = f"table {item.table} is {item.waiting_for}; the next run goes on"
                break
            if pause:
                self.sleep(pause)
            work = waiting
        if named is None and self.announcer is not None:
            self._announce_stored_versions(
                self.announcer, listed, run, deadline, start=_scheduled_time(event)
            )
        if named is None and self.cloudwatch is not None and self.settings.sweep_minutes:
            run.throttle_events = self._count_throttles(run, event, deadline)
        return run

    def _announce_stored_versions(
        self,
        announcer: SchemaAnnouncer,
        listed: list[_Work],
        run: RunReport,
        deadline: float,
        *,
        start: datetime | None = None,
    ) -> None:
        """Announce each source table's latest stored version that is not announced yet.

        Rows announce the version they are typed with, right before the first of them; but
        the schema function's sweep stores a version after a DDL that no row change may
        follow (a ``DROP COLUMN``, say), and nothing else would announce it. Discovery sweeps
        on the same schedule, so such a version is on every shard within one
        ``discovery.sweep_minutes`` (earlier unannounced versions with it, oldest first). A
        reloaded table's versions share one source table: the highest reload (``version_rank``)
        names the event. Cost: one consistent Query per source table per sweep (one read unit
        for a schema item up to 4 KB; 1,000 tables, the most a bus supports, are 1,000 units a
        sweep), plus the announcement's reads and puts for a version to announce. A table that
        fails is an error of the run and the next sweep tries it again; the others go on."""
        newest: dict[str, _Work] = {}
        for item in listed:
            if item.report.status == "gone":
                continue
            name = item.table
            key = qualified(name.source, name.schema, name.table)
            current = newest.get(key)
            if current is None or version_rank(name.version) > version_rank(current.table.version):
                newest[key] = item
        run.schema_changes_announced = 0
        ordered = sorted(newest.items())
        if ordered and start is not None:
            # Each sweep starts elsewhere (by its scheduled minute): one that runs out of time
            # leaves other tables to the next, never the same ones
            turn = int(start.timestamp()) // 60 % len(ordered)
            ordered = ordered[turn:] + ordered[:turn]
        for position, (key, item) in enumerate(ordered):
            if self.clock() >= deadline:
                run.schema_tables_unchecked = len(ordered) - position
                logger.warning(
                    "no time left to look for unannounced schema versions of %d tables; the next sweep does",
                    run.schema_tables_unchecked,
                )
                break
            report = item.report
            try:
                latest = announcer.store.latest_announced(key)
                if latest is None or latest[1]:
                    continue
                announced = announcer.announce({(item.table.dynamodb_table, latest[0])}, deadline=deadline)
            except (AnnouncementError, ClientError, BotoCoreError) as exc:
                problem = f"schema of {key} not announced ({exc}); the next sweep tries again"
                logger.error("table %s: %s", item.table, problem)
                report.status = "error"
                report.detail = f"{report.detail}; {problem}" if report.detail else problem
                continue
            if announced:
                run.schema_changes_announced += announced
                first = latest[0] - announced + 1  # the versions before it, oldest first
                versions = f"v{latest[0]}" if announced == 1 else f"v{first} to v{latest[0]}"
                report.actions.append(f"schema change {versions} announced on every shard")
        if run.schema_changes_announced:
            logger.info(
                "announced %d schema changes the schema function stored", run.schema_changes_announced
            )

    def _control_table(self, name: str) -> str:
        """DMS's exceptions table, created provisioned at 200/200 like DMS's targets (about
        $100 a month idle): switched to on-demand by the rules the bus tables follow, never
        streamed or attached (its items are DMS's errors, not changes)."""
        try:
            description = self.dynamodb.describe_table(TableName=name)["Table"]
        except ClientError as exc:
            return f"{name}: {exc}"
        why_not = self._billing_left(description)
        if why_not is not None:
            return f"{name}: {why_not}"
        if description.get("TableStatus") != "ACTIVE":
            return f"{name}: {description.get('TableStatus')}; the next run switches its billing"
        try:
            self.dynamodb.update_table(TableName=name, BillingMode="PAY_PER_REQUEST")
        except ClientError as exc:
            return f"{name}: billing switch deferred ({exc})"
        return f"{name}: billing -> PAY_PER_REQUEST"

    def _count_throttles(self, run: RunReport, event: Mapping[str, Any], deadline: float) -> int | None:
        """The sweep's throttle count, or None (logged) when CloudWatch cannot give it: a
        metric that feeds an alarm must not fail the sweep that put the tables on the bus."""
        if self.clock() >= deadline:
            logger.warning("no time left to count the bus tables' throttle events")
            return None
        try:
            return self.throttle_events([table.table for table in run.tables], now=_scheduled_time(event))
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not count the bus tables' throttle events: %s", exc)
            return None

    def throttle_events(self, tables: list[str], *, now: datetime | None = None) -> int:
        """The tables' ReadThrottleEvents and WriteThrottleEvents over one sweep period,
        summed (metrics-dimensions: both are per TableName). DMS creates the tables, so no
        alarm in the template can name them: the sweep counts them, and its metric is
        alarmed on. The period ends ``METRIC_DELAY`` before the current minute (DynamoDB's
        metrics arrive late), so sweeps on schedule count back-to-back periods."""
        minutes = self.settings.sweep_minutes or 0
        end = (now or datetime.now(UTC)).replace(second=0, microsecond=0) - METRIC_DELAY
        queries = [
            {
                "Id": f"m{index}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/DynamoDB",
                        "MetricName": metric,
                        "Dimensions": [{"Name": "TableName", "Value": table}],
                    },
                    "Period": 60,
                    "Stat": "Sum",
                },
            }
            for index, (table, metric) in enumerate(
                (table, metric)
                for table in tables
                for metric in ("ReadThrottleEvents", "WriteThrottleEvents")
            )
        ]
        total = 0.0
        for start in range(0, len(queries), METRIC_QUERIES_PER_CALL):
            token: str | None = None
            while True:
                page = self.cloudwatch.get_metric_data(
                    MetricDataQueries=queries[start : start + METRIC_QUERIES_PER_CALL],
                    StartTime=end - timedelta(minutes=minutes),
                    EndTime=end,
                    **({"NextToken": token} if token else {}),
                )
                total += sum(sum(result.get("Values", [])) for result in page.get("MetricDataResults", []))
                token = page.get("NextToken")
                if not token:
                    break
        return round(total)

    def _step(self, item: _Work, deadline: float) -> bool:
        """Advance one table as far as it goes without waiting; True once it is settled."""
        report = item.report
        try:
            if not self._advance(item, deadline):
                return False
            report.status = "done"
        except Pending as exc:
            report.status, report.detail = "pending", str(exc)
        except Gone as exc:
            report.status, report.detail = "gone", str(exc)
        except TableError as exc:
            report.status, report.detail = "error", str(exc)
        except (ClientError, BotoCoreError) as exc:
            report.status, report.detail = "error", f"table {item.table}: {exc}"
        except Exception as exc:
            # A bug must not keep the other tables off the bus: report it, with its traceback.
            logger.exception("discovery failed on table %s", item.table)
            report.status, report.detail = "error", f"table {item.table}: {type(exc).__name__}: {exc}"
        return True

    def _advance(self, item: _Work, deadline: float) -> bool:
        """One pass over one table: False when it must wait for DynamoDB, True when done."""
        name = item.table.dynamodb_table
        description = self._describe(name)
        status = description.get("TableStatus")
        if status != "ACTIVE":
            item.waiting_for = str(status)
            return False
        if self._switch_billing(item, description):
            return False
        stream = description.get("StreamSpecification") or {}
        if not stream.get("StreamEnabled"):
            self._enable_stream(item)
            return False
        if stream.get("StreamViewType") != VIEW_TYPE:
            raise TableError(
                f"table {name} streams {stream.get('StreamViewType')}, not {VIEW_TYPE}: the glue needs both "
                "images; disable its stream (or reload the table) and discovery will enable it"
            )
        stream_arn: str = description["LatestStreamArn"]
        attached = self._stream_mappings(stream_arn)
        if attached:
            self._keep_failures(item, attached)
            return True
        if self.refresher is not None and self.refresher.request(item.table, "table discovered"):
            item.report.actions.append("schema function asked for the table's schema")
        if self.settings.backfill and not self._backfill(item, description, stream_arn, deadline):
            return True  # another run attached the glue while this one scanned
        self._attach(item, stream_arn)
        return True

    def _describe(self, name: str) -> dict[str, Any]:
        try:
            description: dict[str, Any] = self.dynamodb.describe_table(TableName=name)["Table"]
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                raise Gone(f"table {name} does not exist") from None
            raise
        if description.get("TableStatus") == "DELETING":
            raise Gone(f"table {name} is being deleted")
        return description

    def _switch_billing(self, item: _Work, description: Mapping[str, Any]) -> bool:
        """Switch to on-demand when due; True when the table is now UPDATING."""
        if item.billing_deferred:
            return False
        why_not = self._billing_left(description)
        if why_not is not None:
            if why_not.startswith("left PROVISIONED"):
                item.report.detail = f"billing {why_not}"
            return False
        try:
            self.dynamodb.update_table(TableName=item.table.dynamodb_table, BillingMode="PAY_PER_REQUEST")
        except ClientError as exc:
            code = _error_code(exc)
            if code == "ResourceInUseException":  # another change (or run) is under way
                item.waiting_for = "being updated"
                return True
            if code != "LimitExceededException":
                raise
            item.billing_deferred = True
            item.report.actions.append(f"billing switch deferred to the next run (DynamoDB said: {exc})")
            return False
        item.report.billing_switched = item.progressed = True
        item.report.actions.append("billing -> PAY_PER_REQUEST")
        item.waiting_for = "UPDATING (billing mode)"
        return True

    def _billing_left(self, description: Mapping[str, Any]) -> str | None:
        """Why a table's billing stays as it is (None: switch it to on-demand): configured to
        keep it, not provisioned, or on-demand once and set back by someone who meant it."""
        mode = _billing_mode(description)
        if self.settings.keep_provisioned or mode != "PROVISIONED":
            return f"left {mode}"
        if "LastUpdateToPayPerRequestDateTime" in (description.get("BillingModeSummary") or {}):
            return "left PROVISIONED: it was on-demand once and someone set it back"
        return None

    def _enable_stream(self, item: _Work) -> None:
        try:
            self.dynamodb.update_table(
                TableName=item.table.dynamodb_table,
                StreamSpecification={"StreamEnabled": True, "StreamViewType": VIEW_TYPE},
            )
        except ClientError as exc:
            code = _error_code(exc)
            # Busy, or another run enabled the stream since the describe ("Table already has
            # an enabled stream" is a ValidationException): the next pass describes it again.
            if code not in ("ResourceInUseException", "LimitExceededException") and not (
                code == "ValidationException" and "already has an enabled stream" in str(exc)
            ):
                raise
            item.waiting_for = f"being updated ({code})"
            return
        item.report.stream_enabled = item.progressed = True
        item.report.actions.append("stream enabled (NEW_AND_OLD_IMAGES)")
        item.waiting_for = "UPDATING (stream)"

    def _backfill(
        self, item: _Work, description: Mapping[str, Any], stream_arn: str, deadline: float
    ) -> bool:
        """Publish the table's items as ``r`` events and tag it done. False when it stopped
        because another run attached the glue meanwhile (the rest is that run's)."""
        table, report = item.table, item.report
        table_arn: str = description["TableArn"]
        label = stream_arn.rsplit("/", 1)[-1]
        tags = self._tags(table_arn)
        if tags.get(BACKFILL_TAG) == label:
            return True
        cursor = read_cursor(tags.get(CURSOR_TAG), label)
        start, done = cursor if cursor else (None, 0)
        if cursor:
            report.actions.append(f"backfill resumed after {done} items")
        keys = [element["AttributeName"] for element in description["KeySchema"]]
        while True:
            if self.clock() >= deadline:
                self._save_cursor(table, table_arn, label, start, done)
                raise Pending(f"backfill of {table} stopped at {done} items (time); the next run goes on")
            page = self.dynamodb.scan(
                TableName=table.dynamodb_table,
                ConsistentRead=True,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            items = page.get("Items", [])
            self.builder.begin(deadline)
            try:
                records = read_records(
                    self.builder,
                    table,
                    run=label,
                    key_attributes=keys,
                    items=items,
                    ts_ms=round(time.time() * 1000),
                )
            except ValueError as exc:
                raise TableError(f"backfill of {table}: {exc}") from exc
            # Scanning takes time: ask again right before publishing.
            if self._attached(stream_arn):
                report.actions.append(f"backfill stopped after {done} items: another run attached the glue")
                return False
            versions = self.builder.take_typed_versions()
            report.untyped += self.builder.take_untyped().get(table.dynamodb_table, 0)
            if self.announcer is not None and versions:
                try:
                    self.announcer.announce(versions, deadline=deadline)
                except AnnouncementError as exc:
                    self._save_cursor(table, table_arn, label, start, done)
                    raise TableError(
                        f"backfill of {table}: {exc}; the next run goes on from item {done}"
                    ) from exc
            result = self.publisher.publish(records, deadline=deadline)
            if result.failed_from is not None:
                self._save_cursor(table, table_arn, label, start, done)
                raise TableError(
                    f"backfill of {table}: {len(records) - result.failed_from} items not put on the bus "
                    f"({'; '.join(result.errors[:3])}); the next run goes on from item {done}"
                )
            done += len(records)
            report.backfilled += len(records)
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        finished = [{"Key": BACKFILL_TAG, "Value": label}]
        if CURSOR_TAG in tags:
            finished.append({"Key": CURSOR_TAG, "Value": ""})
        self.dynamodb.tag_resource(ResourceArn=table_arn, Tags=finished)
        report.actions.append(f"backfilled {report.backfilled} items")
        return True

    def _save_cursor(
        self, table: TableName, table_arn: str, label: str, start: Mapping[str, Any] | None, done: int
    ) -> None:
        """Record where an interrupted backfill goes on (best effort: without it, it restarts)."""
        if not start:
            return
        value = write_cursor(label, done, start)
        if value is None:
            logger.warning("backfill of %s: its scan position does not fit in a tag; it will restart", table)
            return
        try:
            self.dynamodb.tag_resource(ResourceArn=table_arn, Tags=[{"Key": CURSOR_TAG, "Value": value}])
        except ClientError as exc:
            logger.warning(
                "backfill of %s: could not save its scan position (%s); it will restart", table, exc
            )

    def _attach(self, item: _Work, stream_arn: str) -> None:
        name, report = item.table.dynamodb_table, item.report
        mappings = self._glue_mappings()
        for mapping in list(mappings):
            arn = mapping.get("EventSourceArn", "")
            if arn == stream_arn or _stream_table(arn) != name or mapping.get("State") == "Deleting":
                continue
            try:
                self.lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])
            except ClientError as exc:
                if _error_code(exc) != "ResourceNotFoundException":
                    raise
            mappings.remove(mapping)
            report.actions.append(f"removed the mapping of an old stream {arn}")
        try:
            created = self.lambda_client.create_event_source_mapping(**self._mapping(stream_arn))
        except ClientError as exc:
            # Lambda takes one mapping per (stream, function): another run made it.
            if _error_code(exc) != "ResourceConflictException":
                raise
            report.actions.append("glue already attached by another run")
            return
        mappings.append(dict(created))
        report.mapping_created = True
        report.actions.append("glue attached")

    def _keep_failures(self, item: _Work, mappings: list[dict[str, Any]]) -> None:
        """A mapping made before the failure bucket (or with another destination) is moved
        to the configured one: its failed batches then keep their records."""
        wanted = self.settings.glue_on_failure_arn
        if not wanted:
            return
        for mapping in mappings:
            current = ((mapping.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
            if current == wanted:
                continue
            if mapping.get("State") not in ("Enabled", "Disabled"):
                item.report.actions.append(
                    f"mapping {mapping.get('State')}: its destination moves next sweep"
                )
                continue
            try:
                self.lambda_client.update_event_source_mapping(
                    UUID=mapping["UUID"], DestinationConfig={"OnFailure": {"Destination": wanted}}
                )
            except ClientError as exc:
                if _error_code(exc) not in (
                    "ResourceInUseException",
                    "ResourceConflictException",
                    "ResourceNotFoundException",
                ):
                    raise
                item.report.actions.append(
                    f"mapping busy ({_error_code(exc)}): its destination moves next sweep"
                )
                continue
            item.report.actions.append(f"failed batches now go to {wanted} (were {current})")

    def _tags(self, arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        token: str | None = None
        while True:
            page = self.dynamodb.list_tags_of_resource(
                ResourceArn=arn, **({"NextToken": token} if token else {})
            )
            tags.update({tag["Key"]: tag["Value"] for tag in page.get("Tags", [])})
            token = page.get("NextToken")
            if not token:
                return tags

    def _all_tables(self) -> Iterator[str]:
        paginator = self.dynamodb.get_paginator("list_tables")
        for page in paginator.paginate():
            yield from page.get("TableNames", [])

    def _attached(self, stream_arn: str) -> bool:
        """Whether the glue has a mapping for this stream (asked afresh: another run may have
        made one)."""
        return bool(self._stream_mappings(stream_arn))

    def _stream_mappings(self, stream_arn: str) -> list[dict[str, Any]]:
        """The glue's mappings of this stream that are not being deleted, asked afresh."""
        return [
            mapping
            for mapping in self._list_mappings(EventSourceArn=stream_arn)
            if mapping.get("State") != "Deleting"
        ]

    def _glue_mappings(self) -> list[dict[str, Any]]:
        if self._mappings is None:
            self._mappings = list(self._list_mappings())
        return self._mappings

    def _list_mappings(self, **filters: str) -> Iterator[dict[str, Any]]:
        marker: str | None = None
        while True:
            page = self.lambda_client.list_event_source_mappings(
                FunctionName=self.settings.glue_function_name,
                **filters,
                **({"Marker": marker} if marker else {}),
            )
            yield from page.get("EventSourceMappings", [])
            marker = page.get("NextMarker")
            if not marker:
                return

    def _mapping(self, stream_arn: str) -> dict[str, Any]:
        return mapping_request(
            self.settings.mapping,
            function_name=self.settings.glue_function_name,
            stream_arn=stream_arn,
            starting_position=GLUE_STARTING_POSITION,
            on_failure=self.settings.glue_on_failure_arn,
        )


def write_cursor(label: str, done: int, start: Mapping[str, Any]) -> str | None:
    """A backfill's scan position as a tag value (tags take letters, digits, spaces and
    ``+ - = . _ : /``, so the key goes in base64), or None when it does not fit."""
    key = [
        [name, kind, _cursor_text(kind, raw)] for name, value in start.items() for kind, raw in value.items()
    ]
    encoded = base64.b64encode(json.dumps(key, separators=(",", ":")).encode("utf-8")).decode("ascii")
    value = f"{label} {done} {encoded}"
    return value if len(value) <= MAX_TAG_VALUE else None


def read_cursor(value: str | None, label: str) -> tuple[dict[str, Any], int] | None:
    """``(ExclusiveStartKey, items done)`` of this stream's backfill, or None (start afresh)."""
    parts = (value or "").split(" ")
    if len(parts) != 3 or parts[0] != label:
        return None
    try:
        key = json.loads(base64.b64decode(parts[2], validate=True))
        start = {name: {kind: _cursor_value(kind, raw)} for name, kind, raw in key}
        return start, int(parts[1])
    except (ValueError, TypeError, binascii.Error):
        logger.warning("ignored an unreadable backfill cursor %r", value)
        return None


def _cursor_text(kind: str, raw: Any) -> str:
    # Key attributes are S, N or B; boto3 hands B as bytes.
    return base64.b64encode(raw).decode("ascii") if kind == "B" else str(raw)


def _cursor_value(kind: str, text: str) -> Any:
    return base64.b64decode(text) if kind == "B" else text


def _billing_mode(description: Mapping[str, Any]) -> str:
    # DynamoDB leaves BillingModeSummary out of tables created provisioned.
    return str((description.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"))


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _stream_table(arn: str) -> str | None:
    try:
        return table_from_stream_arn(arn)
    except TableNameError:
        return None
