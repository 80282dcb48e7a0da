"""dmsbus status and plan against the running local data path (the moto server's resources)."""

from __future__ import annotations

import psycopg

from dmsbus_cli.connect import Bus, local_session
from dmsbus_cli.plan import deployed_consumers, plan_consumers
from dmsbus_cli.status import collect
from tests.e2e.conftest import CONFIG, Pipeline, failing_on_customer
from tests.e2e.test_faults import assert_converged, run_workload
from tests.e2e.test_redrive import failed_batches


def local(pipeline: Pipeline) -> Bus:
    return Bus(CONFIG, local_session(), pipeline.runtime.aws.endpoint_url)


def test_a_healthy_bus_needs_no_attention_and_lists_every_table_and_consumer(pipeline: Pipeline) -> None:
    # Given the bus carried a workload to the end
    pipeline.wait_attached()
    run_workload(pipeline, changes=50)
    assert_converged(pipeline)
    # When its status is taken
    status = collect(local(pipeline))
    # Then nothing needs attention, and each part was looked at
    assert status.needs_attention == []
    tables = [line for line in status.lines if line.section == "Bus tables"]
    assert len(tables) >= 5 and all(
        "glue Enabled" in line.state and "backfilled" in line.state for line in tables
    )
    assert {line.name for line in status.lines if line.section == "Consumers"} == {
        "demo-log-changes",
        "demo-pg-mirror",
        "demo-archive",
    }
    assert [
        line.state for line in status.lines if line.name.endswith("-failures-123456789012-us-east-1")
    ] == ["0 failed batches"]


def test_a_failed_batch_needs_attention(pipeline: Pipeline) -> None:
    # Given a consumer gave a batch up
    pipeline.faults.append(failing_on_customer(9996))
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("INSERT INTO customers (id, name) VALUES (9996, 'x')")
    failed_batches(pipeline)
    # When its status is taken, then the failure bucket needs attention
    attention = collect(local(pipeline)).needs_attention
    assert [(line.section, line.state) for line in attention] == [("Failures", "1 failed batches")]


def test_plan_against_the_running_bus_lists_only_the_consumer_the_config_lacks(pipeline: Pipeline) -> None:
    # Given the local bus runs the config's consumers and the tests' own "rebuild"
    deployed = deployed_consumers(local(pipeline))
    # When planned against the config
    plans = plan_consumers(CONFIG.bus, deployed)
    # Then the config's consumers are as deployed, and "rebuild" would be removed
    assert [(plan.name, plan.change) for plan in plans] == [("demo-rebuild", "remove")]
