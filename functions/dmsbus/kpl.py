"""KPL aggregated records (the format of amazon-kinesis-producer's aggregation-format.md).

``MAGIC + protobuf(AggregatedRecord) + md5(protobuf)`` where an AggregatedRecord holds a
partition-key table (field 1) and the user records (field 3), each a partition-key index
(field 1) and data (field 3). We write the protobuf by hand: the message is this simple,
the size of every addition is known exactly before it is made, and it avoids building a
protobuf object per user record. The output is byte-identical to aws-kinesis-agg's
``AggRecord`` for the same input (tests/unit/test_kpl.py); consumers read it with
aws-kinesis-agg's deaggregator (:func:`unpack`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_kinesis_agg.deaggregator import iter_deaggregate_records

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
#: Bytes an aggregate adds around its protobuf body.
FRAMING = len(MAGIC) + DIGEST_SIZE

_PK_TABLE_TAG = b"\x0a"  # AggregatedRecord.partition_key_table = 1, length-delimited
_RECORD_TAG = b"\x1a"  # AggregatedRecord.records = 3, length-delimited
_PK_INDEX_TAG = b"\x08"  # Record.partition_key_index = 1, varint
_DATA_TAG = b"\x1a"  # Record.data = 3, length-delimited


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: Varints of every value below 2**14 (one or two bytes: most lengths and indexes), looked
#: up rather than computed on the hot path; about 0.5 MB.
_TABLE = 1 << 14
_VARINTS = [bytes((value,)) for value in range(128)] + [
    bytes(((value & 0x7F) | 0x80, value >> 7)) for value in range(128, _TABLE)
]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """``count`` consecutive user records packed as one Kinesis record: ``data`` is the
    aggregate, or None when ``count`` is 1 (a lone record goes plain, as the KPL sends it,
    readable by any consumer)."""

    count: int
    data: bytes | None


def pack(partition_keys: Sequence[str], datas: Sequence[bytes], max_bytes: int) -> list[Aggregate]:
    """Pack user records, in order, into as few aggregates as fit: each at most ``max_bytes``
    of data plus its partition key (the first record's; the Kinesis record limit counts both).
    A record too large to share an aggregate goes on its own."""
    out: list[Aggregate] = []
    small = _VARINTS
    count = len(partition_keys)
    position = 0
    while position < count:
        start = position
        limit = max_bytes - FRAMING - len(partition_keys[start].encode("utf-8"))
        index: dict[str, int] = {}
        pk_parts: list[bytes] = []
        record_parts: list[bytes] = []
        size = 0
        # The hot loop: one call per aggregate, not per record; every part's size is known
        # before it is added, so nothing is encoded twice.
        while position < count:
            partition_key = partition_keys[position]
            data = datas[position]
            number = index.get(partition_key)
            if number is None:
                number = len(index)
                pk_bytes = partition_key.encode("utf-8")
                size_pk = len(pk_bytes)
                pk_entry = (
                    _PK_TABLE_TAG + (small[size_pk] if size_pk < _TABLE else varint(size_pk)) + pk_bytes
                )
            else:
                pk_entry = b""
            data_len = len(data)
            inner = (
                _PK_INDEX_TAG
                + (small[number] if number < _TABLE else varint(number))
                + _DATA_TAG
                + (small[data_len] if data_len < _TABLE else varint(data_len))
            )
            record_len = len(inner) + data_len
            head = _RECORD_TAG + (small[record_len] if record_len < _TABLE else varint(record_len)) + inner
            added = len(pk_entry) + len(head) + data_len
            if size + added > limit and position > start:
                break
            if pk_entry:
                index[partition_key] = number
                pk_parts.append(pk_entry)
            record_parts.append(head)
            record_parts.append(data)
            size += added
            position += 1
        if position - start == 1:
            out.append(Aggregate(1, None))
            continue
        pk_parts += record_parts  # one join: the body can be a megabyte
        body = b"".join(pk_parts)
        out.append(
            Aggregate(
                position - start, b"".join((MAGIC, body, hashlib.md5(body, usedforsecurity=False).digest()))
            )
        )
    return out


def unpack(records: Iterable[Mapping[str, Any]]) -> Iterator[tuple[Mapping[str, Any], bytes]]:
    """Lambda's Kinesis records (aggregated or plain), record by record and user record by
    user record: each user record's ``kinesis`` part (partition key, sequence and
    sub-sequence numbers) and its data, decoded. aws-kinesis-agg's deaggregator reads them."""
    for user_record in iter_deaggregate_records([dict(record) for record in records]):
        kinesis = user_record["kinesis"]
        yield kinesis, base64.b64decode(kinesis["data"])
