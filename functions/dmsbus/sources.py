"""A connection to a source database as DMS's endpoint reaches it: the endpoint's Secrets
Manager secret (RDS's shape, ``dmsbus.secrets``), TLS required unless the secret says
``sslmode: disable``. Psycopg for the PostgreSQL engines, pymysql for the MySQL family.

The functions that read a source with DMS's credentials (the schema function, the source
admin function) connect through here, so that what one can reach the other can too."""

from __future__ import annotations

from typing import Any

import psycopg
import pymysql

from dmsbus.schemas import MYSQL_ENGINES
from dmsbus.secrets import mysql_connect_arguments, secret_conninfo


def read_secret(secretsmanager: Any, secret_id: str) -> str:
    """The secret's string (``SecretString``), from a Secrets Manager client."""
    return str(secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"])


def connect_source(
    engine: str, secret_id: str, secret_string: str, *, database: str, application_name: str
) -> Any:
    """An autocommit connection to the source (closed by ``with``). A MySQL-family source
    gets no database chosen: its catalog (information_schema) spans them all."""
    if engine in MYSQL_ENGINES:
        return pymysql.connect(**mysql_connect_arguments(secret_id, secret_string), autocommit=True)
    conninfo = secret_conninfo(secret_id, secret_string, application_name=application_name, dbname=database)
    return psycopg.connect(conninfo, autocommit=True)
