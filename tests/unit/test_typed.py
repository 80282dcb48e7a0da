"""Typed values (dmsbus.typed) and table schemas (dmsbus.schemas): DMS's values back in
the source's types, NULLs made explicit, schema versions and their changes."""

from __future__ import annotations

from typing import Any

import pytest

from dmsbus.schemas import Column, SchemaChange, SchemaError, SchemaStore, TableSchema
from dmsbus.typed import ImageTyper, MissingColumnError, TypingError


def column(name: str, type_: str, base: str, **extra: Any) -> Column:
    return Column(name=name, type=type_, base=base, nullable=True, **extra)


ORDERS = TableSchema(
    source="legacy",
    schema="public",
    table="orders",
    columns=(
        Column(name="id", type="integer", base="int4", nullable=False, key=1),
        column("paid", "boolean", "bool"),
        column("total", "numeric(10,2)", "numeric", precision=10, scale=2),
        column("huge", "numeric(40,1)", "numeric", precision=40, scale=1),
        column("placed_at", "timestamp with time zone", "timestamptz"),
        column("due", "timestamp without time zone", "timestamp"),
        column("day", "date", "date"),
        column("at", "time without time zone", "time"),
        column("doc", "jsonb", "jsonb"),
        column("code", "character(3)", "bpchar", length=3),
        column("photo", "bytea", "bytea"),
    ),
)


def test_given_an_image_as_dms_writes_it_then_the_values_are_the_sources_types() -> None:
    # Given the glue's decoding of an item DMS wrote (every column set)
    image = {
        "id": 7,
        "paid": "true",
        "total": "19.99",
        "huge": "1234567890123456789012345678901234567890.5",
        "placed_at": "2026-11-01 10:00:00.500000",
        "due": "2026-11-01 12:00:00.000000",
        "day": "2026-11-01",
        "at": "08:30:00.000000",
        "doc": '{"a": 1}',
        "code": "AB",
    }
    # When typed with the table's schema
    typed = ImageTyper(ORDERS).image(image)
    # Then booleans are booleans, timestamps ISO-8601, and everything else as it was
    assert typed == {
        "id": 7,
        "paid": True,
        "total": "19.99",
        "huge": "1234567890123456789012345678901234567890.5",
        "placed_at": "2026-11-01T10:00:00.500000Z",
        "due": "2026-11-01T12:00:00.000000",
        "day": "2026-11-01",
        "at": "08:30:00.000000",
        "doc": '{"a": 1}',
        "code": "AB",
    }
    assert list(typed or {}) == [c.name for c in ORDERS.columns if c.written]


def test_a_column_dms_left_out_is_null_and_a_column_dms_never_writes_is_absent() -> None:
    typed = ImageTyper(ORDERS).image({"id": 7, "paid": "false"})
    assert typed is not None
    assert (typed["paid"], typed["total"], typed["doc"]) == (False, None, None)
    assert "photo" not in typed


def test_an_integral_numeric_written_as_text_becomes_an_integer() -> None:
    # numeric(p,s) with p >= 39 is DMS's STRING: an integral one follows the N rules
    typed = ImageTyper(ORDERS).image({"id": 1, "huge": "12345678901234567890123456789012345678901"})
    assert typed is not None and typed["huge"] == 12345678901234567890123456789012345678901


def test_an_attribute_the_schema_lacks_is_named() -> None:
    with pytest.raises(MissingColumnError) as raised:
        ImageTyper(ORDERS).image({"id": 1, "coupon": "X", "added_later": 1})
    assert raised.value.attributes == ["added_later", "coupon"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("paid", "yes", "column paid: 'yes' is not DMS's boolean text"),
        (
            "placed_at",
            "2026-11-01T10:00:00Z",
            "column placed_at: '2026-11-01T10:00:00Z' is not DMS's DATETIME text",
        ),
        ("huge", "12,5", "column huge: '12,5' is not a number"),
    ],
)
def test_a_value_that_does_not_convert_is_named(name: str, value: str, message: str) -> None:
    with pytest.raises(TypingError, match=f"^{message}$"):
        ImageTyper(ORDERS).image({"id": 1, name: value})


def test_none_stays_none() -> None:
    assert ImageTyper(ORDERS).image(None) is None


# ---- versions and their changes --------------------------------------------------------------


def with_columns(*columns: Column) -> TableSchema:
    return TableSchema(source="legacy", schema="public", table="orders", columns=columns)


def test_the_fingerprint_is_the_columns_and_not_when_they_were_read() -> None:
    read_later = TableSchema(
        source="legacy", schema="public", table="orders", columns=ORDERS.columns, read_ms=9
    )
    assert read_later.fingerprint == ORDERS.fingerprint
    assert with_columns(*ORDERS.columns[:-1]).fingerprint != ORDERS.fingerprint


def test_a_change_names_added_dropped_retyped_and_renamed_columns() -> None:
    before = with_columns(
        column("id", "integer", "int4"),
        column("status", "text", "text"),
        column("total", "numeric(10,2)", "numeric"),
        column("note", "text", "text"),
    )
    after = with_columns(
        column("id", "integer", "int4"),
        column("state", "text", "text"),  # renamed: same place, same type
        column("total", "numeric(12,2)", "numeric"),  # retyped
        column("coupon", "character varying(20)", "varchar"),  # note dropped, coupon added
    )
    change = SchemaChange.between(before, after)
    assert change == SchemaChange(
        added=("coupon",), dropped=("note",), retyped=("total",), renamed=(("status", "state"),)
    )
    assert SchemaChange.between(None, before).added == ("id", "status", "total", "note")
    assert SchemaChange.between(before, before).empty


def test_a_schema_reads_back_as_it_was_written() -> None:
    assert TableSchema.from_dict(ORDERS.with_version(3).to_dict()) == ORDERS.with_version(3)


def test_a_malformed_stored_schema_names_the_table_and_field() -> None:
    raw = ORDERS.to_dict()
    del raw["columns"][2]["base"]
    with pytest.raises(
        SchemaError, match=r"^schema of legacy.public.orders.columns\[2\]: field 'base' is missing$"
    ):
        TableSchema.from_dict(raw)


def test_given_a_new_table_when_its_schema_is_saved_then_it_is_version_1(schema_store: SchemaStore) -> None:
    saved = schema_store.save(ORDERS)
    assert (saved.schema.version, saved.created, saved.previous) == (1, True, None)
    assert saved.change is not None and saved.change.added[0] == "id"
    assert schema_store.latest("legacy.public.orders") == ORDERS.with_version(1)


def test_given_the_same_columns_when_saved_again_then_nothing_is_stored(schema_store: SchemaStore) -> None:
    schema_store.save(ORDERS)
    again = schema_store.save(
        TableSchema(source="legacy", schema="public", table="orders", columns=ORDERS.columns, read_ms=5)
    )
    assert (again.schema.version, again.created, again.change) == (1, False, None)


def test_given_a_new_column_when_saved_then_it_is_the_next_version_with_its_change(
    schema_store: SchemaStore,
) -> None:
    schema_store.save(ORDERS)
    grown = with_columns(*ORDERS.columns, column("coupon", "text", "text"))
    saved = schema_store.save(grown)
    assert (saved.schema.version, saved.previous) == (2, ORDERS.with_version(1))
    assert saved.change == SchemaChange(added=("coupon",), dropped=(), retyped=(), renamed=())
    assert schema_store.version("legacy.public.orders", 1) == ORDERS.with_version(1)
    assert schema_store.latest("legacy.public.orders") == grown.with_version(2)


@pytest.mark.parametrize(
    ("written", "typed"),
    [
        ("5.00", 5),
        ("1.50", "1.5"),
        ("-0.10", "-0.1"),
        ("12345678901234567890123456789012345678.90", "12345678901234567890123456789012345678.9"),
    ],
)
def test_a_wide_numeric_is_normalized_as_dynamodb_normalizes_numbers(written: str, typed: Any) -> None:
    assert (ImageTyper(ORDERS).image({"id": 1, "huge": written}) or {})["huge"] == typed


def test_a_value_that_does_not_convert_names_its_column_for_the_logs() -> None:
    with pytest.raises(TypingError) as raised:
        ImageTyper(ORDERS).image({"id": 1, "paid": "maybe"})
    assert raised.value.column == "paid"


def test_given_two_writers_racing_for_a_version_then_the_second_stores_the_next(
    schema_store: SchemaStore,
) -> None:
    # Given a writer that read the latest version, and another that stored one meanwhile
    latest = schema_store.latest
    calls = 0

    def stale_once(qualified: str) -> TableSchema | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            return None  # what the second writer saw before the first stored version 1
        return latest(qualified)

    schema_store.save(ORDERS)
    grown = with_columns(*ORDERS.columns, column("coupon", "text", "text"))
    schema_store.latest = stale_once  # type: ignore[method-assign]
    calls = 1
    # When it saves, its put of version 1 fails its condition, and it compares again
    saved = schema_store.save(grown)
    # Then it stored version 2 on top of the first writer's
    assert (saved.schema.version, saved.previous) == (2, ORDERS.with_version(1))
