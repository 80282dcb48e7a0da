"""Task lifecycle entry points for the CDK Provider framework: ``on_event`` takes
CloudFormation's request, decides the plan and marks the task as this request's;
``is_complete`` is called every 30 s until it says complete, and takes one step each time
(``core.next_action``). Parse -> core -> act.

The framework hands ``is_complete`` CloudFormation's request merged with what ``on_event``
returned, and sends CloudFormation only ``PhysicalResourceId`` and ``Data``: the plan
travels under its own key (``PLAN_KEY``), so it never counts against CloudFormation's 4 KB
response; ``Data`` holds only the summary.

A DMS error fails the deploy with DMS's own message. When a modify is refused the task is
resumed first if it was running, so it is left as it was; CloudFormation's rollback then
asks for the previous mappings, which the task still holds.
"""

from __future__ import annotations

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
    Reload,
    Start,
    Stop,
    Task,
    Wait,
    batches,
    make_plan,
    next_action,
)

logger = Logger(service="dmsbus-task-lifecycle")
#: Where ``on_event``'s result carries the plan to every ``is_complete`` call.
PLAN_KEY = "DmsbusPlan"


@cache
def dms() -> Any:
    return boto3.client("dms", config=Config(retries={"mode": "standard", "max_attempts": 5}))


class TaskClient:
    """The DMS calls the lifecycle makes, with DMS's errors turned into ``LifecycleError``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def describe(self, arn: str) -> Task | None:
        try:
            found = self.client.describe_replication_tasks(
                Filters=[{"Name": "replication-task-arn", "Values": [arn]}], WithoutSettings=True
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
            if plan.was_running:
                # Leave the task as it was: running, with the mappings it had.
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


def _properties(event: dict[str, Any], key: str) -> Desired | None:
    properties = event.get(key)
    return Desired.from_properties(properties) if properties else None


def begin(event: dict[str, Any], client: TaskClient) -> dict[str, Any]:
    """The Provider's onEvent: the physical id (the task ARN) and the plan."""
    request = event["RequestType"]
    desired = _properties(event, "ResourceProperties")
    assert desired is not None  # CloudFormation always sends them
    request_id = str(event["RequestId"])
    if request == "Delete":
        # Stop the task this resource was created for, also when a replaced resource is
        # deleted after the update that replaced it.
        arn = event.get("PhysicalResourceId") or desired.task_arn
        plan = make_plan("Delete", request_id, task=None, new=desired, old=None)
        return {"PhysicalResourceId": arn, PLAN_KEY: plan.to_data()}
    task = client.describe(desired.task_arn)
    old = _properties(event, "OldResourceProperties")
    plan = make_plan(request, request_id, task=task, new=desired, old=old)
    if task is not None:
        client.tag(desired.task_arn, REQUEST_TAG, request_id)
    logger.info("plan", extra={"request": request, "task": desired.task_arn, "plan": plan.to_data()})
    return {"PhysicalResourceId": desired.task_arn, PLAN_KEY: plan.to_data()}


def step(event: dict[str, Any], client: TaskClient) -> dict[str, Any]:
    """The Provider's isComplete: one step towards the desired task."""
    desired = _properties(event, "ResourceProperties")
    assert desired is not None
    plan = Plan.from_data(event[PLAN_KEY])
    arn = event["PhysicalResourceId"] if plan.request == "Delete" else desired.task_arn
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
    return begin(event, TaskClient(dms()))


@logger.inject_lambda_context
def is_complete(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return step(event, TaskClient(dms()))
