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
    MODIFYING,
    REQUEST_TAG,
    STARTED_TAG,
    Action,
    Desired,
    Done,
    LifecycleError,
    Modify,
    Plan,
    Properties,
    Reload,
    Start,
    Stop,
    Task,
    TaskConfigObject,
    Wait,
    applied_after_refusal,
    batches,
    make_plan,
    next_action,
)

logger = Logger(service="dmsbus-task-lifecycle")
#: Where ``on_event``'s result carries the plan to every ``is_complete`` call.
PLAN_KEY = "DmsbusPlan"


#: Reads of the task configuration object refused with AccessDenied are tried again this
#: many times, this many seconds apart: CloudFormation updates the role's policy (which names
#: the new object) just before this resource, and IAM takes a moment to apply it.
DENIED_ATTEMPTS = 4
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


def step(event: Mapping[str, Any], client: TaskClient, reader: TaskConfigReader) -> dict[str, Any]:
    """The Provider's isComplete: one step towards the desired task."""
    plan = Plan.from_data(event[PLAN_KEY])
    properties = Properties.parse(event["ResourceProperties"])
    desired = None if plan.request == "Delete" else reader.desired(properties)
    arn = event["PhysicalResourceId"] if desired is None else desired.task_arn
    task = client.describe(arn)
    action = next_action(task, desired, plan)
    logger.info("step", extra={"task": arn, "status": task.status if task else None, "action": repr(action)})
    client.act(arn, action, plan)
    if isinstance(action, Done | Reload):
        summary = (
            action.summary if isinstance(action, Done) else f"running; reloading {len(action.tables)} tables"
        )
        return {"IsComplete": True, "Data": {"Summary": summary}}
    if isinstance(action, Wait):
        logger.info(action.reason)
    return {"IsComplete": False}


@logger.inject_lambda_context
def on_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return begin(event, TaskClient(dms()), TaskConfigReader(s3()))


@logger.inject_lambda_context
def is_complete(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return step(event, TaskClient(dms()), TaskConfigReader(s3()))
