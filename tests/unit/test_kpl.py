from __future__ import annotations

import base64
import random

from aws_kinesis_agg.aggregator import AggRecord
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from dmsbus.kpl import Aggregate, pack, varint


def _records(count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        pk = f'public.orders|{{"id":{rng.randint(1, 40)}}}'  # repeats: the pk table dedups
        out.append((pk, rng.randbytes(rng.choice([0, 1, 127, 128, 300, 20000]))))
    return out


def _deaggregate(partition_key: str, data: bytes) -> list[tuple[str, bytes]]:
    kinesis = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "sequenceNumber": "1",
            "approximateArrivalTimestamp": 0,
            "partitionKey": partition_key,
            "data": base64.b64encode(data).decode(),
        }
    }
    return [
        (user["kinesis"]["partitionKey"], base64.b64decode(user["kinesis"]["data"]))
        for user in iter_deaggregate_records([kinesis])
    ]


def test_encoding_is_byte_identical_to_aws_kinesis_agg() -> None:
    # Given user records with repeated partition keys and sizes across varint boundaries
    records = _records(200)
    theirs = AggRecord(10 * 1024 * 1024)
    for pk, data in records:
        theirs.add_user_record(pk, data)
    # When we pack them under a limit they all fit in
    (aggregate,) = pack([pk for pk, _ in records], [data for _, data in records], 10 * 1024 * 1024)
    # Then it is one aggregate of them all, byte for byte what aws-kinesis-agg writes
    assert aggregate.count == 200
    assert aggregate.data == theirs.get_contents()[2]


def test_deaggregation_gives_back_every_record_in_order_across_aggregates() -> None:
    # Given more records than one aggregate of 30,000 bytes holds
    records = _records(60)
    # When packed
    aggregates = pack([pk for pk, _ in records], [data for _, data in records], 30_000)
    # Then aws-kinesis-agg's deaggregator (or a lone record read plain) gives every record back, in order
    assert len(aggregates) > 2
    got, position = [], 0
    for aggregate in aggregates:
        first_pk = records[position][0]
        if aggregate.data is None:
            got.append(records[position])
        else:
            got += _deaggregate(first_pk, aggregate.data)
        position += aggregate.count
    assert got == records


def test_every_aggregate_is_within_the_limit_and_as_full_as_it_can_be() -> None:
    # Given a limit of 2,000 bytes (data plus the aggregate's partition key)
    records = [(pk, data[:150]) for pk, data in _records(100, seed=3)]
    # When packed
    aggregates = pack([pk for pk, _ in records], [data for _, data in records], 2000)
    # Then each aggregate fits with its partition key, and the next record would not have fitted
    position = 0
    for aggregate in aggregates:
        first_pk = records[position][0]
        position += aggregate.count
        assert aggregate.data is not None
        assert len(aggregate.data) + len(first_pk.encode()) <= 2000
        if position < len(records):
            theirs = AggRecord(10**9)
            for pk, data in records[position - aggregate.count : position + 1]:
                theirs.add_user_record(pk, data)
            assert len(theirs.get_contents()[2]) + len(first_pk.encode()) > 2000
    assert position == len(records)


def test_a_record_too_large_to_share_goes_alone_and_plain() -> None:
    # Given a small record, one larger than the limit, and another small one
    pks, datas = ["a|1", "a|2", "a|3"], [b"x" * 10, b"y" * 5000, b"z" * 10]
    # When packed under 1,000 bytes
    aggregates = pack(pks, datas, 1000)
    # Then each goes on its own, as a plain record (no aggregate of one)
    assert aggregates == [Aggregate(1, None), Aggregate(1, None), Aggregate(1, None)]


def test_varint_matches_protobuf_encoding() -> None:
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(300) == b"\xac\x02"
    assert varint(16384) == b"\x80\x80\x01"
