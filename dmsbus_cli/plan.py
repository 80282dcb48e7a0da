"""``dmsbus plan``: what ``cdk deploy`` of this config would change in a deployed bus, and
what it would do to each running DMS task, before anyone runs it.

- **Config checks**: the config is validated, and with ``--previous DIR`` (the deployed
  config, as ``cdk deploy -c previous_config=DIR`` takes it) checked against it: a table
  version must not go backwards.
- **Per source**, against its replication task's current mappings: tables added to the
  selection, reloaded (a version bump gives them a new DynamoDB table) and dropped, and the
  steps the task lifecycle will take, worked out by the same code that takes them at deploy
  time (``task_lifecycle.core``): stop and wait, modify, resume or start, ReloadTables.
- **Consumers**, against the functions and mappings deployed: added, changed (which
  settings) and removed.

Exit status 0 when the deploy would change nothing, 1 when it would change something, 2
when the config is refused or the bus cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from config.functions import consumer_name, stream_name
from config.loader import ConfigError, load_config
from config.mappings import render_table_mappings, task_settings
from config.model import BusConfig, ConsumerConfig, SourceConfig
from config.plan import Ref, consumer_plan
from dmsbus.table_mappings import MappingError, listed_tables, resolve, selected, tables_to_reload
from dmsbus_cli.connect import Bus, add_arguments, connect, describe_task
from task_lifecycle.core import (
    Desired,
    Done,
    LifecycleError,
    Modify,
    Reload,
    Start,
    Stop,
    Task,
    Wait,
    make_plan,
    next_action,
)

#: The mapping settings a consumer's entry decides (CreateEventSourceMapping's names).
MAPPING_SETTINGS = (
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "ParallelizationFactor",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
)
#: What a task in a transitional state comes to, in the simulation.
SETTLES_AS = {"stopping": "stopped", "starting": "running", "modifying": "stopped"}
#: The request id of the simulated deploy.
PLAN_REQUEST = "dmsbus-plan"
#: Steps of a simulated lifecycle before it is taken to be stuck.
MAX_STEPS = 20


class PlanError(RuntimeError):
    """What the plan cannot be made of; the message names it."""


@dataclass
class SourcePlan:
    source: str
    task: str
    added: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    #: What the plan cannot tell for sure.
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.added or self.reloaded or self.dropped or self.steps)


@dataclass
class ConsumerPlan:
    name: str
    change: str  # "add", "change", "remove"
    details: list[str] = field(default_factory=list)


def task_steps(
    task: Task, desired: Desired, old: Desired | None, *, start_changed: bool = False
) -> list[str]:
    """The task lifecycle's steps for this deploy, from the task as it is now: the deploy's
    own ``next_action``, applied to a task that does what each step asks. None when the
    task holds the config already and ``start`` did not change: CloudFormation then does
    not call the lifecycle."""
    if task.applied == desired.fingerprint and not start_changed:
        return []
    try:
        plan = make_plan("Update", PLAN_REQUEST, task=task, new=desired, old=old)
    except LifecycleError as exc:
        return [f"the deploy fails: {exc}"]
    # The deploy's request owns the task while it runs (the lifecycle tags it so first).
    task = replace(task, request=plan.request_id)
    steps: list[str] = []
    for _ in range(MAX_STEPS):
        try:
            action = next_action(task, desired, plan)
        except LifecycleError as exc:
            steps.append(f"the deploy fails: {exc}")
            return steps
        if isinstance(action, Done):
            steps.append(f"then: {action.summary}")
            return steps
        if isinstance(action, Wait):
            steps.append(f"wait: {action.reason}")
            task = replace(task, status=SETTLES_AS.get(task.status, "ready"))
        elif isinstance(action, Stop):
            steps.append("stop the task and wait until it has stopped")
            task = replace(task, status="stopped")
        elif isinstance(action, Modify):
            steps.append("modify its table mappings and task settings")
            task = replace(task, applied=action.fingerprint)
        elif isinstance(action, Start):
            what = (
                "(a full load of every selected table, then CDC)"
                if action.kind == "start-replication"
                else ""
            )
            steps.append(f"{action.kind} {what}".strip())
            task = replace(task, status="running", has_run=True, started_by=plan.request_id)
        elif isinstance(action, Reload):
            names = ", ".join(f"{schema}.{table}" for schema, table in action.tables)
            steps.append(f"ReloadTables: {names}")
            plan = replace(plan, reload=())
    steps.append(f"(stopped working it out after {MAX_STEPS} steps)")
    return steps


def plan_source(
    bus: BusConfig,
    source: SourceConfig,
    task: Mapping[str, Any],
    tags: Mapping[str, str],
    *,
    previous_start: bool | None = None,
) -> SourcePlan:
    """One source's changes against its task (DescribeReplicationTasks's entry, its tags).
    ``previous_start``: the deployed config's ``start`` (``--previous``), None if unknown."""
    new_mappings = render_table_mappings(bus.name, source)
    desired = Desired(
        task["ReplicationTaskArn"], json.dumps(new_mappings), json.dumps(task_settings()), source.start
    )
    old_mappings = json.loads(task.get("TableMappings") or "{}")
    old = Desired(
        desired.task_arn,
        json.dumps(old_mappings),
        task.get("ReplicationTaskSettings") or json.dumps(task_settings()),
        source.start,
    )
    result = SourcePlan(source.name, str(task["ReplicationTaskIdentifier"]))
    try:
        reload = {f"{s}.{t}" for s, t in tables_to_reload(old_mappings, new_mappings)}
    except MappingError as exc:
        raise PlanError(f"task {result.task}'s deployed table mappings: {exc}") from exc
    for schema, table in listed_tables(new_mappings):
        name = f"{schema}.{table}"
        if old_mappings and not selected(old_mappings, schema, table):
            result.added.append(name)
        elif name in reload and old_mappings:
            before, after = resolve(old_mappings, schema, table), resolve(new_mappings, schema, table)
            result.reloaded.append(
                f"{name} ({before.name if before else '?'} -> {after.name if after else '?'})"
            )
    for schema, table in listed_tables(old_mappings) if old_mappings else []:
        if not selected(new_mappings, schema, table):
            result.dropped.append(f"{schema}.{table}")
    start_changed = previous_start is not None and previous_start != source.start
    result.steps = task_steps(Task.from_description(task, tags), desired, old, start_changed=start_changed)
    if (
        previous_start is None
        and source.start
        and task.get("Status") in ("ready", "stopped")
        and not result.steps
    ):
        result.notes.append(
            "the task rests: if the deployed config had `start: false`, the deploy starts it "
            "(pass --previous DIR to know)"
        )
    return result


def plan_consumers(bus: BusConfig, deployed: Mapping[str, Mapping[str, Any]]) -> list[ConsumerPlan]:
    """Consumers against ``deployed``: function name -> {"environment": ..., "mapping": ...}
    (its mapping on the bus stream)."""
    plans: list[ConsumerPlan] = []
    wanted: dict[str, ConsumerConfig] = {consumer_name(bus.name, entry): entry for entry in bus.consumers}
    for name, entry in wanted.items():
        if name not in deployed:
            plans.append(
                ConsumerPlan(name, "add", [f"tables {entry.tables or 'all'}, ops {entry.ops or 'all'}"])
            )
            continue
        details = list(_differences(bus, entry, deployed[name]))
        if details:
            plans.append(ConsumerPlan(name, "change", details))
    for name in sorted(set(deployed) - set(wanted)):
        plans.append(ConsumerPlan(name, "remove", ["its function, queue and mapping are deleted"]))
    return plans


def _differences(bus: BusConfig, entry: ConsumerConfig, deployed: Mapping[str, Any]) -> Iterator[str]:
    planned = consumer_plan(bus, entry)
    # Values the deployment fills in (queue URLs, bucket names) are not compared.
    filled = {key for key, value in planned.environment.items() if isinstance(value, Ref)}
    now = {k: v for k, v in (deployed.get("environment") or {}).items() if k not in filled}
    then = {k: v for k, v in planned.environment.items() if k not in filled}
    for key in sorted(set(now) | set(then)):
        if now.get(key) != then.get(key):
            yield f"environment {key}: {now.get(key)!r} -> {then.get(key)!r}"
    mapping = deployed.get("mapping") or {}
    assert planned.mapping is not None
    request = planned.mapping.request(function_name="", stream_arn="", on_failure=None)
    for setting in MAPPING_SETTINGS:
        if setting in mapping and mapping[setting] != request[setting]:
            yield f"mapping {setting}: {mapping[setting]} -> {request[setting]}"


def deployed_consumers(bus: Bus) -> dict[str, dict[str, Any]]:
    """The functions reading the bus stream, with their environment and mapping."""
    kinesis, lambda_client = bus.client("kinesis"), bus.client("lambda")
    stream_arn = kinesis.describe_stream_summary(StreamName=stream_name(bus.bus))["StreamDescriptionSummary"][
        "StreamARN"
    ]
    found: dict[str, dict[str, Any]] = {}
    for page in lambda_client.get_paginator("list_event_source_mappings").paginate(EventSourceArn=stream_arn):
        for mapping in page.get("EventSourceMappings", []):
            name = mapping["FunctionArn"].split(":")[6]  # arn:aws:lambda:region:account:function:NAME[:alias]
            if not name.startswith(f"{bus.bus.name}-"):
                continue  # another team's reader of the stream: not dmsbus's to plan
            configuration = lambda_client.get_function_configuration(FunctionName=name)
            found[name] = {
                "environment": (configuration.get("Environment") or {}).get("Variables") or {},
                "mapping": mapping,
            }
    return found


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "plan",
        help="what `cdk deploy` of this config would change, and what it does to the DMS task",
        description=__doc__.split("\n\n")[1],
    )
    add_arguments(command, repository)
    command.add_argument("--previous", type=Path, help="the deployed config folder (cdk's previous_config)")
    command.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    try:
        load_config(arguments.config, previous=arguments.previous)
        previous = (
            load_config(arguments.previous, repo=arguments.config.resolve().parent)
            if arguments.previous
            else None
        )
    except ConfigError as exc:
        print(f"plan: the config cannot be deployed:\n{exc}", file=sys.stderr)
        return 2
    starts = {source.name: source.start for source in previous.sources} if previous else {}
    bus = connect(arguments, "plan")
    if bus is None:
        return 2
    changes = False
    try:
        for source in bus.config.sources:
            lines, changed = _source_lines(bus, source, starts.get(source.name))
            changes |= changed
            print("\n".join(lines))
        consumers = plan_consumers(bus.bus, deployed_consumers(bus))
    except (ClientError, BotoCoreError, PlanError) as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    print("consumers:" if consumers else "consumers: no change")
    for consumer in consumers:
        print(f"  {consumer.change} {consumer.name}")
        print("\n".join(f"      {detail}" for detail in consumer.details))
    changes |= bool(consumers)
    print("plan: the deploy would change the bus" if changes else "plan: nothing to deploy")
    return 1 if changes else 0


def _source_lines(bus: Bus, source: SourceConfig, previous_start: bool | None) -> tuple[list[str], bool]:
    name = f"{bus.bus.name}-{source.name}"
    if bus.local:
        return [f"source {source.name}: the local stand-in takes the config when `dmsbus up` starts"], False
    dms = bus.client("dms")
    tasks = describe_task(dms, name)
    if not tasks:
        return [
            f"source {source.name}: new (its stack creates task {name}, which then loads every table)"
        ], True
    task = tasks[0]
    tags = {
        tag["Key"]: tag["Value"]
        for tag in dms.list_tags_for_resource(ResourceArn=task["ReplicationTaskArn"]).get("TagList", [])
    }
    result = plan_source(bus.bus, source, task, tags, previous_start=previous_start)
    lines = [f"source {source.name} (task {result.task}, {task.get('Status')}):"]
    for label, names in (("add", result.added), ("reload", result.reloaded), ("drop", result.dropped)):
        lines.extend(f"  {label} {table}" for table in names)
    lines.extend(f"  task: {step}" for step in result.steps)
    lines.extend(f"  note: {note}" for note in result.notes)
    if not result.changes:
        lines.append("  no change")
    return lines, result.changes
