"""A test kit for consumers: change events, the Kinesis event Lambda would hand a consumer
(made with the glue's own encoding: its JSON, partition keys and KPL aggregation), and a
call of a decorated handler that returns what it reports as failed.

```python
from dmsbus.testing import change, invoke, kinesis_event

def test_paid_orders_are_mailed() -> None:
    events = [change("public.orders", "u", key={"id": 1}, before={"id": 1, "status": "new"},
                     after={"id": 1, "status": "paid"})]
    assert invoke(handler, kinesis_event(events)) == []
```

With pytest, ``pytest_plugins = ["dmsbus.pytest_plugin"]`` in a ``conftest.py`` gives the
``consumer_failures`` fixture. Values are what the bus delivers for each source type
(docs/envelope.md): build them as DMS writes them (``"true"`` for a boolean, a UTC string
for a timestamptz) to test what production will send.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dmsbus.changes import ChangeBuilder
from dmsbus.consumer import ConsumerHandler
from dmsbus.envelope import OPS, ChangeEvent, Op, Source
from dmsbus.kpl import pack
from dmsbus.names import TableName
from dmsbus.partition import canonical_json
from dmsbus.publisher import PublisherSettings
from dmsbus.schemas import TableSchema

__all__ = ["LambdaContext", "change", "invoke", "kinesis_event"]

#: What events are stamped with unless a test says otherwise: the sample config's names.
BUS = "demo"
SOURCE = "legacy"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/demo-bus"
#: The first stream sequence number handed out; each change takes the next.
_sequences = itertools.count(100_000_000_000_000_000_001)


def change(
    table: str,
    op: Op,
    *,
    key: Mapping[str, Any],
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    version: int | None = None,
    sequence: int | None = None,
    ts_ms: int = 1_764_489_600_000,
    bus: str = BUS,
    source: str = SOURCE,
    schema: TableSchema | None = None,
) -> ChangeEvent:
    """One change event of ``table`` (``schema.table``), as the glue makes it: ``before`` is
    for ``u``/``d``, ``after`` for ``c``/``u``/``r``; ``sequence`` defaults to the next one.
    ``schema``: a typed event of that schema version (the images are given typed), with
    ``event.schema`` as the SDK sets it; every column of the schema DMS writes must be in
    the images given (NULL as None)."""
    if op not in OPS:
        raise ValueError(f"op {op!r} is not one of {sorted(OPS)}")
    schema_name, dot, name = table.partition(".")
    if not dot:
        raise ValueError(f"table {table!r} must be 'schema.table'")
    if op in ("c", "r") and before is not None:
        raise ValueError(f"a {op!r} change has no before image")
    if op == "d" and after is not None:
        raise ValueError("a 'd' change has no after image")
    if op != "d" and after is None:
        raise ValueError(f"a {op!r} change needs after=")
    if op in ("u", "d") and before is None:
        raise ValueError(f"a {op!r} change needs before= (DMS's streams carry the old image)")
    dynamodb_table = TableName(
        bus, source, schema_name, name, None if version is None else f"v{version}"
    ).dynamodb_table
    number = "0" if op == "r" else f"{next(_sequences) if sequence is None else sequence:021d}"
    # A backfill read's id is stable per (table, backfill run, key), as discovery makes it.
    event_id = (
        f"{dynamodb_table}/{number}" if op != "r" else f"{dynamodb_table}/r/test/{canonical_json(dict(key))}"
    )
    if schema is not None:
        columns = [column.name for column in schema.columns if column.written]
        for image in (before, after):
            if image is not None and sorted(image) != sorted(columns):
                raise ValueError(f"a typed change's images have every column of its schema: {columns}")
    return ChangeEvent(
        id=event_id,
        op=op,
        ts_ms=ts_ms,
        source=Source(
            bus=bus,
            source=source,
            schema=schema_name,
            table=name,
            version=None if version is None else f"v{version}",
            dynamodb_table=dynamodb_table,
            sequence=number,
            snapshot=op == "r",
            typed=None if schema is None else True,
            schema_version=None if schema is None else schema.version,
        ),
        key=dict(key),
        before=None if before is None else dict(before),
        after=None if after is None else dict(after),
        schema=schema,
    )


def kinesis_event(
    events: Sequence[ChangeEvent], *, aggregated: bool = True, stream_arn: str = STREAM_ARN
) -> dict[str, Any]:
    """The Lambda event of a consumer reading ``events`` in this order from one shard:
    each event serialized and keyed by the glue's own code, and with ``aggregated`` packed
    into KPL aggregated records as the glue puts them on the stream."""
    if not events:
        return {"Records": []}
    builder = ChangeBuilder(events[0].source.bus)
    users = [builder.user_record(event, origin) for origin, event in enumerate(events)]
    records: list[tuple[str, bytes]] = []
    if aggregated:
        at = 0
        for aggregate in pack(
            [u.partition_key for u in users], [u.data for u in users], PublisherSettings().max_aggregate_bytes
        ):
            first = users[at]
            records.append((first.partition_key, first.data if aggregate.data is None else aggregate.data))
            at += aggregate.count
    else:
        records = [(user.partition_key, user.data) for user in users]
    shard = "shardId-000000000000"
    region, account = stream_arn.split(":")[3:5]
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": partition_key,
                    "sequenceNumber": f"{49_600_000_000_000_000_000_000_000_000 + index:056d}",
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": events[0].ts_ms / 1000,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{49_600_000_000_000_000_000_000_000_000 + index:056d}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{account}:role/consumer",
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
            for index, (partition_key, data) in enumerate(records)
        ]
    }


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str = "demo-test-consumer"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:demo-test-consumer"
    log_group_name: str = "/aws/lambda/demo-test-consumer"
    log_stream_name: str = "test"
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def invoke(handler: ConsumerHandler, event: Mapping[str, Any], context: Any = None) -> list[str]:
    """Call a ``@consumer`` handler as Lambda does; the sequence numbers of the Kinesis
    records it reports as failed (``batchItemFailures``), in order: ``[]`` when all passed."""
    response = handler(dict(event), context if context is not None else LambdaContext())
    return [failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])]
