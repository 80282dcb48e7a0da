from __future__ import annotations

import hashlib

import pytest

from dmsbus.names import TableName, TableNameError, bus_table, parse_table_name, table_from_stream_arn
from dmsbus.partition import MAX_PARTITION_KEY_CHARS, hash_key, partition_key


def test_parses_a_table_name() -> None:
    assert parse_table_name("demo.legacy.public.orders") == TableName("demo", "legacy", "public", "orders")


def test_parses_a_versioned_table_name() -> None:
    name = parse_table_name("demo.legacy.public.orders.v2")
    assert name.version == "v2"
    assert name.dynamodb_table == "demo.legacy.public.orders.v2"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("demo.legacy.orders", "has 3 dot-separated parts"),
        ("a.b.c.d.e.f", "has 6 dot-separated parts"),
        ("demo.legacy.public.or ders", "table 'or ders' is not an identifier"),
        ("demo..public.orders", "source '' is not an identifier"),
    ],
)
def test_bad_names_get_errors_that_say_what_is_wrong(name: str, message: str) -> None:
    with pytest.raises(TableNameError, match=message):
        parse_table_name(name)


@pytest.mark.parametrize(
    "name",
    ["awsdms_apply_exceptions", "other.legacy.public.orders", "demo", "demo.x", "demox.legacy.public.orders"],
)
def test_tables_outside_the_bus_prefix_are_not_the_bus_s(name: str) -> None:
    assert bus_table(name, "demo") is None


def test_table_from_stream_arn() -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/demo.legacy.public.orders/stream/2026-11-01T00:00:00.000"
    assert table_from_stream_arn(arn) == "demo.legacy.public.orders"


def test_partition_key_is_schema_table_and_canonical_key() -> None:
    # Given a composite key in any attribute order
    # When the partition key is made
    # Then keys are sorted, no spaces, unicode unescaped
    assert (
        partition_key("public", "lines", {"order_id": 7, "sku": "Ä-1"})
        == 'public.lines|{"order_id":7,"sku":"Ä-1"}'
    )
    assert (
        partition_key("public", "lines", {"sku": "Ä-1", "order_id": 7})
        == 'public.lines|{"order_id":7,"sku":"Ä-1"}'
    )


def test_long_partition_keys_are_hashed_to_one_stable_key() -> None:
    # Given a key whose JSON exceeds Kinesis's 256 characters
    key = {"id": "x" * 300}
    # When the partition key is made twice
    first, second = partition_key("public", "docs", key), partition_key("public", "docs", key)
    # Then it fits, keeps the table prefix and is the same both times
    assert first == second
    assert len(first) <= MAX_PARTITION_KEY_CHARS
    full = 'public.docs|{"id":"' + "x" * 300 + '"}'
    assert first == "public.docs|sha256:" + hashlib.sha256(full.encode()).hexdigest()


def test_partition_key_of_a_big_integer_key() -> None:
    assert partition_key("s", "t", {"id": 2**100}) == 's.t|{"id":' + str(2**100) + "}"


def test_hash_key_is_kinesis_md5() -> None:
    assert hash_key("a") == int(hashlib.md5(b"a").hexdigest(), 16)
