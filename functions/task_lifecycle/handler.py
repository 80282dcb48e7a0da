"""Task lifecycle entry points for the CDK Provider framework: ``on_event`` takes
CloudFormation's request, decides the plan and marks the task as this request's;
``is_complete`` is called every 30 s until it says complete, and takes one step each time
(``core.next_action``). Parse -> core -> act.

The framework hands ``is_complete`` CloudFormation's request merged with what ``on_event``
returned, and sends CloudFormation only ``PhysicalResourceId`` and ``Data``: the plan
travels under its own key (``PLAN_KEY``), so it never counts against CloudFormation's 4 KB
response; ``Data`` holds only the summary.

The task's mappings and settings are read from the S3 object the properties name
(``TaskConfigReader``), and refused unless its SHA-256 is the one the template names. Only
the new request's object is read: the mappings the task holds now come from DMS
(DescribeReplicationTasks), not from OldResourceProperties' object, which the role may not
read (its policy, updated before this resource, names only the template's own object).
Deleting reads no object.

A DMS error fails the deploy with DMS's own message. When a modify is refused, the task's
``dmsbus:applied`` is set back to what it was before the request (``core.
applied_after_refusal``) and the task is resumed if it was running, so it is left as it
was; CloudFormation's rollback then asks for the previous mappings, finds the task holding
them, and neither stops, modifies nor reloads it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import ClientError

from task_lifecycle.core import (
    APPLIED_TAG,
    CHECKED_TAG,
    MODIFYING,
    NO_SLOT,
    REQUEST_TAG,
    SLOT_TAG,
    SLOTS_BEFORE_TAG,
    STARTED_TAG,
    Action,
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
    batches,
    make_plan,
    new_slot,
    next_action,
    slot_guidance,
    slots_tag,
)
from task_lifecycle.settings import LifecycleSettings

logger = Logger(service="dmsbus-task-lifecycle")
#: Where ``on_event``'s result carries the plan to every ``is_complete`` call.
PLAN_KEY = "DmsbusPlan"


#: Reads of the task configuration object refused with AccessDenied are tried again this
#: many times, this many seconds apart: CloudFormation updates the role's policy (which names
#: the new object) just before this resource, and IAM takes a moment to apply it (up to 40 s
#: in all, well within the step's 300 s).
DENIED_ATTEMPTS = 8
DENIED_PAUSE_SECONDS = 5.0
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})


@cache
def dms() -> Any:
    return boto3.client("dms", config=_RETRIES)


@cache
def s3() -> Any:
    return boto3.client("s3", config=_RETRIES)


class TaskConfigReader:
    """Reads the task configuration object (the mappings and settings) from S3."""

    def __init__(self, client: Any, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.sleep = sleep

    def read(self, config: TaskConfigObject) -> bytes:
        for attempt in range(1, DENIED_ATTEMPTS + 1):
            try:
                body: bytes = self.client.get_object(Bucket=config.bucket, Key=config.key)["Body"].read()
                return body
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = error.get("Code", "?")
                if code == "AccessDenied" and attempt < DENIED_ATTEMPTS:
                    logger.warning(
                        "reading the task configuration was denied; trying again",
                        extra={"object": config.uri},
                    )
                    self.sleep(DENIED_PAUSE_SECONDS)
                    continue
                raise LifecycleError(
                    f"reading the task configuration {config.uri}: {code}: {error.get('Message', exc)}"
                ) from exc
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def desired(self, properties: Properties) -> Desired:
        return Desired.from_object(properties, self.read(properties.config))


@cache
def lambda_client() -> Any:
    return boto3.client(
        "lambda", config=Config(read_timeout=180, retries={"mode": "standard", "max_attempts": 3})
    )


@cache
def settings() -> LifecycleSettings:
    return LifecycleSettings.from_environ(os.environ)


class AdminBusy(Exception):  # noqa: N818 - a state, not a failure
    """The admin function is at its reserved concurrency: wait, and ask again."""


class SourceAdmin:
    """The source's admin function, invoked synchronously: in the source's network, with
    DMS's credentials (functions/source_admin)."""

    def __init__(self, client: Any, function_name: str) -> None:
        self.client = client
        self.function_name = function_name

    def call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            response = self.client.invoke(
                FunctionName=self.function_name, Payload=json.dumps(request).encode()
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "TooManyRequestsException":
                # Its reserved concurrency is busy (its schedule, a `dmsbus doctor`): ask again.
                raise AdminBusy(self.function_name) from exc
            raise LifecycleError(
                f"invoking {self.function_name}: {error.get('Code', '?')}: {error.get('Message', exc)}"
            ) from exc
        payload = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            message = payload.get("errorMessage") if isinstance(payload, dict) else payload
            raise LifecycleError(f"{self.function_name} failed on {request.get('action')}: {message}")
        if not isinstance(payload, dict):
            raise LifecycleError(f"{self.function_name} answered {payload!r} to {request.get('action')}")
        return payload

    def slots(self) -> list[tuple[str, str]]:
        """The source database's logical slots: name and output plugin."""
        return [(str(slot["slot"]), str(slot["plugin"])) for slot in self.call({"action": "slots"})["slots"]]


def source_not_ready(report: Mapping[str, Any]) -> str | None:
    """The deploy's error when the source's checks found something DMS needs missing."""
    missing = [finding for finding in report.get("findings", []) if finding.get("blocking", True)]
    if report.get("ready") and not missing:
        return None
    lines = [
        f"- {finding['check']}: {finding['found']}; fix: {finding['fix']} ({finding['page']})"
        for finding in missing
    ]
    return (
        "the source is not ready for DMS, so the task is not started (run `dmsbus doctor` to check again):\n"
        + "\n".join(lines)
    )


class TaskClient:
    """The DMS calls the lifecycle makes, with DMS's errors turned into ``LifecycleError``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def describe(self, arn: str, *, with_mappings: bool = False) -> Task | None:
        """The task, and with ``with_mappings`` the TableMappings it holds (DMS returns them
        with its settings only)."""
        try:
            found = self.client.describe_replication_tasks(
                Filters=[{"Name": "replication-task-arn", "Values": [arn]}], WithoutSettings=not with_mappings
            )["ReplicationTasks"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundFault":
                return None
            raise _dms_error("DescribeReplicationTasks", arn, exc) from exc
        if not found:
            return None
        tags = self._call("ListTagsForResource", arn, ResourceArn=arn)["TagList"]
        return Task.from_description(found[0], {tag["Key"]: tag["Value"] for tag in tags})

    def act(self, arn: str, action: Action, plan: Plan) -> None:
        if isinstance(action, Stop):
            self._call("StopReplicationTask", arn, ReplicationTaskArn=arn)
        elif isinstance(action, Modify):
            self._modify(arn, action, plan)
        elif isinstance(action, Start):
            self.tag(arn, STARTED_TAG, action.request_id)
            self._call(
                "StartReplicationTask", arn, ReplicationTaskArn=arn, StartReplicationTaskType=action.kind
            )
        elif isinstance(action, Reload):
            for tables in batches(action.tables):
                self._call(
                    "ReloadTables",
                    arn,
                    ReplicationTaskArn=arn,
                    TablesToReload=tables,
                    ReloadOption="data-reload",
                )

    def tag(self, arn: str, key: str, value: str) -> None:
        self._call("AddTagsToResource", arn, ResourceArn=arn, Tags=[{"Key": key, "Value": value}])

    def _modify(self, arn: str, action: Modify, plan: Plan) -> None:
        # Until the modify is through, the task claims no config: a tag write that fails
        # after it must not leave the old fingerprint on the new mappings.
        self.tag(arn, APPLIED_TAG, MODIFYING)
        try:
            self._call(
                "ModifyReplicationTask",
                arn,
                ReplicationTaskArn=arn,
                TableMappings=action.table_mappings,
                ReplicationTaskSettings=action.task_settings,
            )
        except LifecycleError:
            # Leave the task as it was: saying again which config it holds (when it shows
            # it kept it), and running if it ran.
            try:
                restore = applied_after_refusal(self.describe(arn, with_mappings=True), action, plan)
                if restore is not None:
                    self.tag(arn, APPLIED_TAG, restore)
            except LifecycleError:
                logger.exception("restoring the task's applied tag after a refused modify failed")
            if plan.was_running:
                try:
                    self._call(
                        "StartReplicationTask",
                        arn,
                        ReplicationTaskArn=arn,
                        StartReplicationTaskType="resume-processing",
                    )
                except LifecycleError:
                    logger.exception("resuming the task after a refused modify failed too")
            raise
        self._call(
            "AddTagsToResource",
            arn,
            ResourceArn=arn,
            Tags=[{"Key": APPLIED_TAG, "Value": action.fingerprint}],
        )

    def _call(self, operation: str, arn: str, **parameters: Any) -> Any:
        method = getattr(self.client, _snake(operation))
        try:
            return method(**parameters)
        except ClientError as exc:
            raise _dms_error(operation, arn, exc) from exc


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


def _dms_error(operation: str, arn: str, exc: ClientError) -> LifecycleError:
    error = exc.response.get("Error", {})
    return LifecycleError(f"DMS {operation} on {arn}: {error.get('Code', '?')}: {error.get('Message', exc)}")


def begin(event: Mapping[str, Any], client: TaskClient, reader: TaskConfigReader) -> dict[str, Any]:
    """The Provider's onEvent: the physical id (the task ARN) and the plan."""
    request = event["RequestType"]
    properties = Properties.parse(event["ResourceProperties"])
    request_id = str(event["RequestId"])
    if request == "Delete":
        # Stop the task this resource was created for, also when a replaced resource is
        # deleted after the update that replaced it.
        arn = event.get("PhysicalResourceId") or properties.task_arn
        return {"PhysicalResourceId": arn, PLAN_KEY: Plan("Delete", request_id).to_data()}
    desired = reader.desired(properties)
    task = client.describe(desired.task_arn, with_mappings=True)
    # What the task holds, as DMS reports it: the tables whose target it changes are reloaded.
    held = replace(desired, table_mappings=task.table_mappings) if task and task.table_mappings else None
    plan = make_plan(request, request_id, task=task, new=desired, old=held)
    if task is not None:
        client.tag(desired.task_arn, REQUEST_TAG, request_id)
    logger.info("plan", extra={"request": request, "task": desired.task_arn, "plan": plan.to_data()})
    return {"PhysicalResourceId": desired.task_arn, PLAN_KEY: plan.to_data()}


def step(
    event: Mapping[str, Any],
    client: TaskClient,
    reader: TaskConfigReader,
    admin: SourceAdmin | None = None,
    source: Source | None = None,
) -> dict[str, Any]:
    """The Provider's isComplete: one step towards the desired task. ``admin`` and
    ``source``: the source's admin function and what it serves (checks, slots)."""
    plan = Plan.from_data(event[PLAN_KEY])
    properties = Properties.parse(event["ResourceProperties"])
    desired = None if plan.request == "Delete" else reader.desired(properties)
    arn = event["PhysicalResourceId"] if desired is None else desired.task_arn
    task = client.describe(arn)
    action = next_action(task, desired, plan, source if admin is not None else None)
    logger.info("step", extra={"task": arn, "status": task.status if task else None, "action": repr(action)})
    if isinstance(action, Check | RecordSlot | DropSlot):
        assert admin is not None and source is not None
        try:
            return _beside_dms(arn, action, client, admin, source)
        except AdminBusy:
            logger.info("the source's admin function is busy; asking again next step")
            return {"IsComplete": False}
    client.act(arn, action, plan)
    if isinstance(action, Done | Reload):
        summary = (
            action.summary if isinstance(action, Done) else f"running; reloading {len(action.tables)} tables"
        )
        return {"IsComplete": True, "Data": {"Summary": summary}}
    if isinstance(action, Wait):
        logger.info(action.reason)
    return {"IsComplete": False}


def _beside_dms(
    arn: str, action: Check | RecordSlot | DropSlot, client: TaskClient, admin: SourceAdmin, source: Source
) -> dict[str, Any]:
    """The steps the source's admin function takes; each leaves its mark in a task tag."""
    if isinstance(action, Check):
        why = source_not_ready(admin.call({"action": "doctor"}))
        if why is not None:
            raise LifecycleError(why)
        if action.postgres:
            before = slots_tag([name for name, _ in admin.slots()])
            if before is not None:
                client.tag(arn, SLOTS_BEFORE_TAG, before)
        client.tag(arn, CHECKED_TAG, action.request_id)
        return {"IsComplete": False}
    if isinstance(action, RecordSlot):
        slot = new_slot(action.before, admin.slots(), final=action.final)
        logger.info("DMS's replication slot", extra={"task": arn, "slot": slot})
        client.tag(arn, SLOT_TAG, slot)
        return {"IsComplete": False}
    try:
        result = admin.call({"action": "drop-slot", "slot": action.slot})
    except LifecycleError as exc:
        raise LifecycleError(
            f"{exc}. DMS's slot {action.slot} is left: {slot_guidance(arn, source.database)}"
        ) from exc
    if result.get("result") in ("dropped", "absent"):
        client.tag(arn, SLOT_TAG, NO_SLOT)
        return {"IsComplete": True, "Data": {"Summary": f"the task is stopped; {result.get('message')}"}}
    if result.get("active"):
        logger.info("DMS's slot is still read; waiting", extra={"slot": action.slot})
        return {"IsComplete": False}
    raise LifecycleError(
        f"DMS's replication slot {action.slot} was not dropped: {result.get('message')}. "
        + slot_guidance(arn, source.database)
    )


def _admin() -> tuple[SourceAdmin | None, Source | None]:
    config = settings()
    if config.admin_function is None:
        return None, None
    return SourceAdmin(lambda_client(), config.admin_function), config.source


@logger.inject_lambda_context
def on_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return begin(event, TaskClient(dms()), TaskConfigReader(s3()))


@logger.inject_lambda_context
def is_complete(event: dict[str, Any], context: Any) -> dict[str, Any]:
    admin, source = _admin()
    return step(event, TaskClient(dms()), TaskConfigReader(s3()), admin, source)
