"""dmsbus status's DMS part, against DMS's API model (botocore's Stubber: moto has no
DescribeTableStatistics)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.stub import Stubber

from config.loader import load_config
from dmsbus_cli.connect import Bus
from dmsbus_cli.status import Status, _dms

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config")
TASK_ARN = "arn:aws:dms:eu-west-1:111122223333:task:K55IUCGBASJS5VHZJIINA45FII"


class StubbedBus(Bus):
    def __init__(self, dms: Any) -> None:
        super().__init__(CONFIG, boto3.session.Session(region_name="eu-west-1"))
        self.dms = dms

    def client(self, service: str) -> Any:
        assert service == "dms"
        return self.dms


def stubbed(task_status: str, tables: list[dict[str, Any]]) -> tuple[Any, Stubber]:
    client = boto3.client("dms", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response(
        "describe_replication_tasks",
        {
            "ReplicationTasks": [
                {
                    "ReplicationTaskIdentifier": "demo-legacy",
                    "ReplicationTaskArn": TASK_ARN,
                    "Status": task_status,
                    "StopReason": "Stop Reason FATAL_ERROR",
                }
            ]
        },
        {"Filters": [{"Name": "replication-task-id", "Values": ["demo-legacy"]}], "WithoutSettings": True},
    )
    stubber.add_response(
        "describe_table_statistics",
        {"ReplicationTaskArn": TASK_ARN, "TableStatistics": tables},
        {"ReplicationTaskArn": TASK_ARN, "MaxRecords": 500},
    )
    return client, stubber


def table(name: str, state: str) -> dict[str, Any]:
    return {
        "SchemaName": "public",
        "TableName": name,
        "TableState": state,
        "FullLoadRows": 20,
        "Inserts": 3,
        "Updates": 2,
        "Deletes": 1,
        "LastUpdateTime": datetime(2026, 11, 30, tzinfo=UTC),
    }


def test_a_running_task_with_a_table_in_error_flags_only_that_table() -> None:
    # Given a running task, one table completed and one in error
    client, stubber = stubbed(
        "running", [table("orders", "Table completed"), table("payments", "Table error")]
    )
    status = Status()
    with stubber:
        _dms(StubbedBus(client), status)
    # Then the task is fine, its table statistics are shown, and the errored table is flagged
    assert [(line.name, line.attention is not None) for line in status.lines] == [
        ("demo-legacy", False),
        ("demo-legacy public.orders", False),
        ("demo-legacy public.payments", True),
    ]
    assert status.lines[1].state == "Table completed, loaded 20, inserts 3, updates 2, deletes 1"


def test_a_stopped_task_needs_attention_and_says_why() -> None:
    client, stubber = stubbed("stopped", [])
    status = Status()
    with stubber:
        _dms(StubbedBus(client), status)
    (line,) = status.lines
    assert line.state == "stopped (Stop Reason FATAL_ERROR)"
    assert line.attention == "changes do not flow while the task is not running"
