"""Publishes user records to the bus's Kinesis stream, keeping each row's order.

Order per row is the contract, and PutRecords does not promise to keep the order of the
records in one request. So records are sent in *rounds*, and a round never holds two
records that must stay in order:
- aggregated (default): records are grouped per destination shard, in input order, into
  KPL aggregates (``ExplicitHashKey`` pins each aggregate to its shard); round k carries
  the k-th aggregate of every shard;
- plain: one Kinesis record per change; round k carries the k-th change of every row.
A round goes out in requests within the PutRecords limits (500 records, 5 MiB). Entries
that fail (throttling, internal errors) are retried alone with exponential backoff and
full jitter. What still fails, and everything after it, is reported back by ``origin``
so the caller hands it to Lambda's retry: nothing is lost, nothing overtakes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from dmsbus.changes import MAX_KINESIS_RECORD_BYTES, UserRecord
from dmsbus.kpl import Aggregate, pack
from dmsbus.shards import ShardCache

if TYPE_CHECKING:
    from mypy_boto3_kinesis.client import KinesisClient

MAX_RECORDS_PER_REQUEST = 500
#: Rounds of "put on every shard, list the shards again" before giving up on a stream
#: that keeps resharding.
EVERY_SHARD_ROUNDS = 5
MAX_BYTES_PER_REQUEST = 5 * 1024 * 1024

#: Errors of the whole PutRecords call worth another try; anything else is a setup error
#: (no such stream, access denied, bad request) and is raised.
RETRYABLE_CALL_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "KMSThrottlingException",
        "InternalFailure",
        "InternalFailureException",
        "ServiceUnavailable",
        "ThrottlingException",
        "RequestTimeout",
    }
)


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    """Every default of the publisher, in one place."""

    aggregate: bool = True
    max_aggregate_bytes: int = MAX_KINESIS_RECORD_BYTES
    max_attempts: int = 6
    base_delay: float = 0.05
    max_delay: float = 2.0
    shard_map_ttl: float = 60.0

    def __post_init__(self) -> None:
        if not 1024 <= self.max_aggregate_bytes <= MAX_KINESIS_RECORD_BYTES:
            raise ValueError(
                f"max_aggregate_bytes must be between 1024 and {MAX_KINESIS_RECORD_BYTES}, "
                f"not {self.max_aggregate_bytes}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")


@dataclass(slots=True)
class PublishResult:
    user_records: int = 0
    kinesis_records: int = 0
    requests: int = 0
    retries: int = 0
    reshards: int = 0
    #: The lowest ``origin`` not known to be on the stream, or None when all of it is.
    failed_from: int | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Entry:
    request: Any  # a PutRecordsRequestEntry
    positions: list[int]  # indexes into the records being published, ascending
    size: int
    shard_id: str | None  # predicted shard (aggregated mode)


class KinesisPublisher:
    def __init__(
        self,
        client: KinesisClient,
        stream_name: str,
        *,
        settings: PublisherSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.stream_name = stream_name
        self.settings = settings or PublisherSettings()
        self.shards = ShardCache(client, stream_name, ttl=self.settings.shard_map_ttl, clock=clock)
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock

    def publish(self, records: Sequence[UserRecord], *, deadline: float | None = None) -> PublishResult:
        """Put ``records`` on the stream. ``deadline`` (on the ``clock``) bounds the retries."""
        result = PublishResult(user_records=len(records))
        pending = list(range(len(records)))
        while pending:
            rounds = self._rounds(records, pending)
            pending = []
            for number, entries in enumerate(rounds):
                failed, resharded = self._send_round(entries, deadline, result)
                if resharded:
                    result.reshards += 1
                    self.shards.invalidate()
                if failed:
                    unsent = [entry for later in rounds[number + 1 :] for entry in later]
                    result.failed_from = min(
                        records[position].origin
                        for entry in [*failed, *unsent]
                        for position in entry.positions
                    )
                    return result
                if resharded:
                    # The shard map was stale: regroup what is left with fresh ranges.
                    pending = sorted(p for later in rounds[number + 1 :] for e in later for p in e.positions)
                    break
        return result

    def publish_to_every_shard(
        self, data: bytes, partition_key: str, *, deadline: float | None = None
    ) -> PublishResult:
        """One record on every open shard of the stream, each pinned by ``ExplicitHashKey`` to
        its shard's first hash key. The shards are listed again after each put: a shard split
        meanwhile put the record on one child at most, so the new shards get it too, until
        the list stays the same (a split after that is read after its parent, which has it).
        ``failed_from`` 0: not on every shard."""
        result = PublishResult(user_records=1)
        size = len(data) + len(partition_key.encode("utf-8"))
        put_to: set[str] = set()
        for _ in range(EVERY_SHARD_ROUNDS):
            self.shards.invalidate()
            shards = [shard for shard in self.shards.current().shards if shard.shard_id not in put_to]
            if not shards:
                return result
            entries = [
                _Entry(
                    {"Data": data, "PartitionKey": partition_key, "ExplicitHashKey": str(shard.start)},
                    [0],
                    size,
                    shard.shard_id,
                )
                for shard in shards
            ]
            for request in _requests(entries):
                failed, _ = self._put_with_retries(request, deadline, result)
                if failed:
                    result.failed_from = 0
                    return result
            put_to.update(shard.shard_id for shard in shards)
        result.failed_from = 0
        result.errors.append(f"the stream's shards changed {EVERY_SHARD_ROUNDS} times while putting to each")
        return result

    def _rounds(self, records: Sequence[UserRecord], positions: list[int]) -> list[list[_Entry]]:
        if self.settings.aggregate:
            return self._aggregated_rounds(records, positions)
        rounds: list[list[_Entry]] = []
        seen: dict[str, int] = {}
        for position in positions:
            record = records[position]
            number = seen.get(record.partition_key, 0)
            seen[record.partition_key] = number + 1
            if number == len(rounds):
                rounds.append([])
            rounds[number].append(
                _Entry(
                    {"Data": record.data, "PartitionKey": record.partition_key},
                    [position],
                    record.size,
                    None,
                )
            )
        return rounds

    def _aggregated_rounds(self, records: Sequence[UserRecord], positions: list[int]) -> list[list[_Entry]]:
        shard_map = self.shards.current()
        shard_for = shard_map.shard_for
        per_shard: dict[str, list[int]] = {}
        for position in positions:
            shard_id = shard_for(records[position].hash_key).shard_id
            members = per_shard.get(shard_id)
            if members is None:
                per_shard[shard_id] = [position]
            else:
                members.append(position)
        rounds: list[list[_Entry]] = []
        max_bytes = self.settings.max_aggregate_bytes
        for shard_id, members in per_shard.items():
            aggregates = pack(
                [records[position].partition_key for position in members],
                [records[position].data for position in members],
                max_bytes,
            )
            start = 0
            for number, aggregate in enumerate(aggregates):
                if number == len(rounds):
                    rounds.append([])
                group = members[start : start + aggregate.count]
                start += aggregate.count
                rounds[number].append(_aggregate_entry(records, aggregate, group, shard_id))
        return rounds

    def _send_round(
        self, entries: list[_Entry], deadline: float | None, result: PublishResult
    ) -> tuple[list[_Entry], bool]:
        """Send one round; return (entries that finally failed plus the unsent rest, resharded)."""
        resharded = False
        requests = list(_requests(entries))
        for number, request in enumerate(requests):
            failed, mismatch = self._put_with_retries(request, deadline, result)
            resharded = resharded or mismatch
            if failed:
                return failed + [entry for later in requests[number + 1 :] for entry in later], resharded
        return [], resharded

    def _put_with_retries(
        self, entries: list[_Entry], deadline: float | None, result: PublishResult
    ) -> tuple[list[_Entry], bool]:
        todo = entries
        mismatch = False
        attempt = 0
        while True:
            failed, error, landed_elsewhere = self._put(todo, result)
            mismatch = mismatch or landed_elsewhere
            if not failed:
                return [], mismatch
            attempt += 1
            delay = self._jitter() * min(self.settings.max_delay, self.settings.base_delay * 2**attempt)
            out_of_time = deadline is not None and self._clock() + delay >= deadline
            if attempt >= self.settings.max_attempts or out_of_time:
                result.errors.append(
                    f"{len(failed)} of {len(todo)} records still failing after {attempt} attempts: {error}"
                )
                return failed, mismatch
            result.retries += len(failed)
            self._sleep(delay)
            todo = failed

    def _put(self, entries: list[_Entry], result: PublishResult) -> tuple[list[_Entry], str, bool]:
        """One PutRecords call: the entries that failed, why, and whether any record landed on
        a shard other than the predicted one (the stream was resharded)."""
        result.requests += 1
        try:
            response: Any = self._client.put_records(
                StreamName=self.stream_name, Records=[entry.request for entry in entries]
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in RETRYABLE_CALL_ERRORS:
                raise
            return entries, code, False
        except BotoCoreError as exc:  # connection reset, read timeout
            return entries, type(exc).__name__, False
        failed: list[_Entry] = []
        codes: set[str] = set()
        landed_elsewhere = False
        for entry, outcome in zip(entries, response["Records"], strict=True):
            code = outcome.get("ErrorCode")
            if code:
                failed.append(entry)
                codes.add(code)
                continue
            result.kinesis_records += 1
            if entry.shard_id is not None and outcome.get("ShardId") not in (None, entry.shard_id):
                landed_elsewhere = True
        return failed, ", ".join(sorted(codes)), landed_elsewhere


def _aggregate_entry(
    records: Sequence[UserRecord], aggregate: Aggregate, members: list[int], shard_id: str
) -> _Entry:
    first = records[members[0]]
    if aggregate.data is None:  # a lone record, plain
        return _Entry(
            {"Data": first.data, "PartitionKey": first.partition_key}, members, first.size, shard_id
        )
    request = {
        "Data": aggregate.data,
        "PartitionKey": first.partition_key,
        "ExplicitHashKey": str(first.hash_key),
    }
    return _Entry(request, members, len(aggregate.data) + len(first.partition_key.encode("utf-8")), shard_id)


def _requests(entries: list[_Entry]) -> Any:
    """Split a round into PutRecords requests within the count and size limits."""
    batch: list[_Entry] = []
    size = 0
    for entry in entries:
        if batch and (len(batch) == MAX_RECORDS_PER_REQUEST or size + entry.size > MAX_BYTES_PER_REQUEST):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.size
    if batch:
        yield batch
