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
a fingerprint), which request owns it and which request last started it. A refused modify
leaves the task holding what it held, so the tag is set back to the fingerprint it had
before the request (``Plan.applied_before``): CloudFormation's rollback then finds the task
holding its mappings already, and neither stops, modifies nor reloads it.

The mappings and settings do not travel in the resource's properties: each listed table
adds about 500 bytes of TableMappings, which an update request carries twice
(ResourceProperties and OldResourceProperties) through CloudFormation's asynchronous Lambda
invocation (services-cloudformation; API_Invoke: at most 1 MB) and the Provider framework's
state machine (a state's input is at most 262,144 bytes: API_StateEnteredEventDetails), and
the template once (at most 1 MB from S3: cloudformation-limits). They travel as one JSON
object in S3, a CDK file asset (content-addressed: an earlier deploy's object stays where
it was, so a rollback reads it again); the properties carry its bucket, key and SHA-256
(``TaskConfigObject``), and the lifecycle refuses an object whose hash differs. Pure: no
AWS calls here (``handler`` makes them).
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
#: The request whose checks of the source (``dmsbus doctor``'s, run by the source's admin
#: function) passed before the task's first start.
CHECKED_TAG = "dmsbus:checked"
#: The source's logical replication slots before the first start, comma-separated: the
#: one that is new once the task runs is DMS's (DMS names it; a task that is not CDC-only
#: cannot be given one: API_PostgreSQLSettings, SlotName).
SLOTS_BEFORE_TAG = "dmsbus:slots-before"
#: DMS's replication slot of this task, dropped when the stack is deleted (DMS leaves it:
#: "slots remain open even when the task is no longer running", CHAP_Source.PostgreSQL).
#: ``unknown`` when it could not be told; ``none`` says there is nothing to drop.
SLOT_TAG = "dmsbus:slot"
UNKNOWN_SLOT = "unknown"
NO_SLOT = "none"
#: Several new slots at the delete's last look: dmsbus does not guess which is DMS's.
AMBIGUOUS_SLOT = "ambiguous"
#: The output plugins DMS makes its slot with (PostgreSQL endpoint ``PluginName``:
#: test-decoding or pglogical, API_PostgreSQLSettings): a new slot of another plugin is not
#: DMS's.
DMS_PLUGINS = frozenset({"test_decoding", "pglogical"})
#: A tag value's longest (AddTagsToResource): longer slot lists are not recorded.
MAX_TAG_VALUE = 256
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


#: The custom resource's properties (``resource_properties`` writes them, ``Properties``
#: reads them): the task, where its mappings and settings are, and whether to start it.
TASK_ARN = "TaskArn"
CONFIG_BUCKET = "TaskConfigBucket"
CONFIG_KEY = "TaskConfigKey"
CONFIG_SHA256 = "TaskConfigSha256"
START = "Start"
#: The S3 object's two members, each the JSON document DMS takes.
TABLE_MAPPINGS = "TableMappings"
TASK_SETTINGS = "TaskSettings"


@dataclass(frozen=True, slots=True)
class TaskConfigObject:
    """Where the task's mappings and settings are: an S3 object and the SHA-256 of its bytes."""

    bucket: str
    key: str
    sha256: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def encode_task_config(table_mappings: Any, task_settings: Any) -> bytes:
    """The S3 object's bytes: ``{"TableMappings": ..., "TaskSettings": ...}``."""
    document = {TABLE_MAPPINGS: table_mappings, TASK_SETTINGS: task_settings}
    return json.dumps(document, separators=(",", ":")).encode()


def resource_properties(*, task_arn: str, config: TaskConfigObject, start: bool) -> dict[str, str]:
    """The custom resource's properties (CloudFormation sends every value as a string)."""
    return {
        TASK_ARN: task_arn,
        CONFIG_BUCKET: config.bucket,
        CONFIG_KEY: config.key,
        CONFIG_SHA256: config.sha256,
        START: str(start).lower(),
    }


@dataclass(frozen=True, slots=True)
class Properties:
    """The custom resource's properties, as CloudFormation sends them."""

    task_arn: str
    config: TaskConfigObject
    start: bool

    @classmethod
    def parse(cls, properties: Mapping[str, Any]) -> Properties:
        values = {}
        for name in (TASK_ARN, CONFIG_BUCKET, CONFIG_KEY, CONFIG_SHA256, START):
            value = properties.get(name)
            if value is None or value == "":
                raise LifecycleError(f"the task lifecycle resource has no {name} property")
            values[name] = str(value)
        start = values[START].lower()
        if start not in ("true", "false"):
            raise LifecycleError(
                f"the task lifecycle resource's {START} is {values[START]!r}, not true or false"
            )
        config = TaskConfigObject(values[CONFIG_BUCKET], values[CONFIG_KEY], values[CONFIG_SHA256].lower())
        return cls(values[TASK_ARN], config, start == "true")


@dataclass(frozen=True, slots=True)
class Desired:
    """What the config wants of the task: its mappings and settings, and whether it runs."""

    task_arn: str
    table_mappings: str
    task_settings: str
    start: bool

    @classmethod
    def from_object(cls, properties: Properties, body: bytes) -> Desired:
        """The task configuration object's ``body``, refused unless it is the object the
        template names (its SHA-256)."""
        config = properties.config
        actual = hashlib.sha256(body).hexdigest()
        if actual != config.sha256:
            raise LifecycleError(
                f"the task configuration {config.uri} has SHA-256 {actual}, but the template names "
                f"{config.sha256}: it is not the object this deploy staged"
            )
        try:
            document = json.loads(body)
            table_mappings, task_settings = document[TABLE_MAPPINGS], document[TASK_SETTINGS]
        except (TypeError, ValueError, KeyError) as exc:
            raise LifecycleError(
                f"the task configuration {config.uri} is not a JSON object with "
                f"{TABLE_MAPPINGS} and {TASK_SETTINGS}: {exc!r}"
            ) from exc
        return cls(
            properties.task_arn, json.dumps(table_mappings), json.dumps(task_settings), properties.start
        )

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
    #: The TableMappings the task holds (DescribeReplicationTasks with its settings).
    table_mappings: str | None = None
    checked: str | None = None
    slots_before: str | None = None
    slot: str | None = None

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
            table_mappings=description.get("TableMappings"),
            checked=tags.get(CHECKED_TAG),
            slots_before=tags.get(SLOTS_BEFORE_TAG),
            slot=tags.get(SLOT_TAG),
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
    #: The task's ``dmsbus:applied`` when the request came: what it holds again after a
    #: refused modify (None: it claimed nothing, and the ``modifying`` tag stays).
    applied_before: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "Request": self.request,
            "RequestId": self.request_id,
            "WasRunning": self.was_running,
            "WasFailed": self.was_failed,
            "Reload": [list(pair) for pair in self.reload],
            "AppliedBefore": self.applied_before,
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
            applied_before=data.get("AppliedBefore"),
        )


def make_plan(
    request: RequestType, request_id: str, *, task: Task | None, new: Desired, old: Desired | None
) -> Plan:
    """What this request must do beyond reaching ``new``: remember how the task was, and
    which tables to reload once it runs again. ``old``: the config the task holds (its
    mappings as DescribeReplicationTasks reports them; None for a new task)."""
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
        applied_before=task.applied,
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
    #: Left out of the repr (logged every step): with every table listed they are large.
    table_mappings: str = field(repr=False)
    task_settings: str = field(repr=False)
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


@dataclass(frozen=True, slots=True)
class Check:
    """Run the source's checks (the admin function's ``doctor``) before the first start,
    and note the source's replication slots; ``request_id`` is recorded when they pass."""

    request_id: str
    postgres: bool


@dataclass(frozen=True, slots=True)
class RecordSlot:
    """Tell DMS's slot from the ones the source had before the first start. ``final``: the
    delete's look, after which an unknown slot is reported, not looked for again."""

    before: tuple[str, ...]
    final: bool = False


@dataclass(frozen=True, slots=True)
class DropSlot:
    """After the task stopped for good (the stack is deleted): drop DMS's slot."""

    slot: str


Action = Wait | Stop | Modify | Start | Reload | Done | Check | RecordSlot | DropSlot


@dataclass(frozen=True, slots=True)
class Source:
    """The source the lifecycle serves beside DMS through its admin function: ``postgres``,
    it has replication slots; ``database``, for the commands a person runs when the slot
    is not known."""

    postgres: bool
    database: str = ""


def new_slot(before: tuple[str, ...], now: list[tuple[str, str]], *, final: bool) -> str:
    """DMS's slot: the one logical slot of DMS's plugins in the source's database that is new
    since the first start (``now``: name and plugin). None new: ``none`` at the delete's
    look (nothing to drop), else ``unknown`` (looked for again at the delete); several:
    ``ambiguous`` at the delete, else ``unknown``."""
    new = sorted({name for name, plugin in now if plugin in DMS_PLUGINS} - set(before))
    if len(new) == 1:
        return new[0]
    if not final:
        return UNKNOWN_SLOT
    return NO_SLOT if not new else AMBIGUOUS_SLOT


def slot_guidance(arn: str, database: str) -> str:
    """What a person runs when dmsbus cannot drop DMS's slot itself."""
    return (
        "Find it on the source: SELECT slot_name, active, plugin FROM pg_replication_slots WHERE "
        f"slot_type = 'logical' AND database = '{database or '<database>'}'; drop DMS's: SELECT "
        "pg_drop_replication_slot('<slot_name>'); then tag the task so that the delete goes on: aws dms "
        f"add-tags-to-resource --resource-arn {arn} --tags Key={SLOT_TAG},Value={NO_SLOT}; and delete the "
        "stack again"
    )


#: The tag value for "no slot before the first start" (a tag value is never empty here).
NO_SLOTS = "-"


def slots_tag(slots: list[str]) -> str | None:
    """The slots before the first start as a tag value; None when too long to hold."""
    value = ",".join(sorted(slots)) or NO_SLOTS
    return value if len(value) <= MAX_TAG_VALUE else None


def slots_of(tag: str) -> tuple[str, ...]:
    return tuple(name for name in tag.split(",") if name and name != NO_SLOTS)


def next_action(
    task: Task | None, desired: Desired | None, plan: Plan, source: Source | None = None
) -> Action:
    """The one next step from ``task`` towards what ``desired`` and ``plan`` ask for
    (``desired`` may be None for a Delete, which only stops the task).

    Raises ``LifecycleError`` when the task cannot get there (it failed or stopped after
    this deploy started it, another request owns it now, or it is in a state no step
    leaves)."""
    if plan.request == "Delete":
        return _towards_stopped(task, source)
    if desired is None:
        raise LifecycleError(f"a {plan.request} request needs the task's mappings and settings")
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
        if source is not None and source.postgres and task.slot is None and task.slots_before is not None:
            return RecordSlot(slots_of(task.slots_before))
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
    if not task.has_run and source is not None and task.checked != plan.request_id:
        # DMS's own premigration assessment covers some of these; the deploy fails here,
        # with the list, rather than in a task that starts and fails (docs/dms.md, doctor).
        return Check(plan.request_id, source.postgres)
    return Start("resume-processing" if task.has_run else "start-replication", plan.request_id)


def applied_after_refusal(task: Task | None, refused: Modify, plan: Plan) -> str | None:
    """What ``dmsbus:applied`` says again once DMS refused ``refused``: the fingerprint the
    task had before this request, when the task shows it kept its mappings (it is not
    ``modifying`` and holds other mappings than the refused ones). None leaves ``modifying``,
    which claims nothing: a refusal may hide a modify under way (a retried call whose first
    attempt went through is refused because the task is modifying), and a tag that claimed
    the old config then would keep a rollback from applying it again."""
    if plan.applied_before in (None, MODIFYING) or task is None or task.table_mappings is None:
        return None
    if task.status == "modifying":
        return None
    try:
        if json.loads(task.table_mappings) == json.loads(refused.table_mappings):
            return None
    except ValueError:
        return None
    return plan.applied_before


def _pending(plan: Plan) -> str:
    if not plan.reload:
        return ""
    names = [f"{schema}.{table}" for schema, table in plan.reload]
    shown = ", ".join(names[:MAX_NAMED])
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return f"; once it runs, reload (ReloadTables): {shown}{more}"


def _towards_stopped(task: Task | None, source: Source | None = None) -> Action:
    if task is None:
        return Done("the task is gone")
    if task.status == "running":
        return Stop()
    if task.status in TRANSITIONAL - {"deleting"}:
        return Wait(f"the task is {task.status}")
    if source is None or not source.postgres or not task.has_run or task.slot == NO_SLOT:
        return Done(f"the task is {task.status}")
    if task.slot in (None, UNKNOWN_SLOT) and task.slots_before is not None:
        # Not told while it ran (it failed on its way to running, say): look once more.
        return RecordSlot(slots_of(task.slots_before), final=True)
    if task.slot not in (None, UNKNOWN_SLOT, AMBIGUOUS_SLOT):
        return DropSlot(task.slot)
    # DMS leaves its slot behind and the source keeps WAL for it without bound: the delete
    # stops here with what to run, rather than leave it unseen.
    raise LifecycleError(
        f"the replication task {task.arn} has stopped, but DMS's replication slot on the source is not "
        "known to dmsbus and would keep WAL without bound (CHAP_Source.PostgreSQL). "
        + slot_guidance(task.arn, source.database)
    )


def batches(tables: tuple[tuple[str, str], ...]) -> list[list[dict[str, str]]]:
    """ReloadTables requests' TablesToReload, at most ``RELOAD_BATCH`` tables each."""
    entries = [{"SchemaName": schema, "TableName": table} for schema, table in tables]
    return [entries[index : index + RELOAD_BATCH] for index in range(0, len(entries), RELOAD_BATCH)]
