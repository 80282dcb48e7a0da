"""The consumer test kit (dmsbus.testing): events built as the glue builds them, handed to a
decorated handler as Lambda would, with its reported failures."""

from __future__ import annotations

import base64

import pytest
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from dmsbus.consumer import ChangeEvent, consumer
from dmsbus.envelope import ChangeEvent as EnvelopeEvent
from dmsbus.kpl import MAGIC
from dmsbus.pytest_plugin import Run
from dmsbus.testing import change, invoke, kinesis_event


def _orders(count: int) -> list[ChangeEvent]:
    return [
        change("public.orders", "c", key={"id": n}, after={"id": n, "paid": "true"}) for n in range(count)
    ]


def test_a_change_is_the_glue_s_event() -> None:
    # Given an update built with the kit
    event = change(
        "public.orders", "u", key={"id": 1}, before={"id": 1, "s": "new"}, after={"id": 1, "s": "paid"}
    )
    # Then it is a bus event of the sample bus, with an id made of its table and sequence
    assert event.source.dynamodb_table == "demo.legacy.public.orders"
    assert event.id == f"demo.legacy.public.orders/{event.source.sequence}"
    assert EnvelopeEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("op", "images", "message"),
    [
        ("c", {"before": {"id": 1}, "after": {"id": 1}}, "a 'c' change has no before image"),
        ("d", {"before": {"id": 1}, "after": {"id": 1}}, "a 'd' change has no after image"),
        ("u", {"after": {"id": 1}}, "a 'u' change needs before="),
        ("x", {"after": {"id": 1}}, "op 'x' is not one of"),
    ],
)
def test_a_change_that_cannot_happen_is_refused(
    op: str, images: dict[str, dict[str, int]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        change("public.orders", op, key={"id": 1}, **images)  # type: ignore[arg-type]


def test_an_aggregated_event_holds_kpl_records_that_deaggregate_to_the_changes() -> None:
    # Given three changes, When they become a Lambda event with aggregation
    events = _orders(3)
    lambda_event = kinesis_event(events)
    # Then the glue packed them into one KPL aggregated record, which aws-kinesis-agg reads back
    (record,) = lambda_event["Records"]
    assert base64.b64decode(record["kinesis"]["data"]).startswith(MAGIC)
    users = list(iter_deaggregate_records(lambda_event["Records"]))
    assert [EnvelopeEvent.from_json(base64.b64decode(u["kinesis"]["data"])) for u in users] == events
    assert record["kinesis"]["partitionKey"] == 'public.orders|{"id":0}'


def test_a_handler_gets_every_change_in_order_and_reports_no_failure() -> None:
    seen: list[int] = []

    @consumer(tables=["public.orders"])
    def handler(event: ChangeEvent) -> None:
        seen.append(event.key["id"])

    assert invoke(handler, kinesis_event(_orders(5), aggregated=False)) == []
    assert seen == [0, 1, 2, 3, 4]


def test_a_failure_reports_that_record_and_every_later_one(consumer_failures: Run) -> None:
    # Given a handler that fails on the third change of five plain records
    @consumer()
    def handler(event: ChangeEvent) -> None:
        if event.key["id"] == 2:
            raise RuntimeError("mail server down")

    lambda_event = kinesis_event(_orders(5), aggregated=False)
    # When the fixture runs it
    failed = consumer_failures(handler, lambda_event)
    # Then Lambda would retry from the third record on, never skipping ahead
    assert failed == [r["kinesis"]["sequenceNumber"] for r in lambda_event["Records"][2:]]
    assert consumer_failures(handler, _orders(2)) == []
