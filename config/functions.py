"""The bus's resource names and each function's environment, from the config.

One place for both deployments: ``stacks/`` passes CloudFormation tokens for the URLs and
ARNs, ``local/`` passes the moto server's. The functions read these variables through
``dmsbus.settings`` (glue, discovery) and ``dmsbus.consumer`` (consumers).
"""

from __future__ import annotations

import hashlib

from config.model import BusConfig, ConsumerConfig
from dmsbus import variables as v

#: Set by dmsbus on every consumer; a consumer's own ``environment`` may not use them.
RESERVED_PREFIXES = ("BUS_", "DMSBUS_", "AWS_", "POWERTOOLS_SERVICE_NAME")


def stream_name(bus: BusConfig) -> str:
    return f"{bus.name}-bus"


def glue_name(bus: BusConfig) -> str:
    return f"{bus.name}-glue"


def discovery_name(bus: BusConfig) -> str:
    return f"{bus.name}-discovery"


def consumer_name(bus_name: str, consumer: ConsumerConfig) -> str:
    return f"{bus_name}-{consumer.name}"


def dead_letter_name(function_name: str) -> str:
    return f"{function_name}-dlq"


def publishing_environment(bus: BusConfig, *, stream: str) -> dict[str, str]:
    """How the glue and the backfill write the stream."""
    return {
        v.BUS_NAME: bus.name,
        v.STREAM_NAME: stream,
        v.AGGREGATE: str(bus.glue.aggregate).lower(),
        v.NUMBERS: bus.glue.numbers,
    }


def glue_environment(bus: BusConfig, *, stream: str, dlq_url: str) -> dict[str, str]:
    return {**publishing_environment(bus, stream=stream), v.DLQ_URL: dlq_url}


def discovery_environment(
    bus: BusConfig, *, stream: str, glue_function: str, glue_on_failure_arn: str
) -> dict[str, str]:
    """Discovery attaches the glue with the config's mapping settings; its failed batches
    go to ``glue_on_failure_arn`` (the failure bucket)."""
    glue = bus.glue
    return {
        **publishing_environment(bus, stream=stream),
        v.GLUE_FUNCTION_NAME: glue_function,
        v.GLUE_ON_FAILURE_ARN: glue_on_failure_arn,
        v.GLUE_BATCH_SIZE: str(glue.batch_size),
        v.GLUE_BATCHING_WINDOW_SECONDS: str(glue.batching_window_seconds),
        v.GLUE_PARALLELIZATION_FACTOR: str(glue.parallelization_factor),
        v.GLUE_MAX_RETRIES: str(glue.max_retries),
        v.GLUE_MAX_RECORD_AGE_SECONDS: str(glue.max_record_age_seconds),
        v.KEEP_PROVISIONED: str(bus.discovery.keep_provisioned).lower(),
        v.SWEEP_MINUTES: str(bus.discovery.sweep_minutes),
        v.BACKFILL: str(bus.discovery.backfill).lower(),
    }


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


def consumer_environment(
    bus_name: str, consumer: ConsumerConfig, *, dlq_url: str, bucket: str | None = None
) -> dict[str, str]:
    """``bucket``: the name of the consumer's bucket, when its config asks for one."""
    reserved = sorted(k for k in consumer.environment if k.startswith(RESERVED_PREFIXES))
    if reserved:
        raise ConsumerError(f"consumer {consumer.name}: environment {reserved} is set by dmsbus")
    if (consumer.bucket is None) != (bucket is None):
        raise ConsumerError(
            f"consumer {consumer.name}: a bucket name goes with a `bucket` entry, and only then"
        )
    environment = {**consumer.environment, v.BUS_NAME: bus_name, v.DLQ_URL: dlq_url}
    if consumer.secret is not None:
        environment[v.CREDENTIALS_NAME] = consumer.secret
    if bucket is not None:
        environment[v.BUCKET] = bucket
    if consumer.tables is not None:
        environment[v.TABLES] = ",".join(consumer.tables)
    if consumer.ops is not None:
        environment[v.OPS] = ",".join(consumer.ops)
    return environment
