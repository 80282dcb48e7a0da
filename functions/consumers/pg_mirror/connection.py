"""Where the mirror database is: the Secrets Manager secret named by ``DMSBUS_SECRET`` (the
consumer's ``secret`` in config), in the shape RDS and Aurora give their secrets: ``host``,
``port``, ``username``, ``password``, ``dbname``. TLS is required unless the secret says
otherwise (``sslmode``). Local mode makes that secret in moto's Secrets Manager.
"""

from __future__ import annotations

from typing import Any

import psycopg

from dmsbus.secrets import SecretReader, secret_conninfo

__all__ = ["APPLICATION_NAME", "MirrorConnection", "secret_conninfo"]

APPLICATION_NAME = "dmsbus-pg-mirror"


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
                secret_conninfo(
                    self._secret_id, self._read_secret(self._secret_id), application_name=APPLICATION_NAME
                ),
                autocommit=True,
            )
            self._connection = connection
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
