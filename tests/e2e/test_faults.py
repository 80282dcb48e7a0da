"""The fault matrix: each fault injected into the running local data path, each test
ending with the state rebuilt from the consumer's events equal to the source."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import psycopg
import pytest
from botocore.client import BaseClient

from config.functions import dead_letter_name, glue_name
from dmsbus.consumer import ChangeEvent
from dmsbus.failures import PREFIX, FailedBatch
from local.demo import LATE_SCHEMA, Workload
from tests.e2e.conftest import BUS, SOURCE, Pipeline, corrupt_poison_records, failing_on_customer

_real_api_call = BaseClient._make_api_call


def run_workload(pipeline: Pipeline, changes: int = 200, rate: float = 400) -> None:
    Workload(pipeline.url, rate=rate, seed=3).run(changes=changes, stop=threading.Event())


def assert_converged(pipeline: Pipeline) -> None:
    result = pipeline.converge()
    assert list(result.describe()) == []
    assert result.rows > 0


def test_given_a_poison_stream_record_when_the_glue_reads_it_then_it_goes_to_the_dlq_and_the_rest_flows(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given stream records for the customer named "poison" arrive corrupted (an unknown type)
    corrupt_poison_records(monkeypatch)
    pipeline.wait_attached()

    # When the poison row is written among others, then written again cleanly
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9001, 'before')")
        connection.execute("INSERT INTO customers (id, name) VALUES (9999, 'poison')")
        connection.execute("INSERT INTO customers (id, name) VALUES (9002, 'after')")
    run_workload(pipeline, changes=50)
    deadline = time.monotonic() + 30
    while not (messages := pipeline.queue_messages(dead_letter_name(glue_name(BUS)))):
        assert time.monotonic() < deadline, "the poison record never reached the glue's DLQ"
        time.sleep(0.2)
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("UPDATE customers SET name = 'cured' WHERE id = 9999")

    # Then the DLQ holds that record with its error, and everything else flowed
    assert len(messages) == 1
    body = messages[0]["Body"]
    assert "9999" in body and "Q" in body
    assert_converged(pipeline)


def test_given_kinesis_throttles_put_records_when_changes_flow_then_nothing_is_lost(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the first eight PutRecords calls have their last record throttled
    throttled: list[str] = []

    def throttle(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation != "PutRecords" or len(throttled) >= 8:
            return _real_api_call(self, operation, params)
        records = params["Records"]
        throttled.append(records[-1]["PartitionKey"])
        landed = (
            _real_api_call(self, operation, {**params, "Records": records[:-1]})
            if len(records) > 1
            else {"Records": []}
        )
        failure = {
            "ErrorCode": "ProvisionedThroughputExceededException",
            "ErrorMessage": "Rate exceeded for shard",
        }
        return {"FailedRecordCount": 1, "Records": [*landed["Records"], failure]}

    monkeypatch.setattr(BaseClient, "_make_api_call", throttle)

    # When changes flow
    run_workload(pipeline)

    # Then the throttled records were retried and every change arrived
    assert_converged(pipeline)
    assert len(throttled) == 8


def test_given_the_glue_raises_mid_batch_when_lambda_retries_then_nothing_is_lost(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the glue's third PutRecords call raises (after earlier ones of its batch landed)
    calls: list[str] = []
    pipeline.wait_attached()

    def crash(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "PutRecords" and os.environ.get("AWS_LAMBDA_FUNCTION_NAME") == glue_name(BUS):
            calls.append(operation)
            if len(calls) == 3:
                raise RuntimeError("injected: the glue crashed mid-batch")
        return _real_api_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", crash)

    # When changes flow
    run_workload(pipeline)

    # Then the glue's invocation failed once, was retried, and every change arrived
    assert_converged(pipeline)
    assert pipeline.runtime.service is not None
    glue = [stats for stats in pipeline.runtime.service.stats.values() if stats.function == glue_name(BUS)]
    assert sum(stats.errors for stats in glue) >= 1


def test_given_a_consumer_raises_once_when_lambda_retries_from_the_failed_record_then_nothing_is_lost(
    pipeline: Pipeline,
) -> None:
    # Given the consumer fails on the first update it sees, once
    failed: list[str] = []

    def fail_first_update(event: ChangeEvent) -> None:
        if event.op == "u" and not failed:
            failed.append(event.id)
            raise RuntimeError("injected: the consumer failed once")

    pipeline.faults.append(fail_first_update)

    # When changes flow
    run_workload(pipeline)

    # Then that event was handed again and the state converged
    assert_converged(pipeline)
    assert len(failed) == 1
    assert pipeline.runtime.service is not None
    assert sum(stats.retried_records for stats in pipeline.runtime.service.stats.values()) >= 1


def test_given_the_local_lambda_service_is_killed_when_it_restarts_then_it_resumes_from_its_checkpoints(
    pipeline: Pipeline,
) -> None:
    # Given a workload running through the attached tables
    pipeline.wait_attached()
    stop = threading.Event()
    workload = Workload(pipeline.url, rate=200, seed=5)
    thread = threading.Thread(target=workload.run, kwargs={"changes": 300, "stop": stop})
    thread.start()

    # When the service stops mid-way and a new one starts from the saved checkpoints
    deadline = time.monotonic() + 30
    while pipeline.rebuilt.events < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    pipeline.runtime.stop_lambda()
    checkpoints = json.loads((pipeline.runtime.state_dir / "checkpoints.json").read_text())
    time.sleep(0.3)
    pipeline.runtime.start_lambda()
    thread.join()

    # Then nothing is lost
    assert checkpoints
    assert_converged(pipeline)


def test_given_the_dms_stand_in_is_restarted_when_it_resumes_from_its_slot_then_nothing_is_lost(
    pipeline: Pipeline,
) -> None:
    # Given a workload running
    stop = threading.Event()
    workload = Workload(pipeline.url, rate=300, seed=6)
    thread = threading.Thread(target=workload.run, kwargs={"changes": 300, "stop": stop})
    thread.start()

    # When the stand-in stops mid-way and starts again
    time.sleep(0.4)
    pipeline.runtime.stop_dms()
    time.sleep(0.3)
    stand_in = pipeline.runtime.start_dms()
    thread.join()

    # Then it resumed from its slot (no second full load) and nothing is lost
    assert stand_in.rows_loaded == 0 and not stand_in.loading
    assert_converged(pipeline)


def test_given_a_table_created_mid_run_when_a_wildcard_selects_it_then_its_changes_arrive(
    pipeline: Pipeline,
) -> None:
    # Given the data path running
    run_workload(pipeline, changes=50)

    # When a table matching audit.event_% is created and written
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute(LATE_SCHEMA)
        for number in range(1, 21):
            connection.execute(
                "INSERT INTO audit.event_payment (id, order_id, amount, currency) VALUES (%s, 1, %s, 'EUR')",
                (number, f"{number}.50"),
            )
        connection.execute("DELETE FROM audit.event_payment WHERE id = 3")

    # Then the CreateTable rule had discovery attach it well before the next sweep (20 s),
    # and its rows are rebuilt
    pipeline.wait_attached(tables=6, timeout=8)
    assert_converged(pipeline)
    assert len(pipeline.rebuilt.tables["audit.event_payment"]) == 19


def test_given_a_version_bump_when_dms_reloads_the_table_then_the_new_table_is_backfilled(
    pipeline: Pipeline,
) -> None:
    # Given products replicated as version 2, and some changes
    run_workload(pipeline, changes=50)
    assert_converged(pipeline)

    # When the config bumps products to version 3 and the task reloads it
    tables = [
        table.model_copy(update={"version": 3}) if table.table == "products" else table
        for table in SOURCE.tables
    ]
    reloaded = SOURCE.model_copy(update={"tables": tables})
    pipeline.runtime.stop_dms()
    stand_in = pipeline.runtime.start_dms(reloaded)
    stand_in.dms.full_load(only={("public", "products")})
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("UPDATE products SET price = price + 1 WHERE sku = 'SKU-0001'")

    # Then the .v3 table exists, was put on the bus, and products still equal the source
    names = pipeline.runtime.aws.client("dynamodb").list_tables()["TableNames"]
    assert "demo.legacy.public.products.v3" in names
    assert_converged(pipeline)
    events = pipeline.rebuilt.tables["public.products"]
    assert len(events) == 5


def test_given_a_consumer_fails_on_a_row_until_its_retries_run_out_then_the_batch_is_kept_with_its_records(
    pipeline: Pipeline,
) -> None:
    # Given the consumer fails on every change of customer 9998
    pipeline.faults.append(failing_on_customer(9998))

    # When that customer is written and Lambda's retries (5, bisecting) run out
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9998, 'unlucky')")
    s3 = pipeline.runtime.aws.client("s3")
    assert pipeline.runtime.local_bus is not None
    bucket = pipeline.runtime.local_bus.failures
    deadline = time.monotonic() + 60
    while not (listed := s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", [])):
        assert time.monotonic() < deadline, "no failed batch reached the failure bucket"
        time.sleep(0.3)

    # Then the bucket holds the batch under Lambda's key, with the change itself
    (stored,) = listed
    batch = FailedBatch.parse(stored["Key"], s3.get_object(Bucket=bucket, Key=stored["Key"])["Body"].read())
    assert (batch.kind, batch.condition, batch.function_name) == (
        "kinesis",
        "RetryAttemptsExhausted",
        f"{BUS.name}-rebuild",
    )
    assert batch.key.startswith(f"{PREFIX}{batch.mapping_uuid}/{batch.shard_id}/")
    events = list(batch.change_events())
    # (an insert, or the backfill's read if it came before the table's stream was on)
    kept = [event for event in events if event.key == {"id": 9998}]
    assert [(event.op in ("c", "r"), (event.after or {}).get("name")) for event in kept] == [
        (True, "unlucky")
    ]
