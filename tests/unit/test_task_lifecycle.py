"""The DMS task lifecycle: the first deploy starts the task, a changed config stops, modifies,
resumes and reloads it, a refused change leaves it running, deleting stops it.

The core is pure; the handler's DMS calls run against moto's DMS where moto implements
them (create, start, stop, describe, tags) and botocore's Stubber, which checks every
request and response against DMS's real API model, where it does not (modify, reload,
add tags)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from config import load_config, render_table_mappings, task_settings
from task_lifecycle.core import (
    APPLIED_TAG,
    MODIFYING,
    REQUEST_TAG,
    STARTED_TAG,
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
from task_lifecycle.handler import PLAN_KEY, TaskClient, begin, step

REPO = Path(__file__).resolve().parents[2]
ARN = "arn:aws:dms:eu-west-1:123456789012:task:DEMOLEGACY"
BEFORE = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
#: CloudFormation's RequestId of the deploy under test, and of an earlier one.
REQUEST = "5f1e0c8a-1b2c-4d3e-8f90-0123456789ab"
EARLIER = "0d9c8b7a-6f5e-4d3c-2b1a-0123456789ab"


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


def _task(
    status: str,
    *,
    applied: str | None = None,
    has_run: bool = False,
    started_by: str | None = None,
    request: str | None = REQUEST,
    **more: str,
) -> Task:
    return Task(ARN, status, applied=applied, has_run=has_run, request=request, started_by=started_by, **more)


# --- the core -------------------------------------------------------------------------


def test_first_deploy_applies_the_mappings_then_starts_the_task_once() -> None:
    # Given a task CloudFormation just created (ready, never run, placeholder mappings)
    plan = make_plan("Create", REQUEST, task=_task("ready"), new=DESIRED, old=None)
    # When the lifecycle steps through it
    first = next_action(_task("ready"), DESIRED, plan)
    then = next_action(_task("ready", applied=DESIRED.fingerprint), DESIRED, plan)
    last = next_action(
        _task("running", applied=DESIRED.fingerprint, has_run=True, started_by=REQUEST), DESIRED, plan
    )
    # Then it modifies, starts with start-replication (the only first start), and is done
    assert first == Modify(DESIRED.table_mappings, DESIRED.task_settings, DESIRED.fingerprint)
    assert then == Start("start-replication", REQUEST)
    assert isinstance(last, Done)


def test_with_start_false_the_task_is_configured_and_left_ready() -> None:
    desired = Desired.from_properties(_properties(start=False))
    plan = make_plan("Create", REQUEST, task=_task("ready"), new=desired, old=None)
    action = next_action(_task("ready", applied=desired.fingerprint), desired, plan)
    assert action == Done("left ready, never started (start: false)")


def test_a_changed_config_stops_modifies_resumes_and_reloads_the_bumped_table() -> None:
    # Given a running task holding the deployed mappings, and a config bumping products to v3
    old, new = DESIRED, Desired.from_properties(_properties(products=3))
    ran = {"has_run": True, "started_by": EARLIER}
    running = _task("running", applied=old.fingerprint, **ran)
    plan = make_plan("Update", REQUEST, task=running, new=new, old=old)
    assert plan.was_running and plan.reload == (("public", "products"),)
    # When the lifecycle steps through the states DMS passes
    steps = [
        next_action(running, new, plan),
        next_action(_task("stopping", applied=old.fingerprint, **ran), new, plan),
        next_action(_task("stopped", applied=old.fingerprint, **ran), new, plan),
        next_action(_task("modifying", applied=MODIFYING, **ran), new, plan),
        next_action(_task("stopped", applied=new.fingerprint, **ran), new, plan),
        next_action(_task("starting", applied=new.fingerprint, has_run=True, started_by=REQUEST), new, plan),
        next_action(_task("running", applied=new.fingerprint, has_run=True, started_by=REQUEST), new, plan),
    ]
    # Then: stop, wait, modify, wait, resume (not a new full load), wait, reload products
    assert steps == [
        Stop(),
        Wait("the task is stopping"),
        Modify(new.table_mappings, new.task_settings, new.fingerprint),
        Wait("the task is modifying"),
        Start("resume-processing", REQUEST),
        Wait("the task is starting"),
        Reload((("public", "products"),)),
    ]


def test_a_task_that_never_ran_reloads_nothing_its_first_load_copies_all() -> None:
    new = Desired.from_properties(_properties(products=3))
    plan = make_plan(
        "Update", REQUEST, task=_task("ready", applied=DESIRED.fingerprint), new=new, old=DESIRED
    )
    assert plan.reload == () and not plan.was_running


def test_a_rollback_to_the_mappings_the_task_still_holds_reloads_nothing() -> None:
    # Given a refused modify left the task running with the old mappings, and CloudFormation
    # rolls back from products v3 to v2
    rollback_to, failed = DESIRED, Desired.from_properties(_properties(products=3))
    task = _task("running", applied=rollback_to.fingerprint, has_run=True, started_by=EARLIER)
    # When the rollback is planned, Then it reloads nothing and is done at once
    plan = make_plan("Update", REQUEST, task=task, new=rollback_to, old=failed)
    assert plan.reload == ()
    assert next_action(task, rollback_to, plan) == Done("running with the config's mappings and settings")


def test_a_stopped_task_is_resumed_by_a_deploy_only_when_start_is_true() -> None:
    # Given a task an operator stopped, and a deploy that changes only the start setting
    stopped = _task("stopped", applied=DESIRED.fingerprint, has_run=True, started_by=EARLIER)
    plan = make_plan("Update", REQUEST, task=stopped, new=DESIRED, old=DESIRED)
    # Then start: true resumes it, start: false leaves it stopped
    assert next_action(stopped, DESIRED, plan) == Start("resume-processing", REQUEST)
    manual = Desired.from_properties(_properties(start=False))
    manual_stopped = _task("stopped", applied=manual.fingerprint, has_run=True, started_by=EARLIER)
    assert next_action(manual_stopped, manual, plan) == Done("left stopped (start: false)")


def test_with_start_false_the_tables_to_reload_are_named_in_the_summary() -> None:
    manual_old = Desired.from_properties(_properties(start=False))
    manual_new = Desired.from_properties(_properties(start=False, products=3))
    stopped = _task("stopped", applied=manual_old.fingerprint, has_run=True, started_by=EARLIER)
    plan = make_plan("Update", REQUEST, task=stopped, new=manual_new, old=manual_old)
    after = _task("stopped", applied=manual_new.fingerprint, has_run=True, started_by=EARLIER)
    assert next_action(after, manual_new, plan) == Done(
        "left stopped (start: false); once it runs, reload (ReloadTables): public.products"
    )


@pytest.mark.parametrize("status", ["failed", "stopped", "ready"])
def test_a_task_that_comes_to_rest_after_this_deploy_started_it_fails_the_deploy(status: str) -> None:
    # Given this deploy started the task, and DMS put it back to rest
    plan = make_plan("Create", REQUEST, task=_task("ready"), new=DESIRED, old=None)
    task = _task(
        status,
        applied=DESIRED.fingerprint,
        has_run=status != "ready",
        started_by=REQUEST,
        last_failure="Last Error Replication slot could not be created",
    )
    # Then it is not started again: the deploy fails with DMS's words
    with pytest.raises(
        LifecycleError, match=f"is {status} after this deploy started it: Last Error Replication"
    ):
        next_action(task, DESIRED, plan)


def test_a_task_that_had_failed_before_and_fails_again_is_reported_not_raised() -> None:
    # Given a rollback (or deploy) that resumed a task which was failed already
    failed = _task("failed", applied=DESIRED.fingerprint, has_run=True, started_by=EARLIER)
    plan = make_plan("Update", REQUEST, task=failed, new=DESIRED, old=DESIRED)
    again = _task(
        "failed", applied=DESIRED.fingerprint, has_run=True, started_by=REQUEST, last_failure="boom"
    )
    # Then the deploy ends, saying so, and a rollback is not left stuck
    assert next_action(again, DESIRED, plan) == Done(
        "the task had failed before this deploy and is failed again after resuming: boom"
    )


def test_a_cancelled_request_stops_acting_once_another_owns_the_task() -> None:
    # Given a waiter of a request CloudFormation gave up on, and the rollback's request
    plan = make_plan("Update", EARLIER, task=_task("running", request=EARLIER), new=DESIRED, old=DESIRED)
    task = _task("stopped", applied=MODIFYING, request=REQUEST, has_run=True)
    # Then it stops without touching the task
    with pytest.raises(LifecycleError, match=f"request {REQUEST} owns the replication task now"):
        next_action(task, DESIRED, plan)


def test_deleting_stops_a_running_task_and_waits_for_it() -> None:
    plan = Plan("Delete", REQUEST)
    assert next_action(_task("running", has_run=True), DESIRED, plan) == Stop()
    assert next_action(_task("stopping", has_run=True), DESIRED, plan) == Wait("the task is stopping")
    assert next_action(_task("stopped", has_run=True), DESIRED, plan) == Done("the task is stopped")
    assert next_action(None, DESIRED, plan) == Done("the task is gone")


def test_a_plan_survives_the_round_trip_through_the_framework() -> None:
    plan = Plan("Update", REQUEST, was_running=True, reload=(("public", "products"), ("audit", "event_x")))
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

    def describe(
        self,
        status: str,
        *,
        applied: str | None = None,
        request: str | None = None,
        started: datetime | None = None,
    ) -> None:
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
        tags = [
            {"Key": key, "Value": value}
            for key, value in ((APPLIED_TAG, applied), (REQUEST_TAG, request))
            if value
        ]
        self.stubber.add_response("list_tags_for_resource", {"TagList": tags}, {"ResourceArn": ARN})

    def tag(self, key: str, value: str) -> None:
        self.expect("add_tags_to_resource", {"ResourceArn": ARN, "Tags": [{"Key": key, "Value": value}]})

    def expect(self, operation: str, parameters: dict[str, Any]) -> None:
        self.stubber.add_response(operation, {}, parameters)


@pytest.fixture
def stubbed() -> Iterator[StubbedDms]:
    dms = StubbedDms()
    with dms.stubber:
        yield dms
    dms.stubber.assert_no_pending_responses()


def _create_event(**properties: Any) -> dict[str, Any]:
    return {"RequestType": "Create", "RequestId": REQUEST, "ResourceProperties": _properties(**properties)}


def _run(event: dict[str, Any], client: TaskClient, steps: int) -> list[dict[str, Any]]:
    # The framework hands isComplete the request merged with onEvent's result
    ongoing = {**event, **begin(event, client)}
    return [step(ongoing, client) for _ in range(steps)]


def test_first_deploy_through_dms_api(stubbed: StubbedDms) -> None:
    # Given DMS answering as a new task moves from ready to running
    stubbed.describe("ready")  # the plan
    stubbed.tag(REQUEST_TAG, REQUEST)
    stubbed.describe("ready", request=REQUEST)
    stubbed.tag(APPLIED_TAG, MODIFYING)
    stubbed.expect(
        "modify_replication_task",
        {
            "ReplicationTaskArn": ARN,
            "TableMappings": DESIRED.table_mappings,
            "ReplicationTaskSettings": DESIRED.task_settings,
        },
    )
    stubbed.tag(APPLIED_TAG, DESIRED.fingerprint)
    stubbed.describe("modifying", applied=MODIFYING, request=REQUEST)
    stubbed.describe("ready", applied=DESIRED.fingerprint, request=REQUEST)
    stubbed.tag(STARTED_TAG, REQUEST)
    stubbed.expect(
        "start_replication_task", {"ReplicationTaskArn": ARN, "StartReplicationTaskType": "start-replication"}
    )
    stubbed.describe("running", applied=DESIRED.fingerprint, request=REQUEST, started=NOW)
    # When CloudFormation creates the lifecycle resource
    results = _run(_create_event(), TaskClient(stubbed.client), 4)
    # Then it completes once the task runs, every call in order with DMS's real shapes, and
    # only the summary goes back to CloudFormation (its response is limited to 4 KB)
    assert [r["IsComplete"] for r in results] == [False, False, False, True]
    assert results[-1]["Data"] == {"Summary": "running with the config's mappings and settings"}


def test_a_refused_modify_resumes_the_task_and_fails_with_dms_message(stubbed: StubbedDms) -> None:
    # Given a running task and a config DMS refuses
    ran = {"applied": DESIRED.fingerprint, "started": BEFORE}
    stubbed.describe("running", request=EARLIER, **ran)  # the plan
    stubbed.tag(REQUEST_TAG, REQUEST)
    stubbed.describe("running", request=REQUEST, **ran)
    stubbed.expect("stop_replication_task", {"ReplicationTaskArn": ARN})
    stubbed.describe("stopped", request=REQUEST, **ran)
    stubbed.tag(APPLIED_TAG, MODIFYING)
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
        "RequestId": REQUEST,
        "PhysicalResourceId": ARN,
        "ResourceProperties": _properties(products=3),
        "OldResourceProperties": _properties(),
    }
    client = TaskClient(stubbed.client)
    ongoing = {**event, **begin(event, client)}
    assert ongoing[PLAN_KEY]["Reload"] == [["public", "products"]]
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
    TaskClient(stubbed.client).act(ARN, Reload(tables), Plan("Update", REQUEST))


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
        "RequestId": REQUEST,
        "PhysicalResourceId": arn,
        "ResourceProperties": {**_properties(), "TaskArn": arn},
    }
    results = _run(event, TaskClient(moto_dms), 2)
    # Then the task is stopped before the resource is reported deleted
    assert [r["IsComplete"] for r in results] == [False, True]
    (task,) = moto_dms.describe_replication_tasks()["ReplicationTasks"]
    assert task["Status"] == "stopped"


def test_deleting_when_the_task_is_gone_completes(moto_dms: Any) -> None:
    event = {
        "RequestType": "Delete",
        "RequestId": REQUEST,
        "PhysicalResourceId": ARN,
        "ResourceProperties": _properties(),
    }
    assert _run(event, TaskClient(moto_dms), 1) == [
        {"IsComplete": True, "Data": {"Summary": "the task is gone"}}
    ]


def test_a_task_read_from_dms_knows_whether_it_has_run(moto_dms: Any) -> None:
    # Given a task DMS created and one it started
    arn = _moto_task(moto_dms)
    client = TaskClient(moto_dms)
    before = client.describe(arn)
    moto_dms.start_replication_task(ReplicationTaskArn=arn, StartReplicationTaskType="start-replication")
    after = client.describe(arn)
    # Then the second has run (its first start must be start-replication, later ones resume)
    assert before is not None and not before.has_run
    assert after is not None and after.has_run and after.status == "running"
