"""Kinesis partition keys: ``{schema}.{table}|{canonical JSON of key}``.

All changes of one row share one partition key, so Kinesis keeps them on one shard, in
order. Keys over Kinesis's 256-character limit are hashed (still one per row).
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import orjson

MAX_PARTITION_KEY_CHARS = 256
HASH_KEY_SPACE = 2**128
_HASHED = "sha256:"


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text (not \\u-escaped). Non-integral numbers are their
    decimal text whether the bus writes them as strings or numbers, so the key is one per row."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=_decimal_text).decode("utf-8")
    except orjson.JSONEncodeError:  # integers beyond 64 bits
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_decimal_text
        )


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a key value")


def partition_key(schema: str, table: str, key: dict[str, Any]) -> str:
    return partition_key_with_prefix(f"{schema}.{table}|", key)


def partition_key_with_prefix(prefix: str, key: dict[str, Any]) -> str:
    """``prefix`` is ``"{schema}.{table}|"``: the glue computes it once per table."""
    candidate = prefix + canonical_json(key)
    if len(candidate) <= MAX_PARTITION_KEY_CHARS:
        return candidate
    digest = _HASHED + hashlib.sha256(candidate.encode("utf-8")).hexdigest()
    if len(prefix) + len(digest) <= MAX_PARTITION_KEY_CHARS:
        return prefix + digest
    return digest


def hash_key(partition_key: str) -> int:
    """The 128-bit hash Kinesis gives a partition key (MD5, big-endian)."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8"), usedforsecurity=False).digest(), "big")
