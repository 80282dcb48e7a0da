"""``event.schema``: a consumer of a bus that types its events gets the table schema that
typed each event; the test kit builds typed events the same way."""

from __future__ import annotations

import pytest

from dmsbus.consumer import ChangeEvent, consumer
from dmsbus.schemas import Column, SchemaStore, TableSchema
from dmsbus.testing import change, invoke, kinesis_event

ORDERS = TableSchema(
    source="legacy",
    schema="public",
    table="orders",
    columns=(
        Column(name="id", type="integer", base="int4", nullable=False, key=1),
        Column(name="paid", type="boolean", base="bool", nullable=False),
        Column(name="note", type="text", base="text", nullable=True),
    ),
)


def typed_change(schema: TableSchema) -> ChangeEvent:
    return change(
        "public.orders", "c", key={"id": 1}, after={"id": 1, "paid": True, "note": None}, schema=schema
    )


def test_given_a_typed_event_when_a_consumer_gets_it_then_event_schema_is_its_version(
    schema_store: SchemaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the table's schema stored as version 1, and the consumer's deployment naming the table
    stored = schema_store.save(ORDERS).schema
    monkeypatch.setenv("BUS_SCHEMA_TABLE", schema_store.table_name)
    seen: list[ChangeEvent] = []

    @consumer()
    def handler(event: ChangeEvent) -> None:
        seen.append(event)

    # When a typed event of version 1 comes
    invoke(handler, kinesis_event([typed_change(stored)]))
    # Then the consumer sees that version's columns
    (event,) = seen
    assert event.schema == stored
    assert [column.name for column in event.schema.columns] == ["id", "paid", "note"]  # type: ignore[union-attr]


def test_without_a_schema_table_event_schema_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUS_SCHEMA_TABLE", raising=False)
    seen: list[ChangeEvent] = []

    @consumer()
    def handler(event: ChangeEvent) -> None:
        seen.append(event)

    invoke(handler, kinesis_event([typed_change(ORDERS.with_version(1))]))
    assert seen[0].schema is None
    assert (seen[0].source.typed, seen[0].source.schema_version) == (True, 1)


def test_the_test_kit_builds_a_typed_event_with_its_schema() -> None:
    event = typed_change(ORDERS.with_version(4))
    assert (event.source.typed, event.source.schema_version, event.schema) == (
        True,
        4,
        ORDERS.with_version(4),
    )
    assert "schema" not in event.to_dict()  # never on the wire


def test_the_test_kit_refuses_a_typed_image_without_every_column() -> None:
    with pytest.raises(ValueError, match=r"images have every column of its schema: \['id', 'paid', 'note'\]"):
        change("public.orders", "c", key={"id": 1}, after={"id": 1, "paid": True}, schema=ORDERS)
