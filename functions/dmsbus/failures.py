"""Failed batches: what Lambda writes to the bus's failure bucket when an event source
mapping gives up on a batch (retries or record age exhausted).

With an S3 on-failure destination Lambda writes one object per batch, keyed
``aws/lambda/<ESM UUID>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>``, holding the
invocation record: ``requestContext`` (the function, the condition), ``KinesisBatchInfo``
or ``DDBStreamBatchInfo`` (the stream, shard and sequence range) and ``payload``, the whole
invocation event as a JSON string (kinesis-on-failure-destination,
services-dynamodb-errors). The glue's failed batches hold DynamoDB stream records; a
consumer's hold Kinesis records of the bus stream, each one or more change events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dmsbus.envelope import ChangeEvent, EnvelopeError
from dmsbus.kpl import unpack

#: Where Lambda puts failed batches in the bucket.
PREFIX = "aws/lambda/"

_BATCH_INFO: dict[str, Literal["kinesis", "dynamodb"]] = {
    "KinesisBatchInfo": "kinesis",
    "DDBStreamBatchInfo": "dynamodb",
}


class FailedBatchError(ValueError):
    """An object of the failure bucket that is not a failed batch Lambda wrote; the
    message names the object."""


@dataclass(frozen=True, slots=True)
class FailedBatch:
    key: str
    #: ``RetryAttemptsExhausted``, ``RecordAgeExceeded`` ...
    condition: str
    function_arn: str
    #: The mapping's source: the bus stream (``kinesis``) or a table's stream (``dynamodb``).
    kind: Literal["kinesis", "dynamodb"]
    stream_arn: str
    shard_id: str
    start_sequence: str
    end_sequence: str
    #: When Lambda wrote it (ISO-8601).
    timestamp: str
    #: The invocation's records, as the function received them.
    records: tuple[Mapping[str, Any], ...]

    @property
    def mapping_uuid(self) -> str:
        """The event source mapping, from the object's key."""
        return self.key.removeprefix(PREFIX).split("/", 1)[0]

    @property
    def function_name(self) -> str:
        return self.function_arn.rsplit(":", 1)[-1]

    @classmethod
    def parse(cls, key: str, body: bytes) -> FailedBatch:
        try:
            record = json.loads(body)
        except ValueError as exc:
            raise FailedBatchError(f"{key}: not JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise FailedBatchError(f"{key}: not a JSON object")
        found = [(name, kind) for name, kind in _BATCH_INFO.items() if isinstance(record.get(name), dict)]
        if len(found) != 1:
            raise FailedBatchError(f"{key}: has no KinesisBatchInfo or DDBStreamBatchInfo")
        name, kind = found[0]
        info, context = record[name], record.get("requestContext") or {}
        payload = record.get("payload")
        if not isinstance(payload, str):
            raise FailedBatchError(
                f"{key}: has no payload (an SQS or SNS destination keeps only the batch's range)"
            )
        try:
            event = json.loads(payload)
            records = tuple(event["Records"])
            return cls(
                key=key,
                condition=str(context.get("condition", "")),
                function_arn=str(context["functionArn"]),
                kind=kind,
                stream_arn=str(info["streamArn"]),
                shard_id=str(info["shardId"]),
                start_sequence=str(info["startSequenceNumber"]),
                end_sequence=str(info["endSequenceNumber"]),
                timestamp=str(record.get("timestamp", "")),
                records=records,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise FailedBatchError(f"{key}: {name}, requestContext or payload lacks {exc}") from exc

    def invocation(self) -> dict[str, Any]:
        """The event to invoke the function with again: the one it failed on."""
        return {"Records": [dict(record) for record in self.records]}

    def change_events(self) -> Iterator[ChangeEvent]:
        """A consumer's failed batch as change events, deaggregated, in stream order."""
        if self.kind != "kinesis":
            raise FailedBatchError(f"{self.key}: holds DynamoDB stream records, not change events")
        for kinesis, data in unpack(self.records):
            try:
                yield ChangeEvent.from_json(data)
            except EnvelopeError as exc:
                raise FailedBatchError(
                    f"{self.key}: record {kinesis.get('sequenceNumber')} is not a change event: {exc}"
                ) from exc
