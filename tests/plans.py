"""The deployment plan's environments for tests, their references filled with stand-ins."""

from __future__ import annotations

from config.model import BusConfig
from config.plan import FunctionKind, Ref, deployment_plan


def deployed_environment(kind: FunctionKind, bus: BusConfig | None = None) -> dict[str, str]:
    """What the deployment writes for the glue or discovery of ``bus`` (default: a bus of
    config defaults), each reference as ``<resource>-<attribute>``."""
    planned = next(f for f in deployment_plan(bus or BusConfig(name="demo")).functions if f.kind == kind)
    return {
        name: f"{value.resource}-{value.attribute}" if isinstance(value, Ref) else value
        for name, value in planned.environment.items()
    }


def typed_bus(bus: BusConfig, *, wait: int | None = None) -> BusConfig:
    """``bus`` with ``glue.typed`` (and ``glue.typed_wait_seconds``: ``wait``)."""
    glue = {"typed": True, **({"typed_wait_seconds": wait} if wait is not None else {})}
    return bus.model_copy(update={"glue": bus.glue.model_copy(update=glue)})
