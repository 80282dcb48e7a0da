"""What DMS writes to DynamoDB for each PostgreSQL type (docs/dms.md, "Data types"):
the stand-in's type mapping, value by value."""

from __future__ import annotations

from typing import Any

import pytest

from local.dms_types import (
    BOOL,
    BPCHAR,
    BYTEA,
    FLOAT8,
    INT4,
    JSONB,
    MONEY,
    NUMERIC,
    OID,
    TEXT,
    TIME,
    TIMESTAMP,
    TIMESTAMPTZ,
    TIMETZ,
    UUID,
    ColumnType,
    DataError,
    TaskError,
    TypeInfo,
    dms_type,
    dynamodb_value,
    item_bytes,
)

LOB_MAX = 800 * 1024  # config/dms-task-settings.json's LobMaxSize


def _numeric(precision: int, scale: int) -> ColumnType:
    return ColumnType(NUMERIC, ((precision << 16) | scale) + 4)


def _no_lookup(oid: int) -> TypeInfo:
    raise AssertionError(f"type {oid} is built in")


def write(text: str, column: ColumnType, lookup: Any = _no_lookup) -> dict[str, Any] | None:
    kind, read_as = dms_type(column, lookup)
    return dynamodb_value(text, kind, read_as, lob_max_bytes=LOB_MAX)


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        # BOOLEAN is "CHAR (5) false or true" (CHAP_Source.PostgreSQL)
        ("t", ColumnType(BOOL), {"S": "true"}),
        ("f", ColumnType(BOOL), {"S": "false"}),
        ("42", ColumnType(INT4), {"N": "42"}),
        # NUMERIC(p,s) with p <= 38 is NUMERIC, a DynamoDB number, exact
        ("12.50", _numeric(10, 2), {"N": "12.5"}),
        # p >= 39 is STRING
        (
            "1234567890123456789012345678901234567890.5",
            _numeric(45, 1),
            {"S": "1234567890123456789012345678901234567890.5"},
        ),
        # NUMERIC without precision is NUMERIC(28,6): rounded to six decimals
        ("0.611111104488373", ColumnType(NUMERIC), {"N": "0.611111"}),
        ("2.0000005", ColumnType(NUMERIC), {"N": "2.000001"}),
        # MONEY is NUMERIC(38,4)
        ("$1,234.50", ColumnType(MONEY), {"N": "1234.5"}),
        ("-$12.00", ColumnType(MONEY), {"N": "-12"}),
        ("$-1.00", ColumnType(MONEY), {"N": "-1"}),
        ("($3.50)", ColumnType(MONEY), {"N": "-3.5"}),
        # uuid is a STRING in DMS, not a LOB
        (
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            ColumnType(UUID),
            {"S": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
        ),
        ("1.5", ColumnType(FLOAT8), {"N": "1.5"}),
        # CHAR(n) is trimmed (TrimSpaceInChar defaults to true), in full load and CDC alike
        ("ab      ", ColumnType(BPCHAR, 12), {"S": "ab"}),
        # DATETIME: a timestamptz in UTC, with microseconds and no offset
        ("2026-11-01 12:00:00.5+02", ColumnType(TIMESTAMPTZ), {"S": "2026-11-01 10:00:00.500000"}),
        ("2026-11-01 12:00:00", ColumnType(TIMESTAMP), {"S": "2026-11-01 12:00:00.000000"}),
        # a year before 1000 keeps its four digits, as a DATE's does
        ("0099-01-01 00:00:00", ColumnType(TIMESTAMP), {"S": "0099-01-01 00:00:00.000000"}),
        ("08:30:00", ColumnType(TIME), {"S": "08:30:00.000000"}),
        ("08:30:00.25+05:30", ColumnType(TIMETZ), {"S": "08:30:00.250000"}),
        # LOBs within LobMaxSize are strings
        ('{"a": 1}', ColumnType(JSONB), {"S": '{"a": 1}'}),
        # BYTEA is a BLOB, which the DynamoDB target does not migrate; OID is not migrated
        ("\\x0001", ColumnType(BYTEA), None),
        ("16384", ColumnType(OID), None),
    ],
)
def test_each_type_is_written_as_dms_writes_it(text: str, column: ColumnType, expected: Any) -> None:
    assert write(text, column) == expected


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("NaN", ColumnType(FLOAT8), "has no DynamoDB number"),
        ("Infinity", ColumnType(FLOAT8), "has no DynamoDB number"),
        ("12345678901234567890123.5", ColumnType(NUMERIC), r"does not fit DMS.s NUMERIC\(28,6\)"),
        ("infinity", ColumnType(TIMESTAMPTZ), "has no DMS DATETIME"),
        ("0044-03-15 12:00:00 BC", ColumnType(TIMESTAMP), "has no DMS DATETIME"),
        # in UTC past year 9999
        ("9999-12-31 23:00:00-05", ColumnType(TIMESTAMPTZ), "has no DMS DATETIME"),
        # outside DynamoDB's number range (1E-130 to 1E+126)
        ("1.79e308", ColumnType(FLOAT8), "outside DynamoDB's number range"),
        ("5e-324", ColumnType(FLOAT8), "outside DynamoDB's number range"),
    ],
)
def test_a_value_dms_cannot_write_is_a_data_error(text: str, column: ColumnType, message: str) -> None:
    with pytest.raises(DataError, match=message):
        write(text, column)


def test_a_lob_over_lob_max_size_stops_the_task() -> None:
    # FailTasksOnLobTruncation: the task fails instead of truncating the value. A text is an
    # NCLOB, "each character as a double-byte character" (CHAP_Source.PostgreSQL)
    with pytest.raises(TaskError, match="over the task's LobMaxSize"):
        write("x" * (LOB_MAX // 2 + 1), ColumnType(TEXT))
    assert write("x" * (LOB_MAX // 2), ColumnType(TEXT)) == {"S": "x" * (LOB_MAX // 2)}


def test_every_text_that_fits_in_a_dynamodb_item_is_within_lob_max_size() -> None:
    # Given the largest text a DynamoDB item can hold (400 KB of UTF-8: 409,600 one-byte characters)
    largest = "x" * (400 * 1024)
    # Then DMS counts it (two bytes a character) within LobMaxSize: never cut, never failing the task
    assert write(largest, ColumnType(TEXT)) == {"S": largest}
    assert write("é" * (200 * 1024), ColumnType(TEXT)) == {"S": "é" * (200 * 1024)}


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (TypeInfo("b", "A"), "NCLOB"),  # an array
        (TypeInfo("c", "C"), "NCLOB"),  # a composite
        (TypeInfo("b", "U"), "NCLOB"),  # an extension's type (OID >= 16384), hstore among them
        (TypeInfo("e", "E"), "STRING"),  # an enum
        (TypeInfo("r", "R"), "STRING"),  # a range
        (TypeInfo("d", "N", base=INT4), "INT4"),  # a domain is its base type
    ],
)
def test_types_outside_the_built_ins_are_looked_up_in_the_catalog(info: TypeInfo, expected: str) -> None:
    assert dms_type(ColumnType(90_001), lambda oid: info)[0] == expected


def test_item_size_counts_names_and_values_as_dynamodb_does() -> None:
    item = {"id": {"N": "12345"}, "name": {"S": "Zoë"}, "ok": {"S": "true"}}
    # "id" 2 + (5 digits -> 3 bytes + 1), "name" 4 + 4 bytes of UTF-8, "ok" 2 + 4
    assert item_bytes(item) == 2 + 4 + 4 + 4 + 2 + 4


def test_without_fail_tasks_on_lob_truncation_a_lob_is_cut_to_lob_max_size() -> None:
    # "LOBs that exceed the maximum LOB size are truncated" (CHAP_Tasks.LOBSupport)
    kind, column = dms_type(ColumnType(TEXT), _no_lookup)
    value = dynamodb_value("ü" * LOB_MAX, kind, column, lob_max_bytes=LOB_MAX, fail_on_lob_truncation=False)
    assert value == {"S": "ü" * (LOB_MAX // 2)}
