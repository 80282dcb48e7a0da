from __future__ import annotations

import base64
from typing import Any

import pytest

from dmsbus.changes import ChangeBuilder
from dmsbus.consumer import ChangeEvent, consumer, dedup_key
from dmsbus.deadletter import DeadLetterQueue
from glue.core import process_batch
from tests.streams import insert, kinesis_event, modify, read_shards, remove
from tests.unit.conftest import STREAM, dead_letters


def _published(
    kinesis: Any, make_publisher: Any, records: list[dict[str, Any]], **settings: Any
) -> list[dict[str, Any]]:
    """Run the real glue on stream records; return the Kinesis records of the busiest shard."""
    outcome = process_batch(
        records, builder=ChangeBuilder("demo"), publisher=make_publisher(**settings), dead_letters=None
    )
    assert outcome.failed == []
    shards = read_shards(kinesis, STREAM)
    return max(shards.values(), key=len)


def _row_changes(rows: int = 1, versions: int = 5) -> list[dict[str, Any]]:
    records = []
    for version in range(versions):
        for row in range(rows):
            new = {"id": row, "version": version}
            records.append(insert(new) if version == 0 else modify({"id": row, "version": version - 1}, new))
    return records


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.events: list[ChangeEvent] = []
        self.fail_on = fail_on

    def __call__(self, event: ChangeEvent) -> None:
        if self.fail_on is not None and event.after and event.after.get("version") == self.fail_on:
            raise RuntimeError("sink is down")
        self.events.append(event)


@pytest.mark.parametrize("aggregate", [True, False])
def test_calls_the_function_once_per_change_in_stream_order(
    kinesis: Any, make_publisher: Any, aggregate: bool
) -> None:
    # Given one row's five changes on the stream, aggregated or plain
    records = _published(kinesis, make_publisher, _row_changes(), aggregate=aggregate)
    assert (len(records) == 1) is aggregate
    recorder = Recorder()
    handler = consumer()(recorder)
    # When Lambda hands the consumer those Kinesis records
    response = handler(kinesis_event(records), None)
    # Then the function saw every change in order and nothing failed
    assert response == {"batchItemFailures": []}
    assert [event.after["version"] for event in recorder.events] == [0, 1, 2, 3, 4]  # type: ignore[index]


def test_filters_by_table_and_op(kinesis: Any, make_publisher: Any) -> None:
    # Given inserts, updates and deletes on two tables
    records = [
        insert({"id": 1}),
        modify({"id": 1}, {"id": 1, "x": 2}),
        remove({"id": 1, "x": 2}),
        insert({"id": 9}, table="demo.legacy.sales.invoices"),
    ]
    process_batch(
        records, builder=ChangeBuilder("demo"), publisher=make_publisher(aggregate=False), dead_letters=None
    )
    everything = [r for shard in read_shards(kinesis, STREAM).values() for r in shard]
    recorder = Recorder()
    # When a consumer wants only inserts and deletes of public.*
    consumer(tables=["public.*"], ops=["c", "d"])(recorder)(kinesis_event(everything), None)
    # Then only those reach it
    assert sorted((e.qualified_table, e.op) for e in recorder.events) == [
        ("public.orders", "c"),
        ("public.orders", "d"),
    ]


def test_stops_at_the_first_failure_and_reports_that_record_and_every_later_one(
    kinesis: Any, make_publisher: Any
) -> None:
    # Given one row's changes as five plain Kinesis records
    records = _published(kinesis, make_publisher, _row_changes(), aggregate=False)
    recorder = Recorder(fail_on=2)
    # When the function fails on the third change
    response = consumer()(recorder)(kinesis_event(records), None)
    # Then it was not called past the failure, and records 3..5 are reported in order
    assert [event.after["version"] for event in recorder.events] == [0, 1]  # type: ignore[index]
    assert response == {"batchItemFailures": [{"itemIdentifier": r["SequenceNumber"]} for r in records[2:]]}


def test_failure_inside_an_aggregate_reports_the_whole_aggregate_and_later_ones(
    kinesis: Any, make_publisher: Any
) -> None:
    # Given many rows' changes aggregated into a few Kinesis records on one shard
    records = _published(kinesis, make_publisher, _row_changes(rows=30, versions=4), max_aggregate_bytes=4096)
    assert len(records) > 2
    recorder = Recorder(fail_on=2)
    # When the function fails on the first change of version 2
    response = consumer()(recorder)(kinesis_event(records), None)
    # Then the aggregate holding it and all after it are reported, none before it
    failed = [item["itemIdentifier"] for item in response["batchItemFailures"]]
    sequences = [r["SequenceNumber"] for r in records]
    assert failed == sequences[sequences.index(failed[0]) :]
    assert 0 < sequences.index(failed[0]) < len(sequences)
    assert all(event.after["version"] < 2 for event in recorder.events)  # type: ignore[index]


def test_batch_mode_hands_one_list_per_invocation(kinesis: Any, make_publisher: Any) -> None:
    records = _published(kinesis, make_publisher, _row_changes(), aggregate=False)
    batches: list[list[ChangeEvent]] = []
    handler = consumer(batch=True)(batches.append)
    assert handler(kinesis_event(records), None) == {"batchItemFailures": []}
    assert [[event.after["version"] for event in batch] for batch in batches] == [[0, 1, 2, 3, 4]]  # type: ignore[index]


def test_batch_mode_failure_reports_every_record(kinesis: Any, make_publisher: Any) -> None:
    records = _published(kinesis, make_publisher, _row_changes(), aggregate=False)

    def sink(events: list[ChangeEvent]) -> None:
        raise RuntimeError("transaction rolled back")

    response = consumer(batch=True)(sink)(kinesis_event(records), None)
    assert response == {"batchItemFailures": [{"itemIdentifier": r["SequenceNumber"]} for r in records]}


def _with_garbage(records: list[dict[str, Any]], at: int) -> dict[str, Any]:
    event = kinesis_event(records)
    event["Records"][at]["kinesis"]["data"] = base64.b64encode(b'{"v": 1, "id": "broken"').decode()
    return event


def test_record_that_is_not_a_change_event_goes_to_the_dlq(
    kinesis: Any, make_publisher: Any, sqs: Any, dlq: DeadLetterQueue
) -> None:
    # Given five plain records, the second of which is not an envelope
    records = _published(kinesis, make_publisher, _row_changes(), aggregate=False)
    recorder = Recorder()
    # When a consumer with a dead-letter queue reads them
    response = consumer(dead_letters=dlq)(recorder)(_with_garbage(records, 1), None)
    # Then the rest are handled, nothing is failed, and the bad one is parked with its data
    assert response == {"batchItemFailures": []}
    assert [event.after["version"] for event in recorder.events] == [0, 2, 3, 4]  # type: ignore[index]
    (letter,) = dead_letters(sqs, dlq.queue_url)
    assert letter["record"]["sequenceNumber"] == records[1]["SequenceNumber"]
    assert base64.b64decode(letter["record"]["data"]) == b'{"v": 1, "id": "broken"'
    assert "is not a change event: change event is not valid JSON" in letter["reason"]


def test_record_that_is_not_a_change_event_stops_the_batch_without_a_dlq(
    kinesis: Any, make_publisher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUS_DLQ_URL", raising=False)
    records = _published(kinesis, make_publisher, _row_changes(), aggregate=False)
    recorder = Recorder()
    response = consumer()(recorder)(_with_garbage(records, 1), None)
    assert [event.after["version"] for event in recorder.events] == [0]  # type: ignore[index]
    assert response == {"batchItemFailures": [{"itemIdentifier": r["SequenceNumber"]} for r in records[1:]]}


def test_dlq_comes_from_the_environment(
    kinesis: Any, make_publisher: Any, sqs: Any, dlq: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUS_DLQ_URL", dlq.queue_url)
    records = _published(kinesis, make_publisher, _row_changes(versions=2), aggregate=False)
    consumer()(Recorder())(_with_garbage(records, 0), None)
    assert len(dead_letters(sqs, dlq.queue_url)) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tables": ["orders"]}, "table 'orders' must be 'schema.table'"),
        ({"ops": ["c", "x"]}, r"ops \['x'\] are not change ops"),
        ({"tables": "public.orders"}, "tables and ops are lists"),
    ],
)
def test_bad_selection_is_rejected_when_decorating(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        consumer(**kwargs)


def test_dedup_key_is_the_event_id(kinesis: Any, make_publisher: Any) -> None:
    records = _published(kinesis, make_publisher, _row_changes(versions=1), aggregate=False)
    recorder = Recorder()
    consumer()(recorder)(kinesis_event(records), None)
    (event,) = recorder.events
    assert event.id == f"demo.legacy.public.orders/{event.source.sequence}"
    with pytest.deprecated_call(match="use event.id"):
        assert dedup_key(event) == event.id


def test_example_log_changes_consumer_logs_each_change(
    kinesis: Any, make_publisher: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from consumers.log_changes.handler import handler

    records = _published(kinesis, make_publisher, _row_changes(versions=2), aggregate=False)
    assert handler(kinesis_event(records), None) == {"batchItemFailures": []}
    out = capsys.readouterr().out
    assert out.count('"message":"change"') == 2
    assert '"table":"public.orders"' in out


def test_backfill_reads_reach_consumers_that_ask_for_them() -> None:
    # Given a plain Kinesis record holding a backfill read event
    from tests.unit.test_envelope import _event

    read = _event(op="r", before=None)
    record = {"PartitionKey": 'public.orders|{"id":42}', "SequenceNumber": "49", "Data": read.to_json()}
    wants_reads, wants_changes = Recorder(), Recorder()
    # When consumers filtering on r and on c/u/d read it
    consumer(ops=["r"])(wants_reads)(kinesis_event([record]), None)
    consumer(ops=["c", "u", "d"])(wants_changes)(kinesis_event([record]), None)
    # Then only the first sees it
    assert [event.op for event in wants_reads.events] == ["r"]
    assert wants_changes.events == []


def test_deployment_filter_from_the_environment_narrows_the_decorators(
    kinesis: Any, make_publisher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given changes on two tables and a deployment that receives only sales.* (config entry)
    monkeypatch.setenv("DMSBUS_TABLES", "sales.*")
    monkeypatch.setenv("DMSBUS_OPS", "c, u")
    records = [insert({"id": 1}), insert({"id": 9}, table="demo.legacy.sales.invoices")]
    process_batch(
        records, builder=ChangeBuilder("demo"), publisher=make_publisher(aggregate=False), dead_letters=None
    )
    everything = [r for shard in read_shards(kinesis, STREAM).values() for r in shard]
    recorder = Recorder()
    # When a consumer whose code takes every table reads them
    consumer()(recorder)(kinesis_event(everything), None)
    # Then only the deployment's table reaches it
    assert [(e.qualified_table, e.op) for e in recorder.events] == [("sales.invoices", "c")]


def test_bad_deployment_filter_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a deployment whose ops variable holds a typo
    monkeypatch.setenv("DMSBUS_OPS", "c,update")
    handler = consumer()(Recorder())
    # When the first invocation reads it, Then the error names the variable and the value
    with pytest.raises(ValueError, match=r"DMSBUS_TABLES/DMSBUS_OPS: ops \['update'\]"):
        handler({"Records": []}, None)


def test_with_records_the_function_gets_each_events_exact_bytes_and_kinesis_position(
    kinesis: Any, make_publisher: Any
) -> None:
    # Given one row's five changes aggregated into one Kinesis record
    records = _published(kinesis, make_publisher, _row_changes(), aggregate=True)
    received: list[Any] = []
    handler = consumer(batch=True, records=True)(received.extend)

    # When the consumer asks for records
    response = handler(kinesis_event(records), None)

    # Then each carries the event, its JSON as published, and its place in the aggregate
    assert response == {"batchItemFailures": []}
    assert [item.sub_sequence_number for item in received] == [0, 1, 2, 3, 4]
    assert {item.sequence_number for item in received} == {records[0]["SequenceNumber"]}
    assert [item.event.after["version"] for item in received] == [0, 1, 2, 3, 4]
    assert all(item.data == item.event.to_json() for item in received)
