"""Discovery's environment: written by the deployment plan, read at its cold start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from dmsbus import variables
from dmsbus.settings import PublishingSettings, Settings, variable

_ATTACH = "discovery (it attaches the glue with these)"
#: Where the glue's mapping starts reading a table's stream: at its start, for discovery
#: attaches the glue before DMS writes, or backfills what came before.
GLUE_STARTING_POSITION: Final = "TRIM_HORIZON"


@dataclass(frozen=True, kw_only=True)
class MappingSettings(Settings):
    """The glue's event source mapping (bounded retries and age: an ordered stream must not
    retry one batch forever). No defaults here: config/model.py's ``GlueConfig`` holds them,
    and the deployment always sets every one."""

    WHO: ClassVar[str] = _ATTACH

    batch_size: int = variable(variables.GLUE_BATCH_SIZE)
    batching_window_seconds: int = variable(variables.GLUE_BATCHING_WINDOW_SECONDS)
    parallelization_factor: int = variable(variables.GLUE_PARALLELIZATION_FACTOR)
    max_retries: int = variable(variables.GLUE_MAX_RETRIES)
    max_record_age_seconds: int = variable(variables.GLUE_MAX_RECORD_AGE_SECONDS)


@dataclass(frozen=True, kw_only=True)
class DiscoverySettings(PublishingSettings):
    WHO: ClassVar[str] = "discovery"

    glue_function_name: str = variable(variables.GLUE_FUNCTION_NAME)
    mapping: MappingSettings
    #: The glue mappings' on-failure destination (the failure bucket); unset: none.
    glue_on_failure_arn: str | None = variable(variables.GLUE_ON_FAILURE_ARN, default=None)
    keep_provisioned: bool = variable(variables.KEEP_PROVISIONED)
    backfill: bool = variable(variables.BACKFILL)
    #: A sweep's period: a sweep counts the bus tables' throttle events over it (unset: no count).
    sweep_minutes: int | None = variable(variables.SWEEP_MINUTES, default=None)
