"""DMS TableMappings as DMS applies them: wildcards (``%`` any run, ``_`` one character,
``[_]`` a literal underscore), one transformation per table, and the tables a changed
mapping must reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config import load_config, render_table_mappings
from dmsbus.table_mappings import MappingError, escape, like, listed_tables, resolve, tables_to_reload

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("locator", "name", "expected"),
    [
        ("event_%", "event_login", True),
        ("event_%", "events_archive", True),  # `_` is any one character
        ("event[_]%", "events_archive", False),
        ("event[_]%", "event_login", True),
        ("event[_]%", "event_", True),  # `%` is also no character
        ("order[_]lines", "order_lines", True),
        ("order[_]lines", "orderXlines", False),
        ("order_lines", "orderXlines", True),
        ("a_c", "abbc", False),
        ("%", "anything", True),
        ("orders", "Orders", False),
        ("or.ers", "orders", False),  # regular-expression characters are literal
    ],
)
def test_object_locators_match_as_dms_documents(locator: str, name: str, expected: bool) -> None:
    assert like(locator, name) is expected


def test_escape_makes_an_identifier_match_itself_only() -> None:
    assert escape("order_lines") == "order[_]lines"
    assert like(escape("a_b"), "a_b") and not like(escape("a_b"), "aXb")


def _sample() -> dict[str, Any]:
    (legacy,) = load_config(REPO / "config").sources
    return render_table_mappings("demo", legacy)


def test_the_sample_mappings_name_every_table_by_one_rule() -> None:
    # Given the sample source's rendered rules
    mappings = _sample()
    # When each table (and tables the wildcard selects) is resolved as DMS would
    names = {
        (schema, table): resolve(mappings, schema, table)
        for schema, table in [*listed_tables(mappings), ("audit", "event_login"), ("audit", "event_payment")]
    }
    # Then every one gets the bus's name, versioned ones with their version
    assert {key: (t.name if t else None) for key, t in names.items()} == {
        ("public", "customers"): "demo.legacy.public.customers",
        ("public", "orders"): "demo.legacy.public.orders",
        ("public", "order_lines"): "demo.legacy.public.order_lines",
        ("public", "products"): "demo.legacy.public.products.v2",
        ("audit", "event_login"): "demo.legacy.audit.event_login",
        ("audit", "event_payment"): "demo.legacy.audit.event_payment",
    }
    # And the wildcard's `_` is literal: audit.events_archive is not selected
    assert resolve(mappings, "audit", "events_archive") is None
    assert resolve(mappings, "public", "orders_archive") is None


def test_a_table_two_transformations_match_has_no_name() -> None:
    # Given a schema-wide prefix and a table's own suffix (two actions on one object)
    mappings = {
        "rules": [
            {"rule-type": "selection", "rule-id": "1", "rule-name": "s",
             "object-locator": {"schema-name": "public", "table-name": "%"}, "rule-action": "include"},
            {"rule-type": "transformation", "rule-id": "2", "rule-name": "prefix", "rule-target": "table",
             "object-locator": {"schema-name": "public", "table-name": "%"}, "rule-action": "add-prefix",
             "value": "demo.legacy.public."},
            {"rule-type": "transformation", "rule-id": "3", "rule-name": "suffix", "rule-target": "table",
             "object-locator": {"schema-name": "public", "table-name": "products"},
             "rule-action": "add-suffix", "value": ".v2"},
        ]
    }  # fmt: skip
    # When the table both match is resolved, Then it is an error naming both rules
    with pytest.raises(MappingError, match="'prefix', 'suffix'"):
        resolve(mappings, "public", "products")
    assert resolve(mappings, "public", "orders") is not None


def test_an_explicit_exclude_wins_over_an_include() -> None:
    mappings = {
        "rules": [
            {"rule-type": "selection", "rule-id": "1", "rule-name": "all",
             "object-locator": {"schema-name": "public", "table-name": "%"}, "rule-action": "include"},
            {"rule-type": "selection", "rule-id": "2", "rule-name": "not-this",
             "object-locator": {"schema-name": "public", "table-name": "secrets"}, "rule-action": "exclude"},
        ]
    }  # fmt: skip
    assert resolve(mappings, "public", "secrets") is None
    assert resolve(mappings, "public", "orders") is not None


def _with_table(**changes: Any) -> dict[str, Any]:
    (legacy,) = load_config(REPO / "config").sources
    tables = [t.model_copy(update=changes.get(t.table, {})) for t in legacy.tables]
    tables += [type(legacy.tables[0])(schema="public", table=name) for name in changes.get("add", [])]
    return render_table_mappings("demo", legacy.model_copy(update={"tables": tables}))


def test_reloads_are_the_tables_added_and_the_versions_bumped() -> None:
    # Given the deployed sample mappings
    old = _sample()
    # When a table is added and products' version goes from 2 to 3
    new = _with_table(add=["invoices"], products={"version": 3})
    # Then those two are reloaded, and no other
    assert tables_to_reload(old, new) == [("public", "products"), ("public", "invoices")]


def test_unchanged_or_removed_tables_are_not_reloaded() -> None:
    old = _sample()
    assert tables_to_reload(old, old) == []
    (legacy,) = load_config(REPO / "config").sources
    fewer = render_table_mappings("demo", legacy.model_copy(update={"tables": legacy.tables[:2]}))
    assert tables_to_reload(old, fewer) == []


def test_rule_names_are_unique_even_when_identifiers_look_alike() -> None:
    # Given tables whose names would collide with `-` or `%` spelled out: a.b-c and a-b.c,
    # a table event_any and a pattern event_%
    (legacy,) = load_config(REPO / "config").sources
    table = type(legacy.tables[0])
    source = legacy.model_copy(
        update={
            "tables": [
                table(schema="a", table="b-c"),
                table(schema="a-b", table="c"),
                table(schema="audit", table="event_any", version=1),
            ],
            "selections": [type(legacy.selections[0])(schema="audit", table="event_%")],
        }
    )
    # When the mappings are rendered, Then every rule name is unique (DMS requires it)
    names = [rule["rule-name"] for rule in render_table_mappings("demo", source)["rules"]]
    assert len(names) == len(set(names)) == 8
