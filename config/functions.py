"""The bus's resource names, from the config: one place for the deployment plan
(``config/plan.py``), the stacks, local mode and the CLI."""

from __future__ import annotations

import hashlib

from config.model import BusConfig, ConsumerConfig, SourceConfig
from dmsbus import variables

#: Set by dmsbus on every consumer; a consumer's own ``environment`` may not use them.
RESERVED_PREFIXES = ("BUS_", "DMSBUS_", "AWS_", variables.POWERTOOLS_SERVICE)


def stream_name(bus: BusConfig) -> str:
    return f"{bus.name}-bus"


def glue_name(bus: BusConfig) -> str:
    return f"{bus.name}-glue"


def discovery_name(bus: BusConfig) -> str:
    return f"{bus.name}-discovery"


def schema_table_name(bus: BusConfig) -> str:
    """The bus's table of source schemas (not ``{bus}.``-prefixed: discovery leaves it alone)."""
    return f"{bus.name}-schemas"


def schema_function_name(bus: BusConfig, source: SourceConfig) -> str:
    return f"{bus.name}-{source.name}-schema"


def source_admin_function_name(bus: BusConfig, source: SourceConfig) -> str:
    """The source's admin function (``functions/source_admin``): ``dmsbus doctor``'s checks
    and dropping the replication slot, in the source's network with DMS's credentials."""
    return f"{bus.name}-{source.name}-admin"


def replication_identifier(bus_name: str, source_name: str) -> str:
    """The source's DMS identifier (replication instance, task, subnet group; endpoints add
    ``-source``/``-target``), as DMS reports it: DMS stores identifiers in lowercase
    (API_CreateReplicationInstance), so alarm dimensions and event subscriptions match it."""
    return f"{bus_name}-{source_name}".lower()


#: The task lifecycle's two functions (stacks/task_lifecycle.py): ``{identifier}-{suffix}``.
TASK_LIFECYCLE_SUFFIXES = ("task-lifecycle", "task-lifecycle-wait")


def source_function_names(bus: BusConfig, source: SourceConfig) -> list[str]:
    """Every Lambda function a source stack names (Lambda allows 64 characters)."""
    identifier = replication_identifier(bus.name, source.name)
    return [
        *(f"{identifier}-{suffix}" for suffix in TASK_LIFECYCLE_SUFFIXES),
        schema_function_name(bus, source),
        source_admin_function_name(bus, source),
    ]


def consumer_name(bus_name: str, consumer: ConsumerConfig) -> str:
    return f"{bus_name}-{consumer.name}"


def dead_letter_name(function_name: str) -> str:
    return f"{function_name}-dlq"


class ConsumerError(ValueError):
    """A consumer entry dmsbus cannot deploy."""


def bucket_name(function_name: str) -> str:
    """The local name of a consumer's bucket (in AWS, CloudFormation names it)."""
    return f"{function_name}-bucket".lower().replace("_", "-")


#: Characters of the bus name a failure bucket's name keeps (S3's 63, less the rest:
#: "-failures-", a 12-digit account, "-", and a region of up to 14).
_BUCKET_BUS_CHARACTERS = 26


def failures_bucket_name(bus: BusConfig, *, account: str, region: str) -> str:
    """The bus's failure bucket: named, so that every stack and the CLI know it without a
    cross-stack export; unique per account and region. A long bus name is cut and keeps a
    hash of itself."""
    slug = bus.name.lower().replace("_", "-")
    if len(slug) > _BUCKET_BUS_CHARACTERS:
        digest = hashlib.sha256(bus.name.encode()).hexdigest()[:6]
        slug = f"{slug[: _BUCKET_BUS_CHARACTERS - 7]}-{digest}"
    return f"{slug}-failures-{account}-{region}"
