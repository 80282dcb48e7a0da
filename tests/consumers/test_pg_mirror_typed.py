"""The mirror on a bus that types its events: columns take the source's types from the
event's schema, altered only when the schema version changes, and an untyped event of a
typed table is cast, not widened. A real PostgreSQL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from consumers.pg_mirror.mirror import Mirror
from dmsbus.schemas import Column, TableSchema
from dmsbus.testing import SOURCE, change
from tests.consumers.conftest import change as untyped_change

ID = Column("id", "integer", "int4", nullable=False, key=1)
PRICE = Column("price", "numeric(10,2)", "numeric", nullable=True, precision=10, scale=2)
PAID = Column("paid", "boolean", "bool", nullable=True)
AT = Column("at", "timestamp with time zone", "timestamptz", nullable=True)
DOC = Column("doc", "jsonb", "jsonb", nullable=True)
LABEL = Column("label", "character varying(20)", "varchar", nullable=True, length=20)
TAGS = Column("tags", "text[]", "_text", nullable=True)
PHOTO = Column("photo", "bytea", "bytea", nullable=True)
V1 = (ID, PRICE, PAID, AT, DOC, LABEL, TAGS, PHOTO)


def schema(version: int, *columns: Column) -> TableSchema:
    return TableSchema(source=SOURCE, schema="public", table="orders", columns=columns, version=version)


def typed_row(row_id: int, **values: Any) -> dict[str, Any]:
    """A typed image of v1: every column DMS writes, NULL unless given."""
    return {"id": row_id, **dict.fromkeys(("price", "paid", "at", "doc", "label", "tags")), **values}


def column_types(db: psycopg.Connection[Any]) -> dict[str, str]:
    return dict(
        db.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.orders'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
    )


def row(db: psycopg.Connection[Any], row_id: int) -> dict[str, Any]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        found = cursor.execute("SELECT * FROM public.orders WHERE id = %s", (row_id,)).fetchone()
    assert found is not None
    return found


FIRST = typed_row(
    1,
    price="19.90",
    paid=True,
    at="2026-11-01T10:00:00.500000Z",
    doc='{"b": [1, 2], "a": null}',
    label="first",
    tags="{p,q}",
)


def test_given_typed_events_of_a_new_table_then_its_columns_take_the_source_types(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a typed insert of a table the mirror has not seen
    event = change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))
    # When the mirror applies it
    result = Mirror().apply(mirror_db, [event])
    # Then the table has the source's types, in its order; bytea (DMS never writes it) is not there
    assert result.created_tables == ["public.orders"]
    assert column_types(mirror_db) == {
        "id": "integer",
        "price": "numeric(10,2)",
        "paid": "boolean",
        "at": "timestamp with time zone",
        "doc": "jsonb",
        "label": "character varying(20)",
        "tags": "text",
    }
    # And the values are the source's, the JSON text parsed by jsonb
    assert row(mirror_db, 1) == {
        "id": 1,
        "price": Decimal("19.90"),
        "paid": True,
        "at": datetime(2026, 11, 1, 10, 0, 0, 500000, tzinfo=UTC),
        "doc": {"a": None, "b": [1, 2]},
        "label": "first",
        "tags": "{p,q}",
    }
    assert mirror_db.execute(
        "SELECT source_table, schema_version FROM dmsbus_mirror.typed_tables"
    ).fetchall() == [("legacy.public.orders", 1)]


def test_given_a_typed_table_when_an_untyped_event_arrives_then_its_values_are_cast_not_widened(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a typed table, and a mirror session in another time zone than DMS's UTC
    mirror = Mirror()
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    mirror_db.execute("SET TIME ZONE 'America/New_York'")
    # When an untyped event (DMS's forms: boolean text, a UTC timestamp without an offset,
    # the decimal text) of the table arrives, with an attribute the schema lacks
    untyped = untyped_change(
        "c",
        "public.orders",
        {"id": 2},
        {"paid": "false", "at": "2026-11-01 10:00:00.500000", "price": "12.5", "coupon": "X1"},
        sequence=2,
    )
    result = mirror.apply(mirror_db, [untyped])
    # Then the columns keep their types, the values are cast (the timestamp read as UTC), and
    # the new attribute gets a column of its own
    assert result.altered_columns == ["public.orders.coupon text (new)"]
    assert column_types(mirror_db)["paid"] == "boolean"
    assert row(mirror_db, 2) | {"at": row(mirror_db, 2)["at"].astimezone(UTC)} == {
        "id": 2,
        "price": Decimal("12.50"),
        "paid": False,
        "at": datetime(2026, 11, 1, 10, 0, 0, 500000, tzinfo=UTC),
        "doc": None,
        "label": None,
        "tags": None,
        "coupon": "X1",
    }


def test_given_a_new_schema_version_then_added_and_retyped_columns_are_altered(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table typed at v1
    mirror = Mirror()
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    # When v2 widens label (varchar(20) -> varchar(50)) and adds qty, and a v2 event arrives
    label = Column("label", "character varying(50)", "varchar", nullable=True, length=50)
    qty = Column("qty", "bigint", "int8", nullable=True)
    v2 = schema(2, ID, PRICE, PAID, AT, DOC, label, TAGS, PHOTO, qty)
    after = FIRST | {"label": "a label longer than twenty", "qty": 3}
    result = mirror.apply(
        mirror_db,
        [change("public.orders", "u", key={"id": 1}, before=FIRST | {"qty": None}, after=after, schema=v2)],
    )
    # Then the mirror follows the source, and records v2
    assert result.altered_columns == [
        "public.orders.qty bigint (new)",
        "public.orders.label character varying(20) -> character varying(50)",
    ]
    assert (row(mirror_db, 1)["label"], row(mirror_db, 1)["qty"]) == ("a label longer than twenty", 3)
    assert mirror_db.execute("SELECT schema_version FROM dmsbus_mirror.typed_tables").fetchall() == [(2,)]


def test_given_a_schema_version_applied_then_its_later_batches_alter_nothing_and_an_operators_type_stays(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table typed at v1, and an operator who made label text
    mirror = Mirror()
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    mirror_db.execute("ALTER TABLE public.orders ALTER COLUMN label TYPE text")
    # When more v1 events arrive (in a new container, which reads the catalog again)
    again = Mirror().apply(
        mirror_db, [change("public.orders", "c", key={"id": 2}, after=typed_row(2), schema=schema(1, *V1))]
    )
    # And then v2, which retypes price
    price = Column("price", "numeric(12,2)", "numeric", nullable=True, precision=12, scale=2)
    v2 = schema(2, ID, price, PAID, AT, DOC, LABEL, TAGS, PHOTO)
    later = mirror.apply(
        mirror_db, [change("public.orders", "c", key={"id": 3}, after=typed_row(3), schema=v2)]
    )
    # Then v1's batch altered nothing; v2 retyped price, and label stays the operator's text
    assert (again.created_tables, again.altered_columns) == ([], [])
    assert later.altered_columns == ["public.orders.price numeric(10,2) -> numeric(12,2)"]
    assert column_types(mirror_db)["label"] == "text"


def test_given_a_mirror_table_built_from_untyped_events_then_typed_events_give_it_the_source_types(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table the mirror typed from DMS's values (before the bus typed its events)
    mirror = Mirror()
    mirror.apply(
        mirror_db,
        [
            untyped_change(
                "c", "public.orders", {"id": 1}, {"price": "19.9", "paid": "true", "label": "old"}, sequence=1
            )
        ],
    )
    assert column_types(mirror_db) == {"id": "bigint", "price": "text", "paid": "text", "label": "text"}
    # When the first typed event arrives
    mirror.apply(
        mirror_db, [change("public.orders", "c", key={"id": 2}, after=typed_row(2), schema=schema(1, *V1))]
    )
    # Then the inferred columns take the source's types, and the old values are kept, cast;
    # an inferred bigint is not rewritten narrower (integer)
    assert column_types(mirror_db) == {
        "id": "bigint",
        "price": "numeric(10,2)",
        "paid": "boolean",
        "label": "character varying(20)",
        "at": "timestamp with time zone",
        "doc": "jsonb",
        "tags": "text",
    }
    assert (row(mirror_db, 1)["price"], row(mirror_db, 1)["paid"]) == (Decimal("19.90"), True)


def test_given_values_that_do_not_cast_to_the_source_type_then_the_column_keeps_its_type(
    mirror_db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Given an inferred text column holding a value that is no boolean, beside one that casts
    mirror = Mirror()
    mirror.apply(
        mirror_db,
        [untyped_change("c", "public.orders", {"id": 1}, {"paid": "maybe", "price": "19.9"}, sequence=1)],
    )
    # When a typed event says the column is boolean
    with caplog.at_level(logging.WARNING, logger="dmsbus.pg_mirror"):
        result = mirror.apply(
            mirror_db,
            [
                change(
                    "public.orders", "c", key={"id": 2}, after=typed_row(2, paid=False), schema=schema(1, *V1)
                )
            ],
        )
    # Then the column stays text and keeps the old value; the other is typed; the batch is
    # applied, with a warning
    assert (column_types(mirror_db)["paid"], column_types(mirror_db)["price"]) == ("text", "numeric(10,2)")
    assert (row(mirror_db, 1)["paid"], row(mirror_db, 2)["paid"], result.upserted) == ("maybe", "false", 1)
    assert "public.orders.paid stays text" in caplog.text


def test_given_a_value_typed_with_an_older_version_too_wide_for_its_column_then_the_latest_schema_is_applied(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table typed at v1 (label varchar(20)), and a source that has widened label to
    # varchar(50) in v2, which the glue has not read yet
    label = Column("label", "character varying(50)", "varchar", nullable=True, length=50)
    v2 = schema(2, ID, PRICE, PAID, AT, DOC, label, TAGS, PHOTO)
    asked: list[str] = []

    def latest(qualified: str) -> TableSchema:
        asked.append(qualified)
        return v2

    mirror = Mirror(latest=latest)
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    # When an event typed with v1 brings a 30-character label
    wide = typed_row(2, label="a label of thirty characters!!")
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 2}, after=wide, schema=schema(1, *V1))])
    # Then the mirror read the latest schema, widened the column and wrote the row
    assert asked == ["legacy.public.orders"]
    assert column_types(mirror_db)["label"] == "character varying(50)"
    assert row(mirror_db, 2)["label"] == "a label of thirty characters!!"


def test_given_a_typed_table_then_a_column_it_inferred_from_values_still_widens(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a typed table, and an attribute its schema lacks, inferred from a whole number
    mirror = Mirror()
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    mirror.apply(mirror_db, [untyped_change("c", "public.orders", {"id": 2}, {"amount": 5}, sequence=2)])
    assert column_types(mirror_db)["amount"] == "bigint"
    # When a decimal comes
    mirror.apply(mirror_db, [untyped_change("c", "public.orders", {"id": 3}, {"amount": "5.5"}, sequence=3)])
    # Then the column widens, as the mirror's own columns always have
    assert column_types(mirror_db)["amount"] == "text"
    assert (row(mirror_db, 2)["amount"], row(mirror_db, 3)["amount"]) == ("5", "5.5")


def test_given_a_view_on_a_column_then_its_retype_is_left_and_the_batch_applied(
    mirror_db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Given an inferred table, and a reporting view on one of its columns
    mirror = Mirror()
    mirror.apply(mirror_db, [untyped_change("c", "public.orders", {"id": 1}, {"paid": "true"}, sequence=1)])
    mirror_db.execute("CREATE VIEW public.paid_orders AS SELECT id FROM public.orders WHERE paid = 'true'")
    # When the first typed event comes
    with caplog.at_level(logging.WARNING, logger="dmsbus.pg_mirror"):
        result = mirror.apply(
            mirror_db,
            [
                change(
                    "public.orders", "c", key={"id": 2}, after=typed_row(2, paid=True), schema=schema(1, *V1)
                )
            ],
        )
    # Then the viewed column keeps its type, and the row is written
    assert column_types(mirror_db)["paid"] == "text"
    assert (result.upserted, row(mirror_db, 2)["paid"]) == (1, "true")
    assert "public.orders.paid stays text" in caplog.text


def test_given_a_retype_that_failed_then_the_next_version_tries_it_again(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a v1 whose retype of paid failed (a value that is no boolean)
    mirror = Mirror()
    mirror.apply(mirror_db, [untyped_change("c", "public.orders", {"id": 1}, {"paid": "maybe"}, sequence=1)])
    mirror.apply(
        mirror_db,
        [change("public.orders", "c", key={"id": 2}, after=typed_row(2, paid=False), schema=schema(1, *V1))],
    )
    assert column_types(mirror_db)["paid"] == "text"
    # When the bad row is mended and v2 comes
    mirror_db.execute("UPDATE public.orders SET paid = 'true' WHERE id = 1")
    v2 = schema(2, *V1, Column("qty", "integer", "int4", nullable=True))
    mirror.apply(
        mirror_db,
        [change("public.orders", "c", key={"id": 3}, after=typed_row(3, paid=True, qty=1), schema=v2)],
    )
    # Then paid takes the source's type: the mirror did not take it for an operator's
    assert column_types(mirror_db)["paid"] == "boolean"


def test_given_an_operators_type_then_it_stays_through_later_versions(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table typed at v1, and an operator who made price a plain numeric
    mirror = Mirror()
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    mirror_db.execute("ALTER TABLE public.orders ALTER COLUMN price TYPE numeric")
    # When v2 and v3 come, neither of which touches price
    for version in (2, 3):
        extra = Column(f"extra{version}", "integer", "int4", nullable=True)
        columns = (
            *V1,
            *(Column(f"extra{v}", "integer", "int4", nullable=True) for v in range(2, version)),
            extra,
        )
        after = typed_row(version, **{column.name: None for column in columns[len(V1) :]})
        mirror.apply(
            mirror_db,
            [
                change(
                    "public.orders", "c", key={"id": version}, after=after, schema=schema(version, *columns)
                )
            ],
        )
    # Then price is still the operator's numeric
    assert column_types(mirror_db)["price"] == "numeric"
