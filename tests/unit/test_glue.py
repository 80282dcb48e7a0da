from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary

from dmsbus.changes import ChangeBuilder
from dmsbus.deadletter import DeadLetterQueue
from dmsbus.envelope import ChangeEvent
from glue.core import SettingsError, process_batch
from glue.settings import GlueSettings
from tests.plans import deployed_environment
from tests.streams import events_in, insert, modify, read_shards, remove, stream_record
from tests.unit.conftest import STREAM, Sleeps, dead_letters


def _all_events(kinesis: Any) -> list[ChangeEvent]:
    return [event for records in read_shards(kinesis, STREAM).values() for event in events_in(records)]


class Throttled:
    """A Kinesis client whose PutRecords fails the entries ``fails(call, entry)`` picks,
    with the errors Kinesis returns, and sends the rest to the real (moto) client."""

    def __init__(self, client: Any, fails: Callable[[int, dict[str, Any]], bool]) -> None:
        self._client = client
        self._fails = fails
        self.calls: list[list[dict[str, Any]]] = []

    def list_shards(self, **kwargs: Any) -> Any:
        return self._client.list_shards(**kwargs)

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        call = len(self.calls)
        self.calls.append(Records)
        failing = [self._fails(call, entry) for entry in Records]
        passing = [entry for entry, fail in zip(Records, failing, strict=True) if not fail]
        results = iter(
            self._client.put_records(StreamName=StreamName, Records=passing)["Records"] if passing else []
        )
        out = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"}
            if fail
            else next(results)
            for fail in failing
        ]
        return {"FailedRecordCount": sum(failing), "Records": out}


# ---- one change event per stream record --------------------------------------------------


def test_insert_modify_remove_become_c_u_d_events(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given a row inserted, updated and deleted
    row = {"id": 42, "status": "new"}
    paid = {"id": 42, "status": "paid"}
    records = [insert(row, seconds=1_700_000_000.123), modify(row, paid), remove(paid)]
    # When the glue processes the batch
    outcome = process_batch(records, builder=builder, publisher=make_publisher(), dead_letters=None)
    # Then three events reach the stream, in order, with the envelope's fields
    assert outcome.response() == {"batchItemFailures": []}
    events = _all_events(kinesis)
    assert [(e.op, e.before, e.after) for e in events] == [
        ("c", None, row),
        ("u", row, paid),
        ("d", paid, None),
    ]
    first = events[0]
    sequence = records[0]["dynamodb"]["SequenceNumber"]
    assert first.id == f"demo.legacy.public.orders/{sequence}"
    assert first.ts_ms == 1_700_000_000_123
    assert first.key == {"id": 42}
    assert (first.source.bus, first.source.source, first.source.schema, first.source.table) == (
        "demo",
        "legacy",
        "public",
        "orders",
    )
    assert first.source.sequence == sequence
    assert first.source.snapshot is False
    assert first.source.ttl is False


def test_every_value_type_reaches_consumers_per_the_rules(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given an item with every DynamoDB type
    row = {
        "id": 1,
        "s": "Grüße",
        "n_int": 7,
        "n_dec": Decimal("19.99"),
        "bool": True,
        "null": None,
        "b": Binary(b"\x00\xff"),
        "l": [1, "x", [Decimal("0.5")]],
        "m": {"a": {"b": False}},
        "ss": {"b", "a"},
        "ns": {Decimal("10"), Decimal("-1.5"), Decimal("2")},
        "bs": {Binary(b"\x02"), Binary(b"\x01")},
    }
    # When it is inserted and goes through the glue
    process_batch([insert(row)], builder=builder, publisher=make_publisher(), dead_letters=None)
    # Then consumers see the documented values
    (event,) = _all_events(kinesis)
    assert event.after == {
        "id": 1,
        "s": "Grüße",
        "n_int": 7,
        "n_dec": "19.99",
        "bool": True,
        "null": None,
        "b": base64.b64encode(b"\x00\xff").decode(),
        "l": [1, "x", ["0.5"]],
        "m": {"a": {"b": False}},
        "ss": ["a", "b"],
        "ns": ["-1.5", 2, 10],
        "bs": [base64.b64encode(b"\x01").decode(), base64.b64encode(b"\x02").decode()],
    }


def test_ttl_removal_is_flagged(kinesis: Any, builder: ChangeBuilder, make_publisher: Any) -> None:
    # Given a REMOVE made by DynamoDB's TTL process
    process_batch(
        [remove({"id": 5}, ttl=True)], builder=builder, publisher=make_publisher(), dead_letters=None
    )
    # Then the delete event says so
    (event,) = _all_events(kinesis)
    assert (event.op, event.source.ttl) == ("d", True)


def test_versioned_table_carries_its_version(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    record = insert({"id": 1}, table="demo.legacy.public.orders.v2")
    process_batch([record], builder=builder, publisher=make_publisher(), dead_letters=None)
    (event,) = _all_events(kinesis)
    assert (event.source.version, event.source.dynamodb_table) == ("v2", "demo.legacy.public.orders.v2")
    assert event.id.startswith("demo.legacy.public.orders.v2/")


def test_composite_key_rows_share_a_partition_key(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given two changes of one composite-key row
    row = {"order_id": 1, "line": 2, "qty": 1}
    keys = {"line": 2, "order_id": 1}
    records = [
        stream_record("INSERT", keys, new=row, table="demo.legacy.public.lines"),
        stream_record("MODIFY", keys, old=row, new={**row, "qty": 3}, table="demo.legacy.public.lines"),
    ]
    process_batch(records, builder=builder, publisher=make_publisher(aggregate=False), dead_letters=None)
    # Then both Kinesis records carry the same canonical partition key
    kinesis_records = [r for rs in read_shards(kinesis, STREAM).values() for r in rs]
    assert {r["PartitionKey"] for r in kinesis_records} == {'public.lines|{"line":2,"order_id":1}'}


# ---- poison records -------------------------------------------------------------------------


def _poison() -> dict[str, Any]:
    record = insert({"id": 2, "price": Decimal("1.5")})
    record["dynamodb"]["NewImage"]["price"] = {"N": "one fifty"}
    return record


def test_poison_record_goes_to_the_dlq_and_the_rest_flows(
    kinesis: Any, sqs: Any, dlq: DeadLetterQueue, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given a batch with a record that cannot be decoded between two good ones
    records = [insert({"id": 1}), _poison(), insert({"id": 3})]
    # When the glue processes it with a dead-letter queue
    outcome = process_batch(records, builder=builder, publisher=make_publisher(), dead_letters=dlq)
    # Then the good records are published, nothing is reported failed...
    assert outcome.response() == {"batchItemFailures": []}
    assert sorted(event.key["id"] for event in _all_events(kinesis)) == [1, 3]
    # ...and the poison record is parked whole, with an error naming the record and the field
    (letter,) = dead_letters(sqs, dlq.queue_url)
    assert letter["record"] == records[1]
    assert letter["stage"] == "glue"
    sequence = records[1]["dynamodb"]["SequenceNumber"]
    assert f"stream record {sequence}" in letter["reason"]
    assert "dynamodb.NewImage.price: N value 'one fifty' is not a number" in letter["reason"]
    assert outcome.poison == 1


def test_a_poison_record_that_cannot_be_parked_stops_the_batch_before_it(
    kinesis: Any, sqs: Any, dlq: DeadLetterQueue, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given a dead-letter queue that is gone (deleted, or its key disabled)
    sqs.delete_queue(QueueUrl=dlq.queue_url)
    records = [insert({"id": 1}), _poison(), insert({"id": 3})]
    # When the glue processes a batch with a poison record
    outcome = process_batch(records, builder=builder, publisher=make_publisher(), dead_letters=dlq)
    # Then what came before it is published, nothing after it, and Lambda hands the batch
    # again from the poison record (which the next try parks, once the queue is back)
    assert [event.key["id"] for event in _all_events(kinesis)] == [1]
    assert outcome.failed == [
        records[1]["dynamodb"]["SequenceNumber"],
        records[2]["dynamodb"]["SequenceNumber"],
    ]
    assert any("dead-letter queue" in error for error in outcome.publish.errors)


def test_poison_record_without_dlq_stops_the_batch_there(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given the same batch and no dead-letter queue
    records = [insert({"id": 1}), _poison(), insert({"id": 3})]
    # When the glue processes it
    outcome = process_batch(records, builder=builder, publisher=make_publisher(), dead_letters=None)
    # Then what came before is published, and the poison record and all after it are failures
    assert [event.key["id"] for event in _all_events(kinesis)] == [1]
    assert outcome.failed == [
        records[1]["dynamodb"]["SequenceNumber"],
        records[2]["dynamodb"]["SequenceNumber"],
    ]
    assert "price" in (outcome.stopped_by or "")


def test_record_of_a_foreign_table_is_poison(
    kinesis: Any, sqs: Any, dlq: DeadLetterQueue, builder: ChangeBuilder, make_publisher: Any
) -> None:
    record = insert({"id": 1}, table="other.legacy.public.orders")
    process_batch([record], builder=builder, publisher=make_publisher(), dead_letters=dlq)
    (letter,) = dead_letters(sqs, dlq.queue_url)
    assert "is not a table of bus 'demo'" in letter["reason"]


def test_keys_only_stream_is_poison_with_a_hint(
    kinesis: Any, sqs: Any, dlq: DeadLetterQueue, builder: ChangeBuilder, make_publisher: Any
) -> None:
    record = stream_record("MODIFY", {"id": 1})
    record["dynamodb"]["StreamViewType"] = "KEYS_ONLY"
    process_batch([record], builder=builder, publisher=make_publisher(), dead_letters=dlq)
    (letter,) = dead_letters(sqs, dlq.queue_url)
    assert (
        "dynamodb.OldImage is missing (the table's stream must be NEW_AND_OLD_IMAGES, it is KEYS_ONLY)"
        in (letter["reason"])
    )


def test_change_too_large_for_kinesis_is_poison(
    kinesis: Any, sqs: Any, dlq: DeadLetterQueue, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given an update whose two images encode beyond Kinesis's 1 MiB record limit
    big_old, big_new = {"id": 1, "doc": "a" * 600_000}, {"id": 1, "doc": "b" * 600_000}
    outcome = process_batch(
        [modify(big_old, big_new)], builder=builder, publisher=make_publisher(), dead_letters=dlq
    )
    # Then it is parked whole (compressed: it is over SQS's default size), not lost and not blocking
    (letter,) = dead_letters(sqs, dlq.queue_url)
    assert "a Kinesis record takes at most 1048576" in letter["reason"]
    assert letter["record"]["dynamodb"]["NewImage"]["doc"] == {"S": "b" * 600_000}
    assert outcome.failed == []


# ---- throttling, retries, failures ----------------------------------------------------------


def test_throttled_entries_are_retried_alone_with_backoff(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any, sleeps: Sleeps
) -> None:
    # Given a stream that throttles every other entry of the first two PutRecords calls
    client = Throttled(kinesis, lambda call, entry: call < 2 and hash(entry["PartitionKey"]) % 2 == 0)
    records = [insert({"id": n}) for n in range(40)]
    # When the glue publishes 40 plain records
    outcome = process_batch(
        records, builder=builder, publisher=make_publisher(client, aggregate=False), dead_letters=None
    )
    # Then only the failed entries were sent again, with growing delays, and all arrived once
    assert outcome.failed == []
    failed_first = [e for e in client.calls[0] if hash(e["PartitionKey"]) % 2 == 0]
    assert client.calls[1] == failed_first
    assert sleeps == [0.1, 0.2]
    assert outcome.publish.retries == 2 * len(failed_first)
    assert sorted(event.key["id"] for event in _all_events(kinesis)) == list(range(40))


def test_persistent_throttling_reports_from_the_first_failed_record(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given a stream that keeps throttling one row's partition key
    stuck = 'public.orders|{"id":5}'
    client = Throttled(kinesis, lambda call, entry: entry["PartitionKey"] == stuck)
    records = [insert({"id": n}) for n in range(10)]
    # When the glue publishes plain records and runs out of attempts
    outcome = process_batch(
        records,
        builder=builder,
        publisher=make_publisher(client, aggregate=False, max_attempts=3),
        dead_letters=None,
    )
    # Then the stuck record and every later one are reported by SequenceNumber, in order
    assert outcome.failed == [record["dynamodb"]["SequenceNumber"] for record in records[5:]]
    assert outcome.publish.errors and "ProvisionedThroughputExceededException" in outcome.publish.errors[0]


def test_aggregated_failure_reports_from_the_earliest_record_in_the_failed_aggregate(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given a stream that throttles every aggregate bound for shard 0's hash range
    client = Throttled(
        kinesis, lambda call, entry: int(entry.get("ExplicitHashKey", "1" + "0" * 38)) < 2**126
    )
    publisher = make_publisher(client, max_attempts=2)
    shard0 = publisher.shards.current().shards[0]
    records = [insert({"id": n}) for n in range(60)]
    # When the glue publishes
    outcome = process_batch(records, builder=builder, publisher=publisher, dead_letters=None)
    # Then failures start at the first record that hashed to shard 0 and run to the end
    first = next(
        index
        for index, record in enumerate(records)
        if builder.encode_stream_record(record, index).hash_key <= shard0.end
    )
    assert outcome.failed == [record["dynamodb"]["SequenceNumber"] for record in records[first:]]


def test_retries_stop_at_the_deadline(kinesis: Any, builder: ChangeBuilder, make_publisher: Any) -> None:
    # Given a stream that always throttles and no time left in the invocation
    client = Throttled(kinesis, lambda call, entry: True)
    records = [insert({"id": 1})]
    outcome = process_batch(
        records, builder=builder, publisher=make_publisher(client), dead_letters=None, deadline=0.0
    )
    # Then it gives up after one try and reports the record
    assert len(client.calls) == 1
    assert outcome.failed == [records[0]["dynamodb"]["SequenceNumber"]]


# ---- ordering and aggregation ---------------------------------------------------------------


def _interleaved_updates(rows: int, versions: int) -> list[dict[str, Any]]:
    records = []
    for version in range(versions):
        for row in range(rows):
            old = {"id": row, "version": version - 1, "pad": "x" * 200}
            new = {"id": row, "version": version, "pad": "x" * 200}
            records.append(insert(new) if version == 0 else modify(old, new))
    return records


@pytest.mark.parametrize("aggregate", [True, False])
def test_each_row_keeps_its_order_on_one_shard_across_4_shards(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any, aggregate: bool
) -> None:
    # Given 40 rows updated 12 times each, interleaved, with small aggregates so that each
    # shard gets several of them (several rounds)
    records = _interleaved_updates(rows=40, versions=12)
    publisher = make_publisher(aggregate=aggregate, max_aggregate_bytes=8 * 1024)
    # When the glue publishes them
    outcome = process_batch(records, builder=builder, publisher=publisher, dead_letters=None)
    assert outcome.failed == []
    # Then every row's changes sit on one shard, in version order, none lost or repeated
    seen: dict[int, list[int]] = defaultdict(list)
    shards_of: dict[int, set[str]] = defaultdict(set)
    for shard_id, shard_records in read_shards(kinesis, STREAM).items():
        for event in events_in(shard_records):
            seen[event.key["id"]].append(event.after["version"])  # type: ignore[index]
            shards_of[event.key["id"]].add(shard_id)
    assert len({shard for shards in shards_of.values() for shard in shards}) == 4
    assert all(len(shards) == 1 for shards in shards_of.values())
    assert seen == {row: list(range(12)) for row in range(40)}
    if aggregate:
        assert outcome.publish.kinesis_records < len(records) / 5
    else:
        assert outcome.publish.kinesis_records == len(records)


def test_aggregates_pin_their_shard_with_an_explicit_hash_key(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    client = Throttled(kinesis, lambda call, entry: False)
    process_batch(
        [insert({"id": n}) for n in range(100)],
        builder=builder,
        publisher=make_publisher(client),
        dead_letters=None,
    )
    entries = [entry for call in client.calls for entry in call]
    assert len(entries) == 4
    assert all(entry["Data"][:4] == b"\xf3\x89\x9a\xc2" and "ExplicitHashKey" in entry for entry in entries)


def test_resharding_is_noticed_and_the_rest_regrouped(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    # Given a publisher that cached the map of 4 shards, then a split of shard 0
    publisher = make_publisher(max_aggregate_bytes=4 * 1024)
    old_map = publisher.shards.current()
    shard0 = old_map.shards[0]
    kinesis.split_shard(
        StreamName=STREAM,
        ShardToSplit=shard0.shard_id,
        NewStartingHashKey=str((shard0.start + shard0.end) // 2),
    )
    # When the glue publishes several rounds
    records = _interleaved_updates(rows=30, versions=6)
    outcome = process_batch(records, builder=builder, publisher=publisher, dead_letters=None)
    # Then the landing on an unexpected shard refreshed the map, and nothing was lost
    assert outcome.failed == []
    assert outcome.publish.reshards >= 1
    assert publisher.shards.loads == 2
    assert len(publisher.shards.current().shards) == 5
    seen: dict[int, list[int]] = defaultdict(list)
    for event in _all_events(kinesis):
        seen[event.key["id"]].append(event.after["version"])  # type: ignore[index]
    assert {row: sorted(versions) for row, versions in seen.items()} == {
        row: list(range(6)) for row in range(30)
    }


def test_shard_map_is_cached_between_batches(
    kinesis: Any, builder: ChangeBuilder, make_publisher: Any
) -> None:
    publisher = make_publisher()
    for n in range(3):
        process_batch([insert({"id": n})], builder=builder, publisher=publisher, dead_letters=None)
    assert publisher.shards.loads == 1


# ---- the handler and its settings -----------------------------------------------------------


def test_handler_publishes_and_reports_metrics(
    kinesis: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the glue's environment as deployed (no dead-letter queue: nothing is poison)
    for name, value in DEPLOYED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BUS_STREAM_NAME", STREAM)
    monkeypatch.delenv("BUS_DLQ_URL")
    from glue import handler as glue_handler

    glue_handler.glue.cache_clear()
    # When Lambda invokes it with a batch
    response = glue_handler.handler({"Records": [insert({"id": 1}), insert({"id": 2})]}, _Context())
    # Then the changes are on the stream and the metrics say so
    assert response == {"batchItemFailures": []}
    assert sorted(event.key["id"] for event in _all_events(kinesis)) == [1, 2]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf and emf[-1]["Changes"] == [2.0]
    assert emf[-1]["PoisonRecords"] == [0.0]
    glue_handler.glue.cache_clear()


class _Context:
    function_name = "glue"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:glue"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


#: The glue's environment as the deployment writes it for a bus of config defaults.
DEPLOYED = deployed_environment("glue")


def test_settings_require_the_bus_and_stream_names() -> None:
    without = {k: v for k, v in DEPLOYED.items() if k not in ("BUS_NAME", "BUS_STREAM_NAME")}
    with pytest.raises(SettingsError) as raised:
        GlueSettings.from_environ(without)
    assert str(raised.value) == (
        "environment variable BUS_NAME is required by the glue and is not set; "
        "environment variable BUS_STREAM_NAME is required by the glue and is not set"
    )


def test_settings_reject_a_malformed_flag() -> None:
    with pytest.raises(SettingsError, match="BUS_AGGREGATE must be true or false, not 'maybe'"):
        GlueSettings.from_environ({**DEPLOYED, "BUS_AGGREGATE": "maybe"})


def test_settings_as_deployed_by_default() -> None:
    settings = GlueSettings.from_environ(DEPLOYED)
    assert (settings.publisher.aggregate, settings.dlq_url, settings.numbers) == (
        True,
        "demo-glue-dlq-url",
        "string",
    )
    assert (settings.bus, settings.stream_name) == ("demo", "demo-bus-name")


def test_plain_mode_setting() -> None:
    settings = GlueSettings.from_environ({**DEPLOYED, "BUS_AGGREGATE": "false"})
    assert settings.publisher.aggregate is False


def test_unknown_publisher_limits_are_rejected() -> None:
    with pytest.raises(SettingsError, match="max_aggregate_bytes must be between"):
        GlueSettings.from_environ({**DEPLOYED, "BUS_AGGREGATE_MAX_BYTES": "10"})
