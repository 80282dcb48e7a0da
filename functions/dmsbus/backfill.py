"""Backfill reads: items DMS wrote before a table's stream existed, as ``op: "r"`` events.

An ``r`` event has ``before: null``, ``after`` = the scanned item, ``source.snapshot: true``
and ``source.sequence: "0"`` (older than every change of the stream, so a sink applying
"newer sequence wins" never lets a snapshot override a change). Its id is stable per
(table, backfill run, key): ``{dynamodb_table}/r/{stream label}/{canonical JSON of key}``,
the stream label naming the run, so a backfill redone after an interruption repeats the
same ids and consumers dedup them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dmsbus.changes import ChangeBuilder, UserRecord
from dmsbus.envelope import RESYNC_ATTRIBUTE, ChangeEvent, Source
from dmsbus.names import TableName
from dmsbus.partition import canonical_json

#: The sequence of every backfill read: before any stream record of the table.
SNAPSHOT_SEQUENCE = "0"


def read_event(
    builder: ChangeBuilder,
    table: TableName,
    *,
    run: str,
    key_attributes: Sequence[str],
    item: Mapping[str, Any],
    ts_ms: int,
    origin: int = 0,
) -> tuple[ChangeEvent, dict[str, Any]]:
    """The ``r`` event of one scanned item (DynamoDB JSON, as Scan returns it), and DMS's
    key (what its partition key is made of, typed or not)."""
    after = builder.decoder.image(item)
    after.pop(RESYNC_ATTRIBUTE, None)
    missing = [name for name in key_attributes if name not in after]
    if missing:
        raise ValueError(f"item of {table} lacks its key attributes {missing}")
    key = {name: after[name] for name in key_attributes}
    typed, version, after, typed_key = builder.typed(table, after, key, origin)
    event = ChangeEvent(
        # Of DMS's key: the same id typed or not
        id=f"{table.dynamodb_table}/r/{run}/{canonical_json(key)}",
        op="r",
        ts_ms=ts_ms,
        source=Source(
            bus=table.bus,
            source=table.source,
            schema=table.schema,
            table=table.table,
            version=table.version,
            dynamodb_table=table.dynamodb_table,
            sequence=SNAPSHOT_SEQUENCE,
            snapshot=True,
            typed=typed,
            schema_version=version,
        ),
        key=typed_key,
        before=None,
        after=after,
    )
    return event, key


def read_records(
    builder: ChangeBuilder,
    table: TableName,
    *,
    run: str,
    key_attributes: Sequence[str],
    items: Sequence[Mapping[str, Any]],
    ts_ms: int,
) -> list[UserRecord]:
    """Scanned items as Kinesis user records, partitioned exactly as the glue partitions
    the row's changes (so a row's ``r`` and later changes share a shard, in order)."""
    records: list[UserRecord] = []
    for index, item in enumerate(items):
        event, key = read_event(
            builder, table, run=run, key_attributes=key_attributes, item=item, ts_ms=ts_ms, origin=index
        )
        records.append(builder.user_record(event, index, route=key))
    return records
