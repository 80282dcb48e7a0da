"""The mirror's core against a real PostgreSQL: every batch one transaction, newest change
per row wins, tables and columns follow the events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from consumers.pg_mirror.mirror import Mirror, MirrorSchemaError
from tests.consumers.conftest import change


def rows(db: psycopg.Connection[Any], table: str, order: str = "1") -> list[tuple[Any, ...]]:
    return db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()  # type: ignore[arg-type]


def column_types(db: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str]:
    return dict(
        db.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        ).fetchall()
    )


def test_given_inserts_of_a_new_table_when_applied_then_the_table_is_created_with_inferred_types(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given the first changes of public.orders
    events = [
        change(
            "c",
            "public.orders",
            {"id": 1},
            {"status": "new", "paid": False, "weight": 1.5, "tags": ["a", "b"], "total": "10.50"},
            sequence=1,
        ),
        change("c", "public.orders", {"id": 2}, {"status": "paid", "paid": True}, sequence=2),
    ]

    # When the mirror applies them
    result = Mirror().apply(mirror_db, events)

    # Then the table exists with a column per attribute, typed from the values, and both rows
    assert result.created_tables == ["public.orders"]
    assert column_types(mirror_db, "public", "orders") == {
        "id": "bigint",
        "status": "text",
        "paid": "boolean",
        "weight": "double precision",
        "tags": "jsonb",
        "total": "text",
    }
    assert rows(mirror_db, "public.orders") == [
        (1, "new", False, 1.5, ["a", "b"], "10.50"),
        (2, "paid", True, None, None, None),
    ]
    assert (result.upserted, result.deleted, result.skipped) == (2, 0, 0)


def test_given_a_row_when_an_update_drops_an_attribute_then_the_column_becomes_null(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a customer with a city (DMS drops NULL columns from the item)
    mirror = Mirror()
    mirror.apply(
        mirror_db, [change("c", "public.customers", {"id": 7}, {"name": "Zoë", "city": "Łódź"}, sequence=1)]
    )

    # When an update sets the city to NULL
    mirror.apply(mirror_db, [change("u", "public.customers", {"id": 7}, {"name": "Zoë Å"}, sequence=2)])

    # Then the mirror row holds the new image: name changed, city NULL
    assert rows(mirror_db, "public.customers") == [(7, "Zoë Å", None)]


def test_given_a_row_when_it_is_deleted_then_it_leaves_the_mirror(mirror_db: psycopg.Connection[Any]) -> None:
    # Given two order lines (composite key)
    mirror = Mirror()
    mirror.apply(
        mirror_db,
        [
            change("c", "public.order_lines", {"order_id": 1, "line_no": 1}, {"qty": 2}, sequence=1),
            change("c", "public.order_lines", {"order_id": 1, "line_no": 2}, {"qty": 3}, sequence=2),
        ],
    )

    # When one is deleted
    result = mirror.apply(
        mirror_db, [change("d", "public.order_lines", {"order_id": 1, "line_no": 1}, sequence=3)]
    )

    # Then only the other remains
    assert result.deleted == 1
    assert rows(mirror_db, "public.order_lines") == [(1, 2, 3)]


def test_given_a_batch_applied_when_it_is_delivered_again_then_the_state_is_the_same(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a batch of inserts, an update and a delete, applied
    mirror = Mirror()
    batch = [
        change("c", "public.orders", {"id": 1}, {"status": "new"}, sequence=1),
        change("c", "public.orders", {"id": 2}, {"status": "new"}, sequence=2),
        change("u", "public.orders", {"id": 1}, {"status": "paid"}, sequence=3),
        change("d", "public.orders", {"id": 2}, sequence=4),
    ]
    mirror.apply(mirror_db, batch)
    before = rows(mirror_db, "public.orders")

    # When the same batch comes again (a Lambda retry)
    again = mirror.apply(mirror_db, batch)

    # Then the rows are unchanged; the coalesced batch's two rows are re-applied (equal positions)
    assert rows(mirror_db, "public.orders") == before == [(1, "paid")]
    assert again.coalesced == 2


def test_given_a_newer_change_applied_when_an_older_one_arrives_then_it_is_skipped(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given the update at sequence 5 applied
    mirror = Mirror()
    mirror.apply(mirror_db, [change("u", "public.orders", {"id": 1}, {"status": "shipped"}, sequence=5)])

    # When an older update (a retried earlier batch) arrives
    result = mirror.apply(mirror_db, [change("u", "public.orders", {"id": 1}, {"status": "new"}, sequence=3)])

    # Then the newer state stays
    assert result.skipped == 1
    assert rows(mirror_db, "public.orders") == [(1, "shipped")]


def test_given_a_deleted_row_when_an_older_change_arrives_then_the_row_stays_deleted(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a row deleted at sequence 9
    mirror = Mirror()
    mirror.apply(
        mirror_db,
        [
            change("c", "public.orders", {"id": 1}, {"status": "new"}, sequence=8),
            change("c", "public.orders", {"id": 2}, {"status": "new"}, sequence=8),
        ],
    )
    mirror.apply(mirror_db, [change("d", "public.orders", {"id": 1}, sequence=9)])

    # When the insert at sequence 8 is delivered again
    mirror.apply(mirror_db, [change("c", "public.orders", {"id": 1}, {"status": "new"}, sequence=8)])

    # Then the tombstone keeps it deleted
    assert rows(mirror_db, "public.orders") == [(2, "new")]


def test_given_a_stream_change_applied_when_a_stale_backfill_read_arrives_then_it_is_skipped(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given an update from the stream
    mirror = Mirror()
    mirror.apply(mirror_db, [change("u", "public.orders", {"id": 1}, {"status": "paid"}, sequence=40)])

    # When the backfill's read of the row (sequence 0, scanned before the update) arrives
    result = mirror.apply(mirror_db, [change("r", "public.orders", {"id": 1}, {"status": "new"}, sequence=0)])

    # Then the stream's change stands
    assert result.skipped == 1
    assert rows(mirror_db, "public.orders") == [(1, "paid")]


def test_given_a_backfill_read_when_a_stream_change_follows_then_the_change_is_applied(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a backfill read
    mirror = Mirror()
    mirror.apply(mirror_db, [change("r", "public.orders", {"id": 1}, {"status": "new"}, sequence=0)])

    # When the stream's update arrives
    mirror.apply(mirror_db, [change("u", "public.orders", {"id": 1}, {"status": "paid"}, sequence=41)])

    # Then it is applied
    assert rows(mirror_db, "public.orders") == [(1, "paid")]


def test_given_a_batch_with_several_changes_of_a_row_then_only_the_newest_is_written(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given an insert, two updates and a delete-then-insert of one row in one batch
    batch = [
        change("c", "public.orders", {"id": 1}, {"status": "new"}, sequence=1),
        change("u", "public.orders", {"id": 1}, {"status": "paid"}, sequence=2),
        change("d", "public.orders", {"id": 1}, sequence=3),
        change("c", "public.orders", {"id": 1}, {"status": "again"}, sequence=4),
    ]

    # When applied
    result = Mirror().apply(mirror_db, batch)

    # Then the row holds the last change
    assert (result.coalesced, result.upserted) == (3, 1)
    assert rows(mirror_db, "public.orders") == [(1, "again")]


def test_given_a_table_when_a_new_attribute_appears_then_a_column_is_added_and_old_rows_keep_theirs(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table with one row
    mirror = Mirror()
    mirror.apply(mirror_db, [change("c", "public.products", {"sku": "A"}, {"title": "Ä"}, sequence=1)])

    # When a row brings a new attribute (a column added in the source)
    result = mirror.apply(
        mirror_db, [change("c", "public.products", {"sku": "B"}, {"title": "B", "stock": 12}, sequence=2)]
    )

    # Then the column is added and the first row has NULL there
    assert result.altered_columns == ["public.products.stock bigint (new)"]
    assert rows(mirror_db, "public.products") == [("A", "Ä", None), ("B", "B", 12)]


def test_given_an_integer_column_when_a_decimal_text_arrives_then_the_column_widens_to_text(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given totals that were integral so far (numbers: string gives decimals as text)
    mirror = Mirror()
    mirror.apply(mirror_db, [change("c", "public.orders", {"id": 1}, {"total": 12}, sequence=1)])

    # When a decimal total arrives
    result = mirror.apply(
        mirror_db, [change("c", "public.orders", {"id": 2}, {"total": "12.50"}, sequence=2)]
    )

    # Then the column is text and keeps the old value's text
    assert result.altered_columns == ["public.orders.total bigint -> text"]
    assert column_types(mirror_db, "public", "orders")["total"] == "text"
    assert rows(mirror_db, "public.orders") == [(1, "12"), (2, "12.50")]


def test_given_an_integer_column_when_an_exact_decimal_arrives_then_the_column_widens_to_numeric(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given integral amounts (numbers: number hands exact decimals)
    mirror = Mirror()
    mirror.apply(mirror_db, [change("c", "public.payments", {"id": 1}, {"amount": 3}, sequence=1)])

    # When an exact decimal amount and a 30-digit integer arrive
    mirror.apply(
        mirror_db,
        [
            change("c", "public.payments", {"id": 2}, {"amount": Decimal("3.25")}, sequence=2),
            change("c", "public.payments", {"id": 3}, {"amount": 10**30}, sequence=3),
        ],
    )

    # Then the column is numeric and every value is exact
    assert column_types(mirror_db, "public", "payments")["amount"] == "numeric"
    assert rows(mirror_db, "public.payments") == [(1, Decimal(3)), (2, Decimal("3.25")), (3, Decimal(10**30))]


def test_given_one_table_mirrored_when_another_table_appears_then_it_gets_its_own_mirror_table(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given public.orders mirrored
    mirror = Mirror()
    mirror.apply(mirror_db, [change("c", "public.orders", {"id": 1}, {"status": "new"}, sequence=1)])

    # When the first change of audit.event_payment arrives (a table created mid-run)
    result = mirror.apply(
        mirror_db, [change("c", "audit.event_payment", {"id": 1}, {"currency": "PLN"}, sequence=1)]
    )

    # Then it is created in its own schema
    assert result.created_tables == ["audit.event_payment"]
    assert rows(mirror_db, "audit.event_payment") == [(1, "PLN")]


def test_given_a_table_when_its_reload_version_arrives_then_it_goes_to_the_same_table_and_old_changes_lose(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given public.products from the first DynamoDB table, sequences in the thousands
    mirror = Mirror()
    mirror.apply(mirror_db, [change("u", "public.products", {"sku": "A"}, {"price": "1.00"}, sequence=5000)])

    # When the reload (v2, same key) arrives, then a late change from the old table
    mirror.apply(
        mirror_db, [change("r", "public.products", {"sku": "A"}, {"price": "2.00"}, sequence=0, version="v2")]
    )
    late = mirror.apply(
        mirror_db, [change("u", "public.products", {"sku": "A"}, {"price": "1.50"}, sequence=5001)]
    )

    # Then v2's state is in the same mirror table and the old table's late change is skipped
    assert late.skipped == 1
    assert rows(mirror_db, "public.products") == [("A", "2.00")]


def test_given_a_table_when_a_reload_with_another_key_arrives_then_it_gets_a_versioned_table(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given public.products keyed by sku
    mirror = Mirror()
    mirror.apply(mirror_db, [change("c", "public.products", {"sku": "A"}, {"title": "a"}, sequence=1)])

    # When version v2 is keyed by id
    result = mirror.apply(
        mirror_db,
        [change("r", "public.products", {"id": 9}, {"sku": "A", "title": "a"}, sequence=0, version="v2")],
    )

    # Then it is mirrored to public.products_v2 and the first table is untouched
    assert result.created_tables == ["public.products_v2"]
    assert rows(mirror_db, "public.products_v2") == [(9, "A", "a")]
    assert rows(mirror_db, "public.products") == [("A", "a")]


def test_given_a_batch_when_one_row_cannot_be_written_then_nothing_of_the_batch_is_applied(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a mirror table whose operator made `qty` an integer column
    mirror = Mirror()
    mirror.apply(mirror_db, [change("c", "public.order_lines", {"id": 1}, {"qty": "1"}, sequence=1)])
    mirror_db.execute("ALTER TABLE public.order_lines ALTER COLUMN qty TYPE integer USING qty::integer")

    # When a batch holds a good change and one whose qty does not cast
    batch = [
        change("u", "public.order_lines", {"id": 1}, {"qty": "2"}, sequence=2),
        change("c", "public.order_lines", {"id": 2}, {"qty": "two"}, sequence=3),
    ]
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        mirror.apply(mirror_db, batch)

    # Then neither row changed, and the positions did not move (a retry applies both)
    assert rows(mirror_db, "public.order_lines") == [(1, 1)]
    assert mirror_db.execute("SELECT max(sequence) FROM dmsbus_mirror.applied").fetchone() == (Decimal(1),)


def test_given_an_attribute_name_longer_than_postgres_allows_then_the_error_names_it(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given an attribute of 70 characters
    name = "x" * 70

    # When applied, then the error names the table and the attribute
    with pytest.raises(MirrorSchemaError, match=r"column of public\.wide 'x{70}' is longer"):
        Mirror().apply(mirror_db, [change("c", "public.wide", {"id": 1}, {name: 1}, sequence=1)])


def test_given_dms_shaped_values_then_they_mirror_into_usable_columns(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given values as DMS writes them to DynamoDB (docs/dms.md): a boolean as "true", a
    # timestamptz as a UTC string without offset, jsonb as text, NULL absent
    mirror = Mirror()
    mirror.apply(
        mirror_db,
        [
            change(
                "c",
                "public.customers",
                {"id": 1},
                {"vip": "true", "changed_at": "2026-11-01 10:00:00.500000", "prefs": '{"lang": "pl"}'},
                sequence=1,
            ),
            change("c", "public.customers", {"id": 2}, {"vip": "false"}, sequence=2),
        ],
    )
    # Then each is a text column whose values PostgreSQL reads back as the source's types
    assert column_types(mirror_db, "public", "customers") == {
        "id": "bigint",
        "vip": "text",
        "changed_at": "text",
        "prefs": "text",
    }
    assert mirror_db.execute(
        "SELECT id, vip::boolean, (changed_at::timestamp AT TIME ZONE 'UTC') = '2026-11-01 10:00:00.5+00',"
        " prefs::jsonb ->> 'lang' FROM public.customers ORDER BY id"
    ).fetchall() == [(1, True, True, "pl"), (2, False, None, None)]


def test_given_columns_altered_to_the_source_types_then_dms_shaped_values_are_written_through_casts(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given an operator who gave the mirror's columns the source's types
    mirror = Mirror()
    mirror.apply(
        mirror_db, [change("c", "public.customers", {"id": 1}, {"vip": "true", "at": "x"}, sequence=1)]
    )
    mirror_db.execute("DELETE FROM public.customers")
    mirror_db.execute("ALTER TABLE public.customers ALTER COLUMN vip TYPE boolean USING vip::boolean")
    mirror_db.execute("ALTER TABLE public.customers ALTER COLUMN at TYPE timestamp USING NULL")
    # When DMS-shaped values arrive
    mirror.apply(
        mirror_db,
        [
            change(
                "u",
                "public.customers",
                {"id": 1},
                {"vip": "false", "at": "2026-11-01 10:00:00.500000"},
                sequence=2,
            )
        ],
    )
    # Then they land in those types, and the columns keep them
    assert rows(mirror_db, "public.customers") == [(1, False, datetime(2026, 11, 1, 10, 0, 0, 500000))]
    assert column_types(mirror_db, "public", "customers")["vip"] == "boolean"
