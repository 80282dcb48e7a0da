"""The integ test's probe consumer: every event it receives from the bus stream, in stream
order, into its DynamoDB table, where the checker reads them.

Written with the consumer SDK like any consumer (``@consumer``, ``records=True`` for the
Kinesis position). Item: ``row`` = ``schema.table|canonical key``, ``position`` = the
record's sequence and sub-sequence numbers zero-padded (so a row's events sort in stream
order), ``op``, ``id``, ``ts_ms`` and the images as JSON text. A string over 1,024
characters is stored as ``{"length": n, "sha256": ...}``: a 300 KB LOB in ``before`` and
``after`` would not fit one DynamoDB item.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any

from dmsbus.consumer import Received, consumer

#: Strings longer than this are stored as their length and hash.
LONG = 1_024


def summarized(value: Any) -> Any:
    if isinstance(value, str) and len(value) > LONG:
        return {"length": len(value), "sha256": hashlib.sha256(value.encode()).hexdigest()}
    if isinstance(value, dict):
        return {name: summarized(item) for name, item in value.items()}
    if isinstance(value, list):
        return [summarized(item) for item in value]
    return value


def row_key(schema: str, table: str, key: dict[str, Any]) -> str:
    return f"{schema}.{table}|{json.dumps(key, sort_keys=True, separators=(',', ':'))}"


def probe_item(received: Received) -> dict[str, Any]:
    event = received.event
    return {
        "row": row_key(event.source.schema, event.source.table, event.key),
        "position": f"{int(received.sequence_number):064d}.{received.sub_sequence_number:08d}",
        "op": event.op,
        "id": event.id,
        "ts_ms": event.ts_ms,
        "before": json.dumps(summarized(event.before), sort_keys=True),
        "after": json.dumps(summarized(event.after), sort_keys=True),
    }


@functools.cache
def _table() -> Any:
    import boto3

    return boto3.resource("dynamodb").Table(os.environ["PROBE_TABLE"])


@consumer(batch=True, records=True)
def handler(batch: list[Received]) -> None:
    with _table().batch_writer(overwrite_by_pkeys=["row", "position"]) as writer:
        for received in batch:
            writer.put_item(Item=probe_item(received))
