"""Schema-change events: op ``s`` on a typed bus, one per table and schema version, put on
every shard of the bus stream before the first event typed with that version.

Rows of a table spread over the shards by key, and Kinesis keeps order per shard only. So
a schema change goes to every open shard (``KinesisPublisher.publish_to_every_shard``), and
whoever publishes rows typed with a version first makes sure it went out: the glue (and
discovery's backfill) announce a version they meet for the first time unless the schema
table says it is announced, and note it there once every shard has it. A consumer that
asks for op ``s`` thus gets the change before any row of the new version, on each shard:
one copy per shard, all with the same ``id``. A split shard's children are read after it
(Lambda reads a parent shard to its end first), so they need no copy; and order holds per
shard for a mapping whose ParallelizationFactor is 1, per partition key beyond (Lambda
Developer Guide, "Using Lambda to process records from Amazon Kinesis Data Streams",
with-kinesis: polling and batching, concurrent batches per shard).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from dmsbus.envelope import ChangeEvent, Source
from dmsbus.names import TableName, parse_table_name
from dmsbus.publisher import KinesisPublisher
from dmsbus.schemas import SchemaChange, SchemaError, SchemaStore, TableSchema, qualified

logger = logging.getLogger("dmsbus.schema_events")


class AnnouncementError(RuntimeError):
    """A schema change that is not on every shard yet: publish no row of its version."""


def schema_change_event(
    bus: str, name: TableName, schema: TableSchema, previous: TableSchema | None
) -> ChangeEvent:
    """The op ``s`` event of ``schema`` (``previous``: the version before, None for the first),
    met on DynamoDB table ``name``; copies dedupe by ``id``."""
    change = SchemaChange.between(previous, schema)
    return ChangeEvent(
        id=f"{bus}.{schema.qualified}/schema/{schema.version}",
        op="s",
        ts_ms=schema.read_ms,
        source=Source(
            bus=bus,
            source=name.source,
            schema=name.schema,
            table=name.table,
            version=name.version,
            dynamodb_table=name.dynamodb_table,
            sequence="0",
            typed=True,
            schema_version=schema.version,
        ),
        key={},
        before=None,
        after=None,
        schema_change={
            "version": schema.version,
            "previous_version": previous.version if previous is not None else None,
            "added": list(change.added),
            "dropped": list(change.dropped),
            "retyped": list(change.retyped),
            "renamed": [list(pair) for pair in change.renamed],
        },
    )


@dataclass
class SchemaAnnouncer:
    """Announces schema versions before rows typed with them go out (module docstring)."""

    store: SchemaStore
    publisher: KinesisPublisher
    bus: str
    #: (DynamoDB table, version) known to be on every shard: not asked again.
    _done: set[tuple[str, int]] = field(default_factory=set)

    def pending(self, version: tuple[str, int]) -> bool:
        """Whether (DynamoDB table, schema version) may still need announcing: not known
        by this container to be on every shard."""
        return version not in self._done

    def announce(self, versions: Iterable[tuple[str, int]], *, deadline: float | None = None) -> int:
        """Make sure each (DynamoDB table, schema version) is announced, and every earlier
        version not announced yet, oldest first (two DDLs between the glue's reads are two
        changes); how many this call put on the stream. AnnouncementError when one could not
        be put on every shard: its rows must wait."""
        announced = 0
        for dynamodb_table, version in sorted(set(versions) - self._done):
            name = parse_table_name(dynamodb_table)
            table_key = qualified(name.source, name.schema, name.table)
            try:
                for pending in self._unannounced(table_key, version):
                    self._put(name, table_key, pending, deadline)
                    announced += 1
            except (ClientError, BotoCoreError, SchemaError) as exc:  # the batch is retried
                raise AnnouncementError(f"schema v{version} of {table_key} not announced: {exc}") from exc
            self._done.add((dynamodb_table, version))
        return announced

    def _unannounced(self, table_key: str, version: int) -> list[int]:
        """``version`` and the versions before it back to the last announced, oldest first."""
        pending: list[int] = []
        while version >= 1 and not self.store.announced(table_key, version):
            pending.append(version)
            version -= 1
        return pending[::-1]

    def _put(self, name: TableName, table_key: str, version: int, deadline: float | None) -> None:
        schema = self.store.version(table_key, version)
        if schema is None:
            raise AnnouncementError(f"schema v{version} of {table_key} is not in the schema table")
        previous = self.store.version(table_key, version - 1) if version > 1 else None
        event = schema_change_event(self.bus, name, schema, previous)
        result = self.publisher.publish_to_every_shard(
            event.to_json(), f"{name.schema}.{name.table}|schema", deadline=deadline
        )
        if result.failed_from is not None:
            raise AnnouncementError(f"{event.id} is not on every shard: {'; '.join(result.errors[:2])}")
        logger.info("schema change %s announced on %d shards", event.id, result.kinesis_records)
        try:
            self.store.mark_announced(table_key, version)
        except (ClientError, BotoCoreError) as exc:
            # It is on every shard: the rows may go. Unnoted, it goes out again (same id).
            logger.warning("schema change %s not noted as announced: %s", event.id, exc)
