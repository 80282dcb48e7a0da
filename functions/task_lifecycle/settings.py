"""The task lifecycle functions' environment: written by the source stack, read at cold
start. Without an admin function (a template from before it existed) the lifecycle checks
nothing and leaves slots alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dmsbus import variables
from dmsbus.schemas import POSTGRES_ENGINES
from dmsbus.settings import Settings, variable
from task_lifecycle.core import Source


@dataclass(frozen=True, kw_only=True)
class LifecycleSettings(Settings):
    WHO: ClassVar[str] = "task lifecycle"

    #: The source's admin function (``source_admin``): checks and replication slots.
    admin_function: str | None = variable(variables.SOURCE_ADMIN_FUNCTION, default=None)
    engine: str | None = variable(variables.SOURCE_ENGINE, default=None)
    database: str | None = variable(variables.SOURCE_DATABASE, default=None)

    @property
    def source(self) -> Source | None:
        if self.admin_function is None:
            return None
        return Source(postgres=self.engine in POSTGRES_ENGINES, database=self.database or "")
