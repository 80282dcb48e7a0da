"""The glue's logic, free of Lambda and environment: testable with fakes or moto."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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
    #: Per DynamoDB table, the events of a typed bus that went out untyped.
    untyped: dict[str, int] = field(default_factory=dict)
    #: Schema changes put on every shard before the rows typed with them.
    announced: int = 0

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
    typed bus, ``announcer`` puts the schema change of each version met for the first time
    on every shard right before the first row typed with it: the rows before it go first,
    so that on each shard a version's change comes after the rows of the version before
    (a DDL between two rows of the batch) and before its own. One that fails fails the
    batch from that row on (Lambda hands it again).
    """
    builder.begin(deadline)
    user_records, poisoned, stop, stopped_by = _encode(records, builder, parking=dead_letters is not None)
    # Where a version not yet announced is first met: its change goes out right there
    cuts: dict[int, list[tuple[str, int]]] = {}
    for version, origin in builder.take_typed_versions().items():
        if announcer is not None and announcer.pending(version):
            cuts.setdefault(origin, []).append(version)
    result = PublishResult(user_records=len(user_records))
    announced = 0
    end = len(records) if stop is None else stop
    start = parked = 0
    for cut in [*sorted(cuts), None]:
        upto = end if cut is None else cut
        # The poison records before this point are parked before the rows after them go:
        # one that cannot be parked stops the batch there (Lambda hands it again)
        while parked < len(poisoned) and poisoned[parked][0] < upto:
            index, record, error = poisoned[parked]
            assert dead_letters is not None
            try:
                dead_letters.send(reason=str(error), record=record, detail={"bus": builder.bus})
            except (ClientError, BotoCoreError) as exc:
                logger.error(
                    "poison record %s not parked (%s); the batch is handed again from it", index, exc
                )
                result.errors.append(f"dead-letter queue: {exc}")
                upto = end = result.failed_from = index
                break
            logger.warning("poison record sent to the dead-letter queue: %s", error)
            parked += 1
        if cut is None and start == 0 and upto == end == len(records):
            segment = user_records  # the common batch: no DDL, nothing parked in the way
        else:
            segment = [record for record in user_records[start:] if record.origin < upto]
        start += len(segment)
        if segment:
            _add(result, publisher.publish(segment, deadline=deadline))
            if result.failed_from is not None:
                end = min(end, result.failed_from)
                break
        if cut is None or end <= cut:
            break
        assert announcer is not None
        try:
            announced += announcer.announce(cuts[cut], deadline=deadline)
        except AnnouncementError as exc:
            logger.error("%s; the batch is handed again from the first row typed with it", exc)
            result.failed_from, end = cut, min(end, cut)
            result.errors.append(str(exc))
            break
    failed = [_sequence_number(record) for record in records[end:]]
    return GlueOutcome(
        changes=len(user_records),
        poison=len(poisoned),
        publish=result,
        failed=failed,
        stopped_by=stopped_by,
        untyped=builder.take_untyped(before=end),
        announced=announced,
    )


def _encode(
    records: Sequence[Mapping[str, Any]], builder: ChangeBuilder, *, parking: bool
) -> tuple[list[UserRecord], list[tuple[int, Mapping[str, Any], StreamRecordError]], int | None, str | None]:
    """The batch's user records; its poison records (``parking``: to park) or, without a
    dead-letter queue, where the first one stops the batch and why."""
    user_records: list[UserRecord] = []
    poisoned: list[tuple[int, Mapping[str, Any], StreamRecordError]] = []
    for index, record in enumerate(records):
        try:
            user_records.append(builder.encode_stream_record(record, index))
        except StreamRecordError as exc:
            if not parking:
                logger.error("poison record and no BUS_DLQ_URL, the shard stops here: %s", exc)
                return user_records, poisoned, index, str(exc)
            poisoned.append((index, record, exc))
    return user_records, poisoned, None, None


def _add(total: PublishResult, part: PublishResult) -> None:
    """One segment's put, added to the batch's."""
    total.kinesis_records += part.kinesis_records
    total.requests += part.requests
    total.retries += part.retries
    total.reshards += part.reshards
    total.errors.extend(part.errors)
    if part.failed_from is not None and total.failed_from is None:
        total.failed_from = part.failed_from


def _sequence_number(record: Mapping[str, Any]) -> str:
    try:
        sequence = record["dynamodb"]["SequenceNumber"]
    except (KeyError, TypeError):
        sequence = None
    if not isinstance(sequence, str):
        # Lambda can only retry from a sequence number: without one the whole batch must fail.
        raise StreamRecordError(f"{describe_stream_record(record)} has no SequenceNumber to report")
    return sequence
