"""Glue throughput against a naive glue and the floor (see ../shared/BENCHMARKS.md).

Input: a Lambda DynamoDB Streams event, already parsed, of 1,000 MODIFY records with ~10
attributes per image of mixed types, ~1.1 KB of DynamoDB JSON each, built from a fixed seed,
then written as JSON and read back with json.loads, as the Lambda runtime hands it over (its
objects laid out in memory as the runtime's parse lays them out, not as the generator left them).
- naive: boto3 TypeDeserializer on Keys/OldImage/NewImage + json.dumps(envelope, default=str);
- floor: orjson.dumps(record["dynamodb"]), the cost of touching the content once;
- ours:  glue.core.process_batch, the real path to the bytes handed to PutRecords (decode,
         envelope, partition keys, shard-aware aggregation), with a Kinesis client that
         only collects the requests. It uses the compiled decoder (native/ddbjson.c) as the
         Lambda layer does; ours_pure_python is the same path without it, for reference.
Then Kinesis records and 25 KB PUT payload units for 1,000,000 changes of ~500 bytes.

Usage: python bench/glue_bench.py [--repeats N] [--quick]
The last line is: glue_bench: ours=<rec/s> naive=<rec/s> floor=<rec/s> vs_naive=<x> vs_floor=<x>
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import string
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import orjson
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from dmsbus.changes import ChangeBuilder, UserRecord
from dmsbus.ddbjson import NATIVE
from dmsbus.partition import hash_key
from dmsbus.publisher import KinesisPublisher, PublisherSettings
from dmsbus.schemas import Column, TableSchema
from dmsbus.typed import ImageTyper
from glue.core import process_batch

BUS = "bench"
TABLE = f"{BUS}.legacy.public.orders"
ARN = f"arn:aws:dynamodb:us-east-1:000000000000:table/{TABLE}/stream/2026-01-01T00:00:00.000"
PUT_PAYLOAD_UNIT = 25 * 1024
SEED = 20261122


class CollectingKinesis:
    """Stands in for the Kinesis client: four shards, collects every PutRecords request."""

    def __init__(self, shards: int = 4) -> None:
        step = 2**128 // shards
        self._shards = [
            {
                "ShardId": f"shardId-{index:012d}",
                "HashKeyRange": {
                    "StartingHashKey": str(index * step),
                    "EndingHashKey": str(2**128 - 1 if index == shards - 1 else (index + 1) * step - 1),
                },
                "SequenceNumberRange": {"StartingSequenceNumber": "0"},
            }
            for index in range(shards)
        ]
        self.requests: list[list[dict[str, Any]]] = []

    def list_shards(self, **_: Any) -> dict[str, Any]:
        return {"Shards": self._shards}

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.requests.append(Records)
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1"} for _ in Records]}


def _image(rng: random.Random, order_id: int) -> dict[str, Any]:
    """A legacy order row as DMS writes it: 10 attributes of mixed types, short values."""
    word = lambda: "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9)))  # noqa: E731
    return {
        "id": order_id,
        "customer_id": rng.randint(1, 10**7),
        "status": rng.choice(["new", "paid", "shipped", "cancelled"]),
        "total": Decimal(f"{rng.randint(1, 99999)}.{rng.randint(1, 99):02d}"),
        "created_at": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
        "express": rng.random() < 0.3,
        "coupon": None,
        "shipping": {
            "street": f"{rng.randint(1, 999)} {word().title()} St",
            "city": word().title(),
            "zip": f"{rng.randint(10000, 99999)}",
            "country": "US",
        },
        "lines": [
            {
                "sku": f"SKU-{rng.randint(1000, 9999)}",
                "qty": rng.randint(1, 5),
                "price": Decimal(f"{rng.randint(1, 999)}.{rng.randint(1, 99):02d}"),
            }
            for _ in range(2)
        ],
        "tags": {word() for _ in range(2)},
    }


def _ddb_image(image: dict[str, Any]) -> dict[str, Any]:
    serializer = TypeSerializer()
    return {name: serializer.serialize(value) for name, value in image.items()}


def make_event(count: int = 1000, seed: int = SEED) -> dict[str, Any]:
    """The Lambda event of ``count`` MODIFY records, deterministic for a seed."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        order_id = rng.randint(1, 10**9)
        old, new = _image(rng, order_id), _image(rng, order_id)
        records.append(
            {
                "eventID": f"{index:032x}",
                "eventName": "MODIFY",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1_763_800_000 + index,
                    "Keys": {"id": {"N": str(order_id)}},
                    "OldImage": _ddb_image(old),
                    "NewImage": _ddb_image(new),
                    "SequenceNumber": f"{10**20 + index:024d}",
                    "SizeBytes": 1100,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
                "eventSourceARN": ARN,
            }
        )
    # The runtime's own parse: the handler gets what json.loads makes of the payload.
    return cast(dict[str, Any], json.loads(json.dumps({"Records": records})))


def naive(event: dict[str, Any]) -> list[bytes]:
    deserializer = TypeDeserializer()
    out = []
    for record in event["Records"]:
        ddb = record["dynamodb"]
        envelope = {
            "v": 1,
            "id": f"{TABLE}/{ddb['SequenceNumber']}",
            "op": "u",
            "ts_ms": int(ddb["ApproximateCreationDateTime"] * 1000),
            "source": {"bus": BUS, "source": "legacy", "schema": "public", "table": "orders"},
            "key": {k: deserializer.deserialize(v) for k, v in ddb["Keys"].items()},
            "before": {k: deserializer.deserialize(v) for k, v in ddb["OldImage"].items()},
            "after": {k: deserializer.deserialize(v) for k, v in ddb["NewImage"].items()},
        }
        out.append(json.dumps(envelope, default=str).encode("utf-8"))
    return out


def floor(event: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(record["dynamodb"]) for record in event["Records"]]


def dms_shaped(event: dict[str, Any]) -> dict[str, Any]:
    """The same records as DMS writes them to DynamoDB (docs/dms.md): booleans as
    "true"/"false", timestamps as UTC text without an offset, JSON and arrays as their
    text, NULLs left out. The typing line times the glue on these with and without types."""
    deserializer, serializer = TypeDeserializer(), TypeSerializer()

    def image(ddb_image: dict[str, Any]) -> dict[str, Any]:
        row = {name: deserializer.deserialize(value) for name, value in ddb_image.items()}
        shaped = {
            "id": row["id"],
            "customer_id": row["customer_id"],
            "status": row["status"],
            "total": row["total"],
            "created_at": row["created_at"].replace("T", " ").replace("Z", ".000000"),
            "express": "true" if row["express"] else "false",
            "shipping": json.dumps(row["shipping"]),
            "lines": json.dumps(row["lines"], default=str),
            "tags": "{" + ",".join(sorted(row["tags"])) + "}",
        }
        return {name: serializer.serialize(value) for name, value in shaped.items()}

    records = []
    for record in event["Records"]:
        ddb = dict(record["dynamodb"])
        ddb["OldImage"], ddb["NewImage"] = image(ddb["OldImage"]), image(ddb["NewImage"])
        records.append({**record, "dynamodb": ddb})
    return cast(dict[str, Any], json.loads(json.dumps({"Records": records})))


#: The bench table's schema, as the schema function reads it from PostgreSQL.
ORDERS_SCHEMA = TableSchema(
    source="legacy",
    schema="public",
    table="orders",
    version=1,
    columns=tuple(
        Column(name=name, type=type_, base=base, nullable=name != "id", key=1 if name == "id" else None)
        for name, type_, base in (
            ("id", "bigint", "int8"),
            ("customer_id", "bigint", "int8"),
            ("status", "text", "text"),
            ("total", "numeric(7,2)", "numeric"),
            ("created_at", "timestamp with time zone", "timestamptz"),
            ("express", "boolean", "bool"),
            ("coupon", "text", "text"),
            ("shipping", "jsonb", "jsonb"),
            ("lines", "jsonb", "jsonb"),
            ("tags", "text[]", "_text"),
        )
    ),
)


class OneSchema:
    """The schema source of the typed line: the bench table's schema, already read."""

    def __init__(self, schema: TableSchema) -> None:
        self._typer = ImageTyper(schema)

    def typer(self, name: Any) -> ImageTyper:
        return self._typer

    def refreshed(self, name: Any, held: Any, error: Any) -> ImageTyper:
        raise RuntimeError(f"the bench schema does not type the bench's rows: {error}")

    def begin(self, deadline: float | None = None) -> None:
        pass


def make_ours(
    aggregate: bool = True, native: bool | None = None, typed: bool = False
) -> Callable[[dict[str, Any]], list[list[dict[str, Any]]]]:
    builder = ChangeBuilder(BUS, native=native, schemas=OneSchema(ORDERS_SCHEMA) if typed else None)
    client = CollectingKinesis()
    publisher = KinesisPublisher(client, "bench-stream", settings=PublisherSettings(aggregate=aggregate))  # type: ignore[arg-type]

    def ours(event: dict[str, Any]) -> list[list[dict[str, Any]]]:
        client.requests = []
        outcome = process_batch(event["Records"], builder=builder, publisher=publisher, dead_letters=None)
        if outcome.failed:
            raise RuntimeError("the bench glue failed records")
        return client.requests

    return ours


def measure(
    functions: dict[str, Callable[[dict[str, Any]], Any]], event: dict[str, Any], repeats: int
) -> dict[str, float]:
    """Median seconds per call of each function, after a warm-up, with the GC out of the timed
    region. The functions take turns within each repeat, so a slow spell of this shared
    machine slows all of them alike and the ratios hold."""
    for function in functions.values():
        for _ in range(3):
            function(event)
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            gc.collect()
            gc.disable()
            start = time.perf_counter()
            function(event)
            times[name].append(time.perf_counter() - start)
            gc.enable()
    return {name: statistics.median(values) for name, values in times.items()}


def units(size: int) -> int:
    return max(1, math.ceil(size / PUT_PAYLOAD_UNIT))


def payload_units(changes: int, change_bytes: int, batch: int, shards: int) -> dict[str, float]:
    """Kinesis records and PUT payload units for ``changes`` of ~``change_bytes`` each, put by
    the glue's real aggregation in Lambda batches of ``batch`` on ``shards`` shards."""
    rng = random.Random(SEED)
    client = CollectingKinesis(shards)
    publisher = KinesisPublisher(client, "units", settings=PublisherSettings())  # type: ignore[arg-type]
    filler = "x" * change_bytes
    plain_records = plain_units = aggregated_records = aggregated_units = total = 0
    template = bytearray(filler.encode())
    for start in range(0, changes, batch):
        client.requests = []
        records = []
        for index in range(min(batch, changes - start)):
            pk = f'public.orders|{{"id":{rng.randint(1, 10**9)}}}'
            data = bytes(template[: change_bytes - len(pk)])
            record = UserRecord(data, pk, hash_key(pk), index)
            records.append(record)
            total += record.size
            plain_records += 1
            plain_units += units(record.size)
        result = publisher.publish(records)
        assert result.failed_from is None
        for request in client.requests:
            for entry in request:
                aggregated_records += 1
                aggregated_units += units(len(entry["Data"]) + len(entry["PartitionKey"].encode()))
    ideal = total / PUT_PAYLOAD_UNIT
    return {
        "plain_records": plain_records,
        "plain_units": plain_units,
        "aggregated_records": aggregated_records,
        "aggregated_units": aggregated_units,
        "ideal_units": ideal,
        "ratio": aggregated_units / ideal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="few repeats and 100,000 changes for units")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else args.repeats
    unit_changes = 100_000 if args.quick else 1_000_000

    event = make_event()
    sizes = [len(orjson.dumps(record["dynamodb"])) for record in event["Records"]]
    count = len(event["Records"])
    print(f"input: {count} MODIFY records, {statistics.mean(sizes):.0f} bytes of DynamoDB JSON each (mean)")
    print(
        f"decoder: {'compiled (native/ddbjson.c)' if NATIVE else 'pure Python: native/ddbjson.c is not built'}"
    )
    seconds = measure(
        {
            "naive": naive,
            "floor": floor,
            "ours": make_ours(),
            "ours_plain": make_ours(aggregate=False),
            "ours_pure_python": make_ours(native=False),
        },
        event,
        repeats,
    )
    rate = {name: count / value for name, value in seconds.items()}
    for name, value in seconds.items():
        print(f"{name:>16}: {value * 1000:8.2f} ms per {count} records, {rate[name]:>10,.0f} rec/s")

    # Typing (docs/envelope.md, "Typed values") on the same records as DMS writes them
    shaped = dms_shaped(event)
    check = make_ours(typed=True)(shaped)
    if not check:
        raise RuntimeError("the typed glue published nothing")
    typing = measure({"untyped": make_ours(), "typed": make_ours(typed=True)}, shaped, repeats)
    cost = typing["typed"] / typing["untyped"] - 1
    print(
        f"glue_bench typing: untyped={count / typing['untyped']:.0f} typed={count / typing['typed']:.0f} "
        f"rec/s on DMS-shaped records; typing costs {cost:.1%} of the glue's time (target < 30%)"
    )

    print(f"\nKinesis cost of {unit_changes:,} changes of ~500 bytes (25 KB PUT payload units):")
    for batch in (1000, 5000):  # 5,000: the glue's default batch size (config/model.py)
        for shards in (1, 4):
            figures = payload_units(unit_changes, 500, batch, shards)
            print(
                f"  glue batches of {batch:>5}, {shards} shards: plain {figures['plain_records']:,} records "
                f"{figures['plain_units']:,} units; aggregated {figures['aggregated_records']:,} records "
                f"{figures['aggregated_units']:,} units = {figures['ratio']:.3f} x total bytes / 25 KB"
            )
    print(
        f"glue_bench: ours={rate['ours']:.0f} naive={rate['naive']:.0f} floor={rate['floor']:.0f} "
        f"vs_naive={rate['ours'] / rate['naive']:.2f} vs_floor={rate['ours'] / rate['floor']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
