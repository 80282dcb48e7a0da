"""The PostgreSQL reporting mirror: every batch from the bus applied in one transaction.

Config (config/bus.yaml)::

    - name: pg-mirror
      code: functions/consumers/pg_mirror
      secret: dmsbus/mirror          # RDS-style secret of the mirror database
      network: {vpc_id: ..., subnet_ids: [...], egress_ports: [443, 5432]}
      environment:
        MIRROR_SCHEMA: "{schema}"    # optional: e.g. "{source}_{schema}" for several sources

docs/consumers.md describes the table and type mapping, ordering and reloads.
"""

from __future__ import annotations

import os

import boto3
from aws_lambda_powertools import Logger

from consumers.pg_mirror.connection import MirrorConnection
from consumers.pg_mirror.mirror import Mirror
from consumers.pg_mirror.settings import PgMirrorSettings
from dmsbus.consumer import ChangeEvent, consumer
from dmsbus.schemas import SchemaStore

logger = Logger(service="pg_mirror")
SETTINGS = PgMirrorSettings.from_environ(os.environ)
# On a typed bus: the schema table (latest is a Query, version a GetItem)
SCHEMAS = SchemaStore(boto3.client("dynamodb"), SETTINGS.schema_table) if SETTINGS.schema_table else None
MIRROR = Mirror(
    schema_template=SETTINGS.mirror_schema,
    # A table's latest schema, for values typed with an older one and columns untyped events bring
    latest=SCHEMAS.latest if SCHEMAS is not None else None,
    # An earlier version, for a column an untyped event brings that the source dropped since
    version=SCHEMAS.version if SCHEMAS is not None else None,
)


def _read_secret(secret_id: str) -> str:
    response = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    return str(response["SecretString"])


DATABASE = MirrorConnection(SETTINGS.secret, _read_secret)


@consumer(batch=True)
def handler(events: list[ChangeEvent]) -> None:
    result = MIRROR.apply(DATABASE.get(), events)
    logger.info(
        "mirror batch applied",
        extra={
            "events": result.events,
            "upserted": result.upserted,
            "deleted": result.deleted,
            "skipped": result.skipped,
            "coalesced": result.coalesced,
            "created_tables": result.created_tables,
            "altered_columns": result.altered_columns,
        },
    )
