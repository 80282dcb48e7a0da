"""Discovery against moto: DynamoDB tables as DMS creates them, the glue's mappings, the
backfill read back from Kinesis with the consumer SDK."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from botocore.exceptions import ClientError

from config.model import DiscoveryConfig, GlueConfig
from discovery.core import (
    BACKFILL_TAG,
    CURSOR_TAG,
    Discovery,
    read_cursor,
    tables_in_event,
    write_cursor,
)
from discovery.settings import DiscoverySettings, MappingSettings
from dmsbus.changes import ChangeBuilder
from dmsbus.consumer import ChangeEvent, consumer
from dmsbus.publisher import KinesisPublisher
from dmsbus.settings import SettingsError
from dmsbus.typed import SchemaRefresher
from glue.core import process_batch
from local.moto_patches import applied
from local.moto_server import QUEUE_INVOCATIONS
from tests.plans import deployed_environment
from tests.streams import BUS, kinesis_event, modify, read_shards
from tests.unit.conftest import STREAM, deploy_function, queued_invocations

REGION = "us-east-1"
GLUE = "demo-glue"
GLUE_FAILURES = "arn:aws:s3:::demo-failures"
#: The glue mapping's settings by default: config/model.py's GlueConfig holds them, only there.
GLUE_DEFAULTS = MappingSettings(
    **{
        name: getattr(GlueConfig(), name)
        for name in (
            "batch_size",
            "batching_window_seconds",
            "parallelization_factor",
            "max_retries",
            "max_record_age_seconds",
        )
    }
)
ORDERS = "demo.legacy.public.orders"
LINES = "demo.legacy.public.order_lines"  # sorts before ORDERS ('_' < 's')
SWEEP = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


# ---- test doubles ---------------------------------------------------------------------------


class Clock:
    """Monotonic time that moves only when discovery sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def later(self, seconds: float = 600) -> float:
        return self.now + seconds


class Counting:
    """Wraps a boto3 client and counts the calls made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith(("get_paginator", "meta")):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return call


class StillCreating(Counting):
    """moto makes tables ACTIVE at once; DMS's tables are CREATING for a while: the first
    ``creating[name]`` describes of a table say CREATING (all of them when None)."""

    def __init__(self, client: Any, creating: dict[str, int | None]) -> None:
        super().__init__(client)
        self.creating = creating
        self.described: Counter[str] = Counter()

    def describe_table(self, **kwargs: Any) -> Any:
        name = kwargs["TableName"]
        self.described[name] += 1
        response = self._client.describe_table(**kwargs)
        if name in self.creating and (
            self.creating[name] is None or self.described[name] <= self.creating[name]
        ):
            response["Table"]["TableStatus"] = "CREATING"
        return response


class ScanPages(Counting):
    """Scans in pages of ``limit`` items (moto returns 1 MB pages, as DynamoDB does), each
    taking ``seconds`` on the clock, then calls ``after_page(page number)``."""

    def __init__(self, client: Any, clock: Clock, *, limit: int, seconds: float = 0, after_page: Any = None):
        super().__init__(client)
        self.clock, self.limit, self.seconds, self.after_page = clock, limit, seconds, after_page

    def scan(self, **kwargs: Any) -> Any:
        self.calls["scan"] += 1
        self.clock.now += self.seconds
        page = self._client.scan(Limit=self.limit, **kwargs)
        if self.after_page:
            self.after_page(self.calls["scan"])
        return page


class KinesisDown:
    """A Kinesis client whose PutRecords fails every entry, as a throttled stream does."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def list_shards(self, **kwargs: Any) -> Any:
        return self._client.list_shards(**kwargs)

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        failed = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
        return {"FailedRecordCount": len(Records), "Records": [failed for _ in Records]}


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


# ---- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def dynamodb(kinesis: Any) -> Any:
    return boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def lambda_client(kinesis: Any) -> Any:
    """The glue as a deployed function (moto needs one to map streams to; it is never invoked)."""
    client = boto3.client("lambda", region_name=REGION)
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="glue", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("glue/handler.py", "def handler(event, context):\n    return {}\n")
    client.create_function(
        FunctionName=GLUE,
        Runtime="python3.12",
        Role=role,
        Handler="glue.handler.handler",
        Code={"ZipFile": archive.getvalue()},
    )
    return client


@pytest.fixture
def clock() -> Clock:
    return Clock()


def create_dms_table(dynamodb: Any, name: str, keys: tuple[str, ...] = ("id",)) -> None:
    """A table as DMS's DynamoDB target creates it: provisioned 200/200, no stream."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": key, "KeyType": kind}
            for key, kind in zip(keys, ("HASH", "RANGE"), strict=False)
        ],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "N"} for key in keys],
        ProvisionedThroughput={"ReadCapacityUnits": 200, "WriteCapacityUnits": 200},
    )


def load_rows(dynamodb: Any, name: str, count: int) -> None:
    """Rows DMS's full load wrote before the table had a stream."""
    for row in range(count):
        dynamodb.put_item(
            TableName=name, Item={"id": {"N": str(row)}, "status": {"S": "new"}, "total": {"N": "9.5"}}
        )


def make_discovery(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock, **settings: Any
) -> Discovery:
    values = {
        "bus": BUS,
        "stream_name": STREAM,
        "glue_function_name": GLUE,
        "mapping": GLUE_DEFAULTS,
        # config/model.py's defaults, as the deployment writes them
        "aggregate": GlueConfig().aggregate,
        "typed": GlueConfig().typed,
        "numbers": GlueConfig().numbers,
        "keep_provisioned": DiscoveryConfig().keep_provisioned,
        "backfill": DiscoveryConfig().backfill,
        **settings,
    }
    return Discovery(
        settings=DiscoverySettings(**values),
        dynamodb=dynamodb,
        lambda_client=lambda_client,
        publisher=KinesisPublisher(kinesis, STREAM, sleep=clock.sleep, clock=clock),
        clock=clock,
        sleep=clock.sleep,
    )


def create_table_event(name: str) -> dict[str, Any]:
    """EventBridge's "AWS API Call via CloudTrail" event for DynamoDB CreateTable."""
    return {
        "version": "0",
        "source": "aws.dynamodb",
        "detail-type": "AWS API Call via CloudTrail",
        "detail": {
            "eventSource": "dynamodb.amazonaws.com",
            "eventName": "CreateTable",
            "requestParameters": {"tableName": name},
            "responseElements": {"tableDescription": {"tableName": name, "tableStatus": "CREATING"}},
        },
    }


def mappings(lambda_client: Any) -> list[dict[str, Any]]:
    return list(lambda_client.list_event_source_mappings(FunctionName=GLUE)["EventSourceMappings"])


def describe(dynamodb: Any, name: str) -> dict[str, Any]:
    return dict(dynamodb.describe_table(TableName=name)["Table"])


def tags(dynamodb: Any, name: str) -> dict[str, str]:
    listed = dynamodb.list_tags_of_resource(ResourceArn=describe(dynamodb, name)["TableArn"])["Tags"]
    return {tag["Key"]: tag["Value"] for tag in listed}


def stream_label(dynamodb: Any, name: str) -> str:
    return str(describe(dynamodb, name)["LatestStreamArn"]).rsplit("/", 1)[-1]


def billing_mode(dynamodb: Any, name: str) -> str:
    return str(describe(dynamodb, name).get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"))


def all_events(kinesis: Any) -> list[ChangeEvent]:
    """Every event on the bus, through the consumer SDK (deaggregation included)."""
    seen: list[ChangeEvent] = []
    handler = consumer()(seen.append)
    for records in read_shards(kinesis, STREAM).values():
        assert handler(kinesis_event(records), None) == {"batchItemFailures": []}
    return seen


def user_records(records: list[dict[str, Any]]) -> list[tuple[str, ChangeEvent]]:
    """(partition key, event) of each user record, aggregated ones included, in order."""
    return [
        (user["kinesis"]["partitionKey"], ChangeEvent.from_json(base64.b64decode(user["kinesis"]["data"])))
        for user in iter_deaggregate_records(kinesis_event(records)["Records"])
    ]


# ---- what an event asks for ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (create_table_event(ORDERS), [ORDERS]),
        (
            {
                **create_table_event(ORDERS),
                "detail": {"eventName": "CreateTable", "errorCode": "LimitExceeded"},
            },
            [],
        ),
        (SWEEP, None),
        ({}, None),
    ],
    ids=["create-table", "refused-create-table", "schedule", "manual"],
)
def test_events_name_one_table_or_ask_for_a_sweep(event: dict[str, Any], expected: list[str] | None) -> None:
    assert tables_in_event(event) == expected


# ---- one new table -------------------------------------------------------------------------


def test_a_create_table_event_puts_the_new_table_on_the_bus(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a table DMS just created: provisioned, no stream
    create_dms_table(dynamodb, ORDERS)
    discovery = make_discovery(dynamodb, lambda_client, kinesis, clock, glue_on_failure_arn=GLUE_FAILURES)
    # When its CloudTrail CreateTable event arrives
    run = discovery.run(create_table_event(ORDERS), deadline=clock.later())
    # Then it is on-demand, streams both images, is marked backfilled and the glue reads it
    (report,) = run.tables
    table = describe(dynamodb, ORDERS)
    assert (report.status, report.billing_switched, report.stream_enabled, report.mapping_created) == (
        "done",
        True,
        True,
        True,
    )
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert tags(dynamodb, ORDERS)[BACKFILL_TAG] == stream_label(dynamodb, ORDERS)
    (mapping,) = mappings(lambda_client)
    assert mapping["EventSourceArn"] == table["LatestStreamArn"]
    assert mapping["FunctionArn"].endswith(f":function:{GLUE}")
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["BatchSize"] == GlueConfig().batch_size
    assert mapping["MaximumBatchingWindowInSeconds"] == 1
    assert mapping["ParallelizationFactor"] == 1
    assert mapping["MaximumRetryAttempts"] == 10
    assert mapping["MaximumRecordAgeInSeconds"] == 86_400
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": GLUE_FAILURES}}


def test_a_table_discovery_finds_is_asked_of_its_sources_schema_function(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a typed bus's discovery, which may ask the source's schema function
    with applied([QUEUE_INVOCATIONS]):
        deploy_function(lambda_client, "demo-legacy-schema", "source_schema.handler.handler")
        discovery = make_discovery(dynamodb, lambda_client, kinesis, clock, typed=True)
        discovery.refresher = SchemaRefresher(lambda_client, {"legacy": "demo-legacy-schema"}, clock=clock)
        create_dms_table(dynamodb, ORDERS)
        # When the table's CreateTable event arrives, and a sweep comes an hour later
        (report,) = discovery.run(create_table_event(ORDERS), deadline=clock.later()).tables
        clock.now += 3600
        discovery.run(SWEEP, deadline=clock.later())
        # Then the schema function was asked for the table once, when it was found
        assert "schema function asked for the table's schema" in report.actions
        assert [(i["function"], i["payload"]) for i in queued_invocations()] == [
            ("demo-legacy-schema", {"tables": ["public.orders"], "reason": "table discovered"})
        ]


def test_a_mapping_made_before_the_failure_bucket_is_moved_to_it_on_the_next_sweep(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a table attached when failed batches went to the glue's queue
    create_dms_table(dynamodb, ORDERS)
    old_queue = "arn:aws:sqs:us-east-1:123456789012:demo-glue-dlq"
    make_discovery(dynamodb, lambda_client, kinesis, clock, glue_on_failure_arn=old_queue).run(
        create_table_event(ORDERS), deadline=clock.later()
    )
    # When a sweep runs with the failure bucket configured
    run = make_discovery(dynamodb, lambda_client, kinesis, clock, glue_on_failure_arn=GLUE_FAILURES).run(
        {}, deadline=clock.later()
    )
    # Then the same mapping now sends failed batches, records and all, to the bucket
    (mapping,) = mappings(lambda_client)
    assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": GLUE_FAILURES}}
    (report,) = run.tables
    assert report.actions == [f"failed batches now go to {GLUE_FAILURES} (were {old_queue})"]


def test_a_sweep_counts_the_bus_tables_throttle_events_over_its_period(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given two bus tables throttled within the last 15 minutes, and another table
    create_dms_table(dynamodb, ORDERS)
    create_dms_table(dynamodb, LINES)
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    for table, metric, value in (
        (ORDERS, "WriteThrottleEvents", 3),
        (LINES, "ReadThrottleEvents", 2),
        ("someone-elses-table", "WriteThrottleEvents", 50),
    ):
        cloudwatch.put_metric_data(
            Namespace="AWS/DynamoDB",
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": [{"Name": "TableName", "Value": table}],
                    "Value": value,
                    # inside the sweep's period: it ends 5 minutes back (metrics arrive late)
                    "Timestamp": datetime.now(UTC) - timedelta(minutes=10),
                }
            ],
        )
    discovery = make_discovery(dynamodb, lambda_client, kinesis, clock, sweep_minutes=15)
    discovery.cloudwatch = cloudwatch
    # When a sweep runs, then it counts the bus tables' events only
    assert discovery.run({}, deadline=clock.later()).throttle_events == 5
    # and a CreateTable event's run counts nothing
    assert discovery.run(create_table_event(ORDERS), deadline=clock.later()).throttle_events is None


def test_a_sweep_that_cannot_count_throttles_still_succeeds(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given CloudWatch refuses the count (a role without cloudwatch:GetMetricData, say)
    create_dms_table(dynamodb, ORDERS)

    class Refusing:
        def get_metric_data(self, **_: Any) -> Any:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetMetricData")

    discovery = make_discovery(dynamodb, lambda_client, kinesis, clock, sweep_minutes=15)
    discovery.cloudwatch = Refusing()
    # When a sweep runs, then the table is on the bus, and the count is only missing
    run = discovery.run({}, deadline=clock.later())
    assert ([table.status for table in run.tables], run.throttle_events) == (["done"], None)


def test_the_mapping_takes_the_configured_glue_settings(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a bus configured for bigger, parallel batches and no on-failure destination
    create_dms_table(dynamodb, ORDERS)
    mapping_settings = MappingSettings(
        batch_size=5000,
        batching_window_seconds=5,
        parallelization_factor=4,
        max_retries=3,
        max_record_age_seconds=3600,
    )
    # When discovery attaches the glue
    make_discovery(dynamodb, lambda_client, kinesis, clock, mapping=mapping_settings).run(
        {}, deadline=clock.later()
    )
    # Then the mapping has exactly those settings
    (mapping,) = mappings(lambda_client)
    assert (
        mapping["BatchSize"],
        mapping["MaximumBatchingWindowInSeconds"],
        mapping["ParallelizationFactor"],
        mapping["MaximumRetryAttempts"],
        mapping["MaximumRecordAgeInSeconds"],
        mapping.get("DestinationConfig"),
    ) == (5000, 5, 4, 3, 3600, None)


def test_a_create_table_event_for_a_table_that_is_no_more_is_not_an_error(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a CreateTable event for a table deleted since (or never created)
    # When it arrives
    run = make_discovery(dynamodb, lambda_client, kinesis, clock).run(
        create_table_event(ORDERS), deadline=clock.later()
    )
    # Then the table is reported gone, without error or mapping
    assert [(r.table, r.status, r.detail) for r in run.tables] == [
        (ORDERS, "gone", f"table {ORDERS} does not exist")
    ]
    assert run.errors == []
    assert mappings(lambda_client) == []


# ---- a sweep --------------------------------------------------------------------------------


def test_a_sweep_touches_only_the_bus_tables_and_leaves_creating_ones_to_the_next(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given two bus tables, one CREATING throughout, DMS's control table, another bus's and a foreign one
    others = ("other.legacy.public.orders", "billing-prod")
    for name in (ORDERS, LINES, "awsdms_apply_exceptions", *others):
        create_dms_table(dynamodb, name)
    client = StillCreating(dynamodb, creating={LINES: None})
    # When a scheduled sweep runs with a minute left
    run = make_discovery(client, lambda_client, kinesis, clock).run(SWEEP, deadline=clock.later(60))
    # Then the ready table is done, and the creating one (listed first) did not hold it up
    assert {r.table: r.status for r in run.tables} == {ORDERS: "done", LINES: "pending"}
    (lines,) = [r for r in run.tables if r.table == LINES]
    assert lines.detail == f"table {LINES} is CREATING; the next run goes on"
    assert run.skipped == 2
    assert set(clock.slept) == {5.0}  # it paused between looks at the creating table, until the deadline
    # And DMS's exceptions table only went on-demand (200/200 provisioned costs ~$100 a month idle)
    assert run.control_table == "awsdms_apply_exceptions: billing -> PAY_PER_REQUEST"
    assert billing_mode(dynamodb, "awsdms_apply_exceptions") == "PAY_PER_REQUEST"
    assert "StreamSpecification" not in describe(dynamodb, "awsdms_apply_exceptions")
    # And nothing else was described, changed or mapped
    assert set(client.described) == {ORDERS, LINES, "awsdms_apply_exceptions"}
    for name in (*others, LINES):
        table = describe(dynamodb, name)
        assert "StreamSpecification" not in table, name
        assert billing_mode(dynamodb, name) == "PROVISIONED", name
    assert [m["EventSourceArn"].split("/")[1] for m in mappings(lambda_client)] == [ORDERS]


def test_a_table_that_becomes_active_during_the_run_is_finished_in_it(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a table that is CREATING for the first three looks
    create_dms_table(dynamodb, ORDERS)
    client = StillCreating(dynamodb, creating={ORDERS: 3})
    # When its CreateTable event arrives
    run = make_discovery(client, lambda_client, kinesis, clock).run(
        create_table_event(ORDERS), deadline=clock.later()
    )
    # Then discovery waited for it, pausing between looks, and finished it
    assert [r.status for r in run.tables] == ["done"]
    assert clock.slept == [5.0, 5.0, 5.0]
    assert len(mappings(lambda_client)) == 1


def test_a_second_sweep_changes_nothing(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a sweep that put two tables (one with rows) on the bus
    create_dms_table(dynamodb, ORDERS)
    create_dms_table(dynamodb, LINES, keys=("order_id", "line_no"))
    load_rows(dynamodb, ORDERS, 3)
    make_discovery(dynamodb, lambda_client, kinesis, clock).run(SWEEP, deadline=clock.later())
    before = sum(len(records) for records in read_shards(kinesis, STREAM).values())
    counted_dynamodb, counted_lambda = Counting(dynamodb), Counting(lambda_client)
    # When the next sweep runs
    run = make_discovery(counted_dynamodb, counted_lambda, kinesis, clock).run(SWEEP, deadline=clock.later())
    # Then it changes, scans and publishes nothing
    assert [(r.status, r.actions, r.backfilled) for r in run.tables] == [("done", [], 0), ("done", [], 0)]
    for call in ("update_table", "scan", "tag_resource", "list_tags_of_resource"):
        assert counted_dynamodb.calls[call] == 0, call
    for call in ("create_event_source_mapping", "delete_event_source_mapping"):
        assert counted_lambda.calls[call] == 0, call
    assert sum(len(records) for records in read_shards(kinesis, STREAM).values()) == before


# ---- billing --------------------------------------------------------------------------------


def test_keep_provisioned_leaves_billing_alone(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a bus configured to keep DMS's provisioned capacity
    create_dms_table(dynamodb, ORDERS)
    # When discovery puts a table on the bus
    (report,) = (
        make_discovery(dynamodb, lambda_client, kinesis, clock, keep_provisioned=True)
        .run({}, deadline=clock.later())
        .tables
    )
    # Then the table stays provisioned at 200/200, and streams into the glue
    table = describe(dynamodb, ORDERS)
    assert (report.status, report.billing_switched) == ("done", False)
    assert billing_mode(dynamodb, ORDERS) == "PROVISIONED"
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 200
    assert table["StreamSpecification"]["StreamEnabled"] is True
    assert len(mappings(lambda_client)) == 1


class SetBackToProvisioned(Counting):
    """A table someone switched back to provisioned after it had been on-demand (moto does
    not record LastUpdateToPayPerRequestDateTime)."""

    def describe_table(self, **kwargs: Any) -> Any:
        response = self._client.describe_table(**kwargs)
        response["Table"]["BillingModeSummary"] = {
            "BillingMode": "PROVISIONED",
            "LastUpdateToPayPerRequestDateTime": 1_763_800_000.0,
        }
        return response


def test_a_table_set_back_to_provisioned_is_not_switched_again(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a table that was on-demand once and is provisioned again
    create_dms_table(dynamodb, ORDERS)
    client = SetBackToProvisioned(dynamodb)
    # When a sweep runs
    (report,) = make_discovery(client, lambda_client, kinesis, clock).run({}, deadline=clock.later()).tables
    # Then its billing is left alone (no fight with a person, nor with DynamoDB's limit)
    assert client.calls["update_table"] == 1  # the stream only
    assert (report.status, report.billing_switched) == ("done", False)
    assert report.detail == "billing left PROVISIONED: it was on-demand once and someone set it back"


class SwitchRefused(Counting):
    """DynamoDB refusing the switch to on-demand (four a day, or too many updates at once)."""

    def update_table(self, **kwargs: Any) -> Any:
        self.calls["update_table"] += 1
        if "BillingMode" in kwargs:
            raise client_error(
                "LimitExceededException", "Subscriber limit exceeded: Update to PayPerRequest", "UpdateTable"
            )
        return self._client.update_table(**kwargs)


def test_a_refused_billing_switch_is_deferred_and_the_table_still_goes_on_the_bus(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given DynamoDB refuses to switch the table to on-demand today
    create_dms_table(dynamodb, ORDERS)
    client = SwitchRefused(dynamodb)
    # When discovery runs
    (report,) = make_discovery(client, lambda_client, kinesis, clock).run({}, deadline=clock.later()).tables
    # Then the table streams into the glue, still provisioned, and the next run tries the switch again
    assert (report.status, report.billing_switched, report.stream_enabled) == ("done", False, True)
    assert report.actions[0].startswith("billing switch deferred to the next run")
    assert client.calls["update_table"] == 2  # one refused switch, one stream
    assert billing_mode(dynamodb, ORDERS) == "PROVISIONED"
    assert len(mappings(lambda_client)) == 1


# ---- streams and mappings ----------------------------------------------------------------------


def test_a_table_already_streaming_both_images_is_attached_as_it_is(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a table whose stream someone already enabled with both images
    create_dms_table(dynamodb, ORDERS)
    dynamodb.update_table(
        TableName=ORDERS, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )
    arn = describe(dynamodb, ORDERS)["LatestStreamArn"]
    # When discovery runs
    (report,) = make_discovery(dynamodb, lambda_client, kinesis, clock).run({}, deadline=clock.later()).tables
    # Then that very stream is attached
    assert (report.status, report.stream_enabled) == ("done", False)
    assert describe(dynamodb, ORDERS)["LatestStreamArn"] == arn
    assert [m["EventSourceArn"] for m in mappings(lambda_client)] == [arn]


def test_a_stream_of_another_view_type_is_an_error_not_replaced(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a table streaming keys only
    create_dms_table(dynamodb, ORDERS)
    dynamodb.update_table(
        TableName=ORDERS, StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}
    )
    # When discovery runs
    (report,) = make_discovery(dynamodb, lambda_client, kinesis, clock).run({}, deadline=clock.later()).tables
    # Then the table is an error that says why, its stream is kept and the glue not attached
    assert report.status == "error"
    assert report.detail is not None
    assert report.detail.startswith(f"table {ORDERS} streams KEYS_ONLY, not NEW_AND_OLD_IMAGES")
    assert describe(dynamodb, ORDERS)["StreamSpecification"]["StreamViewType"] == "KEYS_ONLY"
    assert mappings(lambda_client) == []


def test_a_recreated_table_gets_a_new_mapping_and_the_old_one_goes(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a table on the bus, then dropped and created again by DMS (a new stream)
    create_dms_table(dynamodb, ORDERS)
    discovery = make_discovery(dynamodb, lambda_client, kinesis, clock)
    discovery.run({}, deadline=clock.later())
    (old,) = mappings(lambda_client)
    dynamodb.delete_table(TableName=ORDERS)
    create_dms_table(dynamodb, ORDERS)
    # When the sweep runs again
    (report,) = discovery.run({}, deadline=clock.later()).tables
    # Then the glue reads the new stream only
    new_arn = describe(dynamodb, ORDERS)["LatestStreamArn"]
    assert new_arn != old["EventSourceArn"]
    assert [m["EventSourceArn"] for m in mappings(lambda_client)] == [new_arn]
    assert report.actions[-2:] == [
        f"removed the mapping of an old stream {old['EventSourceArn']}",
        "glue attached",
    ]


class AttachedMeanwhile(Counting):
    """Lambda refusing a second mapping of one stream to one function (ResourceConflict), as
    when another discovery run attached the glue between our check and our create. moto
    does not refuse duplicates for DynamoDB streams, so the wrapper does."""

    def create_event_source_mapping(self, **kwargs: Any) -> Any:
        self.calls["create_event_source_mapping"] += 1
        raise client_error(
            "ResourceConflictException",
            "The event source arn and function provided mapping already exists.",
            "CreateEventSourceMapping",
        )


def test_a_mapping_another_run_just_created_is_taken_as_done(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given another run attaches the glue between this run's check and its create
    create_dms_table(dynamodb, ORDERS)
    client = AttachedMeanwhile(lambda_client)
    # When this run tries to attach it
    (report,) = make_discovery(dynamodb, client, kinesis, clock).run({}, deadline=clock.later()).tables
    # Then the table is done, without error
    assert (report.status, report.mapping_created) == ("done", False)
    assert report.actions[-1] == "glue already attached by another run"


# ---- backfill -------------------------------------------------------------------------------


def test_backfill_publishes_one_read_per_item_partitioned_like_the_glue(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given 30 rows DMS loaded before the stream existed
    create_dms_table(dynamodb, ORDERS)
    load_rows(dynamodb, ORDERS, 30)
    # When discovery puts the table on the bus
    (report,) = make_discovery(dynamodb, lambda_client, kinesis, clock).run({}, deadline=clock.later()).tables
    # Then each row reaches a consumer once, as an r event of the row
    assert report.backfilled == 30
    assert report.actions[-2:] == ["backfilled 30 items", "glue attached"]
    events = all_events(kinesis)
    assert sorted(e.key["id"] for e in events) == list(range(30))
    event = next(e for e in events if e.key == {"id": 7})
    label = stream_label(dynamodb, ORDERS)
    assert (event.op, event.before, event.after) == ("r", None, {"id": 7, "status": "new", "total": "9.5"})
    assert event.id == f'{ORDERS}/r/{label}/{{"id":7}}'
    assert (event.source.snapshot, event.source.sequence) == (True, "0")
    assert (event.source.bus, event.source.source, event.source.schema, event.source.table) == (
        "demo",
        "legacy",
        "public",
        "orders",
    )
    # And with the partition key the glue gives the row's changes
    change = modify({"id": 7, "status": "new"}, {"id": 7, "status": "paid"})
    glue_key = ChangeBuilder(BUS).encode_stream_record(change, 0).partition_key
    keys = {
        pk
        for records in read_shards(kinesis, STREAM).values()
        for pk, e in user_records(records)
        if e.key == {"id": 7}
    }
    assert keys == {glue_key} == {'public.orders|{"id":7}'}
    # So the row's next change, put by the glue, follows its read on the same shard
    process_batch(
        [change], builder=ChangeBuilder(BUS), publisher=KinesisPublisher(kinesis, STREAM), dead_letters=None
    )
    row_7 = [
        [e.op for _, e in user_records(records) if e.key == {"id": 7}]
        for records in read_shards(kinesis, STREAM).values()
    ]
    assert [ops for ops in row_7 if ops] == [["r", "u"]]


def test_backfill_of_a_composite_key_table_keys_each_read_by_both_attributes(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given order lines keyed by (order_id, line_no)
    create_dms_table(dynamodb, LINES, keys=("order_id", "line_no"))
    for line in (1, 2):
        dynamodb.put_item(
            TableName=LINES, Item={"order_id": {"N": "5"}, "line_no": {"N": str(line)}, "sku": {"S": "A-1"}}
        )
    # When discovery backfills them
    make_discovery(dynamodb, lambda_client, kinesis, clock).run({}, deadline=clock.later())
    # Then each read carries both key attributes, in its key, id and partition key
    found = sorted(
        (pk, e) for records in read_shards(kinesis, STREAM).values() for pk, e in user_records(records)
    )
    label = stream_label(dynamodb, LINES)
    assert [(pk, e.key, e.id) for pk, e in found] == [
        (
            f'public.order_lines|{{"line_no":{line},"order_id":5}}',
            {"order_id": 5, "line_no": line},
            f'{LINES}/r/{label}/{{"line_no":{line},"order_id":5}}',
        )
        for line in (1, 2)
    ]


def test_without_backfill_the_table_is_attached_unscanned_and_untagged(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a bus configured not to backfill, and a table with rows
    create_dms_table(dynamodb, ORDERS)
    load_rows(dynamodb, ORDERS, 3)
    client = Counting(dynamodb)
    # When discovery puts the table on the bus
    (report,) = (
        make_discovery(client, lambda_client, kinesis, clock, backfill=False)
        .run({}, deadline=clock.later())
        .tables
    )
    # Then nothing is scanned, published or tagged, and the glue is attached
    assert (report.status, report.backfilled, report.mapping_created) == ("done", 0, True)
    assert client.calls["scan"] == client.calls["tag_resource"] == 0
    assert all_events(kinesis) == []
    assert BACKFILL_TAG not in tags(dynamodb, ORDERS)
    assert len(mappings(lambda_client)) == 1


def test_a_backfill_out_of_time_resumes_where_it_stopped(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given 35 rows scanned 10 a page, each page taking 10 s, and 25 s left
    create_dms_table(dynamodb, ORDERS)
    load_rows(dynamodb, ORDERS, 35)
    client = ScanPages(dynamodb, clock, limit=10, seconds=10)
    discovery = make_discovery(client, lambda_client, kinesis, clock)
    # When the run runs out of time
    (first,) = discovery.run({}, deadline=clock.later(25)).tables
    # Then the table is pending, unattached, with its scan position saved
    label = stream_label(dynamodb, ORDERS)
    assert (first.status, first.backfilled) == ("pending", 30)
    assert first.detail == f"backfill of {ORDERS} stopped at 30 items (time); the next run goes on"
    assert tags(dynamodb, ORDERS)[CURSOR_TAG].startswith(f"{label} 30 ")
    assert mappings(lambda_client) == []
    # And the next run scans only the rest, marks it done and attaches the glue
    (second,) = discovery.run({}, deadline=clock.later()).tables
    assert (second.status, second.backfilled) == ("done", 5)
    assert second.actions[0] == "backfill resumed after 30 items"
    assert tags(dynamodb, ORDERS) == {BACKFILL_TAG: label, CURSOR_TAG: ""}
    assert sorted(e.key["id"] for e in all_events(kinesis)) == list(range(35))
    assert len(mappings(lambda_client)) == 1


def test_a_failed_publish_is_an_error_and_the_next_run_redoes_the_page(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given a stream that refuses every record
    create_dms_table(dynamodb, ORDERS)
    load_rows(dynamodb, ORDERS, 3)
    # When discovery backfills
    (failed,) = (
        make_discovery(dynamodb, lambda_client, KinesisDown(kinesis), clock)
        .run({}, deadline=clock.later())
        .tables
    )
    # Then the table errors, not marked backfilled nor attached
    assert failed.status == "error"
    assert failed.detail is not None
    assert failed.detail.startswith(f"backfill of {ORDERS}: 3 items not put on the bus")
    assert BACKFILL_TAG not in tags(dynamodb, ORDERS)
    assert mappings(lambda_client) == []
    # And once the stream takes records, the next run backfills and attaches it
    (report,) = make_discovery(dynamodb, lambda_client, kinesis, clock).run({}, deadline=clock.later()).tables
    assert (report.status, report.backfilled) == ("done", 3)
    assert len(mappings(lambda_client)) == 1


def test_a_backfill_stops_when_another_run_attached_the_glue_meanwhile(
    dynamodb: Any, lambda_client: Any, kinesis: Any, clock: Clock
) -> None:
    # Given another run that finishes the table while this one scans its second page
    create_dms_table(dynamodb, ORDERS)
    load_rows(dynamodb, ORDERS, 25)

    def other_run_attaches(page: int) -> None:
        if page == 2:
            make_discovery(dynamodb, lambda_client, kinesis, clock).run({}, deadline=clock.later())

    client = ScanPages(dynamodb, clock, limit=10, after_page=other_run_attaches)
    # When this run is about to publish that page
    (report,) = make_discovery(client, lambda_client, kinesis, clock).run({}, deadline=clock.later()).tables
    # Then it publishes nothing after the glue started (no read may follow a newer change)
    assert (report.status, report.backfilled, report.mapping_created) == ("done", 10, False)
    assert report.actions[-1] == "backfill stopped after 10 items: another run attached the glue"
    assert len(mappings(lambda_client)) == 1
    assert len(all_events(kinesis)) == 25 + 10  # the other run's reads, and this run's first page


@pytest.mark.parametrize(
    "key",
    [{"id": {"N": "42"}}, {"order_id": {"S": "A-1"}, "line_no": {"N": "3"}}, {"id": {"B": b"\x00\xff"}}],
    ids=["number", "composite", "binary"],
)
def test_a_scan_position_survives_the_tag(key: dict[str, Any]) -> None:
    value = write_cursor("2026-11-23T00:34:00.000", 1000, key)
    assert value is not None
    assert len(value) <= 256
    assert set(value) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-=._:/")
    assert read_cursor(value, "2026-11-23T00:34:00.000") == (key, 1000)
    assert read_cursor(value, "2026-11-24T00:00:00.000") is None  # another stream: start afresh


# ---- settings and the handler ----------------------------------------------------------------


def test_the_settings_come_from_the_environment() -> None:
    settings = DiscoverySettings.from_environ(
        {
            "BUS_NAME": "demo",
            "BUS_STREAM_NAME": "demo-bus",
            "GLUE_FUNCTION_NAME": "demo-glue",
            "GLUE_ON_FAILURE_ARN": GLUE_FAILURES,
            "GLUE_BATCH_SIZE": "5000",
            "GLUE_BATCHING_WINDOW_SECONDS": "5",
            "GLUE_PARALLELIZATION_FACTOR": "4",
            "GLUE_MAX_RETRIES": "3",
            "GLUE_MAX_RECORD_AGE_SECONDS": "3600",
            "KEEP_PROVISIONED": "true",
            "BACKFILL": "false",
            "BUS_NUMBERS": "number",
            "BUS_AGGREGATE": "false",
            "BUS_TYPED": "true",
            "BUS_SCHEMA_TABLE": "demo-schemas",
        }
    )
    assert settings.mapping == MappingSettings(
        batch_size=5000,
        batching_window_seconds=5,
        parallelization_factor=4,
        max_retries=3,
        max_record_age_seconds=3600,
    )
    assert (settings.glue_on_failure_arn, settings.keep_provisioned, settings.backfill) == (
        GLUE_FAILURES,
        True,
        False,
    )
    assert (settings.numbers, settings.publisher.aggregate) == ("number", False)
    assert (settings.typed, settings.schema_table) == (True, "demo-schemas")


#: Discovery's environment as the deployment writes it for a bus of config defaults.
DEPLOYED = deployed_environment("discovery")


def test_the_settings_as_deployed_by_default() -> None:
    settings = DiscoverySettings.from_environ(DEPLOYED)
    assert settings.mapping == GLUE_DEFAULTS
    assert (settings.glue_function_name, settings.glue_on_failure_arn) == ("demo-glue-name", "failures-arn")
    assert (settings.keep_provisioned, settings.backfill, settings.sweep_minutes) == (False, True, 15)
    assert (settings.numbers, settings.publisher.aggregate) == ("string", True)


def _without(*names: str) -> dict[str, str]:
    return {name: value for name, value in DEPLOYED.items() if name not in names}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (_without("GLUE_FUNCTION_NAME"), "GLUE_FUNCTION_NAME is required by the discovery"),
        (_without("BUS_NAME"), "BUS_NAME is required by the discovery"),
        ({**DEPLOYED, "GLUE_BATCH_SIZE": "many"}, "GLUE_BATCH_SIZE must be an integer, not 'many'"),
        ({**DEPLOYED, "GLUE_BATCH_SIZE": ""}, "GLUE_BATCH_SIZE is required by the discovery"),
        (_without("KEEP_PROVISIONED"), "KEEP_PROVISIONED is required by the discovery"),
        ({**DEPLOYED, "BACKFILL": "perhaps"}, "BACKFILL must be true or false, not 'perhaps'"),
        ({**DEPLOYED, "BUS_NUMBERS": "float"}, "BUS_NUMBERS must be 'string' or 'number', not 'float'"),
    ],
    ids=["glue-function", "bus", "batch-size", "batch-size-unset", "keep-provisioned", "backfill", "numbers"],
)
def test_a_bad_environment_names_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        DiscoverySettings.from_environ(environ)


class _Context:
    function_name = "demo-discovery"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:demo-discovery"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


@pytest.fixture
def discovery_handler(lambda_client: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Lambda entry point with the bus stack's environment, built afresh for the test."""
    for name, value in {
        # Without a sweep period: no throttle count (moto has no CloudWatch metrics for it)
        **_without("SWEEP_MINUTES"),
        "BUS_NAME": BUS,
        "BUS_STREAM_NAME": STREAM,
        "GLUE_FUNCTION_NAME": GLUE,
        "GLUE_ON_FAILURE_ARN": GLUE_FAILURES,
    }.items():
        monkeypatch.setenv(name, value)
    from discovery import handler

    handler.settings.cache_clear()
    handler.discovery.cache_clear()
    yield handler
    handler.settings.cache_clear()
    handler.discovery.cache_clear()


def test_the_handler_returns_the_summary_and_emits_the_counts(
    discovery_handler: Any, dynamodb: Any, kinesis: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a new bus table with two rows, and DMS's control table
    create_dms_table(dynamodb, ORDERS)
    load_rows(dynamodb, ORDERS, 2)
    create_dms_table(dynamodb, "awsdms_apply_exceptions")
    # When the sweep invokes discovery
    summary = discovery_handler.handler(SWEEP, _Context())
    # Then it returns what it found and did, and the metrics say the same
    assert summary == {
        "tables": [
            {
                "table": ORDERS,
                "status": "done",
                "actions": [
                    "billing -> PAY_PER_REQUEST",
                    "stream enabled (NEW_AND_OLD_IMAGES)",
                    "backfilled 2 items",
                    "glue attached",
                ],
                "backfilled": 2,
                "detail": None,
            }
        ],
        "TablesFound": 1,
        "TablesSkipped": 0,
        "BillingSwitched": 1,
        "StreamsEnabled": 1,
        "MappingsCreated": 1,
        "ItemsBackfilled": 2,
        "TablesPending": 0,
        "TableErrors": 0,
        "control_table": "awsdms_apply_exceptions: billing -> PAY_PER_REQUEST",
    }
    assert json.loads(json.dumps(summary)) == summary
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf[-1]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "dmsbus"
    assert emf[-1]["service"] == "discovery"
    assert (emf[-1]["MappingsCreated"], emf[-1]["ItemsBackfilled"]) == ([1.0], [2.0])


def test_the_handler_raises_after_every_table_when_one_errored(
    discovery_handler: Any, dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    # Given a table streaming keys only, and a new table after it
    create_dms_table(dynamodb, LINES, keys=("order_id", "line_no"))
    dynamodb.update_table(
        TableName=LINES, StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}
    )
    create_dms_table(dynamodb, ORDERS)
    # When the sweep invokes discovery
    with pytest.raises(discovery_handler.DiscoveryError, match=f"{LINES}: table {LINES} streams KEYS_ONLY"):
        discovery_handler.handler(SWEEP, _Context())
    # Then the failure is the function's (Errors metric), yet the good table was put on the bus
    assert [m["EventSourceArn"].split("/")[1] for m in mappings(lambda_client)] == [ORDERS]
