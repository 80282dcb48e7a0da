"""The deployment plan's environments for tests, their references filled with stand-ins."""

from __future__ import annotations

from config.model import BusConfig
from config.plan import FunctionKind, Ref, deployment_plan, settings_model


def deployed_environment(kind: FunctionKind, bus: BusConfig | None = None) -> dict[str, str]:
    """What the deployment writes for the glue or discovery of ``bus`` (default: a bus of
    config defaults), each reference as ``<resource>-<attribute>``."""
    planned = next(f for f in deployment_plan(bus or BusConfig(name="demo")).functions if f.kind == kind)
    return {
        name: f"{value.resource}-{value.attribute}" if isinstance(value, Ref) else value
        for name, value in planned.environment.items()
    }


def typed_bus(bus: BusConfig) -> BusConfig:
    """``bus`` with ``glue.typed``, without the consumers that do not take typed events yet
    (pg_mirror: the plan refuses it on a typed bus)."""
    return bus.model_copy(
        update={
            "glue": bus.glue.model_copy(update={"typed": True}),
            "consumers": [
                entry
                for entry in bus.consumers
                if settings_model(entry.code.removeprefix("functions/")).TYPED_EVENTS
            ],
        }
    )
