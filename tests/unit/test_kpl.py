from __future__ import annotations

import base64
import random

from aws_kinesis_agg.aggregator import AggRecord
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from dmsbus.kpl import AggregateBuilder, varint


def _records(count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        pk = f'public.orders|{{"id":{rng.randint(1, 40)}}}'  # repeats: the pk table dedups
        out.append((pk, rng.randbytes(rng.choice([0, 1, 127, 128, 300, 20000]))))
    return out


def test_encoding_is_byte_identical_to_aws_kinesis_agg() -> None:
    # Given user records with repeated partition keys and sizes across varint boundaries
    records = _records(200)
    ours = AggregateBuilder(records[0][0], 10 * 1024 * 1024)
    theirs = AggRecord(10 * 1024 * 1024)
    # When both aggregate them
    for pk, data in records:
        assert ours.add(pk, data)
        theirs.add_user_record(pk, data)
    # Then the bytes are the same
    assert ours.encode() == theirs.get_contents()[2]


def test_deaggregation_gives_back_every_record_in_order() -> None:
    records = _records(50)
    builder = AggregateBuilder(records[0][0], 10 * 1024 * 1024)
    for pk, data in records:
        builder.add(pk, data)
    kinesis = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "sequenceNumber": "1",
            "approximateArrivalTimestamp": 0,
            "partitionKey": records[0][0],
            "data": base64.b64encode(builder.encode()).decode(),
        }
    }
    users = list(iter_deaggregate_records([kinesis]))
    assert [(u["kinesis"]["partitionKey"], base64.b64decode(u["kinesis"]["data"])) for u in users] == records


def test_size_is_exact_and_the_limit_holds() -> None:
    # Given a limit of 2,000 bytes (data plus the aggregate's partition key)
    records = _records(100, seed=3)
    first_pk = records[0][0]
    builder = AggregateBuilder(first_pk, 2000)
    # When records are added until one does not fit
    for pk, data in records:
        if not builder.add(pk, data[:150]):
            break
    # Then the predicted size is the encoded size, within the limit
    encoded = builder.encode()
    assert builder.size == len(encoded)
    assert len(encoded) + len(first_pk.encode()) <= 2000
    assert builder.count > 1


def test_varint_matches_protobuf_encoding() -> None:
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(300) == b"\xac\x02"
    assert varint(16384) == b"\x80\x80\x01"
