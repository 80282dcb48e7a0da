"""dmsbus status's Typing part: the untyped events of a typed bus, from CloudWatch (moto's),
as the glue and discovery count them (dmsbus.metrics.emit_untyped's EMF, extracted)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from config.functions import discovery_name, glue_name
from config.loader import load_config
from dmsbus.metrics import NAMESPACE, SERVICE_DIMENSION, TABLE_DIMENSION, UNTYPED_EVENTS
from dmsbus_cli.connect import Bus, local_session
from dmsbus_cli.status import UNTYPED_ATTENTION, Status, _typing

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config")
TYPED = CONFIG.model_copy(
    update={"bus": CONFIG.bus.model_copy(update={"glue": CONFIG.bus.glue.model_copy(update={"typed": True})})}
)
CUSTOMERS, ORDERS = "demo.legacy.public.customers", "demo.legacy.public.orders"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield local_session().client("cloudwatch")


def untyped(cloudwatch: Any, service: str, counts: dict[str, int], *, at: datetime = NOW) -> None:
    """What CloudWatch extracts from one ``emit_untyped(service, counts)``: the total with the
    service dimension alone, then each table's with the table dimension beside it."""
    data = [
        {
            "MetricName": UNTYPED_EVENTS,
            "Dimensions": [{"Name": SERVICE_DIMENSION, "Value": service}],
            "Values": [float(sum(counts.values()))],
            "Unit": "Count",
            "Timestamp": at,
        },
        *(
            {
                "MetricName": UNTYPED_EVENTS,
                "Dimensions": [
                    {"Name": TABLE_DIMENSION, "Value": table},
                    {"Name": SERVICE_DIMENSION, "Value": service},
                ],
                "Values": [float(count)],
                "Unit": "Count",
                "Timestamp": at,
            }
            for table, count in counts.items()
        ),
    ]
    cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data)


def test_untyped_events_of_the_last_hour_need_attention_per_table(cloudwatch: Any) -> None:
    # Given the glue and discovery's backfill sent customers untyped, the glue orders too,
    # and the glue sent orders untyped two hours ago as well
    glue, discovery = glue_name(TYPED.bus), discovery_name(TYPED.bus)
    untyped(cloudwatch, glue, {CUSTOMERS: 3, ORDERS: 1})
    untyped(cloudwatch, discovery, {CUSTOMERS: 2})
    untyped(cloudwatch, glue, {ORDERS: 40}, at=NOW - timedelta(hours=2))
    status = Status()
    # When the typed bus's status is taken
    _typing(Bus(TYPED, local_session()), status, NOW + timedelta(seconds=1))
    # Then each table shows the last hour's sum of both, and needs attention with what to do
    assert [(line.section, line.name, line.state) for line in status.lines] == [
        ("Typing", CUSTOMERS, "5 untyped events in the last hour"),
        ("Typing", ORDERS, "1 untyped events in the last hour"),
    ]
    assert [line.attention for line in status.needs_attention] == [UNTYPED_ATTENTION] * 2
    assert "schema function could not be read in time" in UNTYPED_ATTENTION


def test_untyped_events_of_a_table_cloudwatch_does_not_list_yet_still_need_attention(cloudwatch: Any) -> None:
    # Given the glue's total counts 6 untyped events, but CloudWatch lists only customers' 4
    # (ListMetrics shows a new metric up to 15 minutes after its first point)
    glue = glue_name(TYPED.bus)
    untyped(cloudwatch, glue, {CUSTOMERS: 4})
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": UNTYPED_EVENTS,
                "Dimensions": [{"Name": SERVICE_DIMENSION, "Value": glue}],
                "Values": [2.0],
                "Unit": "Count",
                "Timestamp": NOW,
            }
        ],
    )
    status = Status()
    # When the typed bus's status is taken
    _typing(Bus(TYPED, local_session()), status, NOW + timedelta(seconds=1))
    # Then the 2 not listed by table need attention too
    assert [(line.name, line.state, line.attention) for line in status.lines] == [
        (CUSTOMERS, "4 untyped events in the last hour", UNTYPED_ATTENTION),
        ("tables CloudWatch does not list yet", "2 untyped events in the last hour", UNTYPED_ATTENTION),
    ]


def test_no_untyped_event_in_the_last_hour_is_one_line_that_needs_nothing(cloudwatch: Any) -> None:
    # Given the glue sent events untyped two hours ago only
    untyped(cloudwatch, glue_name(TYPED.bus), {ORDERS: 40}, at=NOW - timedelta(hours=2))
    status = Status()
    # When the typed bus's status is taken
    _typing(Bus(TYPED, local_session()), status, NOW + timedelta(seconds=1))
    # Then one line says there were none, and nothing needs attention
    assert [(line.section, line.name, line.state) for line in status.lines] == [
        ("Typing", "all tables", "0 untyped events in the last hour")
    ]
    assert status.needs_attention == []


def test_an_untyped_bus_has_no_typing_part(cloudwatch: Any) -> None:
    # Given a bus that does not type its events (the metric would not exist)
    untyped(cloudwatch, glue_name(CONFIG.bus), {ORDERS: 1})
    status = Status()
    # When its status is taken, then there is no Typing part
    _typing(Bus(CONFIG, local_session()), status, NOW + timedelta(seconds=1))
    assert status.lines == []
