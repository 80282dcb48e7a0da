"""A PostgreSQL connection from a Secrets Manager secret in the shape RDS and Aurora give
their secrets (``host``, ``port``, ``username``, ``password``, ``dbname``), as DMS's
endpoints read them too. TLS is required unless the secret says otherwise (``sslmode``).
Local mode makes these secrets in moto's Secrets Manager."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from psycopg.conninfo import make_conninfo

from dmsbus.settings import SettingsError

#: Reads a secret's string: ``lambda secret_id: client.get_secret_value(...)["SecretString"]``.
SecretReader = Callable[[str], str]


def secret_conninfo(
    secret_id: str, secret_string: str, *, application_name: str, dbname: str | None = None
) -> str:
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
        dbname=dbname or str(secret.get("dbname") or "postgres"),
        user=str(secret["username"]),
        password=str(secret["password"]),
        sslmode=str(secret.get("sslmode") or "require"),
        connect_timeout=10,
        application_name=application_name,
    )
