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
Which mappings and settings the task holds is recorded in its ``dmsbus:applied`` tag, the
fingerprint of what was last applied. Pure: no AWS calls here (``handler`` makes them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from dmsbus.table_mappings import MappingError, tables_to_reload

#: The tag that records the fingerprint of the mappings and settings the task holds.
APPLIED_TAG = "dmsbus:applied"
#: Statuses a task passes through; the lifecycle waits them out (API_ReplicationTask).
TRANSITIONAL = frozenset({"creating", "modifying", "starting", "stopping", "deleting", "moving", "testing"})
#: Statuses in which a task may be modified or started.
AT_REST = frozenset({"ready", "stopped", "failed"})
#: ReloadTables takes at most this many tables a call (CHAP_Tasks.ReloadTables).
RELOAD_BATCH = 10

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
    #: When it was last started (ReplicationTaskStartDate); None: it has never run.
    started: datetime | None = None
    stop_reason: str | None = None
    last_failure: str | None = None

    @classmethod
    def from_description(cls, description: Mapping[str, Any], tags: Mapping[str, str]) -> Task:
        return cls(
            arn=description["ReplicationTaskArn"],
            status=description["Status"],
            applied=tags.get(APPLIED_TAG),
            started=description.get("ReplicationTaskStartDate"),
            stop_reason=description.get("StopReason"),
            last_failure=description.get("LastFailureMessage"),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """Decided once, when CloudFormation sends the request, and handed to every step."""

    request: RequestType
    #: When the request came: a task that fails or stops after a start since then failed
    #: because of this deploy.
    since: datetime
    was_running: bool = False
    reload: tuple[tuple[str, str], ...] = field(default=())

    def to_data(self) -> dict[str, str]:
        return {
            "Request": self.request,
            "Since": self.since.isoformat(),
            "WasRunning": str(self.was_running).lower(),
            "Reload": json.dumps([list(pair) for pair in self.reload]),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Plan:
        request = data["Request"]
        if request not in ("Create", "Update", "Delete"):
            raise LifecycleError(f"unknown request type {request!r}")
        return cls(
            request=request,
            since=datetime.fromisoformat(data["Since"]),
            was_running=data["WasRunning"] == "true",
            reload=tuple((schema, table) for schema, table in json.loads(data["Reload"])),
        )


def make_plan(
    request: RequestType, *, task: Task | None, new: Desired, old: Desired | None, now: datetime
) -> Plan:
    """What this request must do beyond reaching ``new``: remember whether the task ran,
    and which tables to reload once it runs again."""
    if request == "Delete" or task is None:
        return Plan(request, now)
    reload: tuple[tuple[str, str], ...] = ()
    # A task that never ran gets every table from its first full load.
    if request == "Update" and old is not None and task.started is not None:
        try:
            changed = tables_to_reload(json.loads(old.table_mappings), json.loads(new.table_mappings))
        except MappingError as exc:
            raise LifecycleError(str(exc)) from exc
        reload = tuple(changed)
    return Plan(request, now, was_running=task.status in ("running", "starting"), reload=reload)


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
    this deploy started it, or it is in a state no step leaves)."""
    if plan.request == "Delete":
        return _towards_stopped(task)
    if task is None:
        raise LifecycleError(f"the replication task {desired.task_arn} does not exist")
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
    started_here = task.started is not None and task.started >= plan.since
    if started_here and status in ("failed", "stopped"):
        why = task.last_failure or task.stop_reason or "DMS gave no reason"
        raise LifecycleError(f"the replication task {status} after this deploy started it: {why}")
    if desired.start or plan.was_running:
        return Start("resume-processing" if task.started is not None else "start-replication")
    left = "ready, never started" if task.started is None else status
    pending = (
        f"; tables to reload once it runs: {', '.join(f'{s}.{t}' for s, t in plan.reload)}"
        if plan.reload
        else ""
    )
    return Done(f"left {left} (start: false){pending}")


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
