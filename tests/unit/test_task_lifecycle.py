"""The DMS task lifecycle: the first deploy starts the task, a changed config stops, modifies,
resumes and reloads it, a refused change leaves it running, deleting stops it.

The core is pure; the handler's DMS calls run against moto's DMS where moto implements
them (create, start, stop, describe, tags) and botocore's Stubber, which checks every
request and response against DMS's real API model, where it does not (modify, reload,
add tags)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from config import load_config, render_table_mappings, task_settings
from task_lifecycle.core import (
    APPLIED_TAG,
    Desired,
    Done,
    LifecycleError,
    Modify,
    Plan,
    Reload,
    Start,
    Stop,
    Task,
    Wait,
    make_plan,
    next_action,
)
from task_lifecycle.handler import TaskClient, begin, step

REPO = Path(__file__).resolve().parents[2]
ARN = "arn:aws:dms:eu-west-1:123456789012:task:DEMOLEGACY"
BEFORE = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _mappings(**versions: int) -> str:
    (legacy,) = load_config(REPO / "config").sources
    tables = [t.model_copy(update={"version": versions.get(t.table, t.version)}) for t in legacy.tables]
    return json.dumps(render_table_mappings("demo", legacy.model_copy(update={"tables": tables})))


def _properties(*, start: bool = True, **versions: int) -> dict[str, Any]:
    return {
        "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:provider",
        "TaskArn": ARN,
        "TableMappings": _mappings(**versions),
        "TaskSettings": json.dumps(task_settings()),
        "Start": str(start).lower(),
    }


DESIRED = Desired.from_properties(_properties())


def _task(status: str, *, applied: str | None = None, started: datetime | None = None, **more: str) -> Task:
    return Task(ARN, status, applied=applied, started=started, **more)


# --- the core -------------------------------------------------------------------------


def test_first_deploy_applies_the_mappings_then_starts_the_task_once() -> None:
    # Given a task CloudFormation just created (ready, never run, placeholder mappings)
    plan = make_plan("Create", task=_task("ready"), new=DESIRED, old=None, now=NOW)
    # When the lifecycle steps through it
    first = next_action(_task("ready"), DESIRED, plan)
    then = next_action(_task("ready", applied=DESIRED.fingerprint), DESIRED, plan)
    last = next_action(_task("running", applied=DESIRED.fingerprint, started=NOW), DESIRED, plan)
    # Then it modifies, starts with start-replication (the only first start), and is done
    assert first == Modify(DESIRED.table_mappings, DESIRED.task_settings, DESIRED.fingerprint)
    assert then == Start("start-replication")
    assert isinstance(last, Done)


def test_with_start_false_the_task_is_configured_and_left_ready() -> None:
    desired = Desired.from_properties(_properties(start=False))
    plan = make_plan("Create", task=_task("ready"), new=desired, old=None, now=NOW)
    action = next_action(_task("ready", applied=desired.fingerprint), desired, plan)
    assert action == Done("left ready, never started (start: false)")


def test_a_changed_config_stops_modifies_resumes_and_reloads_the_bumped_table() -> None:
    # Given a running task holding the deployed mappings, and a config bumping products to v3
    old, new = DESIRED, Desired.from_properties(_properties(products=3))
    running = _task("running", applied=old.fingerprint, started=BEFORE)
    plan = make_plan("Update", task=running, new=new, old=old, now=NOW)
    assert plan.was_running and plan.reload == (("public", "products"),)
    # When the lifecycle steps through the states DMS passes
    steps = [
        next_action(running, new, plan),
        next_action(_task("stopping", applied=old.fingerprint, started=BEFORE), new, plan),
        next_action(_task("stopped", applied=old.fingerprint, started=BEFORE), new, plan),
        next_action(_task("modifying", applied=new.fingerprint, started=BEFORE), new, plan),
        next_action(_task("stopped", applied=new.fingerprint, started=BEFORE), new, plan),
        next_action(_task("running", applied=new.fingerprint, started=NOW), new, plan),
    ]
    # Then: stop, wait, modify, wait, resume (not a new full load), reload products
    assert steps == [
        Stop(),
        Wait("the task is stopping"),
        Modify(new.table_mappings, new.task_settings, new.fingerprint),
        Wait("the task is modifying"),
        Start("resume-processing"),
        Reload((("public", "products"),)),
    ]


def test_a_task_that_never_ran_reloads_nothing_its_first_load_copies_all() -> None:
    new = Desired.from_properties(_properties(products=3))
    plan = make_plan(
        "Update", task=_task("ready", applied=DESIRED.fingerprint), new=new, old=DESIRED, now=NOW
    )
    assert plan.reload == () and not plan.was_running


def test_a_stopped_task_is_resumed_by_a_deploy_only_when_start_is_true() -> None:
    # Given a task an operator stopped, and a deploy that changes nothing of it
    stopped = _task("stopped", applied=DESIRED.fingerprint, started=BEFORE)
    plan = make_plan("Update", task=stopped, new=DESIRED, old=DESIRED, now=NOW)
    # Then start: true resumes it, start: false leaves it stopped
    assert next_action(stopped, DESIRED, plan) == Start("resume-processing")
    manual = Desired.from_properties(_properties(start=False))
    manual_stopped = _task("stopped", applied=manual.fingerprint, started=BEFORE)
    assert next_action(manual_stopped, manual, plan) == Done("left stopped (start: false)")


def test_a_task_that_fails_after_this_deploy_started_it_fails_the_deploy_with_dms_words() -> None:
    plan = make_plan("Create", task=_task("ready"), new=DESIRED, old=None, now=NOW)
    failed = _task(
        "failed",
        applied=DESIRED.fingerprint,
        started=NOW + timedelta(seconds=40),
        last_failure="Last Error Replication slot could not be created",
    )
    with pytest.raises(
        LifecycleError, match="failed after this deploy started it: Last Error Replication slot"
    ):
        next_action(failed, DESIRED, plan)


def test_deleting_stops_a_running_task_and_waits_for_it() -> None:
    plan = Plan("Delete", NOW)
    assert next_action(_task("running", started=BEFORE), DESIRED, plan) == Stop()
    assert next_action(_task("stopping", started=BEFORE), DESIRED, plan) == Wait("the task is stopping")
    assert next_action(_task("stopped", started=BEFORE), DESIRED, plan) == Done("the task is stopped")
    assert next_action(None, DESIRED, plan) == Done("the task is gone")


def test_a_plan_survives_the_round_trip_through_the_resource_data() -> None:
    plan = Plan("Update", NOW, was_running=True, reload=(("public", "products"), ("audit", "event_x")))
    assert Plan.from_data(json.loads(json.dumps(plan.to_data()))) == plan


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TaskArn": ""}, "has no TaskArn property"),
        ({"TableMappings": "{rules"}, "TableMappings is not JSON"),
        ({"Start": "yes"}, "Start is 'yes', not true or false"),
    ],
)
def test_bad_resource_properties_name_the_property(change: dict[str, str], message: str) -> None:
    with pytest.raises(LifecycleError, match=message):
        Desired.from_properties({**_properties(), **change})


# --- the handler against DMS's API model (Stubber) ----------------------------------


class StubbedDms:
    """Queues the answers DMS gives, in the order the lifecycle must ask."""

    def __init__(self) -> None:
        self.client = boto3.client("dms", region_name="eu-west-1")
        self.stubber = Stubber(self.client)

    def describe(self, status: str, *, applied: str | None = None, started: datetime | None = None) -> None:
        task: dict[str, Any] = {
            "ReplicationTaskArn": ARN,
            "Status": status,
            "ReplicationTaskIdentifier": "demo-legacy",
        }
        if started is not None:
            task["ReplicationTaskStartDate"] = started
        self.stubber.add_response(
            "describe_replication_tasks",
            {"ReplicationTasks": [task]},
            {"Filters": [{"Name": "replication-task-arn", "Values": [ARN]}], "WithoutSettings": True},
        )
        tags = [{"Key": APPLIED_TAG, "Value": applied}] if applied else []
        self.stubber.add_response("list_tags_for_resource", {"TagList": tags}, {"ResourceArn": ARN})

    def expect(self, operation: str, parameters: dict[str, Any]) -> None:
        self.stubber.add_response(operation, {}, parameters)


@pytest.fixture
def stubbed() -> Iterator[StubbedDms]:
    dms = StubbedDms()
    with dms.stubber:
        yield dms
    dms.stubber.assert_no_pending_responses()


def _create_event(**properties: Any) -> dict[str, Any]:
    return {"RequestType": "Create", "ResourceProperties": _properties(**properties)}


def _run(event: dict[str, Any], client: TaskClient, steps: int) -> list[dict[str, Any]]:
    started = begin(event, client, NOW)
    ongoing = {**event, **started}
    return [step(ongoing, client) for _ in range(steps)]


def test_first_deploy_through_dms_api(stubbed: StubbedDms) -> None:
    # Given DMS answering as a new task moves from ready to running
    stubbed.describe("ready")  # the plan
    stubbed.describe("ready")
    stubbed.expect(
        "modify_replication_task",
        {
            "ReplicationTaskArn": ARN,
            "TableMappings": DESIRED.table_mappings,
            "ReplicationTaskSettings": DESIRED.task_settings,
        },
    )
    stubbed.expect(
        "add_tags_to_resource",
        {"ResourceArn": ARN, "Tags": [{"Key": APPLIED_TAG, "Value": DESIRED.fingerprint}]},
    )
    stubbed.describe("modifying", applied=DESIRED.fingerprint)
    stubbed.describe("ready", applied=DESIRED.fingerprint)
    stubbed.expect(
        "start_replication_task", {"ReplicationTaskArn": ARN, "StartReplicationTaskType": "start-replication"}
    )
    stubbed.describe("running", applied=DESIRED.fingerprint, started=NOW)
    # When CloudFormation creates the lifecycle resource
    results = _run(_create_event(), TaskClient(stubbed.client), 4)
    # Then it completes once the task runs, every call in order with DMS's real shapes
    assert [r["IsComplete"] for r in results] == [False, False, False, True]
    assert results[-1]["Data"] == {"Summary": "running with the config's mappings and settings"}


def test_a_refused_modify_resumes_the_task_and_fails_with_dms_message(stubbed: StubbedDms) -> None:
    # Given a running task and a config DMS refuses
    stubbed.describe("running", applied=DESIRED.fingerprint, started=BEFORE)  # the plan
    stubbed.describe("running", applied=DESIRED.fingerprint, started=BEFORE)
    stubbed.expect("stop_replication_task", {"ReplicationTaskArn": ARN})
    stubbed.describe("stopped", applied=DESIRED.fingerprint, started=BEFORE)
    stubbed.stubber.add_client_error(
        "modify_replication_task",
        service_error_code="InvalidParameterValueException",
        service_message="Error in mapping rules. Rule with ruleId = 9 failed validation.",
        http_status_code=400,
    )
    stubbed.expect(
        "start_replication_task", {"ReplicationTaskArn": ARN, "StartReplicationTaskType": "resume-processing"}
    )
    event = {
        "RequestType": "Update",
        "PhysicalResourceId": ARN,
        "ResourceProperties": _properties(products=3),
        "OldResourceProperties": _properties(),
    }
    client = TaskClient(stubbed.client)
    ongoing = {**event, **begin(event, client, NOW)}
    assert step(ongoing, client) == {"IsComplete": False}
    # When the modify is refused, Then the task is resumed and the deploy fails with DMS's words
    with pytest.raises(LifecycleError) as raised:
        step(ongoing, client)
    assert str(raised.value) == (
        f"DMS ModifyReplicationTask on {ARN}: InvalidParameterValueException: "
        "Error in mapping rules. Rule with ruleId = 9 failed validation."
    )


def test_reloads_go_ten_tables_a_call(stubbed: StubbedDms) -> None:
    tables = tuple(("public", f"t{n}") for n in range(12))
    for chunk in (tables[:10], tables[10:]):
        stubbed.expect(
            "reload_tables",
            {
                "ReplicationTaskArn": ARN,
                "TablesToReload": [{"SchemaName": s, "TableName": t} for s, t in chunk],
                "ReloadOption": "data-reload",
            },
        )
    TaskClient(stubbed.client).act(ARN, Reload(tables), Plan("Update", NOW))


# --- the handler against moto's DMS -------------------------------------------------


@pytest.fixture
def moto_dms() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("dms", region_name="eu-west-1")


def _moto_task(dms: Any) -> str:
    arn: str = dms.create_replication_task(
        ReplicationTaskIdentifier="demo-legacy",
        SourceEndpointArn="arn:aws:dms:eu-west-1:123456789012:endpoint:SOURCE",
        TargetEndpointArn="arn:aws:dms:eu-west-1:123456789012:endpoint:TARGET",
        ReplicationInstanceArn="arn:aws:dms:eu-west-1:123456789012:rep:INSTANCE",
        MigrationType="full-load-and-cdc",
        TableMappings=DESIRED.table_mappings,
    )["ReplicationTask"]["ReplicationTaskArn"]
    return arn


def test_deleting_the_stack_stops_the_running_task_first(moto_dms: Any) -> None:
    # Given a running task
    arn = _moto_task(moto_dms)
    moto_dms.start_replication_task(ReplicationTaskArn=arn, StartReplicationTaskType="start-replication")
    # When CloudFormation deletes the lifecycle resource
    event = {
        "RequestType": "Delete",
        "PhysicalResourceId": arn,
        "ResourceProperties": {**_properties(), "TaskArn": arn},
    }
    results = _run(event, TaskClient(moto_dms), 2)
    # Then the task is stopped before the resource is reported deleted
    assert [r["IsComplete"] for r in results] == [False, True]
    (task,) = moto_dms.describe_replication_tasks()["ReplicationTasks"]
    assert task["Status"] == "stopped"


def test_deleting_when_the_task_is_gone_completes(moto_dms: Any) -> None:
    event = {"RequestType": "Delete", "PhysicalResourceId": ARN, "ResourceProperties": _properties()}
    assert _run(event, TaskClient(moto_dms), 1) == [
        {"IsComplete": True, "Data": {"Summary": "the task is gone"}}
    ]


def test_the_plan_reads_the_running_state_from_dms(moto_dms: Any) -> None:
    # Given a running task and an update bumping a version
    arn = _moto_task(moto_dms)
    moto_dms.start_replication_task(ReplicationTaskArn=arn, StartReplicationTaskType="start-replication")
    event = {
        "RequestType": "Update",
        "PhysicalResourceId": arn,
        "ResourceProperties": {**_properties(products=3), "TaskArn": arn},
        "OldResourceProperties": {**_properties(), "TaskArn": arn},
    }
    # When the lifecycle plans, Then it knows the task ran and what to reload
    plan = Plan.from_data(begin(event, TaskClient(moto_dms), datetime.now(UTC))["Data"])
    assert plan.was_running and plan.reload == (("public", "products"),)
