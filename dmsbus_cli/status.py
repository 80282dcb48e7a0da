"""``dmsbus status``: one look at a bus, and an exit status that says whether something
needs attention (1) or not (0).

- **DMS**, per source: the task's state and, from DescribeTableStatistics, each table's
  state, rows loaded, inserts, updates and deletes. A task that is not running, or a table
  in error, needs attention (the statistics say that a table is in error, not why: the
  task's log does).
- **Bus tables**, the DynamoDB tables DMS made for the bus: billing mode, stream, the glue's
  mapping (its state and last processing result) and whether discovery's backfill is done.
  A table without a stream or a mapping, or whose mapping is not Enabled or reports a
  problem, needs attention.
- **Consumers**: each mapping's state and last result, and its IteratorAge (CloudWatch's
  maximum over the last 5 minutes) against the alarm's threshold.
- **Typing**, on a typed bus: per table, the events the glue and discovery's backfill put on
  the stream untyped in the last hour (CloudWatch's sum of ``dmsbus UntypedEvents``). Any
  needs attention.
- **Failures**: messages in each dead-letter queue, and failed batches in the failure
  bucket (``dmsbus redrive`` re-processes them). Any needs attention.

Against ``dmsbus up`` (``--local``) the DMS part is the stand-in's, shown on ``up``'s own
status line. moto's CloudWatch has dmsbus's own metrics, which local mode extracts from the
functions' EMF log lines as CloudWatch does (local/emf.py), but not Lambda's (IteratorAge):
that part says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from config.functions import (
    consumer_name,
    discovery_name,
    failures_bucket_name,
    glue_name,
)
from config.plan import deployment_plan
from discovery.core import BACKFILL_TAG
from dmsbus.failures import PREFIX
from dmsbus.metrics import NAMESPACE, SERVICE_DIMENSION, TABLE_DIMENSION, UNTYPED_EVENTS
from dmsbus.names import bus_table
from dmsbus_cli.connect import Bus, add_arguments, connect, describe_task

#: DescribeTableStatistics's states that need attention (API_TableStatistics).
TABLE_STATES_IN_ERROR = {"Table error", "Table cancelled", "Table does not exist"}
#: Replication task states in which changes flow (API_ReplicationTask).
TASK_RUNNING = {"running"}
#: What untyped events on a typed bus mean, and where to look.
UNTYPED_ATTENTION = (
    "events went out untyped: the schema function could not be read in time (see its logs), "
    "or an image did not fit the source's catalog"
)


@dataclass
class Line:
    """One thing looked at; ``attention`` says why it needs it, if it does."""

    section: str
    name: str
    state: str
    attention: str | None = None


@dataclass
class Status:
    lines: list[Line] = field(default_factory=list)

    def add(self, section: str, name: str, state: str, attention: str | None = None) -> None:
        self.lines.append(Line(section, name, state, attention))

    @property
    def needs_attention(self) -> list[Line]:
        return [line for line in self.lines if line.attention]

    def render(self) -> list[str]:
        out: list[str] = []
        section = None
        for line in self.lines:
            if line.section != section:
                section = line.section
                out.append(f"{section}:")
            mark = "!" if line.attention else " "
            why = f"  <- {line.attention}" if line.attention else ""
            out.append(f" {mark} {line.name}: {line.state}{why}")
        return out


def collect(bus: Bus, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Status:
    status = Status()
    _dms(bus, status)
    _tables(bus, status)
    at = now()
    _consumers(bus, status, at)
    _typing(bus, status, at)
    _failures(bus, status)
    return status


def _dms(bus: Bus, status: Status) -> None:
    if bus.local:
        status.add("DMS", "task", "the local stand-in: see `dmsbus up`'s status line")
        return
    client = bus.client("dms")
    for source in bus.config.sources:
        name = f"{bus.bus.name}-{source.name}"
        tasks = describe_task(client, name, settings=False)
        if not tasks:
            status.add(
                "DMS", name, "no such task", "the source stack is not deployed, or the task was deleted"
            )
            continue
        task = tasks[0]
        state = str(task.get("Status"))
        why = task.get("LastFailureMessage") or task.get("StopReason")
        # A source configured `start: false` is meant to rest until someone starts it.
        resting = not source.start and state in ("ready", "stopped")
        status.add(
            "DMS",
            name,
            state
            + (f" ({why})" if why and state not in TASK_RUNNING else "")
            + (" (start: false)" if resting else ""),
            None if state in TASK_RUNNING or resting else "changes do not flow while the task is not running",
        )
        try:
            tables = _table_statistics(client, task["ReplicationTaskArn"])
        except (ClientError, BotoCoreError) as exc:
            status.add("DMS", f"{name} tables", f"statistics unavailable: {exc}")
            continue
        for table in tables:
            table_state = str(table.get("TableState"))
            status.add(
                "DMS",
                f"{name} {table.get('SchemaName')}.{table.get('TableName')}",
                f"{table_state}, loaded {table.get('FullLoadRows', 0)}, inserts {table.get('Inserts', 0)}, "
                f"updates {table.get('Updates', 0)}, deletes {table.get('Deletes', 0)}",
                "DMS stopped replicating this table (the task's log says why)"
                if table_state in TABLE_STATES_IN_ERROR
                else None,
            )


def _table_statistics(client: Any, task_arn: str) -> list[dict[str, Any]]:
    tables: list[dict[str, Any]] = []
    marker: str | None = None
    while True:
        page = client.describe_table_statistics(
            ReplicationTaskArn=task_arn, MaxRecords=500, **({"Marker": marker} if marker else {})
        )
        tables.extend(page.get("TableStatistics", []))
        marker = page.get("Marker")
        if not marker:
            return tables


def _tables(bus: Bus, status: Status) -> None:
    dynamodb, lambda_client = bus.client("dynamodb"), bus.client("lambda")
    glue = glue_name(bus.bus)
    mappings = {
        mapping["EventSourceArn"]: mapping
        for mapping in _mappings(lambda_client, glue)
        if mapping.get("State") != "Deleting"
    }
    names = [
        name
        for page in dynamodb.get_paginator("list_tables").paginate()
        for name in page.get("TableNames", [])
        if bus_table(name, bus.bus.name) is not None
    ]
    if not names:
        status.add("Bus tables", "(none)", "DMS has created no table for this bus yet")
    for name in sorted(names):
        table = dynamodb.describe_table(TableName=name)["Table"]
        billing = (table.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED")
        stream_arn = table.get("LatestStreamArn")
        enabled = (table.get("StreamSpecification") or {}).get("StreamEnabled", False)
        parts = [str(table.get("TableStatus")), billing.lower()]
        attention = None
        if not (enabled and stream_arn):
            parts.append("no stream")
            attention = "discovery has not found it yet (it runs on CreateTable and every sweep)"
        else:
            mapping = mappings.get(stream_arn)
            if mapping is None:
                parts.append("stream, no glue mapping")
                attention = "discovery has not attached the glue yet"
            else:
                result = str(mapping.get("LastProcessingResult", "-"))
                parts.append(f"glue {mapping.get('State')} ({result})")
                if mapping.get("State") != "Enabled" or result.startswith("PROBLEM"):
                    attention = "the glue's mapping is not running cleanly"
        if bus.bus.discovery.backfill:
            backfilled = BACKFILL_TAG in _tags(dynamodb, table["TableArn"])
            parts.append("backfilled" if backfilled else "not backfilled")
        status.add("Bus tables", name, ", ".join(parts), attention)


def _tags(dynamodb: Any, arn: str) -> set[str]:
    keys: set[str] = set()
    token: str | None = None
    while True:
        page = dynamodb.list_tags_of_resource(ResourceArn=arn, **({"NextToken": token} if token else {}))
        keys.update(tag["Key"] for tag in page.get("Tags", []))
        token = page.get("NextToken")
        if not token:
            return keys


def _consumers(bus: Bus, status: Status, now: datetime) -> None:
    lambda_client = bus.client("lambda")
    cloudwatch = None if bus.local else bus.client("cloudwatch")
    limit = bus.bus.alarms.iterator_age_ms
    for entry in bus.bus.consumers:
        name = consumer_name(bus.bus.name, entry)
        found = [m for m in _mappings(lambda_client, name) if m.get("State") != "Deleting"]
        if not found:
            status.add("Consumers", name, "no event source mapping", "the consumers stack is not deployed")
            continue
        for mapping in found:
            result = str(mapping.get("LastProcessingResult", "-"))
            state = f"{mapping.get('State')} ({result})"
            attention = None
            if mapping.get("State") != "Enabled" or result.startswith("PROBLEM"):
                attention = "its mapping is not running cleanly"
            if cloudwatch is None:
                state += ", iterator age: no CloudWatch locally"
            else:
                age = _iterator_age(cloudwatch, name, now)
                state += f", iterator age {age:.0f} ms" if age is not None else ", iterator age: no data"
                if age is not None and age >= limit:
                    attention = f"it is {age / 1000:.0f} s behind the stream (alarm at {limit / 1000:.0f} s)"
            status.add("Consumers", name, state, attention)


def _iterator_age(cloudwatch: Any, function: str, now: datetime) -> float | None:
    points = cloudwatch.get_metric_statistics(
        Namespace="AWS/Lambda",
        MetricName="IteratorAge",
        Dimensions=[{"Name": "FunctionName", "Value": function}],
        StartTime=now - timedelta(minutes=5),
        EndTime=now,
        Period=300,
        Statistics=["Maximum"],
    ).get("Datapoints", [])
    return max((float(point["Maximum"]) for point in points), default=None)


def _typing(bus: Bus, status: Status, now: datetime) -> None:
    """Per table, the untyped events of the last hour: ``dmsbus UntypedEvents`` with the
    ``table`` dimension, of the glue and of discovery (its backfill), summed.

    ListMetrics may list a new metric up to 15 minutes after its first data point
    (API_ListMetrics), so a table's first untyped events may not be listed yet; each
    service's total (the ``service`` dimension alone, which needs no listing) counts them,
    and what it has beyond the listed tables is one line of its own."""
    if not bus.bus.glue.typed:
        return
    cloudwatch = bus.client("cloudwatch")
    series: list[tuple[str | None, dict[str, str]]] = []
    for service in (glue_name(bus.bus), discovery_name(bus.bus)):
        series.append((None, {SERVICE_DIMENSION: service}))
        series.extend(
            (table, {SERVICE_DIMENSION: service, TABLE_DIMENSION: table})
            for table in sorted(_untyped_tables(cloudwatch, service))
        )
    sums = _untyped_sums(cloudwatch, [dimensions for _, dimensions in series], now)
    total = 0.0
    per_table: dict[str, float] = {}
    for (table, _), count in zip(series, sums, strict=True):
        if table is None:
            total += count
        else:
            per_table[table] = per_table.get(table, 0.0) + count
    for table, count in sorted(per_table.items()):
        if count > 0:
            status.add("Typing", table, f"{count:.0f} untyped events in the last hour", UNTYPED_ATTENTION)
    unlisted = total - sum(per_table.values())
    if unlisted > 0:
        status.add(
            "Typing",
            "tables CloudWatch does not list yet",
            f"{unlisted:.0f} untyped events in the last hour",
            UNTYPED_ATTENTION,
        )
    if total <= 0 and not any(count > 0 for count in per_table.values()):
        status.add("Typing", "all tables", "0 untyped events in the last hour")


def _untyped_tables(cloudwatch: Any, service: str) -> set[str]:
    """The tables ``service`` counted untyped events of in the last 3 hours (ListMetrics)."""
    tables: set[str] = set()
    for page in cloudwatch.get_paginator("list_metrics").paginate(
        Namespace=NAMESPACE,
        MetricName=UNTYPED_EVENTS,
        Dimensions=[{"Name": SERVICE_DIMENSION, "Value": service}, {"Name": TABLE_DIMENSION}],
        RecentlyActive="PT3H",
    ):
        for metric in page.get("Metrics", []):
            dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            if set(dimensions) == {SERVICE_DIMENSION, TABLE_DIMENSION}:
                tables.add(dimensions[TABLE_DIMENSION])
    return tables


#: GetMetricData takes at most 500 queries per request.
METRIC_DATA_QUERIES = 500


def _untyped_sums(cloudwatch: Any, series: list[dict[str, str]], now: datetime) -> list[float]:
    """The last hour's sum of ``UntypedEvents`` with exactly each of ``series``' dimensions
    (GetMetricData matches the whole dimension set, as the alarm does)."""
    sums = [0.0] * len(series)
    for first in range(0, len(series), METRIC_DATA_QUERIES):
        queries = [
            {
                "Id": f"m{first + offset}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": NAMESPACE,
                        "MetricName": UNTYPED_EVENTS,
                        "Dimensions": [{"Name": name, "Value": value} for name, value in dimensions.items()],
                    },
                    "Period": 3600,
                    "Stat": "Sum",
                },
            }
            for offset, dimensions in enumerate(series[first : first + METRIC_DATA_QUERIES])
        ]
        token: str | None = None
        while True:
            page = cloudwatch.get_metric_data(
                MetricDataQueries=queries,
                StartTime=now - timedelta(hours=1),
                EndTime=now,
                **({"NextToken": token} if token else {}),
            )
            for result in page.get("MetricDataResults", []):
                sums[int(result["Id"][1:])] += sum(float(value) for value in result.get("Values", []))
            token = page.get("NextToken")
            if not token:
                break
    return sums


def _failures(bus: Bus, status: Status) -> None:
    sqs = bus.client("sqs")
    for function in deployment_plan(bus.bus).functions:
        queue = function.dead_letters.name
        try:
            url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        except ClientError as exc:
            if "NonExistentQueue" not in str(exc.response.get("Error", {}).get("Code")):
                raise
            status.add("Failures", queue, "no such queue", "the stack that makes it is not deployed")
            continue
        count = int(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
                "Attributes"
            ]["ApproximateNumberOfMessages"]
        )
        status.add(
            "Failures",
            queue,
            f"{count} dead letters",
            "records that could not be processed wait there (`dmsbus redrive`)" if count else None,
        )
    account, region = bus.account_and_region()
    bucket = failures_bucket_name(bus.bus, account=account, region=region)
    s3 = bus.client("s3")
    try:
        count = sum(
            len(page.get("Contents", []))
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
        )
    except ClientError as exc:
        status.add("Failures", bucket, f"unreadable: {exc}", "the failure bucket cannot be read")
        return
    status.add(
        "Failures",
        bucket,
        f"{count} failed batches",
        "batches Lambda gave up on are kept there: `dmsbus redrive`" if count else None,
    )


def _mappings(lambda_client: Any, function: str) -> list[dict[str, Any]]:
    return [
        mapping
        for page in lambda_client.get_paginator("list_event_source_mappings").paginate(FunctionName=function)
        for mapping in page.get("EventSourceMappings", [])
    ]


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "status",
        help="the DMS task, the bus tables, the consumers, typing and the failures; "
        "exit 1 if any needs attention",
        description=__doc__.split("\n\n")[1],
    )
    add_arguments(command, repository)
    command.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    command.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    bus = connect(arguments, "status")
    if bus is None:
        return 2
    try:
        status = collect(bus)
    except (ClientError, BotoCoreError) as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 2
    if arguments.json:
        for line in status.lines:
            print(json.dumps(asdict(line)))
    else:
        print(f"bus {bus.bus.name}" + (f" (local, {bus.endpoint_url})" if bus.local else ""))
        print("\n".join(status.render()))
        attention = status.needs_attention
        print(f"{len(attention)} need attention" if attention else "all well")
    return 1 if status.needs_attention else 0
