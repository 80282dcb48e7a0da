"""The DMS task lifecycle: the first deploy starts the task, a changed config stops, modifies,
resumes and reloads it, a refused change leaves it running (and its rollback leaves it
be), deleting stops it.

The core is pure; the handler's DMS calls run against moto's DMS where moto implements
them (create, start, stop, describe, tags) and botocore's Stubber, which checks every
request and response against DMS's real API model, where it does not (modify, reload,
add tags). The mappings and settings are read from moto's S3, as the asset puts them."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from config import load_config, render_table_mappings, task_settings
from task_lifecycle.core import (
    AMBIGUOUS_SLOT,
    APPLIED_TAG,
    CHECKED_TAG,
    MODIFYING,
    NO_SLOT,
    REQUEST_TAG,
    SLOT_TAG,
    SLOTS_BEFORE_TAG,
    STARTED_TAG,
    UNKNOWN_SLOT,
    Check,
    Desired,
    Done,
    DropSlot,
    LifecycleError,
    Modify,
    Plan,
    Properties,
    RecordSlot,
    Reload,
    Source,
    Start,
    Stop,
    Task,
    TaskConfigObject,
    Wait,
    applied_after_refusal,
    encode_task_config,
    make_plan,
    new_slot,
    next_action,
    resource_properties,
)
from task_lifecycle.handler import (
    DENIED_PAUSE_SECONDS,
    PLAN_KEY,
    SourceAdmin,
    TaskClient,
    TaskConfigReader,
    begin,
    step,
)
from tests.unit.conftest import Sleeps

REPO = Path(__file__).resolve().parents[2]
ARN = "arn:aws:dms:eu-west-1:123456789012:task:DEMOLEGACY"
BEFORE = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
#: CloudFormation's RequestId of the deploy under test, of an earlier one, and of the
#: rollback of the deploy under test.
REQUEST = "5f1e0c8a-1b2c-4d3e-8f90-0123456789ab"
EARLIER = "0d9c8b7a-6f5e-4d3c-2b1a-0123456789ab"
ROLLBACK = "9a8b7c6d-5e4f-4a3b-2c1d-0123456789ab"
#: The CDK bootstrap bucket the asset goes to.
BUCKET = "cdk-hnb659fds-assets-123456789012-eu-west-1"
#: What CloudFormation creates the task with (stacks/source.py's placeholder).
PLACEHOLDER = json.dumps(
    {
        "rules": [
            {
                "rule-type": "selection",
                "rule-id": "1",
                "rule-name": "dmsbus-task-lifecycle-applies-the-mappings",
                "object-locator": {"schema-name": "dmsbus", "table-name": "placeholder"},
                "rule-action": "include",
            }
        ]
    }
)


def _mappings(**versions: int) -> str:
    (legacy,) = load_config(REPO / "config").sources
    tables = [t.model_copy(update={"version": versions.get(t.table, t.version)}) for t in legacy.tables]
    return json.dumps(render_table_mappings("demo", legacy.model_copy(update={"tables": tables})))


def _desired(*, start: bool = True, **versions: int) -> Desired:
    return Desired(ARN, _mappings(**versions), json.dumps(task_settings()), start)


def _object(desired: Desired) -> tuple[bytes, TaskConfigObject]:
    """The asset's bytes and where the properties say they are (CDK names the key by a hash)."""
    body = encode_task_config(json.loads(desired.table_mappings), json.loads(desired.task_settings))
    sha256 = hashlib.sha256(body).hexdigest()
    return body, TaskConfigObject(BUCKET, f"{hashlib.sha256(b'asset' + body).hexdigest()}.json", sha256)


def _properties(desired: Desired) -> dict[str, Any]:
    return {
        "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:provider",
        **resource_properties(task_arn=desired.task_arn, config=_object(desired)[1], start=desired.start),
    }


DESIRED = _desired()


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
    desired = _desired(start=False)
    plan = make_plan("Create", REQUEST, task=_task("ready"), new=desired, old=None)
    action = next_action(_task("ready", applied=desired.fingerprint), desired, plan)
    assert action == Done("left ready, never started (start: false)")


def test_a_changed_config_stops_modifies_resumes_and_reloads_the_bumped_table() -> None:
    # Given a running task holding the deployed mappings, and a config bumping products to v3
    old, new = DESIRED, _desired(products=3)
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
    new = _desired(products=3)
    plan = make_plan(
        "Update", REQUEST, task=_task("ready", applied=DESIRED.fingerprint), new=new, old=DESIRED
    )
    assert plan.reload == () and not plan.was_running


def test_a_rollback_to_the_mappings_the_task_still_holds_reloads_nothing() -> None:
    # Given a refused modify left the task running with the old mappings, and CloudFormation
    # rolls back from products v3 to v2
    rollback_to, failed = DESIRED, _desired(products=3)
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
    manual = _desired(start=False)
    manual_stopped = _task("stopped", applied=manual.fingerprint, has_run=True, started_by=EARLIER)
    assert next_action(manual_stopped, manual, plan) == Done("left stopped (start: false)")


def test_with_start_false_the_tables_to_reload_are_named_in_the_summary() -> None:
    manual_old = _desired(start=False)
    manual_new = _desired(start=False, products=3)
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
    plan = Plan(
        "Update",
        REQUEST,
        was_running=True,
        reload=(("public", "products"), ("audit", "event_x")),
        applied_before=DESIRED.fingerprint,
    )
    assert Plan.from_data(json.loads(json.dumps(plan.to_data()))) == plan


def test_the_plan_remembers_the_config_the_task_held_before_the_request() -> None:
    running = _task("running", applied=DESIRED.fingerprint, has_run=True, started_by=EARLIER)
    plan = make_plan("Update", REQUEST, task=running, new=_desired(products=3), old=DESIRED)
    assert plan.applied_before == DESIRED.fingerprint


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TaskArn": ""}, "has no TaskArn property"),
        ({"TaskConfigSha256": None}, "has no TaskConfigSha256 property"),
        ({"Start": "yes"}, "Start is 'yes', not true or false"),
    ],
)
def test_bad_resource_properties_name_the_property(change: dict[str, Any], message: str) -> None:
    with pytest.raises(LifecycleError, match=message):
        Properties.parse({**_properties(DESIRED), **change})


def test_the_properties_carry_where_the_config_is_not_the_config() -> None:
    # Given the sample config's properties
    properties = _properties(DESIRED)
    # Then they name the object and its hash, and stay small whatever the mappings hold
    assert set(properties) == {
        "ServiceToken",
        "TaskArn",
        "TaskConfigBucket",
        "TaskConfigKey",
        "TaskConfigSha256",
        "Start",
    }
    assert len(json.dumps(properties)) < 512


def test_the_config_object_gives_back_the_mappings_and_settings() -> None:
    body, _ = _object(DESIRED)
    assert Desired.from_object(Properties.parse(_properties(DESIRED)), body) == DESIRED


def test_a_config_object_that_is_not_the_one_the_template_names_is_refused() -> None:
    # Given the properties of the sample config, and the bytes of another config
    other, _ = _object(_desired(products=3))
    properties = Properties.parse(_properties(DESIRED))
    # Then the lifecycle refuses them, naming the object
    with pytest.raises(LifecycleError, match=f"{properties.config.uri} has SHA-256 [0-9a-f]{{64}}"):
        Desired.from_object(properties, other)


def test_a_config_object_without_the_mappings_is_refused() -> None:
    body = b'{"TaskSettings": {}}'
    sha256 = hashlib.sha256(body).hexdigest()
    properties = Properties(ARN, TaskConfigObject(BUCKET, "k.json", sha256), True)
    with pytest.raises(LifecycleError, match=f"s3://{BUCKET}/k.json is not a JSON object with TableMappings"):
        Desired.from_object(properties, body)


@pytest.mark.parametrize(
    ("status", "holds", "restored"),
    [
        # DMS refused the request and the task kept its mappings: it says so again
        ("stopped", "old", True),
        # The task is modifying, or holds the refused mappings: a modify may have gone
        # through (a retried call), so the tag claims nothing
        ("modifying", "old", False),
        ("stopped", "new", False),
    ],
)
def test_after_a_refused_modify_the_tag_says_what_the_task_holds(
    status: str, holds: str, restored: bool
) -> None:
    new = _desired(products=3)
    plan = Plan("Update", REQUEST, was_running=True, applied_before=DESIRED.fingerprint)
    mappings = DESIRED.table_mappings if holds == "old" else new.table_mappings
    task = _task(status, applied=MODIFYING, has_run=True, table_mappings=mappings)
    refused = Modify(new.table_mappings, new.task_settings, new.fingerprint)
    assert applied_after_refusal(task, refused, plan) == (DESIRED.fingerprint if restored else None)


# --- the handler against DMS's API model (Stubber) and moto's S3 ---------------------


class StubbedDms:
    """Queues the answers DMS gives, in the order the lifecycle must ask."""

    def __init__(self) -> None:
        self.client = boto3.client("dms", region_name="eu-west-1")
        self.stubber = Stubber(self.client)
        #: Tags the task holds besides the applied and request ones (the slot's, say).
        self.more_tags: dict[str, str] = {}

    def describe(
        self,
        status: str,
        *,
        applied: str | None = None,
        request: str | None = None,
        started: datetime | None = None,
        mappings: str | None = None,
    ) -> None:
        """DescribeReplicationTasks; with ``mappings``, asked with the task's settings."""
        task: dict[str, Any] = {
            "ReplicationTaskArn": ARN,
            "Status": status,
            "ReplicationTaskIdentifier": "demo-legacy",
        }
        if started is not None:
            task["ReplicationTaskStartDate"] = started
        if mappings is not None:
            task["TableMappings"] = mappings
            task["ReplicationTaskSettings"] = json.dumps(task_settings())
        self.stubber.add_response(
            "describe_replication_tasks",
            {"ReplicationTasks": [task]},
            {
                "Filters": [{"Name": "replication-task-arn", "Values": [ARN]}],
                "WithoutSettings": mappings is None,
            },
        )
        tags = [
            {"Key": key, "Value": value}
            for key, value in ((APPLIED_TAG, applied), (REQUEST_TAG, request), *self.more_tags.items())
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


@pytest.fixture
def s3(aws: None) -> Any:
    """The bootstrap bucket in moto's S3."""
    client = boto3.client("s3", region_name="eu-west-1")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client


def _stage(s3: Any, *configs: Desired) -> TaskConfigReader:
    """Puts each config's object where a deploy's asset puts it."""
    for desired in configs:
        body, config = _object(desired)
        s3.put_object(Bucket=config.bucket, Key=config.key, Body=body)
    return TaskConfigReader(s3)


def _create_event(desired: Desired = DESIRED) -> dict[str, Any]:
    return {"RequestType": "Create", "RequestId": REQUEST, "ResourceProperties": _properties(desired)}


def _update_event(request_id: str, new: Desired, old: Desired) -> dict[str, Any]:
    return {
        "RequestType": "Update",
        "RequestId": request_id,
        "PhysicalResourceId": ARN,
        "ResourceProperties": _properties(new),
        "OldResourceProperties": _properties(old),
    }


def _run(
    event: dict[str, Any], client: TaskClient, reader: TaskConfigReader, steps: int
) -> list[dict[str, Any]]:
    # The framework hands isComplete the request merged with onEvent's result
    ongoing = {**event, **begin(event, client, reader)}
    return [step(ongoing, client, reader) for _ in range(steps)]


def test_first_deploy_through_dms_api(stubbed: StubbedDms, s3: Any) -> None:
    # Given DMS answering as a new task moves from ready to running
    stubbed.describe("ready", mappings=PLACEHOLDER)  # the plan
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
    results = _run(_create_event(), TaskClient(stubbed.client), _stage(s3, DESIRED), 4)
    # Then it completes once the task runs, every call in order with DMS's real shapes, the
    # mappings and settings DMS gets are the S3 object's, and only the summary goes back to
    # CloudFormation (its response is limited to 4 KB)
    assert [r["IsComplete"] for r in results] == [False, False, False, True]
    assert results[-1]["Data"] == {"Summary": "running with the config's mappings and settings"}


def _refused_update(stubbed: StubbedDms, new: Desired) -> None:
    """DMS's answers while the deploy under test stops the running task and DMS refuses
    ``new``: the lifecycle tags the task back and resumes it."""
    ran = {"applied": DESIRED.fingerprint, "started": BEFORE}
    stubbed.describe("running", request=EARLIER, mappings=DESIRED.table_mappings, **ran)  # the plan
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
        expected_params={
            "ReplicationTaskArn": ARN,
            "TableMappings": new.table_mappings,
            "ReplicationTaskSettings": new.task_settings,
        },
    )
    # The task kept its mappings (it is stopped, holding the old ones): it says so again
    stubbed.describe(
        "stopped", applied=MODIFYING, request=REQUEST, started=BEFORE, mappings=DESIRED.table_mappings
    )
    stubbed.tag(APPLIED_TAG, DESIRED.fingerprint)
    stubbed.expect(
        "start_replication_task", {"ReplicationTaskArn": ARN, "StartReplicationTaskType": "resume-processing"}
    )


def test_a_refused_modify_resumes_the_task_and_fails_with_dms_message(stubbed: StubbedDms, s3: Any) -> None:
    # Given a running task and a config DMS refuses
    new = _desired(products=3)
    _refused_update(stubbed, new)
    event = _update_event(REQUEST, new, DESIRED)
    client, reader = TaskClient(stubbed.client), _stage(s3, new)
    ongoing = {**event, **begin(event, client, reader)}
    assert ongoing[PLAN_KEY]["Reload"] == [["public", "products"]]
    assert step(ongoing, client, reader) == {"IsComplete": False}
    # When the modify is refused, Then the task is tagged back and resumed, and the deploy
    # fails with DMS's words
    with pytest.raises(LifecycleError) as raised:
        step(ongoing, client, reader)
    assert str(raised.value) == (
        f"DMS ModifyReplicationTask on {ARN}: InvalidParameterValueException: "
        "Error in mapping rules. Rule with ruleId = 9 failed validation."
    )


def test_the_rollback_of_a_refused_modify_neither_stops_modifies_nor_reloads(
    stubbed: StubbedDms, s3: Any
) -> None:
    # Given a deploy bumping products to v3, whose modify DMS refused while the task ran
    new = _desired(products=3)
    _refused_update(stubbed, new)
    client, reader = TaskClient(stubbed.client), _stage(s3, DESIRED, new)
    deploy = _update_event(REQUEST, new, DESIRED)
    ongoing = {**deploy, **begin(deploy, client, reader)}
    step(ongoing, client, reader)
    with pytest.raises(LifecycleError):
        step(ongoing, client, reader)
    # When CloudFormation rolls back to the previous mappings (DMS answers as the resumed
    # task starts and runs; any stop, modify or reload is a call the Stubber refuses)
    holding = {"applied": DESIRED.fingerprint, "started": BEFORE}
    stubbed.describe("starting", request=REQUEST, mappings=DESIRED.table_mappings, **holding)  # the plan
    stubbed.tag(REQUEST_TAG, ROLLBACK)
    stubbed.describe("starting", request=ROLLBACK, **holding)
    stubbed.describe("running", request=ROLLBACK, **holding)
    rollback = _update_event(ROLLBACK, DESIRED, new)
    ongoing = {**rollback, **begin(rollback, client, reader)}
    results = [step(ongoing, client, reader) for _ in range(2)]
    # Then it plans no reload, waits for the task and is done: the task holds its mappings
    assert ongoing[PLAN_KEY]["Reload"] == []
    assert results == [
        {"IsComplete": False},
        {"IsComplete": True, "Data": {"Summary": "running with the config's mappings and settings"}},
    ]


def test_the_tables_to_reload_come_from_the_mappings_the_task_holds(stubbed: StubbedDms, s3: Any) -> None:
    # Given a task holding products v2, and a deploy bumping it to v3
    new = _desired(products=3)
    stubbed.describe(
        "running",
        applied=DESIRED.fingerprint,
        request=EARLIER,
        started=BEFORE,
        mappings=DESIRED.table_mappings,
    )
    stubbed.tag(REQUEST_TAG, REQUEST)
    # When the request is planned (OldResourceProperties' object is not read: only the new
    # object is in S3 here)
    event = _update_event(REQUEST, new, DESIRED)
    result = begin(event, TaskClient(stubbed.client), _stage(s3, new))
    # Then products is reloaded into its new table
    assert result[PLAN_KEY]["Reload"] == [["public", "products"]]


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


# --- reading the config object from S3 ---------------------------------------------


def test_an_object_changed_in_s3_fails_the_request_naming_it(s3: Any) -> None:
    # Given the properties of the sample config, and other bytes under its key
    _, config = _object(DESIRED)
    s3.put_object(Bucket=BUCKET, Key=config.key, Body=_object(_desired(products=3))[0])
    # When CloudFormation sends the request, Then it fails before DMS is asked anything
    with pytest.raises(LifecycleError, match=f"task configuration s3://{BUCKET}/{config.key} has SHA-256"):
        begin(_create_event(), TaskClient(boto3.client("dms", region_name="eu-west-1")), TaskConfigReader(s3))


def test_a_missing_object_fails_the_request_naming_it(s3: Any) -> None:
    _, config = _object(DESIRED)
    with pytest.raises(
        LifecycleError, match=f"reading the task configuration s3://{BUCKET}/{config.key}: NoSuchKey"
    ):
        TaskConfigReader(s3).read(config)


def test_a_read_denied_while_the_new_policy_propagates_is_tried_again(sleeps: Sleeps) -> None:
    # Given S3 denying the first read (the role's policy was updated a moment ago)
    body, config = _object(DESIRED)
    client = boto3.client("s3", region_name="eu-west-1")
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "get_object",
            service_error_code="AccessDenied",
            service_message="Access Denied",
            http_status_code=403,
        )
        stubber.add_response(
            "get_object",
            {"Body": StreamingBody(io.BytesIO(body), len(body))},
            {"Bucket": BUCKET, "Key": config.key},
        )
        # When the lifecycle reads the object, Then it waits once and reads it
        assert TaskConfigReader(client, sleep=sleeps).read(config) == body
        stubber.assert_no_pending_responses()
    assert sleeps == [DENIED_PAUSE_SECONDS]


# --- the handler against moto's DMS -------------------------------------------------


@pytest.fixture
def moto_dms(aws: None) -> Any:
    return boto3.client("dms", region_name="eu-west-1")


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


def test_deleting_the_stack_stops_the_running_task_first(moto_dms: Any, s3: Any) -> None:
    # Given a running task (and no config object: deleting reads none)
    arn = _moto_task(moto_dms)
    moto_dms.start_replication_task(ReplicationTaskArn=arn, StartReplicationTaskType="start-replication")
    # When CloudFormation deletes the lifecycle resource
    event = {
        "RequestType": "Delete",
        "RequestId": REQUEST,
        "PhysicalResourceId": arn,
        "ResourceProperties": {**_properties(DESIRED), "TaskArn": arn},
    }
    results = _run(event, TaskClient(moto_dms), TaskConfigReader(s3), 2)
    # Then the task is stopped before the resource is reported deleted
    assert [r["IsComplete"] for r in results] == [False, True]
    (task,) = moto_dms.describe_replication_tasks()["ReplicationTasks"]
    assert task["Status"] == "stopped"


def test_deleting_when_the_task_is_gone_completes(moto_dms: Any, s3: Any) -> None:
    event = {
        "RequestType": "Delete",
        "RequestId": REQUEST,
        "PhysicalResourceId": ARN,
        "ResourceProperties": _properties(DESIRED),
    }
    assert _run(event, TaskClient(moto_dms), TaskConfigReader(s3), 1) == [
        {"IsComplete": True, "Data": {"Summary": "the task is gone"}}
    ]


def test_a_task_read_from_dms_knows_whether_it_has_run_and_what_it_holds(moto_dms: Any) -> None:
    # Given a task DMS created and one it started
    arn = _moto_task(moto_dms)
    client = TaskClient(moto_dms)
    before = client.describe(arn, with_mappings=True)
    moto_dms.start_replication_task(ReplicationTaskArn=arn, StartReplicationTaskType="start-replication")
    after = client.describe(arn)
    # Then the second has run (its first start must be start-replication, later ones resume)
    assert before is not None and not before.has_run
    assert after is not None and after.has_run and after.status == "running"
    # And asked with its settings, it says which mappings it holds
    assert before.table_mappings is not None
    assert json.loads(before.table_mappings) == json.loads(DESIRED.table_mappings)


# --- beside DMS: the source's checks and DMS's replication slot ---------------------------

POSTGRES_SOURCE = Source(postgres=True, database="shop")
MYSQL_SOURCE = Source(postgres=False, database="shop")
ADMIN = "demo-legacy-admin"


def test_the_first_start_waits_for_the_sources_checks() -> None:
    # Given a configured task that never ran, and a source with an admin function
    plan = make_plan("Create", REQUEST, task=_task("ready"), new=DESIRED, old=None)
    ready = _task("ready", applied=DESIRED.fingerprint)
    # When the lifecycle would start it, Then it checks the source first (once per request)
    assert next_action(ready, DESIRED, plan, POSTGRES_SOURCE) == Check(REQUEST, postgres=True)
    checked = _task("ready", applied=DESIRED.fingerprint, checked=REQUEST)
    assert next_action(checked, DESIRED, plan, POSTGRES_SOURCE) == Start("start-replication", REQUEST)


def test_a_task_that_has_run_is_resumed_without_checks() -> None:
    plan = make_plan("Update", REQUEST, task=_task("stopped", has_run=True), new=DESIRED, old=DESIRED)
    stopped = _task("stopped", applied=DESIRED.fingerprint, has_run=True)
    assert next_action(stopped, DESIRED, plan, POSTGRES_SOURCE) == Start("resume-processing", REQUEST)


def test_once_running_the_slot_new_since_the_first_start_is_recorded_as_dmss() -> None:
    # Given a running task of a PostgreSQL source whose slots before the first start are known
    plan = make_plan("Create", REQUEST, task=_task("ready"), new=DESIRED, old=None)
    running = _task(
        "running", applied=DESIRED.fingerprint, has_run=True, started_by=REQUEST, slots_before="cdc_other"
    )
    # Then the next step tells DMS's slot from those
    assert next_action(running, DESIRED, plan, POSTGRES_SOURCE) == RecordSlot(("cdc_other",))
    now = [("cdc_other", "pgoutput"), ("abc_dms_slot", "test_decoding")]
    assert new_slot(("cdc_other",), now, final=False) == "abc_dms_slot"
    # And a new slot of a plugin DMS does not use is another tool's
    assert (
        new_slot((), [("cdc_other", "pgoutput"), ("abc_dms_slot", "test_decoding")], final=False)
        == "abc_dms_slot"
    )
    # And none or several new slots leave it unknown rather than guessed (looked for again at the delete)
    assert new_slot(("cdc_other",), [("cdc_other", "pgoutput")], final=False) == UNKNOWN_SLOT
    assert new_slot((), [("one", "test_decoding"), ("two", "pglogical")], final=False) == UNKNOWN_SLOT
    # And at the delete's last look: none new is nothing to drop; several, not guessed
    assert new_slot((), [], final=True) == NO_SLOT
    assert new_slot((), [("one", "test_decoding"), ("two", "pglogical")], final=True) == AMBIGUOUS_SLOT
    # And a MySQL source has no slot to record
    assert isinstance(next_action(running, DESIRED, plan, MYSQL_SOURCE), Done)


def test_deleting_drops_dmss_slot_once_the_task_has_stopped() -> None:
    plan = Plan("Delete", REQUEST)
    running = _task("running", has_run=True, slot="abc_dms_slot")
    stopped = _task("stopped", has_run=True, slot="abc_dms_slot")
    assert next_action(running, None, plan, POSTGRES_SOURCE) == Stop()
    assert next_action(stopped, None, plan, POSTGRES_SOURCE) == DropSlot("abc_dms_slot")
    # A slot already dropped (or said to be gone) leaves nothing to do
    assert isinstance(
        next_action(_task("stopped", has_run=True, slot=NO_SLOT), None, plan, POSTGRES_SOURCE), Done
    )
    # A task that never ran has no slot
    assert isinstance(next_action(_task("ready"), None, plan, POSTGRES_SOURCE), Done)


def test_a_task_that_failed_before_running_has_its_slot_looked_for_at_the_delete() -> None:
    # Given a first start that failed before the task ran (no slot recorded), as a rollback finds it
    failed = _task("failed", has_run=True, slots_before="-")
    # When CloudFormation deletes the resource, Then the slot is looked for once more, for good
    assert next_action(failed, None, Plan("Delete", REQUEST), POSTGRES_SOURCE) == RecordSlot((), final=True)
    # And a look that found none completes the delete
    done = _task("failed", has_run=True, slots_before="-", slot=NO_SLOT)
    assert isinstance(next_action(done, None, Plan("Delete", REQUEST), POSTGRES_SOURCE), Done)


def test_deleting_a_task_whose_slot_is_not_known_fails_with_the_commands_to_run() -> None:
    # Given a stopped task that ran, whose slot dmsbus could not tell (several new slots)
    stopped = _task("stopped", has_run=True, slot=AMBIGUOUS_SLOT, slots_before="-")
    # When the stack is deleted, Then the delete stops with what to run on the source and DMS
    with pytest.raises(LifecycleError) as raised:
        next_action(stopped, None, Plan("Delete", REQUEST), POSTGRES_SOURCE)
    message = str(raised.value)
    assert "AND database = 'shop'" in message
    assert "SELECT pg_drop_replication_slot('<slot_name>')" in message
    assert f"aws dms add-tags-to-resource --resource-arn {ARN} --tags Key=dmsbus:slot,Value=none" in message


class StubbedAdmin:
    """The source's admin function behind Lambda's Invoke (Stubber: Lambda's API model)."""

    def __init__(self) -> None:
        self.client = boto3.client("lambda", region_name="eu-west-1")
        self.stubber = Stubber(self.client)

    def answers(self, request: dict[str, Any], payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.stubber.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(body), len(body))},
            {"FunctionName": ADMIN, "Payload": json.dumps(request).encode()},
        )


@pytest.fixture
def admin() -> Iterator[StubbedAdmin]:
    stubbed_admin = StubbedAdmin()
    with stubbed_admin.stubber:
        yield stubbed_admin
    stubbed_admin.stubber.assert_no_pending_responses()


def _created_plan() -> dict[str, Any]:
    return {**_create_event(), "PhysicalResourceId": ARN, PLAN_KEY: Plan("Create", REQUEST).to_data()}


def _deleting_plan() -> dict[str, Any]:
    return {
        "RequestType": "Delete",
        "RequestId": REQUEST,
        "PhysicalResourceId": ARN,
        "ResourceProperties": _properties(DESIRED),
        PLAN_KEY: Plan("Delete", REQUEST).to_data(),
    }


def _step_beside_dms(
    event: dict[str, Any], stubbed: StubbedDms, admin: StubbedAdmin, s3: Any
) -> dict[str, Any]:
    """One lifecycle step with the source's admin function, on a PostgreSQL source."""
    return step(
        event,
        TaskClient(stubbed.client),
        _stage(s3, DESIRED),
        SourceAdmin(admin.client, ADMIN),
        POSTGRES_SOURCE,
    )


def test_a_source_not_ready_fails_the_first_deploy_with_the_list_and_no_start(
    stubbed: StubbedDms, admin: StubbedAdmin, s3: Any
) -> None:
    # Given a configured task about to start, and a source without logical WAL
    stubbed.describe("ready", applied=DESIRED.fingerprint, request=REQUEST)
    finding = {
        "check": "wal_level",
        "found": "wal_level is replica",
        "fix": "ALTER SYSTEM SET wal_level = logical; then restart",
        "page": "CHAP_Source.PostgreSQL",
        "assessment": "postgres-check-walleve",
        "blocking": True,
    }
    admin.answers(
        {"action": "doctor"}, {"engine": "postgres", "ready": False, "checked": [], "findings": [finding]}
    )
    # When the lifecycle takes its step
    with pytest.raises(LifecycleError) as raised:
        _step_beside_dms(_created_plan(), stubbed, admin, s3)
    # Then the deploy fails naming what is missing and how to fix it; DMS was never asked to start
    assert "the source is not ready for DMS" in str(raised.value)
    assert "- wal_level: wal_level is replica; fix: ALTER SYSTEM SET wal_level = logical" in str(raised.value)


def test_a_ready_source_notes_its_slots_then_the_task_starts(
    stubbed: StubbedDms, admin: StubbedAdmin, s3: Any
) -> None:
    # Given a ready source with one logical slot of another tool's
    stubbed.describe("ready", applied=DESIRED.fingerprint, request=REQUEST)
    admin.answers(
        {"action": "doctor"}, {"engine": "postgres", "ready": True, "checked": ["wal_level"], "findings": []}
    )
    admin.answers(
        {"action": "slots"},
        {
            "action": "slots",
            "slots": [{"slot": "cdc_other", "plugin": "pgoutput", "active": True, "retained_bytes": 0}],
        },
    )
    stubbed.tag(SLOTS_BEFORE_TAG, "cdc_other")
    stubbed.tag(CHECKED_TAG, REQUEST)
    # When the lifecycle takes its step
    result = _step_beside_dms(_created_plan(), stubbed, admin, s3)
    # Then it has noted the check and the slots, and goes on (the start is the next step)
    assert result == {"IsComplete": False}


def test_deleting_waits_while_dmss_slot_is_still_read_then_drops_it(
    stubbed: StubbedDms, admin: StubbedAdmin, s3: Any
) -> None:
    # Given a stopped task whose recorded slot a process still reads for a moment
    stubbed.more_tags = {SLOT_TAG: "abc_dms_slot"}
    event = _deleting_plan()
    for answer in (
        {"result": "refused", "active": True, "message": "slot abc_dms_slot is active"},
        {
            "result": "dropped",
            "active": False,
            "message": "dropped replication slot abc_dms_slot of database shop",
        },
    ):
        stubbed.describe("stopped", started=BEFORE)
        admin.answers(
            {"action": "drop-slot", "slot": "abc_dms_slot"},
            {"action": "drop-slot", "slot": "abc_dms_slot", **answer},
        )
    stubbed.tag(SLOT_TAG, NO_SLOT)
    # When the lifecycle steps twice
    first = _step_beside_dms(event, stubbed, admin, s3)
    second = _step_beside_dms(event, stubbed, admin, s3)
    # Then it waited, then dropped the slot and completed the delete, saying so
    assert first == {"IsComplete": False}
    assert second["IsComplete"] is True
    assert "dropped replication slot abc_dms_slot" in second["Data"]["Summary"]


def test_a_busy_admin_function_is_asked_again_not_a_failed_deploy(
    stubbed: StubbedDms, admin: StubbedAdmin, s3: Any
) -> None:
    # Given the admin function at its reserved concurrency (its schedule, a dmsbus doctor)
    stubbed.describe("ready", applied=DESIRED.fingerprint, request=REQUEST)
    admin.stubber.add_client_error("invoke", "TooManyRequestsException", "Rate Exceeded.", 429)
    # When the lifecycle would check the source, Then it waits for the next step
    result = _step_beside_dms(_created_plan(), stubbed, admin, s3)
    assert result == {"IsComplete": False}


def test_a_slot_the_source_cannot_drop_fails_the_delete_with_the_commands(
    stubbed: StubbedDms, admin: StubbedAdmin, s3: Any
) -> None:
    # Given a stopped task whose slot the admin function cannot drop (the source is gone)
    stubbed.more_tags = {SLOT_TAG: "abc_dms_slot"}
    stubbed.describe("stopped", started=BEFORE)
    admin.stubber.add_response(
        "invoke",
        {
            "StatusCode": 200,
            "FunctionError": "Unhandled",
            "Payload": StreamingBody(io.BytesIO(b'{"errorMessage": "connection refused"}'), 38),
        },
        {
            "FunctionName": ADMIN,
            "Payload": json.dumps({"action": "drop-slot", "slot": "abc_dms_slot"}).encode(),
        },
    )
    event = _deleting_plan()
    # When the delete steps, Then it fails saying why and what to run
    with pytest.raises(LifecycleError) as raised:
        _step_beside_dms(event, stubbed, admin, s3)
    assert "failed on drop-slot: connection refused" in str(raised.value)
    assert "Key=dmsbus:slot,Value=none" in str(raised.value)
