"""The schema function's environment: written by the deployment plan, read at its cold start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dmsbus import variables
from dmsbus.settings import Settings, variable


@dataclass(frozen=True, kw_only=True)
class SourceSchemaSettings(Settings):
    WHO: ClassVar[str] = "schema function"

    bus: str = variable(variables.BUS_NAME)
    source: str = variable(variables.SOURCE_NAME)
    #: ``postgres``/``aurora-postgresql``, or ``mysql``/``aurora``/``mariadb`` (their catalogs).
    engine: str = variable(variables.SOURCE_ENGINE)
    #: The source's database (DMS's endpoint names it; the secret gives host, port, user).
    database: str = variable(variables.SOURCE_DATABASE)
    #: The source's credentials: the secret DMS's endpoint reads.
    secret: str = variable(variables.CREDENTIALS_NAME)
    schema_table: str = variable(variables.SCHEMA_TABLE)
    tables: tuple[str, ...] = variable(variables.SOURCE_TABLES)
    exclude: tuple[str, ...] | None = variable(variables.SOURCE_EXCLUDE, default=None)
