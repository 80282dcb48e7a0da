"""The mirror on a bus that types its events: columns take the source's types from the
event's schema, altered only when the schema version changes, and an untyped event of a
typed table is cast, not widened; a column or table an untyped event brings takes the
source's types from the schema table (``latest``), never from DMS's text. A real PostgreSQL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from consumers.pg_mirror.mirror import Mirror, MirrorSchemaError, SchemaNotReadyError
from dmsbus.envelope import ChangeEvent
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


# -- untyped events on a typed bus: new columns and tables take the latest schema's types --

WEIGHT = Column("weight", "numeric(10,3)", "numeric", nullable=True, precision=10, scale=3)
FLAG = Column("flag", "boolean", "bool", nullable=True)
TS = Column("ts", "timestamp with time zone", "timestamptz", nullable=True)


class SchemaTable:
    """``latest`` and ``version`` over stored versions, as the schema table answers them
    (a Query of the newest, a GetItem of one), noting each ask."""

    def __init__(
        self, *schemas: TableSchema, error: Exception | None = None, version_error: Exception | None = None
    ) -> None:
        self.schemas = {(found.qualified, found.version): found for found in schemas}
        self.error = error
        self.version_error = version_error
        self.asked: list[str] = []
        self.read: list[tuple[str, int]] = []

    def latest(self, qualified: str) -> TableSchema | None:
        self.asked.append(qualified)
        if self.error is not None:
            raise self.error
        versions = [found for (table, _), found in self.schemas.items() if table == qualified]
        return max(versions, key=lambda found: found.version, default=None)

    def version(self, qualified: str, version: int) -> TableSchema | None:
        self.read.append((qualified, version))
        if self.version_error is not None:
            raise self.version_error
        return self.schemas.get((qualified, version))


def typed_at_v1(db: psycopg.Connection[Any], store: SchemaTable) -> Mirror:
    """A mirror on a typed bus whose public.orders follows v1."""
    mirror = Mirror(latest=store.latest, version=store.version)
    mirror.apply(db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    store.asked.clear()
    return mirror


def test_given_a_typed_bus_when_an_untyped_event_brings_a_new_column_then_it_takes_the_source_type(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table typed at v1, and a schema table whose latest version (v2) adds three
    # columns, which the glue had not read when it published the rows after the ADD COLUMN
    store = SchemaTable(schema(2, *V1, WEIGHT, FLAG, TS))
    mirror = typed_at_v1(mirror_db, store)
    # When two untyped events (DMS's text forms) using the new columns arrive in one batch
    result = mirror.apply(
        mirror_db,
        [
            untyped_change(
                "c",
                "public.orders",
                {"id": 2},
                {"weight": "1.250", "flag": "false", "ts": "2026-12-01 00:00:00.000000"},
                sequence=2,
            ),
            untyped_change("c", "public.orders", {"id": 3}, {"flag": "true"}, sequence=3),
        ],
    )
    # Then the schema table was asked once (its latest version, no earlier one), and the
    # columns have the source's types, not text
    assert store.asked == ["legacy.public.orders"]
    assert store.read == []
    assert result.altered_columns == [
        "public.orders.weight numeric(10,3) (new)",
        "public.orders.flag boolean (new)",
        "public.orders.ts timestamp with time zone (new)",
    ]
    # And the values are the source's: the boolean text a boolean, the timestamp read as UTC
    assert (row(mirror_db, 2)["weight"], row(mirror_db, 2)["flag"], row(mirror_db, 2)["ts"]) == (
        Decimal("1.250"),
        False,
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert row(mirror_db, 3)["flag"] is True
    # And the mirror follows v2, as after a typed event of v2
    assert mirror_db.execute(
        "SELECT schema_version, columns ->> 'flag' FROM dmsbus_mirror.typed_tables"
    ).fetchall() == [(2, "boolean")]


def test_given_a_typed_bus_when_untyped_events_use_only_known_columns_then_the_schema_table_is_not_asked(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table typed at v1
    store = SchemaTable(schema(1, *V1))
    mirror = typed_at_v1(mirror_db, store)
    # When untyped events of its columns arrive
    mirror.apply(
        mirror_db,
        [
            untyped_change("c", "public.orders", {"id": 2}, {"paid": "true", "price": "3.5"}, sequence=2),
            untyped_change("c", "public.orders", {"id": 3}, {"paid": "false"}, sequence=3),
        ],
    )
    # Then no schema was read, and the values are cast as ever
    assert store.asked == []
    assert (row(mirror_db, 2)["price"], row(mirror_db, 3)["paid"]) == (Decimal("3.50"), False)


@pytest.mark.parametrize(
    ("store", "reason"),
    [
        (SchemaTable(schema(1, *V1)), r"does not have it yet \(latest legacy\.public\.orders is version 1\)"),
        (SchemaTable(), r"does not have it yet \(no schema of legacy\.public\.orders\)"),
        (
            SchemaTable(error=TimeoutError("read timed out")),
            r"could not be read \(TimeoutError\('read timed out'\)\)",
        ),
    ],
    ids=["schema-lacks-the-column", "no-schema", "schema-table-fails"],
)
def test_given_a_typed_bus_when_the_latest_schema_lacks_a_new_column_then_the_batch_fails_unwritten(
    mirror_db: psycopg.Connection[Any], store: SchemaTable, reason: str
) -> None:
    # Given a table typed at v1 (from the typed event itself), and a schema table that
    # has no version with the new column yet (or none, or cannot be read)
    mirror = Mirror(latest=store.latest)
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    # When an untyped event brings a column, beside one of known columns
    batch = [
        untyped_change("c", "public.orders", {"id": 2}, {"coupon": "X1", "flag": "true"}, sequence=2),
        untyped_change("c", "public.orders", {"id": 3}, {"paid": "true"}, sequence=3),
    ]
    with pytest.raises(SchemaNotReadyError) as raised:
        mirror.apply(mirror_db, batch)
    # Then the error names the mirror table, the columns and why; it is no poison-event error
    assert raised.match(
        r"^mirror table public\.orders: columns \['coupon', 'flag'\] of an untyped event: on a typed bus a"
        r" new column takes the source's type from the schema table, which " + reason
    )
    assert not isinstance(raised.value, MirrorSchemaError)
    # And nothing was written: no column, no row, the version followed unchanged
    assert set(column_types(mirror_db)) == {"id", "price", "paid", "at", "doc", "label", "tags"}
    assert mirror_db.execute("SELECT id FROM public.orders ORDER BY id").fetchall() == [(1,)]
    assert mirror_db.execute("SELECT schema_version FROM dmsbus_mirror.typed_tables").fetchall() == [(1,)]


def test_given_a_typed_bus_when_the_first_event_of_a_table_is_untyped_then_it_is_created_with_the_source_types(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a typed bus whose schema table has public.orders at v1, and no mirror table yet
    store = SchemaTable(schema(1, *V1))
    # When the table's first event is untyped (published before the glue read the schema)
    result = Mirror(latest=store.latest).apply(
        mirror_db,
        [
            untyped_change(
                "c",
                "public.orders",
                {"id": 1},
                {"price": "19.9", "paid": "true", "at": "2026-11-01 10:00:00.500000", "tags": "{p,q}"},
                sequence=1,
            )
        ],
    )
    # Then the table is created with the source's types, in the source's order, and follows v1
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
    assert (row(mirror_db, 1)["price"], row(mirror_db, 1)["paid"], row(mirror_db, 1)["at"]) == (
        Decimal("19.90"),
        True,
        datetime(2026, 11, 1, 10, 0, 0, 500000, tzinfo=UTC),
    )
    assert mirror_db.execute(
        "SELECT source_table, schema_version FROM dmsbus_mirror.typed_tables"
    ).fetchall() == [("legacy.public.orders", 1)]


def test_given_a_typed_bus_when_a_new_column_is_in_the_version_followed_then_only_the_column_is_added(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table typed at v1 whose paid column an operator dropped, and v1 still the latest
    store = SchemaTable(schema(1, *V1))
    typed_at_v1(mirror_db, store)
    mirror_db.execute("ALTER TABLE public.orders DROP COLUMN paid")
    mirror = Mirror(latest=store.latest)  # a new container reads the catalog
    # When an untyped event brings paid again
    result = mirror.apply(
        mirror_db, [untyped_change("c", "public.orders", {"id": 2}, {"paid": "true"}, sequence=2)]
    )
    # Then the column takes v1's type, and the mirror still follows v1, with paid as typed
    assert result.altered_columns == ["public.orders.paid boolean (new)"]
    assert row(mirror_db, 2)["paid"] is True
    assert mirror_db.execute(
        "SELECT schema_version, columns ->> 'paid' FROM dmsbus_mirror.typed_tables"
    ).fetchall() == [(1, "boolean")]


# -- a column dropped from the source since an untyped event was written ---------------------

ORDERS = "legacy.public.orders"
WEIGHT_V1 = Column("weight", "numeric(8,1)", "numeric", nullable=True, precision=8, scale=1)
COUPON = Column("coupon", "character varying(12)", "varchar", nullable=True, length=12)
#: weight added at v1, widened at v2, dropped at v3
HISTORY = (schema(1, *V1, WEIGHT_V1), schema(2, *V1, WEIGHT), schema(3, *V1))


def typed_at(db: psycopg.Connection[Any], store: SchemaTable, version: int) -> Mirror:
    """A mirror on a typed bus whose public.orders was created by a typed event of
    ``version`` (the stored one), the schema table's asks cleared."""
    mirror = Mirror(latest=store.latest, version=store.version)
    found = store.schemas[(ORDERS, version)]
    after = {column.name: FIRST.get(column.name) for column in found.columns if column.written}
    mirror.apply(db, [change("public.orders", "c", key={"id": 1}, after=after, schema=found)])
    store.asked.clear()
    store.read.clear()
    return mirror


def replayed(row_id: int, sequence: int, **values: str) -> ChangeEvent:
    """An untyped event written before a DROP COLUMN, handed again (a replay, a redrive)."""
    return untyped_change("c", "public.orders", {"id": row_id}, values, sequence=sequence)


def test_given_a_typed_bus_when_an_untyped_event_brings_a_dropped_column_then_it_takes_the_newest_earlier_type(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a mirror table created after weight was dropped (it follows v3, without weight)
    store = SchemaTable(*HISTORY)
    mirror = typed_at(mirror_db, store, 3)
    # When an untyped event written before the DROP, with weight, is replayed
    result = mirror.apply(mirror_db, [replayed(2, 2, weight="1.250", paid="true")])
    # Then weight is created with v2's type (the newest version that has it), and v1 is not read
    assert store.read == [(ORDERS, 2)]
    assert result.altered_columns == ["public.orders.weight numeric(10,3) (new)"]
    assert column_types(mirror_db)["weight"] == "numeric(10,3)"
    assert (row(mirror_db, 2)["weight"], row(mirror_db, 2)["paid"]) == (Decimal("1.250"), True)
    # And the mirror still follows v3: the older version is not recorded as the one followed
    assert mirror_db.execute(
        "SELECT schema_version, columns ->> 'weight' FROM dmsbus_mirror.typed_tables"
    ).fetchall() == [(3, "numeric(10,3)")]


def test_given_a_typed_bus_when_a_tables_first_event_is_untyped_with_a_dropped_column_then_it_is_created_with_it(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a consumer that starts after weight was dropped: no mirror table yet
    store = SchemaTable(*HISTORY)
    # When its first event is an untyped one written before the DROP
    result = Mirror(latest=store.latest, version=store.version).apply(
        mirror_db, [replayed(2, 2, weight="1.250", price="3.5")]
    )
    # Then the table has the latest version's columns and weight with v2's type, and follows v3
    assert result.created_tables == ["public.orders"]
    assert column_types(mirror_db) == {
        "id": "integer",
        "price": "numeric(10,2)",
        "paid": "boolean",
        "at": "timestamp with time zone",
        "doc": "jsonb",
        "label": "character varying(20)",
        "tags": "text",
        "weight": "numeric(10,3)",
    }
    assert (row(mirror_db, 2)["weight"], row(mirror_db, 2)["price"]) == (Decimal("1.250"), Decimal("3.50"))
    assert mirror_db.execute("SELECT schema_version FROM dmsbus_mirror.typed_tables").fetchall() == [(3,)]


def test_given_a_typed_bus_when_the_mirror_table_has_the_dropped_column_then_it_is_written_and_nothing_read(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a mirror table made at v2, so it has weight, and weight since dropped (v3)
    store = SchemaTable(*HISTORY)
    mirror = typed_at(mirror_db, store, 2)
    # When an untyped event written before the DROP, with weight, is replayed
    result = mirror.apply(mirror_db, [replayed(2, 2, weight="1.250")])
    # Then nothing is created and no schema read; the value is written to the column there
    assert (result.created_tables, result.altered_columns) == ([], [])
    assert (store.asked, store.read) == ([], [])
    assert row(mirror_db, 2)["weight"] == Decimal("1.250")


def test_given_a_typed_bus_when_another_container_added_the_dropped_column_then_nothing_new_is_created(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given two containers whose mirror table follows v3, without weight, as each has read it
    store = SchemaTable(*HISTORY)
    first = typed_at(mirror_db, store, 3)
    second = Mirror(latest=store.latest, version=store.version)
    second.apply(
        mirror_db, [change("public.orders", "c", key={"id": 9}, after=typed_row(9), schema=HISTORY[2])]
    )
    first.apply(mirror_db, [replayed(2, 2, weight="1.250")])
    store.read.clear()
    # When the second, whose catalog predates the column, applies another replayed event with weight
    result = second.apply(mirror_db, [replayed(3, 3, weight="2.500")])
    # Then it learns the type from v2 and finds the column there: nothing is created or retyped
    assert store.read == [(ORDERS, 2)]
    assert (result.created_tables, result.altered_columns) == ([], [])
    assert column_types(mirror_db)["weight"] == "numeric(10,3)"
    assert row(mirror_db, 3)["weight"] == Decimal("2.500")
    assert mirror_db.execute("SELECT schema_version FROM dmsbus_mirror.typed_tables").fetchall() == [(3,)]


@pytest.mark.parametrize(
    ("store", "reason"),
    [
        (
            SchemaTable(*HISTORY),
            r"which does not have it yet \(latest legacy\.public\.orders is version 3;"
            r" no earlier version has it either\)",
        ),
        (
            SchemaTable(*HISTORY, version_error=TimeoutError("read timed out")),
            r"and legacy\.public\.orders version 2 could not be read \(TimeoutError\('read timed out'\)\)",
        ),
    ],
    ids=["no-version-has-it", "a-version-cannot-be-read"],
)
def test_given_a_typed_bus_when_no_schema_version_has_a_column_then_the_batch_fails_unwritten(
    mirror_db: psycopg.Connection[Any], store: SchemaTable, reason: str
) -> None:
    # Given a mirror table following v3, and no stored version with coupon (the schema
    # function has not read its ADD COLUMN yet), or one that cannot be read
    mirror = typed_at(mirror_db, store, 3)
    # When an untyped event brings coupon
    with pytest.raises(SchemaNotReadyError) as raised:
        mirror.apply(mirror_db, [replayed(2, 2, coupon="X1")])
    # Then the batch fails, naming the table, the column and why
    assert raised.match(
        r"^mirror table public\.orders: columns \['coupon'\] of an untyped event: .*" + reason
    )
    # And every earlier version was looked in, newest first, until one failed
    assert store.read == ([(ORDERS, 2), (ORDERS, 1)] if store.version_error is None else [(ORDERS, 2)])
    # And nothing was written
    assert "coupon" not in column_types(mirror_db)
    assert mirror_db.execute("SELECT id FROM public.orders ORDER BY id").fetchall() == [(1,)]


def test_given_a_typed_bus_when_a_batch_brings_dropped_columns_then_each_earlier_version_is_read_once(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given coupon in v1 only, weight in v1 and v2, both gone from v3, and v4 adding flag;
    # a mirror table following v3
    store = SchemaTable(
        schema(1, *V1, WEIGHT_V1, COUPON), schema(2, *V1, WEIGHT), schema(3, *V1), schema(4, *V1, FLAG)
    )
    mirror = typed_at(mirror_db, store, 3)
    # When one batch brings both dropped columns in several rows, and the new flag
    mirror.apply(
        mirror_db,
        [
            replayed(2, 2, weight="1.250", flag="true"),
            replayed(3, 3, weight="2.500", coupon="X1"),
            replayed(4, 4, coupon="Y2"),
        ],
    )
    # Then the latest is asked once, and each earlier version read once, newest first
    assert store.asked == [ORDERS]
    assert store.read == [(ORDERS, 3), (ORDERS, 2), (ORDERS, 1)]
    # And each column has the type of the newest version that has it; the mirror follows v4
    types = column_types(mirror_db)
    assert (types["weight"], types["coupon"], types["flag"]) == (
        "numeric(10,3)",
        "character varying(12)",
        "boolean",
    )
    assert (row(mirror_db, 3)["weight"], row(mirror_db, 4)["coupon"]) == (Decimal("2.500"), "Y2")
    assert mirror_db.execute("SELECT schema_version FROM dmsbus_mirror.typed_tables").fetchall() == [(4,)]


def test_given_a_batch_handed_again_when_no_version_has_its_column_then_earlier_versions_are_read_once(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a mirror table following v3, and no stored version with coupon yet
    store = SchemaTable(*HISTORY)
    mirror = typed_at(mirror_db, store, 3)
    batch = [replayed(2, 2, coupon="X1")]
    # When Lambda hands the failing batch twice, and then the schema function stores v4 with coupon
    for _ in range(2):
        with pytest.raises(SchemaNotReadyError):
            mirror.apply(mirror_db, batch)
    store.schemas[(ORDERS, 4)] = schema(4, *V1, COUPON)
    mirror.apply(mirror_db, batch)
    # Then the latest was asked each time, but the stored versions, which never change, once
    assert store.asked == [ORDERS] * 3
    assert store.read == [(ORDERS, 2), (ORDERS, 1)]
    assert row(mirror_db, 2)["coupon"] == "X1"
    assert column_types(mirror_db)["coupon"] == "character varying(12)"


def test_given_a_table_following_a_newer_version_when_a_replayed_typed_event_has_a_dropped_column_then_it_takes_its_type(
    mirror_db: psycopg.Connection[Any],
) -> None:
    # Given a table created at v3, after the source dropped at (v1 had it)
    v3 = schema(3, ID, PRICE, PAID, DOC, LABEL, TAGS, PHOTO)
    later = {key: value for key, value in typed_row(2).items() if key != "at"}
    mirror = Mirror()
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 2}, after=later, schema=v3)])
    # When a typed v1 event with paid is replayed into it
    mirror.apply(mirror_db, [change("public.orders", "c", key={"id": 1}, after=FIRST, schema=schema(1, *V1))])
    # Then at is created with v1's type, not inferred from its text, and the table still
    # follows v3
    assert column_types(mirror_db)["at"] == "timestamp with time zone"
    assert row(mirror_db, 1)["at"] == datetime(2026, 11, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert mirror_db.execute("SELECT schema_version FROM dmsbus_mirror.typed_tables").fetchall() == [(3,)]
