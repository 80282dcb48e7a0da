"""s3_archive's environment: what dmsbus sets on every consumer, the bucket (the config
entry's ``bucket``) and ``ARCHIVE_PREFIX`` (its ``environment``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dmsbus import variables
from dmsbus.settings import ConsumerSettings, variable

ARCHIVE_PREFIX = "ARCHIVE_PREFIX"


@dataclass(frozen=True, kw_only=True)
class S3ArchiveSettings(ConsumerSettings):
    WHO: ClassVar[str] = "s3_archive consumer"

    bucket: str = variable(  # required here, optional for consumers
        variables.BUCKET, hint="give the consumer a `bucket` entry in config/bus.yaml"
    )
    #: Written before ``bus=`` in every object's key.
    archive_prefix: str = variable(ARCHIVE_PREFIX, default="")


#: The plan finds a consumer's model here (config/plan.py's settings_model).
MODEL = S3ArchiveSettings
