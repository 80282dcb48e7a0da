"""The source admin function's environment: written by the deployment plan, read at its cold
start. The table selection is the schema function's (``schema.table`` patterns), and each
listed table's ``key`` from config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dmsbus import variables
from dmsbus.settings import Settings, SettingsError, variable
from source_admin.core import Selection


@dataclass(frozen=True, kw_only=True)
class SourceAdminSettings(Settings):
    WHO: ClassVar[str] = "source admin function"

    bus: str = variable(variables.BUS_NAME)
    source: str = variable(variables.SOURCE_NAME)
    #: ``postgres``/``aurora-postgresql``, or ``mysql``/``aurora``/``mariadb``.
    engine: str = variable(variables.SOURCE_ENGINE)
    #: The source's database, as DMS's endpoint names it (the secret gives host, port, user).
    database: str = variable(variables.SOURCE_DATABASE)
    #: The source's credentials: the secret DMS's endpoint reads.
    secret: str = variable(variables.CREDENTIALS_NAME)
    #: ``schema.table`` patterns (``%`` the one wildcard) of the tables the source replicates.
    tables: tuple[str, ...] = variable(variables.SOURCE_TABLES)
    #: ``schema.table=partition[+sort]``: the ``key`` config gives a listed table.
    keys: tuple[str, ...] | None = variable(variables.SOURCE_KEYS, default=None)

    def __post_init__(self) -> None:
        try:
            self.selection  # noqa: B018  # validated now, at cold start
        except ValueError as exc:
            raise SettingsError(f"{variables.SOURCE_TABLES}/{variables.SOURCE_KEYS}: {exc}") from None

    @property
    def selection(self) -> Selection:
        return Selection.from_settings(self.tables, self.keys or ())
