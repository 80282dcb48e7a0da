"""Which Kinesis shard a hash key goes to: the open shards' hash ranges, cached.

The glue aggregates only records bound for the same shard (as the KPL does), so it needs
the ranges. They come from ListShards, are cached for ``ttl`` seconds and are refreshed at
once when a put lands on a shard other than the one predicted (the stream was resharded).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_kinesis.client import KinesisClient


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    start: int  # StartingHashKey
    end: int  # EndingHashKey, inclusive


class ShardMap:
    """The open shards of a stream, looked up by 128-bit hash key."""

    def __init__(self, shards: Iterable[Shard]) -> None:
        self.shards = sorted(shards, key=lambda shard: shard.start)
        if not self.shards:
            raise LookupError("the stream has no open shard")
        self._starts = [shard.start for shard in self.shards]

    def shard_for(self, hash_key: int) -> Shard:
        index = bisect_right(self._starts, hash_key) - 1
        if index >= 0:
            shard = self.shards[index]
            if hash_key <= shard.end:
                return shard
        raise LookupError(f"no open shard covers hash key {hash_key}")

    @classmethod
    def from_list_shards(cls, shards: Iterable[dict[str, Any]]) -> ShardMap:
        return cls(
            Shard(
                shard["ShardId"],
                int(shard["HashKeyRange"]["StartingHashKey"]),
                int(shard["HashKeyRange"]["EndingHashKey"]),
            )
            for shard in shards
            # A closed shard (split or merged away) has an ending sequence number.
            if "EndingSequenceNumber" not in shard["SequenceNumberRange"]
        )


class ShardCache:
    def __init__(
        self,
        client: KinesisClient,
        stream_name: str,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._stream_name = stream_name
        self._ttl = ttl
        self._clock = clock
        self._map: ShardMap | None = None
        self._loaded_at = 0.0
        self.loads = 0

    def current(self) -> ShardMap:
        if self._map is None or self._clock() - self._loaded_at > self._ttl:
            self._map = self._load()
            self._loaded_at = self._clock()
        return self._map

    def invalidate(self) -> None:
        self._map = None

    def _load(self) -> ShardMap:
        shards: list[dict[str, Any]] = []
        response: Any = self._client.list_shards(StreamName=self._stream_name)
        while True:
            shards.extend(response["Shards"])
            token = response.get("NextToken")
            if not token:
                break
            response = self._client.list_shards(NextToken=token)
        self.loads += 1
        return ShardMap.from_list_shards(shards)
