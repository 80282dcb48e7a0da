"""Discovery against moto: DynamoDB tables as DMS creates them, the glue's mappings, the
backfill read back from Kinesis with the consumer SDK."""

from __future__ import annotations

import io
import time
import zipfile
from collections import Counter
from typing import Any

import boto3
import pytest

from discovery.core import BACKFILL_TAG, Discovery, DiscoverySettings, MappingSettings, tables_in_event
from dmsbus.changes import ChangeBuilder
from dmsbus.consumer import ChangeEvent, consumer
from dmsbus.publisher import KinesisPublisher
from glue.core import process_batch
from tests.streams import BUS, kinesis_event, modify, read_shards
from tests.unit.conftest import STREAM

REGION = "us-east-1"
GLUE = "demo-glue"
ORDERS = "demo.legacy.public.orders"
LINES = "demo.legacy.public.order_lines"


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
    """moto makes tables ACTIVE at once; DMS's tables are CREATING for a while."""

    def __init__(self, client: Any, creating: set[str]) -> None:
        super().__init__(client)
        self.creating = creating
        self.described: set[str] = set()

    def describe_table(self, **kwargs: Any) -> Any:
        self.described.add(kwargs["TableName"])
        response = self._client.describe_table(**kwargs)
        if kwargs["TableName"] in self.creating:
            response["Table"]["TableStatus"] = "CREATING"
        return response


@pytest.fixture
def dynamodb(kinesis: Any) -> Any:
    return boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def lambda_client(kinesis: Any) -> Any:
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


def make_discovery(
    dynamodb: Any, lambda_client: Any, kinesis: Any, *, sleep: Any = None, **settings: Any
) -> Discovery:
    values = {"bus": BUS, "stream_name": STREAM, "glue_function_name": GLUE, **settings}
    return Discovery(
        settings=DiscoverySettings(**values),
        dynamodb=dynamodb,
        lambda_client=lambda_client,
        publisher=KinesisPublisher(kinesis, STREAM, sleep=lambda _: None),
        sleep=sleep or (lambda _: None),
    )


def later(seconds: float = 60) -> float:
    return time.monotonic() + seconds


def create_table_event(name: str) -> dict[str, Any]:
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


def all_events(kinesis: Any) -> list[ChangeEvent]:
    seen: list[ChangeEvent] = []
    handler = consumer()(seen.append)
    for records in read_shards(kinesis, STREAM).values():
        assert handler(kinesis_event(records), None) == {"batchItemFailures": []}
    return seen


def test_a_create_table_event_puts_the_new_table_on_the_bus(
    dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    # Given a table DMS just created: provisioned, no stream
    create_dms_table(dynamodb, ORDERS)
    discovery = make_discovery(
        dynamodb, lambda_client, kinesis, glue_dlq_arn="arn:aws:sqs:us-east-1:123456789012:demo-glue-dlq"
    )
    # When its CloudTrail CreateTable event arrives
    (report,) = discovery.run(create_table_event(ORDERS), deadline=later())
    # Then it is on-demand, streams both images, and the glue reads it with the bus's settings
    table = dynamodb.describe_table(TableName=ORDERS)["Table"]
    assert report.status == "done"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    (mapping,) = mappings(lambda_client)
    assert mapping["EventSourceArn"] == table["LatestStreamArn"]
    assert mapping["FunctionArn"].endswith(f":function:{GLUE}")
    assert mapping["BatchSize"] == 1000
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == 10
    assert mapping["MaximumRecordAgeInSeconds"] == 86_400
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:123456789012:demo-glue-dlq"}
    }
    label = table["LatestStreamArn"].rsplit("/", 1)[-1]
    tags = dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
    assert {"Key": BACKFILL_TAG, "Value": label} in tags


def test_a_sweep_touches_only_the_bus_tables_and_waits_for_creating_ones(
    dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    # Given two bus tables, one still CREATING, DMS's control table, another bus's and a foreign one
    for name in (ORDERS, LINES, "awsdms_apply_exceptions", "other.legacy.public.orders", "billing-prod"):
        create_dms_table(dynamodb, name)
    client = StillCreating(dynamodb, creating={LINES})
    # When a scheduled sweep runs with a few seconds left
    reports = make_discovery(client, lambda_client, kinesis).run(
        {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, deadline=later(3)
    )
    # Then the ready table is done, the creating one is left to the next sweep
    assert {r.table: r.status for r in reports} == {ORDERS: "done", LINES: "pending"}
    # And nothing else was described, changed or mapped
    for name in ("awsdms_apply_exceptions", "other.legacy.public.orders", "billing-prod", LINES):
        table = dynamodb.describe_table(TableName=name)["Table"]
        assert "StreamSpecification" not in table, name
        assert table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"
    assert [m["EventSourceArn"].split("/")[1] for m in mappings(lambda_client)] == [ORDERS]
    assert client.described == {ORDERS, LINES}


def test_a_table_already_streaming_both_images_is_attached_as_it_is(
    dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    create_dms_table(dynamodb, ORDERS)
    dynamodb.update_table(
        TableName=ORDERS, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )
    arn = dynamodb.describe_table(TableName=ORDERS)["Table"]["LatestStreamArn"]
    (report,) = make_discovery(dynamodb, lambda_client, kinesis).run({}, deadline=later())
    assert report.status == "done"
    assert "stream enabled (NEW_AND_OLD_IMAGES)" not in report.actions
    assert [m["EventSourceArn"] for m in mappings(lambda_client)] == [arn]


def test_a_stream_of_another_view_type_is_an_error_not_replaced(
    dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    create_dms_table(dynamodb, ORDERS)
    dynamodb.update_table(
        TableName=ORDERS, StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}
    )
    (report,) = make_discovery(dynamodb, lambda_client, kinesis).run({}, deadline=later())
    assert report.status == "error"
    assert "streams KEYS_ONLY, not NEW_AND_OLD_IMAGES" in (report.detail or "")
    assert (
        dynamodb.describe_table(TableName=ORDERS)["Table"]["StreamSpecification"]["StreamViewType"]
        == "KEYS_ONLY"
    )
    assert mappings(lambda_client) == []


def test_keep_provisioned_leaves_billing_alone(dynamodb: Any, lambda_client: Any, kinesis: Any) -> None:
    create_dms_table(dynamodb, ORDERS)
    make_discovery(dynamodb, lambda_client, kinesis, keep_provisioned=True).run({}, deadline=later())
    table = dynamodb.describe_table(TableName=ORDERS)["Table"]
    assert table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 200
    assert table["StreamSpecification"]["StreamEnabled"] is True


class SetBackToProvisioned(Counting):
    """A table someone switched back to provisioned after it had been on-demand (moto does
    not record LastUpdateToPayPerRequestDateTime)."""

    def describe_table(self, **kwargs: Any) -> Any:
        response = self._client.describe_table(**kwargs)
        response["Table"]["BillingModeSummary"] = {
            "BillingMode": "PROVISIONED",
            "LastUpdateToPayPerRequestDateTime": time.time() - 3600,
        }
        return response


def test_a_table_set_back_to_provisioned_is_not_switched_again(
    dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    # Given a table that was on-demand once and is provisioned again
    create_dms_table(dynamodb, ORDERS)
    client = SetBackToProvisioned(dynamodb)
    # When a sweep runs
    (report,) = make_discovery(client, lambda_client, kinesis).run({}, deadline=later())
    # Then its billing is left alone (no switch to fight a person, nor DynamoDB's limit)
    assert client.calls["update_table"] == 1  # the stream only
    assert report.actions[0] == "billing left PROVISIONED: set back from on-demand by someone"
    assert report.status == "done"


def test_a_recreated_table_gets_a_new_mapping_and_the_old_one_goes(
    dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    # Given a table on the bus, then dropped and created again by DMS (a new stream)
    create_dms_table(dynamodb, ORDERS)
    discovery = make_discovery(dynamodb, lambda_client, kinesis)
    discovery.run({}, deadline=later())
    (old,) = mappings(lambda_client)
    dynamodb.delete_table(TableName=ORDERS)
    create_dms_table(dynamodb, ORDERS)
    # When the sweep runs again
    (report,) = discovery.run({}, deadline=later())
    # Then the glue reads the new stream only
    new_arn = dynamodb.describe_table(TableName=ORDERS)["Table"]["LatestStreamArn"]
    assert new_arn != old["EventSourceArn"]
    assert [m["EventSourceArn"] for m in mappings(lambda_client)] == [new_arn]
    assert f"removed the mapping of an old stream {old['EventSourceArn']}" in report.actions


def test_backfill_publishes_one_read_per_item_partitioned_like_the_glue(
    dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    # Given 30 rows DMS loaded before the stream existed
    create_dms_table(dynamodb, ORDERS)
    for row in range(30):
        dynamodb.put_item(
            TableName=ORDERS, Item={"id": {"N": str(row)}, "status": {"S": "new"}, "total": {"N": "9.5"}}
        )
    # When discovery puts the table on the bus
    (report,) = make_discovery(dynamodb, lambda_client, kinesis).run({}, deadline=later())
    # Then each row reaches a consumer once, as an r event of the row
    assert report.backfilled == 30
    events = all_events(kinesis)
    assert sorted(e.key["id"] for e in events) == list(range(30))
    event = next(e for e in events if e.key == {"id": 7})
    label = dynamodb.describe_table(TableName=ORDERS)["Table"]["LatestStreamArn"].rsplit("/", 1)[-1]
    assert (event.op, event.before, event.after) == ("r", None, {"id": 7, "status": "new", "total": "9.5"})
    assert event.id == f'{ORDERS}/r/{label}/{{"id":7}}'
    assert (event.source.snapshot, event.source.sequence, event.source.table) == (True, "0", "orders")
    # And a later change of the row, put by the glue, follows its read on the same shard
    process_batch(
        [modify({"id": 7, "status": "new"}, {"id": 7, "status": "paid"})],
        builder=ChangeBuilder(BUS),
        publisher=KinesisPublisher(kinesis, STREAM),
        dead_letters=None,
    )
    row_7 = {
        shard: [e.op for e in all_events_of(records) if e.key == {"id": 7}]
        for shard, records in read_shards(kinesis, STREAM).items()
    }
    assert sorted(ops for ops in row_7.values() if ops) == [["r", "u"]]


def all_events_of(records: list[dict[str, Any]]) -> list[ChangeEvent]:
    seen: list[ChangeEvent] = []
    consumer()(seen.append)(kinesis_event(records), None)
    return seen


def test_backfill_of_a_composite_key_table_keys_each_read_by_both_attributes(
    dynamodb: Any, lambda_client: Any, kinesis: Any
) -> None:
    create_dms_table(dynamodb, LINES, keys=("order_id", "line_no"))
    for line in (1, 2):
        dynamodb.put_item(
            TableName=LINES, Item={"order_id": {"N": "5"}, "line_no": {"N": str(line)}, "sku": {"S": "A-1"}}
        )
    make_discovery(dynamodb, lambda_client, kinesis).run({}, deadline=later())
    events = sorted(all_events(kinesis), key=lambda e: e.key["line_no"])
    assert [e.key for e in events] == [{"order_id": 5, "line_no": 1}, {"order_id": 5, "line_no": 2}]
    assert events[0].id.endswith('/{"line_no":1,"order_id":5}')


def test_a_second_sweep_changes_nothing(dynamodb: Any, lambda_client: Any, kinesis: Any) -> None:
    # Given a sweep that put two tables (one with rows) on the bus
    create_dms_table(dynamodb, ORDERS)
    create_dms_table(dynamodb, LINES, keys=("order_id", "line_no"))
    dynamodb.put_item(TableName=ORDERS, Item={"id": {"N": "1"}})
    make_discovery(dynamodb, lambda_client, kinesis).run({}, deadline=later())
    before = sum(len(records) for records in read_shards(kinesis, STREAM).values())
    counted_dynamodb, counted_lambda = Counting(dynamodb), Counting(lambda_client)
    # When the next sweep runs
    reports = make_discovery(counted_dynamodb, counted_lambda, kinesis).run({}, deadline=later())
    # Then it changes, scans and publishes nothing
    assert [(r.status, r.actions, r.backfilled) for r in reports] == [("done", [], 0), ("done", [], 0)]
    for call in ("update_table", "scan", "tag_resource"):
        assert counted_dynamodb.calls[call] == 0, call
    for call in ("create_event_source_mapping", "delete_event_source_mapping"):
        assert counted_lambda.calls[call] == 0, call
    assert sum(len(records) for records in read_shards(kinesis, STREAM).values()) == before


def test_the_mapping_settings_come_from_the_environment() -> None:
    settings = DiscoverySettings.from_env(
        {
            "BUS_NAME": "demo",
            "BUS_STREAM_NAME": "demo-bus",
            "GLUE_FUNCTION_NAME": "demo-glue",
            "GLUE_BATCH_SIZE": "5000",
            "GLUE_MAX_RETRIES": "3",
            "KEEP_PROVISIONED": "true",
            "BACKFILL": "false",
        }
    )
    assert settings.mapping == MappingSettings(batch_size=5000, max_retries=3)
    assert (settings.keep_provisioned, settings.backfill, settings.glue_dlq_arn) == (True, False, None)


def test_a_missing_variable_is_named() -> None:
    from dmsbus.settings import SettingsError

    with pytest.raises(SettingsError, match="GLUE_FUNCTION_NAME is required by the discovery"):
        DiscoverySettings.from_env({"BUS_NAME": "demo", "BUS_STREAM_NAME": "demo-bus"})


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (create_table_event(ORDERS), [ORDERS]),
        ({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, None),
        ({}, None),
    ],
)
def test_events_name_one_table_or_ask_for_a_sweep(event: dict[str, Any], expected: list[str] | None) -> None:
    assert tables_in_event(event) == expected
