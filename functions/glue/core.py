"""The glue's logic, free of Lambda and environment: testable with fakes or moto."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dmsbus.changes import ChangeBuilder, StreamRecordError, UserRecord, describe_stream_record
from dmsbus.deadletter import DeadLetterQueue
from dmsbus.publisher import KinesisPublisher, PublishResult
from dmsbus.schema_events import AnnouncementError, SchemaAnnouncer
from dmsbus.settings import SettingsError
from glue.settings import GlueSettings

logger = logging.getLogger("dmsbus.glue")

__all__ = ["GlueOutcome", "GlueSettings", "SettingsError", "process_batch"]


@dataclass(slots=True)
class GlueOutcome:
    changes: int
    poison: int
    publish: PublishResult
    #: SequenceNumbers of the stream records Lambda must hand again, in order.
    failed: list[str]
    #: Why the batch stopped at a poison record, when there is no dead-letter queue.
    stopped_by: str | None = None

    def response(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in self.failed]}


def process_batch(
    records: Sequence[Mapping[str, Any]],
    *,
    builder: ChangeBuilder,
    publisher: KinesisPublisher,
    dead_letters: DeadLetterQueue | None,
    deadline: float | None = None,
    announcer: SchemaAnnouncer | None = None,
) -> GlueOutcome:
    """Turn one Lambda batch of stream records into change events on the stream.

    A poison record goes to ``dead_letters`` and is skipped; without a queue the batch
    stops there (loudly) and that record and the later ones are reported as failures,
    as are the ones whose put finally failed, so Lambda hands them again in order. On a
    typed bus, ``announcer`` first puts the schema change of each version met for the first
    time on every shard; one that fails fails the batch (Lambda hands it again).
    """
    user_records: list[UserRecord] = []
    poisoned: list[tuple[Mapping[str, Any], StreamRecordError]] = []
    stop: int | None = None
    stopped_by: str | None = None
    for index, record in enumerate(records):
        try:
            user_records.append(builder.encode_stream_record(record, index))
        except StreamRecordError as exc:
            if dead_letters is None:
                stop, stopped_by = index, str(exc)
                logger.error("poison record and no BUS_DLQ_URL, the shard stops here: %s", exc)
                break
            poisoned.append((record, exc))
    poison = len(poisoned)
    versions = builder.take_typed_versions()
    if announcer is not None and versions:
        try:
            announcer.announce(versions, deadline=deadline)
        except AnnouncementError as exc:
            logger.error("%s; the batch is handed again", exc)
            unsent = PublishResult(user_records=len(user_records), failed_from=0, errors=[str(exc)])
            return GlueOutcome(
                changes=len(user_records),
                poison=poison,
                publish=unsent,
                failed=[_sequence_number(record) for record in records],
                stopped_by=stopped_by,
            )
    # Parked once the batch goes on: a batch handed back whole parks them on its retry
    for record, error in poisoned:
        assert dead_letters is not None
        dead_letters.send(reason=str(error), record=record, detail={"bus": builder.bus})
        logger.warning("poison record sent to the dead-letter queue: %s", error)
    result = publisher.publish(user_records, deadline=deadline)
    starts = [index for index in (stop, result.failed_from) if index is not None]
    failed = [_sequence_number(record) for record in records[min(starts) :]] if starts else []
    return GlueOutcome(
        changes=len(user_records), poison=poison, publish=result, failed=failed, stopped_by=stopped_by
    )


def _sequence_number(record: Mapping[str, Any]) -> str:
    try:
        sequence = record["dynamodb"]["SequenceNumber"]
    except (KeyError, TypeError):
        sequence = None
    if not isinstance(sequence, str):
        # Lambda can only retry from a sequence number: without one the whole batch must fail.
        raise StreamRecordError(f"{describe_stream_record(record)} has no SequenceNumber to report")
    return sequence
