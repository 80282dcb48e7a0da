"""pg_mirror's environment: what dmsbus sets on every consumer, the secret of the mirror
database (the config entry's ``secret``) and ``MIRROR_SCHEMA`` (its ``environment``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dmsbus import variables
from dmsbus.settings import ConsumerSettings, variable

MIRROR_SCHEMA = "MIRROR_SCHEMA"


@dataclass(frozen=True, kw_only=True)
class PgMirrorSettings(ConsumerSettings):
    WHO: ClassVar[str] = "pg_mirror consumer"
    #: Typed events give its tables the source's column types (event.schema).
    TYPED_EVENTS: ClassVar[bool] = True

    secret: str = variable(  # required here, optional for consumers
        variables.CREDENTIALS_NAME,
        hint="the name of a Secrets Manager secret of the mirror database: "
        "set `secret` on the consumer in config/bus.yaml",
    )
    #: Where a source schema's tables go: ``{schema}`` (and ``{source}``) are filled in.
    mirror_schema: str = variable(MIRROR_SCHEMA, default="{schema}")


#: The plan finds a consumer's model here (config/plan.py's settings_model).
MODEL = PgMirrorSettings
