"""Database connections from a Secrets Manager secret in the shape RDS and Aurora give their
secrets (``host``, ``port``, ``username``, ``password``, ``dbname``), as DMS's endpoints read
them too: PostgreSQL's (psycopg's conninfo) and MySQL's or MariaDB's (pymysql's arguments).
TLS is required unless the secret says otherwise (``sslmode``: ``disable``). Local mode makes
these secrets in moto's Secrets Manager."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

from psycopg.conninfo import make_conninfo

from dmsbus.settings import SettingsError

#: Reads a secret's string: ``lambda secret_id: client.get_secret_value(...)["SecretString"]``.
SecretReader = Callable[[str], str]
#: Seconds to wait for a connection, and for a query's answer (MySQL).
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60


def _credentials(secret_id: str, secret_string: str, default_port: int) -> dict[str, Any]:
    """The secret's fields, checked. Errors name the secret and the field, never a value."""
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
    try:
        port = int(secret.get("port", default_port))
    except (TypeError, ValueError):
        raise SettingsError(f"secret {secret_id}: port is not a number") from None
    return {**secret, "port": port}


def secret_conninfo(
    secret_id: str, secret_string: str, *, application_name: str, dbname: str | None = None
) -> str:
    """PostgreSQL connection parameters from an RDS-style secret."""
    secret = _credentials(secret_id, secret_string, 5432)
    return make_conninfo(
        host=str(secret["host"]),
        port=secret["port"],
        dbname=dbname or str(secret.get("dbname") or "postgres"),
        user=str(secret["username"]),
        password=str(secret["password"]),
        sslmode=str(secret.get("sslmode") or "require"),
        connect_timeout=CONNECT_TIMEOUT,
        application_name=application_name,
    )


def mysql_connect_arguments(secret_id: str, secret_string: str) -> dict[str, Any]:
    """pymysql's ``connect`` arguments from an RDS-style secret. TLS is required, without
    checking the certificate (libpq's ``require``), unless ``sslmode`` is ``disable``."""
    secret = _credentials(secret_id, secret_string, 3306)
    arguments: dict[str, Any] = {
        "host": str(secret["host"]),
        "port": secret["port"],
        "user": str(secret["username"]),
        "password": str(secret["password"]),
        "connect_timeout": CONNECT_TIMEOUT,
        # a catalog read waiting on a metadata lock must not outlast the function
        "read_timeout": READ_TIMEOUT,
    }
    if (secret.get("sslmode") or "require") == "disable":
        arguments["ssl_disabled"] = True
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        arguments["ssl"] = context
    return arguments
