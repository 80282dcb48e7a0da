"""dmsbus plan: the tables a deploy adds, reloads and drops, and the steps the task
lifecycle takes, worked out by the deploy's own core; consumer changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from config.loader import load_config
from config.mappings import render_table_mappings, task_settings
from config.model import SourceConfig, TableConfig
from dmsbus_cli.plan import plan_consumers, plan_source
from task_lifecycle.core import APPLIED_TAG, REQUEST_TAG, STARTED_TAG, Desired

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config")
BUS = CONFIG.bus
SOURCE = CONFIG.sources[0]
TASK_ARN = "arn:aws:dms:eu-west-1:111122223333:task:K55IUCGBASJS5VHZJIINA45FII"


def deployed_task(
    source: SourceConfig, status: str, *, has_run: bool = True
) -> tuple[dict[str, Any], dict[str, str]]:
    """DescribeReplicationTasks's entry for a task holding ``source``'s config, and its tags."""
    mappings = render_table_mappings(BUS.name, source)
    applied = Desired(TASK_ARN, json.dumps(mappings), json.dumps(task_settings()), source.start).fingerprint
    task: dict[str, Any] = {
        "ReplicationTaskIdentifier": "demo-legacy",
        "ReplicationTaskArn": TASK_ARN,
        "Status": status,
        "TableMappings": json.dumps(mappings),
        "ReplicationTaskSettings": json.dumps(task_settings()),
    }
    if has_run:
        task["ReplicationTaskStartDate"] = "2026-11-01T00:00:00Z"
    # Tags an earlier deploy left: its request owned the task, and started it.
    return task, {APPLIED_TAG: applied, REQUEST_TAG: "earlier-deploy", STARTED_TAG: "earlier-deploy"}


def edited(**changes: Any) -> SourceConfig:
    """The sample source with products at version 3, orders dropped and invoices added."""
    tables = [t for t in SOURCE.tables if t.table != "orders"]
    tables = [t.model_copy(update={"version": 3}) if t.table == "products" else t for t in tables]
    tables.append(TableConfig(schema="public", table="invoices"))
    return SOURCE.model_copy(update={"tables": tables, **changes})


def test_an_unchanged_config_changes_nothing() -> None:
    task, tags = deployed_task(SOURCE, "running")
    plan = plan_source(BUS, SOURCE, task, tags)
    assert (plan.added, plan.reloaded, plan.dropped, plan.steps, plan.changes) == ([], [], [], [], False)


def test_a_running_task_is_stopped_modified_resumed_and_its_new_tables_reloaded() -> None:
    # Given the running task holds the sample config
    task, tags = deployed_task(SOURCE, "running")
    # When the config adds invoices, bumps products and drops orders
    plan = plan_source(BUS, edited(), task, tags)
    # Then
    assert plan.added == ["public.invoices"]
    assert plan.reloaded == [
        "public.products (demo.legacy.public.products.v2 -> demo.legacy.public.products.v3)"
    ]
    assert plan.dropped == ["public.orders"]
    assert plan.steps == [
        "stop the task and wait until it has stopped",
        "modify its table mappings and task settings",
        "resume-processing",
        "ReloadTables: public.products, public.invoices",
        "then: running with the config's mappings and settings",
    ]


def test_a_task_that_never_ran_is_modified_then_started_with_a_full_load() -> None:
    task, _ = deployed_task(SOURCE, "ready", has_run=False)
    plan = plan_source(BUS, edited(), task, {})
    assert plan.steps == [
        "modify its table mappings and task settings",
        "start-replication (a full load of every selected table, then CDC)",
        "then: running with the config's mappings and settings",
    ]


def test_with_start_false_a_stopped_task_is_modified_and_left_stopped() -> None:
    task, tags = deployed_task(SOURCE, "stopped")
    plan = plan_source(BUS, edited(start=False), task, tags)
    assert plan.steps == [
        "modify its table mappings and task settings",
        "then: left stopped (start: false); once it runs, reload (ReloadTables): public.products, public.invoices",
    ]


def test_an_unchanged_config_leaves_a_stopped_task_alone() -> None:
    # CloudFormation does not call the lifecycle when nothing of it changed
    task, tags = deployed_task(SOURCE, "stopped")
    assert plan_source(BUS, SOURCE, task, tags).steps == []


def test_consumers_added_changed_and_removed_against_the_deployed_functions() -> None:
    # Given log-changes deployed with another batch size and filter, archive deployed as it
    # is, pg-mirror not deployed, and an old consumer still reading the stream
    log_changes, archive = BUS.consumers[0], BUS.consumers[2]
    deployed = {
        "demo-log-changes": {
            "environment": {
                "BUS_NAME": "demo",
                "BUS_DLQ_URL": "https://q",
                "POWERTOOLS_SERVICE_NAME": "demo-log-changes",
                "DMSBUS_TABLES": "public.orders",
                "DMSBUS_OPS": "c,u,d,r",
            },
            "mapping": {"BatchSize": 10, "MaximumRetryAttempts": log_changes.max_retries},
        },
        "demo-archive": {
            "environment": {
                "BUS_NAME": "demo",
                "BUS_DLQ_URL": "https://q",
                "DMSBUS_BUCKET": "b",
                "POWERTOOLS_SERVICE_NAME": "demo-archive",
            },
            "mapping": {"BatchSize": archive.batch_size},
        },
        "demo-old": {"environment": {}, "mapping": {}},
    }
    # When planned
    plans = {plan.name: plan for plan in plan_consumers(BUS, deployed)}
    # Then
    assert {name: plan.change for name, plan in plans.items()} == {
        "demo-log-changes": "change",
        "demo-pg-mirror": "add",
        "demo-old": "remove",
    }
    assert plans["demo-log-changes"].details == [
        "environment DMSBUS_TABLES: 'public.orders' -> 'public.*'",
        "mapping BatchSize: 10 -> 100",
    ]


def test_start_turned_on_starts_a_task_that_never_ran() -> None:
    # Given a task that holds the config but never ran (it was deployed with start: false)
    task, tags = deployed_task(SOURCE.model_copy(update={"start": False}), "ready", has_run=False)
    tags = {APPLIED_TAG: tags[APPLIED_TAG]}
    # When the config turns start on (the mappings fingerprint does not hold it)
    plan = plan_source(BUS, SOURCE, task, tags, previous_start=False)
    # Then the deploy starts it
    assert plan.steps == [
        "start-replication (a full load of every selected table, then CDC)",
        "then: running with the config's mappings and settings",
    ]
    # and without --previous the plan says it cannot tell
    assert plan_source(BUS, SOURCE, task, tags).notes == [
        "the task rests: if the deployed config had `start: false`, the deploy starts it (pass --previous DIR to know)"
    ]
