"""The DMS replication task's running state, owned by a CloudFormation custom resource.

CloudFormation applies a ``TableMappings`` or settings change to an
``AWS::DMS::ReplicationTask`` in place, with ModifyReplicationTask, and DMS refuses that on
a running task: "Tasks that have run must have a status of Stopped or Failed to be
modified" (CHAP_Tasks.Modifying; API_ModifyReplicationTask). So the template's task keeps
fixed properties, and this lifecycle applies the config's mappings and settings:

- every deploy that changes them: stop (and wait) -> modify -> resume, then reload the
  named tables whose DynamoDB target is new (added, or renamed by a version bump): a resume
  continues from the last stop position and does not refill them, ReloadTables does
  (API_StartReplicationTask; API_ReloadTables, which needs a running task and takes up to 10
  tables a call, CHAP_Tasks.ReloadTables);
- the first deploy starts the task with ``start-replication``, "the only valid action ...
  the first time a task ... is run" (API_StartReplicationTask), unless ``start`` is false;
- deleting the resource (the stack) stops the task, so that it can be deleted.

The lifecycle is a reconciler: each ``isComplete`` call looks at the task and takes the
one next step (``next_action``), so a retried or interrupted call repeats nothing harmful.
The task's tags hold its state: which mappings and settings it holds (``dmsbus:applied``,
a fingerprint), which request owns it and which request last started it. Pure: no AWS
calls here (``handler`` makes them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dmsbus.table_mappings import MappingError, tables_to_reload

#: The tag that records the fingerprint of the mappings and settings the task holds
#: (``MODIFYING`` while a modify is under way, so a failed tag write never claims a config).
APPLIED_TAG = "dmsbus:applied"
MODIFYING = "modifying"
#: The CloudFormation request that owns the task now: a waiter of an older request (one
#: CloudFormation cancelled) stops acting when it sees another.
REQUEST_TAG = "dmsbus:request"
#: The request that last started the task: a task that stops or fails after that start
#: fails the deploy instead of being started again.
STARTED_TAG = "dmsbus:started"
#: Statuses a task passes through; the lifecycle waits them out (API_ReplicationTask).
TRANSITIONAL = frozenset({"creating", "modifying", "starting", "stopping", "deleting", "moving", "testing"})
#: Statuses in which a task may be modified or started.
AT_REST = frozenset({"ready", "stopped", "failed"})
#: ReloadTables takes at most this many tables a call (CHAP_Tasks.ReloadTables).
RELOAD_BATCH = 10
#: Tables named in a summary (CloudFormation's response has a 4 KB limit).
MAX_NAMED = 20

RequestType = Literal["Create", "Update", "Delete"]


class LifecycleError(RuntimeError):
    """The deploy cannot go on; the message is what CloudFormation shows (DMS's own words)."""


@dataclass(frozen=True, slots=True)
class Desired:
    """What the config wants of the task: the custom resource's properties."""

    task_arn: str
    table_mappings: str
    task_settings: str
    start: bool

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> Desired:
        values = {}
        for name in ("TaskArn", "TableMappings", "TaskSettings", "Start"):
            value = properties.get(name)
            if value is None or value == "":
                raise LifecycleError(f"the task lifecycle resource has no {name} property")
            values[name] = value
        for name in ("TableMappings", "TaskSettings"):
            try:
                json.loads(values[name])
            except (TypeError, ValueError) as exc:
                raise LifecycleError(f"the task lifecycle resource's {name} is not JSON: {exc}") from exc
        start = str(values["Start"]).lower()
        if start not in ("true", "false"):
            raise LifecycleError(
                f"the task lifecycle resource's Start is {values['Start']!r}, not true or false"
            )
        return cls(str(values["TaskArn"]), values["TableMappings"], values["TaskSettings"], start == "true")

    @property
    def fingerprint(self) -> str:
        """Identifies the mappings and settings (a tag value: at most 256 characters)."""
        content = json.dumps(
            [json.loads(self.table_mappings), json.loads(self.task_settings)], sort_keys=True
        ).encode()
        return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True, slots=True)
class Task:
    """What DescribeReplicationTasks and ListTagsForResource say of the task."""

    arn: str
    status: str
    applied: str | None = None
    #: Whether it has ever run (a start date is known): a first start is start-replication.
    has_run: bool = False
    request: str | None = None
    started_by: str | None = None
    stop_reason: str | None = None
    last_failure: str | None = None

    @classmethod
    def from_description(cls, description: Mapping[str, Any], tags: Mapping[str, str]) -> Task:
        stats = description.get("ReplicationTaskStats") or {}
        dates = (
            description.get("ReplicationTaskStartDate"),
            stats.get("StartDate"),
            stats.get("FreshStartDate"),
        )
        return cls(
            arn=description["ReplicationTaskArn"],
            status=description["Status"],
            applied=tags.get(APPLIED_TAG),
            has_run=any(date is not None for date in dates),
            request=tags.get(REQUEST_TAG),
            started_by=tags.get(STARTED_TAG),
            stop_reason=description.get("StopReason"),
            last_failure=description.get("LastFailureMessage"),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """Decided once, when CloudFormation sends the request, and handed to every step."""

    request: RequestType
    #: CloudFormation's RequestId: the owner of the task while this request runs.
    request_id: str
    was_running: bool = False
    #: The task had failed before this deploy: failing again after the deploy resumed it
    #: is reported, not a reason to fail the deploy (or its rollback).
    was_failed: bool = False
    reload: tuple[tuple[str, str], ...] = field(default=())

    def to_data(self) -> dict[str, Any]:
        return {
            "Request": self.request,
            "RequestId": self.request_id,
            "WasRunning": self.was_running,
            "WasFailed": self.was_failed,
            "Reload": [list(pair) for pair in self.reload],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Plan:
        request = data["Request"]
        if request not in ("Create", "Update", "Delete"):
            raise LifecycleError(f"unknown request type {request!r}")
        return cls(
            request=request,
            request_id=str(data["RequestId"]),
            was_running=bool(data["WasRunning"]),
            was_failed=bool(data["WasFailed"]),
            reload=tuple((schema, table) for schema, table in data["Reload"]),
        )


def make_plan(
    request: RequestType, request_id: str, *, task: Task | None, new: Desired, old: Desired | None
) -> Plan:
    """What this request must do beyond reaching ``new``: remember how the task was, and
    which tables to reload once it runs again."""
    if request == "Delete" or task is None:
        return Plan(request, request_id)
    reload: tuple[tuple[str, str], ...] = ()
    # A task that never ran gets every table from its first full load; one that already
    # holds the new config (a rollback to what a refused modify left) reloads nothing.
    if request == "Update" and old is not None and task.has_run and task.applied != new.fingerprint:
        try:
            changed = tables_to_reload(json.loads(old.table_mappings), json.loads(new.table_mappings))
        except MappingError as exc:
            raise LifecycleError(str(exc)) from exc
        reload = tuple(changed)
    return Plan(
        request,
        request_id,
        was_running=task.status in ("running", "starting"),
        was_failed=task.status == "failed",
        reload=reload,
    )


# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wait:
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Modify:
    table_mappings: str
    task_settings: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Start:
    #: ``start-replication`` the first time, ``resume-processing`` after.
    kind: Literal["start-replication", "resume-processing"]
    #: Recorded on the task (``STARTED_TAG``) before it is started.
    request_id: str


@dataclass(frozen=True, slots=True)
class Reload:
    tables: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Done:
    summary: str


Action = Wait | Stop | Modify | Start | Reload | Done


def next_action(task: Task | None, desired: Desired, plan: Plan) -> Action:
    """The one next step from ``task`` towards what ``desired`` and ``plan`` ask for.

    Raises ``LifecycleError`` when the task cannot get there (it failed or stopped after
    this deploy started it, another request owns it now, or it is in a state no step
    leaves)."""
    if plan.request == "Delete":
        return _towards_stopped(task)
    if task is None:
        raise LifecycleError(f"the replication task {desired.task_arn} does not exist")
    if task.request is not None and task.request != plan.request_id:
        raise LifecycleError(
            f"CloudFormation request {task.request} owns the replication task now; this one "
            f"({plan.request_id}) was cancelled or timed out and stops here"
        )
    status = task.status
    if status in TRANSITIONAL:
        return Wait(f"the task is {status}")
    if status not in AT_REST and status != "running":
        raise LifecycleError(
            f"the replication task is {status!r}; dmsbus cannot modify or start it from there"
        )
    if task.applied != desired.fingerprint:
        if status == "running":
            return Stop()
        return Modify(desired.table_mappings, desired.task_settings, desired.fingerprint)
    if status == "running":
        if plan.reload:
            return Reload(plan.reload)
        return Done("running with the config's mappings and settings")
    if not (desired.start or plan.was_running):
        left = "ready, never started" if not task.has_run else status
        return Done(f"left {left} (start: false){_pending(plan)}")
    if task.started_by == plan.request_id:
        # This deploy started it and it came to rest again: it failed or stopped itself.
        why = task.last_failure or task.stop_reason or "DMS gave no reason"
        if plan.was_failed:
            return Done(f"the task had failed before this deploy and is {status} again after resuming: {why}")
        raise LifecycleError(f"the replication task is {status} after this deploy started it: {why}")
    return Start("resume-processing" if task.has_run else "start-replication", plan.request_id)


def _pending(plan: Plan) -> str:
    if not plan.reload:
        return ""
    names = [f"{schema}.{table}" for schema, table in plan.reload]
    shown = ", ".join(names[:MAX_NAMED])
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return f"; once it runs, reload (ReloadTables): {shown}{more}"


def _towards_stopped(task: Task | None) -> Action:
    if task is None:
        return Done("the task is gone")
    if task.status == "running":
        return Stop()
    if task.status in TRANSITIONAL - {"deleting"}:
        return Wait(f"the task is {task.status}")
    return Done(f"the task is {task.status}")


def batches(tables: tuple[tuple[str, str], ...]) -> list[list[dict[str, str]]]:
    """ReloadTables requests' TablesToReload, at most ``RELOAD_BATCH`` tables each."""
    entries = [{"SchemaName": schema, "TableName": table} for schema, table in tables]
    return [entries[index : index + RELOAD_BATCH] for index in range(0, len(entries), RELOAD_BATCH)]
