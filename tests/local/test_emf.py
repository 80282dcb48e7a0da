"""CloudWatch's part of EMF in local mode (local/emf.py): what a local function writes to
stdout as an EMF document reaches the moto server's CloudWatch; the rest stays log text."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from config.functions import discovery_name, glue_name
from config.loader import load_config
from config.model import ConsumerConfig
from dmsbus.metrics import NAMESPACE, SERVICE_DIMENSION, TABLE_DIMENSION, UNTYPED_EVENTS, emit_untyped
from dmsbus_cli.connect import Bus, local_session
from dmsbus_cli.status import UNTYPED_ATTENTION, Status, _typing
from local.emf import EmfMetrics
from local.functions import LocalFunction
from local.runtime import LocalRuntime, local_bus

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config")
TYPED = local_bus(CONFIG.bus).model_copy(update={"glue": CONFIG.bus.glue.model_copy(update={"typed": True})})
GLUE = glue_name(TYPED)
CUSTOMERS, ORDERS = "demo.legacy.public.customers", "demo.legacy.public.orders"
PRODUCTS = "demo.legacy.public.products"


def _emits(event: dict[str, Any], context: Any) -> None:
    """A function that counts untyped events as the glue does, and writes ``lines`` as is."""
    if "untyped" in event:
        emit_untyped(event["service"], event["untyped"])
    for line in event.get("lines", []):
        print(line)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """A typed bus's AWS on the moto server, with a local function that emits EMF."""
    runtime = LocalRuntime(bus=TYPED, source=CONFIG.sources[0], state_dir=tmp_path_factory.mktemp("emf"))
    try:
        runtime.start_aws()
        assert runtime.local_bus is not None
        emits = runtime.local_bus.add_consumer(ConsumerConfig(name="emits", code="tests"), handler=_emits)
        emits.log = io.StringIO()
        yield runtime
    finally:
        runtime.stop()


def _sum(cloudwatch: Any, service: str, table: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=UNTYPED_EVENTS,
        Dimensions=[
            {"Name": SERVICE_DIMENSION, "Value": service},
            {"Name": TABLE_DIMENSION, "Value": table},
        ],
        StartTime=start,
        EndTime=end,
        Period=3600,
        Statistics=["Sum"],
    )["Datapoints"]
    return points


def test_untyped_counts_a_local_function_emits_reach_moto_cloudwatch(runtime: LocalRuntime) -> None:
    # Given the local bus's function, which counts untyped events as the glue does
    assert runtime.local_bus is not None and runtime.metrics is not None
    emits = runtime.local_bus.functions["demo-emits"]
    started = datetime.now(UTC) - timedelta(seconds=1)
    # When it runs
    emits.invoke({"service": GLUE, "untyped": {CUSTOMERS: 3, ORDERS: 2}})
    runtime.metrics.flush()
    # Then moto's CloudWatch has the total and each table's count, under the glue's name
    cloudwatch, end = runtime.aws.client("cloudwatch"), datetime.now(UTC) + timedelta(seconds=1)
    listed = cloudwatch.list_metrics(
        Namespace=NAMESPACE,
        MetricName=UNTYPED_EVENTS,
        Dimensions=[{"Name": SERVICE_DIMENSION, "Value": GLUE}],
    )["Metrics"]
    assert {tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in listed} == {
        ((SERVICE_DIMENSION, GLUE),),
        ((SERVICE_DIMENSION, GLUE), (TABLE_DIMENSION, CUSTOMERS)),
        ((SERVICE_DIMENSION, GLUE), (TABLE_DIMENSION, ORDERS)),
    }
    per_table = {
        table: [point["Sum"] for point in _sum(cloudwatch, GLUE, table, started, end)]
        for table in (CUSTOMERS, ORDERS)
    }
    assert per_table == {CUSTOMERS: [3.0], ORDERS: [2.0]}
    # and the function's log still has the lines
    assert isinstance(emits.log, io.StringIO)
    assert f'"table":"{CUSTOMERS}"' in emits.log.getvalue()


def test_an_emf_line_gives_its_timestamp_unit_values_and_dimension_sets(runtime: LocalRuntime) -> None:
    # Given an EMF line of half an hour ago, two values in milliseconds, two dimension sets
    assert runtime.local_bus is not None and runtime.metrics is not None
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    line = {
        "_aws": {
            "Timestamp": int(at.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": "emf-test",
                    "Dimensions": [["fn"], ["fn", "shard"]],
                    "Metrics": [{"Name": "Took", "Unit": "Milliseconds", "StorageResolution": 1}],
                }
            ],
        },
        "fn": "demo-emits",
        "shard": "0001",
        "Took": [10, 20],
        "requestId": "not a dimension",
    }
    # When a local function writes it
    runtime.local_bus.functions["demo-emits"].invoke({"lines": [json.dumps(line)]})
    runtime.metrics.flush()
    # Then both dimension sets hold both values at that time, with the unit
    cloudwatch = runtime.aws.client("cloudwatch")
    metrics = cloudwatch.list_metrics(Namespace="emf-test", MetricName="Took")["Metrics"]
    assert {tuple(sorted(d["Name"] for d in m["Dimensions"])) for m in metrics} == {("fn",), ("fn", "shard")}
    points = cloudwatch.get_metric_statistics(
        Namespace="emf-test",
        MetricName="Took",
        Dimensions=[{"Name": "fn", "Value": "demo-emits"}, {"Name": "shard", "Value": "0001"}],
        StartTime=at - timedelta(minutes=1),
        EndTime=at + timedelta(minutes=1),
        Period=120,
        Statistics=["Sum", "SampleCount"],
    )["Datapoints"]
    assert [(p["Sum"], p["SampleCount"], p["Unit"]) for p in points] == [(30.0, 2.0, "Milliseconds")]
    # and nothing at the time it was written
    later = cloudwatch.get_metric_statistics(
        Namespace="emf-test",
        MetricName="Took",
        Dimensions=[{"Name": "fn", "Value": "demo-emits"}],
        StartTime=at + timedelta(minutes=5),
        EndTime=datetime.now(UTC) + timedelta(minutes=1),
        Period=3600,
        Statistics=["Sum"],
    )["Datapoints"]
    assert later == []


def test_dmsbus_status_against_the_local_bus_shows_what_its_functions_counted(runtime: LocalRuntime) -> None:
    # Given discovery's backfill counted untyped events of a table on the local bus
    assert runtime.local_bus is not None and runtime.metrics is not None
    runtime.local_bus.functions["demo-emits"].invoke(
        {"service": discovery_name(TYPED), "untyped": {PRODUCTS: 4}}
    )
    runtime.metrics.flush()
    status = Status()
    # When `dmsbus status --local` looks at the typed bus (a second on: moto drops the
    # fraction of a second of EndTime, and the point is from this second)
    config = CONFIG.model_copy(update={"bus": TYPED})
    _typing(
        Bus(config, local_session(), runtime.aws.endpoint_url),
        status,
        datetime.now(UTC) + timedelta(seconds=1),
    )
    # Then the table needs attention, with its count
    (line,) = [line for line in status.lines if line.name == PRODUCTS]
    assert (line.state, line.attention) == ("4 untyped events in the last hour", UNTYPED_ATTENTION)


# ---- what is not EMF (in-process moto) -----------------------------------------------------


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def _emf(value: float, **changes: Any) -> str:
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": "t", "Dimensions": [["service"]], "Metrics": [{"Name": "N", "Unit": "Count"}]}
            ],
        },
        "service": "f",
        "N": value,
    }
    document.update(changes)
    return json.dumps(document)


def _function(handler: Any, metrics: EmfMetrics) -> tuple[LocalFunction, io.StringIO]:
    log = io.StringIO()
    return LocalFunction(name="f", environment={}, handler=handler, log=log, metrics=metrics), log


def _put(cloudwatch: Any) -> list[float]:
    points = cloudwatch.get_metric_statistics(
        Namespace="t",
        MetricName="N",
        Dimensions=[{"Name": "service", "Value": "f"}],
        StartTime=datetime.now(UTC) - timedelta(minutes=5),
        EndTime=datetime.now(UTC) + timedelta(minutes=5),
        Period=600,
        Statistics=["Sum"],
    )["Datapoints"]
    return [point["Sum"] for point in points]


def test_log_text_json_logs_and_broken_emf_stay_log_text(cloudwatch: Any) -> None:
    # Given lines that are not EMF documents (by the specification), and one that is
    metrics = EmfMetrics(cloudwatch)
    lines = [
        "plain text with _aws in it",
        '{"level":"INFO","message":"a Powertools log line"}',
        '{"_aws": "not an object"',
        _emf(1, _aws={"CloudWatchMetrics": []}),  # no Timestamp
        _emf(1, N="1"),  # a metric target that is not a number
        _emf(1, service=7),  # a dimension target that is not a string
        _emf(1, N=list(range(101))),  # more than 100 values
        _emf(1).replace('"Count"', '"Apples"'),  # not a CloudWatch unit
        _emf(1).replace("1}", "NaN}"),  # NaN is not JSON
        _emf(4),
    ]
    function, log = _function(lambda event, context: print("\n".join(lines)), metrics)
    # When a function writes them
    function.invoke({})
    metrics.flush()
    # Then its log has every line as written, and CloudWatch only the EMF document's value
    assert log.getvalue() == "\n".join(lines) + "\n"
    assert _put(cloudwatch) == [4.0]
    assert metrics.total("t", "N", {"service": "f"}) == 4.0


def test_a_line_counts_once_its_newline_arrives_and_an_unfinished_one_never(cloudwatch: Any) -> None:
    # Given a function that writes one EMF line in pieces, then one without its newline
    metrics = EmfMetrics(cloudwatch)
    first, second = _emf(2), _emf(5)

    def handler(event: dict[str, Any], context: Any) -> None:
        sys.stdout.write(first[:10])
        sys.stdout.write(first[10:30])
        sys.stdout.write(first[30:] + "\n" + second[:20])
        sys.stdout.write(second[20:])

    function, log = _function(handler, metrics)
    # When it runs twice (a new invocation does not finish the last one's line)
    function.invoke({})
    function.invoke({})
    metrics.flush()
    # Then the complete line counted once per invocation, the unfinished one never
    assert _put(cloudwatch) == [4.0]
    assert log.getvalue() == (first + "\n" + second) * 2


def test_a_line_longer_than_an_emf_event_is_not_read(cloudwatch: Any) -> None:
    # Given an EMF document padded past an EMF event's 1 MB, then a normal one
    metrics = EmfMetrics(cloudwatch)
    lines = [_emf(100, padding="x" * (1024 * 1024)), _emf(1)]
    function, _ = _function(lambda event, context: print("\n".join(lines)), metrics)
    # When a function writes them
    function.invoke({})
    metrics.flush()
    # Then only the normal one reaches CloudWatch
    assert _put(cloudwatch) == [1.0]
