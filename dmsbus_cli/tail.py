"""``dmsbus tail``: the bus stream's change events, decoded and deaggregated, one JSON per
line, as ``kcat -C`` prints a Kafka topic.

Every shard of the bus stream is read from ``--from`` (``trim-horizon``, the default;
``latest``; or an ISO-8601 time: Kinesis's AT_TIMESTAMP). Without ``--follow`` it stops
once every shard is read up to its tip; with it, it waits for more until Ctrl-C.
``--table`` (``schema.table`` patterns, ``*`` wildcards, comma-separated) and ``--op``
(``c,u,d,r,s``) filter. Each row's events come in order: a row is always on one shard.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from botocore.exceptions import BotoCoreError, ClientError

from config.functions import stream_name
from dmsbus.envelope import ChangeEvent, EnvelopeError, Op
from dmsbus.kpl import unpack
from dmsbus_cli.connect import add_arguments, connect

#: Records per GetRecords call; the least time between two reads of a shard (a shard
#: serves 5 reads a second, shared with the consumers' mappings, which read once a
#: second each); the pause when every shard is at its tip, and after a throttled read.
READ_LIMIT = 1000
READ_INTERVAL = 1.0
IDLE_SECONDS = 1.0
THROTTLED_SECONDS = 2.0
#: The envelope's ops, in its order (``s``: a schema change, one copy per shard).
OPS: tuple[str, ...] = get_args(Op)


class TailError(RuntimeError):
    """A record of the bus stream that is not a change event; the message names it."""


@dataclass(frozen=True)
class Filter:
    tables: tuple[str, ...] | None = None
    ops: frozenset[str] | None = None

    def wants(self, event: ChangeEvent) -> bool:
        if self.ops is not None and event.op not in self.ops:
            return False
        return self.tables is None or any(fnmatch.fnmatchcase(event.qualified_table, p) for p in self.tables)


def start_position(text: str) -> dict[str, Any]:
    """``--from``'s value as GetShardIterator's arguments."""
    if text == "trim-horizon":
        return {"ShardIteratorType": "TRIM_HORIZON"}
    if text == "latest":
        return {"ShardIteratorType": "LATEST"}
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not trim-horizon, latest or an ISO time like 2026-11-30T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; give UTC like 2026-11-30T10:00:00Z")
    return {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": moment}


def tail(
    kinesis: Any,
    stream: str,
    *,
    start: dict[str, Any],
    selection: Filter = Filter(),
    follow: bool = False,
    stopped: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    read_interval: float = READ_INTERVAL,
) -> Iterator[bytes]:
    """Each wanted change event's JSON, as the bus carries it. A shard is read only once
    its parents are read to their end (a row's records move to a child shard when the
    stream reshards), and at most once every ``read_interval`` seconds: a shard serves 5
    reads a second, shared with every consumer's mapping. Shards are listed again when one
    ends, so a reshard during ``follow`` is followed."""
    shards = _shards(kinesis, stream)
    listed_first = set(shards)
    finished: set[str] = set()
    iterators: dict[str, str] = {}
    next_read: dict[str, float] = {}
    caught_up: set[str] = set()
    while not stopped():
        for shard_id, shard in shards.items():
            if shard_id in iterators or shard_id in finished:
                continue
            parents = {shard.get("ParentShardId"), shard.get("AdjacentParentShardId")} & set(shards)
            if parents <= finished:
                # Listed at the start: from --from (Kinesis clamps a time to the shard's own
                # start). Made during the tail: from its start, after its parents' records.
                position = start if shard_id in listed_first else {"ShardIteratorType": "TRIM_HORIZON"}
                response = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, **position)
                iterators[shard_id] = response["ShardIterator"]
        if not iterators:
            if not follow:
                return
            sleep(IDLE_SECONDS)
            shards = {**_shards(kinesis, stream), **shards}
            continue
        idle = True
        for shard_id, iterator in list(iterators.items()):
            if clock() < next_read.get(shard_id, 0.0):
                continue
            try:
                response = kinesis.get_records(ShardIterator=iterator, Limit=READ_LIMIT)
            except kinesis.exceptions.ProvisionedThroughputExceededException:
                next_read[shard_id] = clock() + THROTTLED_SECONDS
                continue
            next_read[shard_id] = clock() + read_interval
            records = response.get("Records", [])
            following = response.get("NextShardIterator")
            closed = "EndingSequenceNumber" in shards[shard_id].get("SequenceNumberRange", {})
            at_tip = not records and int(response.get("MillisBehindLatest", 0)) == 0
            # Kinesis ends a closed shard with no NextShardIterator; an empty read at the
            # tip of a closed shard says the same.
            if following is None or (closed and at_tip):
                del iterators[shard_id]
                finished.add(shard_id)
                shards = {**_shards(kinesis, stream), **shards}  # its children, if made since
            else:
                iterators[shard_id] = following
            if records:
                idle = False
                caught_up.discard(shard_id)
            elif at_tip:
                caught_up.add(shard_id)
            yield from _events(records, shard_id, selection)
        if not follow and all(shard in caught_up for shard in iterators):
            pending = [s for s in shards if s not in finished and s not in iterators]
            if not pending:
                return
        sleep(IDLE_SECONDS if idle else min(0.05, read_interval))


def _shards(kinesis: Any, stream: str) -> dict[str, dict[str, Any]]:
    shards: dict[str, dict[str, Any]] = {}
    token: str | None = None
    while True:
        # ListShards takes the stream's name or a NextToken, not both.
        page = kinesis.list_shards(**({"NextToken": token} if token else {"StreamName": stream}))
        shards.update({shard["ShardId"]: shard for shard in page["Shards"]})
        token = page.get("NextToken")
        if not token:
            return shards


def _events(records: list[dict[str, Any]], shard_id: str, selection: Filter) -> Iterator[bytes]:
    # As Lambda delivers them: the deaggregator then gives every user record base64 data.
    lambda_shaped = [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "sequenceNumber": record["SequenceNumber"],
                "partitionKey": record["PartitionKey"],
                "approximateArrivalTimestamp": 0,
                "data": base64.b64encode(record["Data"]).decode("ascii"),
            }
        }
        for record in records
    ]
    for kinesis, data in unpack(lambda_shaped):
        try:
            event = ChangeEvent.from_json(data)
        except EnvelopeError as exc:
            raise TailError(
                f"{shard_id} record {kinesis['sequenceNumber']} "
                f"(sub-sequence {kinesis.get('subSequenceNumber', 0)}): {exc}"
            ) from exc
        if selection.wants(event):
            yield data


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "tail",
        help="print the bus stream's change events, one JSON per line",
        description=__doc__.split("\n\n")[1],
    )
    add_arguments(command, repository)
    command.add_argument("--table", help="schema.table patterns, comma-separated (default: all)")
    command.add_argument("--op", help="c,u,d,r,s (default: all)")
    command.add_argument(
        "--from",
        dest="start",
        type=start_position,
        default=start_position("trim-horizon"),
        metavar="TIMESTAMP|latest|trim-horizon",
        help="where to start reading each shard (default trim-horizon)",
    )
    command.add_argument("--follow", "-f", action="store_true", help="wait for more until Ctrl-C")
    command.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    ops = None
    if arguments.op:
        ops = frozenset(op.strip() for op in arguments.op.split(",") if op.strip())
        unknown = sorted(ops - set(OPS))
        if unknown:
            print(f"tail: --op {','.join(unknown)}: not one of {','.join(OPS)}", file=sys.stderr)
            return 2
    tables = tuple(t.strip() for t in arguments.table.split(",") if t.strip()) if arguments.table else None
    bus = connect(arguments, "tail")
    if bus is None:
        return 2
    selection = Filter(tables=tables, ops=ops)
    output = sys.stdout.buffer
    try:
        for data in tail(
            bus.client("kinesis"),
            stream_name(bus.bus),
            start=arguments.start,
            selection=selection,
            follow=arguments.follow,
        ):
            output.write(data + b"\n")
            output.flush()
    except TailError as exc:
        print(f"tail: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"tail: {stream_name(bus.bus)}: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    return 0
