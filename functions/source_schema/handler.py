"""Schema function entry point: ``source_schema.handler.handler``. Parse -> core -> report.

Invoked on a schedule (and by hand with ``{}``): reads the source's selected tables from
its catalog, with the credentials DMS's endpoint reads, and stores each table's schema
that changed as a new version in the bus's schema table. Invoked asynchronously with a
``dmsbus.schemas.RefreshRequest`` (discovery found a table, the glue met columns a schema
lacks): reads the tables it names.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger

from dmsbus.schemas import RefreshRequest, SchemaStore
from dmsbus.sources import connect_source, read_secret
from source_schema.core import refresh_source
from source_schema.settings import SourceSchemaSettings

logger = Logger(service="dmsbus-source-schema")
APPLICATION_NAME = "dmsbus-source-schema"


@cache
def settings() -> SourceSchemaSettings:
    """The environment, parsed once per container."""
    return SourceSchemaSettings.from_environ(os.environ)


def _connect(config: SourceSchemaSettings, secret: str) -> Any:
    """A connection to the source's catalog with DMS's credentials (closed by ``with``)."""
    return connect_source(
        config.engine, config.secret, secret, database=config.database, application_name=APPLICATION_NAME
    )


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = RefreshRequest.from_event(event)
    config = settings()
    secret = read_secret(boto3.client("secretsmanager"), config.secret)
    store = SchemaStore(boto3.client("dynamodb"), config.schema_table)
    with _connect(config, secret) as connection:
        saved = refresh_source(
            connection,
            store,
            config.source,
            config.tables,
            config.exclude or (),
            only=request.tables,
            engine=config.engine,
        )
    changed = {item.schema.qualified: item.schema.version for item in saved if item.created}
    logger.info(
        "schemas read",
        extra={
            "tables": len(saved),
            "changed": changed,
            "asked": list(request.tables),
            "reason": request.reason,
        },
    )
    return {"tables": len(saved), "changed": changed}
