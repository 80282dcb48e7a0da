"""Compose the stacks of one config into a CDK app, with cdk-nag checking every one."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from config.model import Config
from config.plan import deployment_plan
from stacks.bus import BusStack
from stacks.consumers import ConsumersStack
from stacks.source import SourceStack


@dataclass(frozen=True, slots=True)
class Stacks:
    bus: BusStack
    sources: dict[str, SourceStack]
    consumers: ConsumersStack


def build(app: App, config: Config, *, env: Environment | None = None, nag: bool = True) -> Stacks:
    bus = config.bus
    plan = deployment_plan(bus, config.sources)
    prefix = f"dmsbus-{bus.name}"
    bus_stack = BusStack(
        app, prefix, plan=plan, env=env, description=f"dmsbus {bus.name}: stream, glue, discovery"
    )
    sources = {}
    for source in config.sources:
        stack = SourceStack(
            app,
            f"{prefix}-source-{source.name}",
            plan=plan,
            source=source,
            env=env,
            description=f"dmsbus {bus.name}: DMS from {source.name} ({source.engine})",
        )
        # The account's dms-vpc-role must exist before a replication subnet group.
        stack.add_stack_dependency(bus_stack)
        sources[source.name] = stack
    consumers = ConsumersStack(
        app,
        f"{prefix}-consumers",
        plan=plan,
        stream=bus_stack.stream,
        key=bus_stack.key,
        failures=bus_stack.failures,
        env=env,
        description=f"dmsbus {bus.name}: consumers",
    )
    Tags.of(app).add("dmsbus:bus", bus.name)
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    return Stacks(bus_stack, sources, consumers)
