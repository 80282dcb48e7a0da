"""Where the mirror database is: the Secrets Manager secret named by ``DMSBUS_SECRET`` (the
consumer's ``secret`` in config), in the shape RDS and Aurora give their secrets: ``host``,
``port``, ``username``, ``password``, ``dbname``. TLS is required unless the secret says
otherwise (``sslmode``). Local mode makes that secret in moto's Secrets Manager.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from dmsbus.settings import SettingsError

APPLICATION_NAME = "dmsbus-pg-mirror"

#: Reads a secret's string: ``lambda secret_id: client.get_secret_value(...)["SecretString"]``.
SecretReader = Callable[[str], str]


def secret_conninfo(secret_id: str, secret_string: str) -> str:
    """Connection parameters from an RDS-style secret. Errors name the secret and the
    field, never a value."""
    try:
        secret: Any = json.loads(secret_string)
    except ValueError:
        raise SettingsError(
            f"secret {secret_id}: not a JSON object (expected host, username, password)"
        ) from None
    if not isinstance(secret, dict):
        raise SettingsError(f"secret {secret_id}: not a JSON object (expected host, username, password)")
    missing = [name for name in ("host", "username") if not secret.get(name)]
    missing += [] if isinstance(secret.get("password"), str) else ["password"]
    if missing:
        raise SettingsError(f"secret {secret_id}: missing {', '.join(missing)}")
    port = secret.get("port", 5432)
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise SettingsError(f"secret {secret_id}: port is not a number") from None
    return make_conninfo(
        host=str(secret["host"]),
        port=port,
        dbname=str(secret.get("dbname") or "postgres"),
        user=str(secret["username"]),
        password=str(secret["password"]),
        sslmode=str(secret.get("sslmode") or "require"),
        connect_timeout=10,
        application_name=APPLICATION_NAME,
    )


class MirrorConnection:
    """One autocommit connection per Lambda container, opened again after it broke."""

    def __init__(self, secret_id: str, read_secret: SecretReader) -> None:
        self._secret_id = secret_id
        self._read_secret = read_secret
        self._connection: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            connection = psycopg.connect(
                secret_conninfo(self._secret_id, self._read_secret(self._secret_id)), autocommit=True
            )
            self._connection = connection
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
