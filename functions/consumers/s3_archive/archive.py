"""The archive's core: a batch of received events -> gzip JSON-lines objects, one per
(table, hour) in the batch, under Hive-style partitions:

    {prefix}bus={bus}/schema={schema}/table={table}/date=YYYY-MM-DD/hour=HH/{ts_ms}-{digest}.jsonl.gz

``date``/``hour`` are UTC, from each event's ``ts_ms``. Each line is an event exactly as it
came off the stream. An object's name comes from its first event (its ``ts_ms`` and a
digest of its ``id``), and its bytes from its events only (gzip without a timestamp), so
a retried batch writes the same objects again: it overwrites, never duplicates.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dmsbus.consumer import Received

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

SUFFIX = ".jsonl.gz"
CONTENT_TYPE = "application/x-ndjson"


@dataclass(frozen=True, slots=True)
class Partition:
    bus: str
    schema: str
    table: str
    date: str  # YYYY-MM-DD (UTC)
    hour: str  # HH (UTC)

    @classmethod
    def of(cls, received: Received) -> Partition:
        event = received.event
        when = datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC)
        return cls(
            event.source.bus, event.source.schema, event.source.table, f"{when:%Y-%m-%d}", f"{when:%H}"
        )

    def prefix(self, root: str = "") -> str:
        return (
            f"{root}bus={self.bus}/schema={self.schema}/table={self.table}/date={self.date}/hour={self.hour}/"
        )


@dataclass
class ArchiveObject:
    partition: Partition
    received: list[Received] = field(default_factory=list)

    def key(self, root: str = "") -> str:
        first = self.received[0].event
        digest = hashlib.sha256(first.id.encode("utf-8")).hexdigest()[:16]
        return f"{self.partition.prefix(root)}{first.ts_ms:013d}-{digest}{SUFFIX}"

    def body(self) -> bytes:
        lines = b"".join(item.data + b"\n" for item in self.received)
        return gzip.compress(lines, compresslevel=6, mtime=0)


def objects(received: Iterable[Received]) -> list[ArchiveObject]:
    """The batch's objects, each holding its events in stream order."""
    grouped: dict[Partition, ArchiveObject] = {}
    for item in received:
        partition = Partition.of(item)
        grouped.setdefault(partition, ArchiveObject(partition)).received.append(item)
    return list(grouped.values())


def write(s3: S3Client, bucket: str, batch: Sequence[Received], *, root: str = "") -> list[str]:
    """Put the batch's objects; returns their keys. Any failure raises: the consumer SDK
    then reports the whole batch and Lambda retries it (the same keys, overwritten)."""
    keys = []
    for archive_object in objects(batch):
        key = archive_object.key(root)
        events = archive_object.received
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=archive_object.body(),
            ContentType=CONTENT_TYPE,
            Metadata={
                "events": str(len(events)),
                "first-id": events[0].event.id,
                "last-id": events[-1].event.id,
            },
        )
        keys.append(key)
    return keys


def read_lines(body: bytes) -> Iterator[bytes]:
    """The events of one archive object, each as it was received."""
    for line in gzip.decompress(body).split(b"\n"):
        if line:
            yield line
