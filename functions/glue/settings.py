"""The glue's environment: written by the deployment plan, read at its cold start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dmsbus import variables
from dmsbus.settings import PublishingSettings, variable


@dataclass(frozen=True, kw_only=True)
class GlueSettings(PublishingSettings):
    WHO: ClassVar[str] = "glue"

    #: Where poison records go (unset: the batch stops at one and Lambda retries it).
    dlq_url: str | None = variable(variables.DLQ_URL, default=None)
