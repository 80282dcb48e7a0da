"""KPL aggregated records (the format of amazon-kinesis-producer's aggregation-format.md).

``MAGIC + protobuf(AggregatedRecord) + md5(protobuf)`` where an AggregatedRecord holds a
partition-key table (field 1) and the user records (field 3), each a partition-key index
(field 1) and data (field 3). We write the protobuf by hand: the message is this simple,
the size of every addition is known exactly before it is made, and it avoids building a
protobuf object per user record. The output is byte-identical to aws-kinesis-agg's
``AggRecord`` for the same input (tests/unit/test_kpl.py); consumers read it with
aws-kinesis-agg's deaggregator.
"""

from __future__ import annotations

import hashlib

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
#: Bytes an aggregate adds around its protobuf body.
FRAMING = len(MAGIC) + DIGEST_SIZE

_PK_TABLE_TAG = b"\x0a"  # AggregatedRecord.partition_key_table = 1, length-delimited
_RECORD_TAG = b"\x1a"  # AggregatedRecord.records = 3, length-delimited
_PK_INDEX_TAG = b"\x08"  # Record.partition_key_index = 1, varint
_DATA_TAG = b"\x1a"  # Record.data = 3, length-delimited

_SMALL_VARINTS = [bytes((n,)) for n in range(128)]


def varint(value: int) -> bytes:
    if value < 128:
        return _SMALL_VARINTS[value]
    if value < 16384:  # most record sizes: two bytes
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class AggregateBuilder:
    """Collects user records into one aggregated Kinesis record of at most ``max_bytes``
    (data plus the aggregate's partition key, which is the first record's: the Kinesis
    record limit counts both)."""

    __slots__ = ("_body_limit", "_body_size", "_pk_index", "_pk_parts", "_record_parts", "count")

    def __init__(self, first_partition_key: str, max_bytes: int) -> None:
        self._body_limit = max_bytes - FRAMING - len(first_partition_key.encode("utf-8"))
        self._body_size = 0
        self._pk_index: dict[str, int] = {}
        self._pk_parts: list[bytes] = []
        self._record_parts: list[bytes] = []
        self.count = 0

    @property
    def size(self) -> int:
        """Bytes of the encoded aggregate (without the Kinesis partition key)."""
        return FRAMING + self._body_size

    def add(self, partition_key: str, data: bytes) -> bool:
        """Add a user record if it fits; False (and nothing added) when it does not."""
        index = self._pk_index.get(partition_key)
        pk_entry = b""
        if index is None:
            index = len(self._pk_index)
            pk_bytes = partition_key.encode("utf-8")
            pk_entry = _PK_TABLE_TAG + varint(len(pk_bytes)) + pk_bytes
        data_len = len(data)
        inner_head = _PK_INDEX_TAG + varint(index) + _DATA_TAG + varint(data_len)
        head = _RECORD_TAG + varint(len(inner_head) + data_len) + inner_head
        added = len(pk_entry) + len(head) + data_len
        if self._body_size + added > self._body_limit:
            return False
        if pk_entry:
            self._pk_index[partition_key] = index
            self._pk_parts.append(pk_entry)
        self._record_parts.append(head)
        self._record_parts.append(data)
        self._body_size += added
        self.count += 1
        return True

    def encode(self) -> bytes:
        self._pk_parts.extend(self._record_parts)  # one join: the body can be a megabyte
        body = b"".join(self._pk_parts)
        del self._pk_parts[len(self._pk_index) :]
        return b"".join((MAGIC, body, hashlib.md5(body, usedforsecurity=False).digest()))
