"""DMS TableMappings read back the way DMS applies them: which source tables a task selects
and what each becomes on the DynamoDB target.

Object locators (DMS User Guide, "Wildcards in table mapping", CHAP_Tasks.CustomizingTasks.
TableMapping.SelectionTransformation.Wildcards): ``%`` matches any run of characters (also
none), ``_`` matches exactly one character, and ``[_]`` is a literal underscore. Every other
character stands for itself.

Transformations (CHAP_Tasks.CustomizingTasks.TableMapping.SelectionTransformation.
Transformations): "You can't apply more than one transformation rule action against the
same object", so a table matched by two table transformations has no defined name:
``resolve`` raises instead of guessing.

Plain Python: the config renderer, the task lifecycle function (which reloads tables whose
target changed) and local mode's DMS stand-in all read mappings with this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any


class MappingError(ValueError):
    """TableMappings DMS would not apply as intended (the message names the rules)."""


@dataclass(frozen=True, slots=True)
class TargetTable:
    """Where DMS puts one source table: the DynamoDB table, its key and dropped columns."""

    name: str
    #: ``[partition]`` or ``[partition, sort]`` from an object mapping; None: the source
    #: table's primary key.
    key: tuple[str, ...] | None
    exclude: frozenset[str]
    #: The key attributes' ``attribute-sub-type`` (``string`` or ``number``) an object
    #: mapping declares, as (attribute, sub-type) pairs; empty: DMS's type for the column.
    key_types: tuple[tuple[str, str], ...] = ()


def escape(name: str) -> str:
    """An identifier as an object locator that matches it alone: ``_`` becomes ``[_]``."""
    return name.replace("_", "[_]")


def pattern(config_pattern: str) -> str:
    """A config table pattern (``%`` any run, every other character literal) as a locator."""
    return escape(config_pattern)


@cache
def _regex(locator: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(locator):
        if locator.startswith("[_]", index):
            parts.append("_")
            index += 3
            continue
        char = locator[index]
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def like(locator: str, name: str) -> bool:
    """True when a DMS object-locator name matches ``name``."""
    return _regex(locator).fullmatch(name) is not None


def literal(locator: str) -> str | None:
    """The one name a locator matches, or None when it has a wildcard."""
    plain = locator.replace("[_]", "")
    if "%" in plain or "_" in plain:
        return None
    return locator.replace("[_]", "_")


def matches(locator: Mapping[str, str], schema: str, table: str) -> bool:
    return like(locator["schema-name"], schema) and like(locator["table-name"], table)


def _rules(mappings: Mapping[str, Any], rule_type: str) -> Iterator[Mapping[str, Any]]:
    return (rule for rule in mappings["rules"] if rule["rule-type"] == rule_type)


def selected(mappings: Mapping[str, Any], schema: str, table: str) -> bool:
    """Included by a selection rule and excluded by none (an explicit exclude wins)."""
    actions = {
        rule["rule-action"]
        for rule in _rules(mappings, "selection")
        if matches(rule["object-locator"], schema, table)
    }
    return "include" in actions and "exclude" not in actions


def resolve(mappings: Mapping[str, Any], schema: str, table: str) -> TargetTable | None:
    """Apply TableMappings to a source table as DMS does; None when it is not selected."""
    if not selected(mappings, schema, table):
        return None
    for rule in _rules(mappings, "object-mapping"):
        if matches(rule["object-locator"], schema, table):
            parameters = rule["mapping-parameters"]
            key = [parameters["partition-key-name"]]
            if "sort-key-name" in parameters:
                key.append(parameters["sort-key-name"])
            declared = tuple(
                (mapping["target-attribute-name"], mapping["attribute-sub-type"])
                for mapping in parameters.get("attribute-mappings", ())
                if mapping.get("attribute-type") == "scalar" and mapping["target-attribute-name"] in key
            )
            return TargetTable(
                rule["target-table-name"],
                tuple(key),
                frozenset(parameters.get("exclude-columns", ())),
                declared,
            )
    transformations = [
        rule
        for rule in _rules(mappings, "transformation")
        if rule["rule-target"] == "table" and matches(rule["object-locator"], schema, table)
    ]
    if len(transformations) > 1:
        names = ", ".join(repr(rule["rule-name"]) for rule in transformations)
        raise MappingError(
            f"{schema}.{table} is matched by the table transformations {names}: DMS applies at most "
            "one transformation rule action to an object, so its target name is undefined"
        )
    name = table
    for rule in transformations:
        action = rule["rule-action"]
        if action == "add-prefix":
            name = rule["value"] + name
        elif action == "add-suffix":
            name = name + rule["value"]
        elif action == "rename":
            name = rule["value"]
        else:
            raise MappingError(f"{schema}.{table}: table transformation {action!r} is not one dmsbus renders")
    return TargetTable(name, None, frozenset())


def listed_tables(mappings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(schema, table)`` pairs that included selection rules name without wildcards."""
    found: dict[tuple[str, str], None] = {}
    for rule in _rules(mappings, "selection"):
        if rule["rule-action"] != "include":
            continue
        schema = literal(rule["object-locator"]["schema-name"])
        table = literal(rule["object-locator"]["table-name"])
        if schema is not None and table is not None:
            found[(schema, table)] = None
    return list(found)


def tables_to_reload(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Named tables whose DynamoDB target is new in ``new``: added to the selection, or given
    another target name (a version bump). Resuming a task does not refill those
    (ReloadTables does); tables only a new wildcard matches cannot be named here."""
    reload = []
    for schema, table in listed_tables(new):
        after = resolve(new, schema, table)
        before = resolve(old, schema, table) if old is not None else None
        if after is not None and (before is None or before.name != after.name):
            reload.append((schema, table))
    return reload
