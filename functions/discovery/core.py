"""Discovery: find the tables DMS creates for this bus and put them on the bus.

For each table whose name parses under the bus's prefix (``awsdms_*`` control tables and
foreign tables are never touched, not even described):

1. wait until ACTIVE, within the invocation's time (else the next sweep finishes it);
2. switch billing to PAY_PER_REQUEST unless configured to keep it provisioned (one change
   per UpdateTable call). DynamoDB allows four switches to on-demand per 24 hours: dmsbus
   switches a table once, and never again once it has been on-demand (a person who set it
   back to provisioned meant it); a refusal (LimitExceeded) defers it to the next sweep;
3. enable the stream with NEW_AND_OLD_IMAGES (another view type is an error, not replaced);
4. backfill, **before** the mapping exists: scan (consistent reads) and publish every item
   as an ``r`` event, then tag the table ``dmsbus:backfilled = <stream label>``;
5. create the glue's event source mapping at TRIM_HORIZON, replacing mappings of an older
   stream of the same table name (a recreated table).

Why the backfill comes before the mapping: the stream holds every change made since it
was enabled, and the glue starts reading it from its horizon only after the ``r`` events
are on Kinesis. A row's later changes therefore reach its shard after its ``r`` event, so a
consumer never ends on a scanned image older than the row's last change.

Idempotent: a second run finds everything done and changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from dmsbus import settings
from dmsbus.backfill import read_records
from dmsbus.changes import ChangeBuilder
from dmsbus.ddbjson import NumberMode
from dmsbus.names import TableName, TableNameError, bus_table, table_from_stream_arn
from dmsbus.publisher import KinesisPublisher, PublisherSettings

logger = logging.getLogger("dmsbus.discovery")

BACKFILL_TAG = "dmsbus:backfilled"
VIEW_TYPE = "NEW_AND_OLD_IMAGES"
POLL_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class MappingSettings:
    """The glue's event source mapping (bounded retries and age: an ordered stream must not
    retry one batch forever)."""

    batch_size: int = 1000
    batching_window_seconds: int = 1
    parallelization_factor: int = 1
    max_retries: int = 10
    max_record_age_seconds: int = 86_400


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    bus: str
    stream_name: str
    glue_function_name: str
    glue_dlq_arn: str | None = None
    mapping: MappingSettings = field(default_factory=MappingSettings)
    keep_provisioned: bool = False
    backfill: bool = True
    numbers: NumberMode = "string"
    publisher: PublisherSettings = field(default_factory=PublisherSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> DiscoverySettings:
        defaults = MappingSettings()
        return cls(
            bus=settings.required(environ, "BUS_NAME", "discovery"),
            stream_name=settings.required(environ, "BUS_STREAM_NAME", "discovery"),
            glue_function_name=settings.required(environ, "GLUE_FUNCTION_NAME", "discovery"),
            glue_dlq_arn=settings.optional(environ, "GLUE_DLQ_ARN"),
            mapping=MappingSettings(
                batch_size=settings.integer(environ, "GLUE_BATCH_SIZE", defaults.batch_size),
                batching_window_seconds=settings.integer(
                    environ, "GLUE_BATCHING_WINDOW_SECONDS", defaults.batching_window_seconds
                ),
                parallelization_factor=settings.integer(
                    environ, "GLUE_PARALLELIZATION_FACTOR", defaults.parallelization_factor
                ),
                max_retries=settings.integer(environ, "GLUE_MAX_RETRIES", defaults.max_retries),
                max_record_age_seconds=settings.integer(
                    environ, "GLUE_MAX_RECORD_AGE_SECONDS", defaults.max_record_age_seconds
                ),
            ),
            keep_provisioned=settings.flag(environ, "KEEP_PROVISIONED", False),
            backfill=settings.flag(environ, "BACKFILL", True),
            numbers=settings.numbers(environ),
            publisher=settings.publisher(environ),
        )


@dataclass(slots=True)
class TableReport:
    """What discovery found and did for one table."""

    table: str
    #: ``done`` (streaming into the glue), ``pending`` (left to the next sweep) or ``error``.
    status: str = "done"
    actions: list[str] = field(default_factory=list)
    backfilled: int = 0
    detail: str | None = None


class TableError(Exception):
    """A table discovery cannot put on the bus as it is (reported, never silently fixed)."""


class Pending(Exception):  # noqa: N818 - a state, not a failure
    """Not finished within this invocation; the next sweep goes on."""


def tables_in_event(event: Mapping[str, Any]) -> list[str] | None:
    """The table a CloudTrail CreateTable event names, or None for a sweep (schedule, ``{}``)."""
    detail = event.get("detail") or {}
    if event.get("detail-type") == "AWS API Call via CloudTrail" and detail.get("eventName") == "CreateTable":
        name = (detail.get("requestParameters") or {}).get("tableName") or (
            ((detail.get("responseElements") or {}).get("tableDescription") or {}).get("tableName")
        )
        return [name] if isinstance(name, str) and name else []
    return None


class Discovery:
    """Runs discovery with the clients it is given (boto3 in Lambda, moto in tests)."""

    def __init__(
        self,
        *,
        settings: DiscoverySettings,
        dynamodb: Any,
        lambda_client: Any,
        publisher: KinesisPublisher,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.dynamodb = dynamodb
        self.lambda_client = lambda_client
        self.publisher = publisher
        self.builder = ChangeBuilder(settings.bus, numbers=settings.numbers)
        self.clock = clock
        self.sleep = sleep

    def run(self, event: Mapping[str, Any], *, deadline: float) -> list[TableReport]:
        named = tables_in_event(event)
        names = self._all_tables() if named is None else iter(named)
        reports = []
        for name in names:
            table = bus_table(name, self.settings.bus)
            if table is None:
                logger.debug("skipping %s: not a table of bus %s", name, self.settings.bus)
                continue
            reports.append(self.table(table, deadline=deadline))
        return reports

    def table(self, table: TableName, *, deadline: float) -> TableReport:
        report = TableReport(table.dynamodb_table)
        try:
            self._put_on_bus(table, report, deadline)
        except Pending as exc:
            report.status, report.detail = "pending", str(exc)
        except TableError as exc:
            report.status, report.detail = "error", str(exc)
        except ClientError as exc:
            report.status, report.detail = "error", f"{exc.operation_name}: {exc}"
        return report

    def _put_on_bus(self, table: TableName, report: TableReport, deadline: float) -> None:
        name = table.dynamodb_table
        description = self._active(name, deadline)
        billing = description.get("BillingModeSummary") or {}
        if (
            not self.settings.keep_provisioned
            and _billing_mode(description) != "PAY_PER_REQUEST"
            and "LastUpdateToPayPerRequestDateTime" in billing
        ):
            report.actions.append("billing left PROVISIONED: set back from on-demand by someone")
        elif not self.settings.keep_provisioned and _billing_mode(description) != "PAY_PER_REQUEST":
            try:
                self.dynamodb.update_table(TableName=name, BillingMode="PAY_PER_REQUEST")
            except ClientError as exc:
                if _error_code(exc) != "LimitExceededException":
                    raise
                report.actions.append("billing switch deferred (DynamoDB's limit on switches)")
            else:
                report.actions.append("billing -> PAY_PER_REQUEST")
            description = self._active(name, deadline)
        stream = description.get("StreamSpecification") or {}
        if stream.get("StreamEnabled"):
            if stream.get("StreamViewType") != VIEW_TYPE:
                raise TableError(
                    f"table {name} streams {stream.get('StreamViewType')}, not {VIEW_TYPE}: the glue needs both "
                    "images; disable its stream (or reload the table) and discovery will enable it"
                )
        else:
            self.dynamodb.update_table(
                TableName=name, StreamSpecification={"StreamEnabled": True, "StreamViewType": VIEW_TYPE}
            )
            report.actions.append("stream enabled (NEW_AND_OLD_IMAGES)")
            description = self._active(name, deadline)
        stream_arn: str = description["LatestStreamArn"]
        run = stream_arn.rsplit("/", 1)[-1]
        mappings = list(self._glue_mappings())
        current = [m for m in mappings if m["EventSourceArn"] == stream_arn]
        if self.settings.backfill and not current and not self._backfilled(description, run):
            report.backfilled = self._backfill(table, description, run, deadline)
            self.dynamodb.tag_resource(
                ResourceArn=description["TableArn"], Tags=[{"Key": BACKFILL_TAG, "Value": run}]
            )
            report.actions.append(f"backfilled {report.backfilled} items")
        for mapping in mappings:
            arn = mapping["EventSourceArn"]
            if arn != stream_arn and _stream_table(arn) == name:
                self.lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])
                report.actions.append(f"removed the mapping of an old stream {arn}")
        if not current:
            self.lambda_client.create_event_source_mapping(**self._mapping(stream_arn))
            report.actions.append("glue attached")

    def _active(self, name: str, deadline: float) -> dict[str, Any]:
        while True:
            description: dict[str, Any] = self.dynamodb.describe_table(TableName=name)["Table"]
            status = description.get("TableStatus")
            if status == "ACTIVE":
                return description
            if status == "DELETING":
                raise Pending(f"table {name} is being deleted")
            if self.clock() + POLL_SECONDS >= deadline:
                raise Pending(f"table {name} is {status}; the next sweep goes on")
            self.sleep(POLL_SECONDS)

    def _backfilled(self, description: Mapping[str, Any], run: str) -> bool:
        tags = self.dynamodb.list_tags_of_resource(ResourceArn=description["TableArn"]).get("Tags", [])
        return any(tag["Key"] == BACKFILL_TAG and tag["Value"] == run for tag in tags)

    def _backfill(self, table: TableName, description: Mapping[str, Any], run: str, deadline: float) -> int:
        keys = [element["AttributeName"] for element in description["KeySchema"]]
        total = 0
        start: dict[str, Any] | None = None
        while True:
            if self.clock() >= deadline:
                raise Pending(
                    f"backfill of {table} stopped at {total} items (time); the next sweep redoes it"
                )
            page = self.dynamodb.scan(
                TableName=table.dynamodb_table,
                ConsistentRead=True,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            items = page.get("Items", [])
            try:
                records = read_records(
                    self.builder,
                    table,
                    run=run,
                    key_attributes=keys,
                    items=items,
                    ts_ms=round(time.time() * 1000),
                )
            except ValueError as exc:
                raise TableError(f"backfill of {table}: {exc}") from exc
            result = self.publisher.publish(records, deadline=deadline)
            if result.failed_from is not None:
                raise Pending(
                    f"backfill of {table}: {len(records) - result.failed_from} changes not put "
                    f"({'; '.join(result.errors[:3])}); the next sweep redoes it"
                )
            total += len(records)
            start = page.get("LastEvaluatedKey")
            if not start:
                return total

    def _all_tables(self) -> Iterator[str]:
        paginator = self.dynamodb.get_paginator("list_tables")
        for page in paginator.paginate():
            yield from page.get("TableNames", [])

    def _glue_mappings(self) -> Iterator[dict[str, Any]]:
        marker: str | None = None
        while True:
            page = self.lambda_client.list_event_source_mappings(
                FunctionName=self.settings.glue_function_name, **({"Marker": marker} if marker else {})
            )
            yield from page.get("EventSourceMappings", [])
            marker = page.get("NextMarker")
            if not marker:
                return

    def _mapping(self, stream_arn: str) -> dict[str, Any]:
        mapping = self.settings.mapping
        request: dict[str, Any] = {
            "FunctionName": self.settings.glue_function_name,
            "EventSourceArn": stream_arn,
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": mapping.batch_size,
            "MaximumBatchingWindowInSeconds": mapping.batching_window_seconds,
            "ParallelizationFactor": mapping.parallelization_factor,
            "MaximumRetryAttempts": mapping.max_retries,
            "MaximumRecordAgeInSeconds": mapping.max_record_age_seconds,
            "BisectBatchOnFunctionError": True,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        }
        if self.settings.glue_dlq_arn:
            request["DestinationConfig"] = {"OnFailure": {"Destination": self.settings.glue_dlq_arn}}
        return request


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
