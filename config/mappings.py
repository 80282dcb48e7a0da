"""DMS TableMappings rendered from a source's config, and read back the way DMS applies them.

The rules, in order:
- ``selection``/``include`` for every listed table and every wildcard selection;
- ``transformation``/``add-prefix`` on tables, one per schema: ``{bus}.{source}.{schema}.``;
- ``transformation``/``add-suffix`` per versioned table: ``.v{version}``;
- ``object-mapping``/``map-record-to-record`` for tables with a ``key`` (composite or not the
  primary key) or excluded columns; its ``target-table-name`` is the full table name.

Together they give every DynamoDB table DMS creates the name of ARCHITECTURE.md:
``{bus}.{source}.{schema}.{table}[.v{version}]``. ``resolve`` applies rendered rules to a
source table the way DMS does; the local DMS stand-in uses it, so the CDK task and local
mode name, key and trim tables from the same JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from config.model import SourceConfig, TableConfig
from dmsbus.names import TableName

TASK_SETTINGS_FILE = Path(__file__).with_name("dms-task-settings.json")


def table_name(bus: str, source: str, table: TableConfig) -> TableName:
    return TableName(bus, source, table.schema_, table.table, table.version_suffix)


def render_table_mappings(bus: str, source: SourceConfig) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []

    def add(rule_type: str, name: str, **fields: Any) -> None:
        number = len(rules) + 1
        rules.append({"rule-type": rule_type, "rule-id": str(number), "rule-name": name, **fields})

    for table in source.tables:
        add(
            "selection",
            f"include-{table.schema_}-{table.table}",
            **{"object-locator": _locator(table.schema_, table.table), "rule-action": "include"},
        )
    for selection in source.selections:
        add(
            "selection",
            f"include-{selection.schema_}-{selection.table.replace('%', 'any')}",
            **{"object-locator": _locator(selection.schema_, selection.table), "rule-action": "include"},
        )
    schemas = dict.fromkeys([t.schema_ for t in source.tables] + [s.schema_ for s in source.selections])
    for schema in schemas:
        add(
            "transformation",
            f"prefix-{schema}",
            **{
                "rule-target": "table",
                "object-locator": _locator(schema, "%"),
                "rule-action": "add-prefix",
                "value": f"{bus}.{source.name}.{schema}.",
            },
        )
    for table in source.tables:
        if table.version is not None:
            add(
                "transformation",
                f"suffix-{table.schema_}-{table.table}",
                **{
                    "rule-target": "table",
                    "object-locator": _locator(table.schema_, table.table),
                    "rule-action": "add-suffix",
                    "value": f".{table.version_suffix}",
                },
            )
    for table in source.tables:
        if table.key is None:
            continue
        parameters: dict[str, Any] = {"partition-key-name": table.key[0]}
        if len(table.key) == 2:
            parameters["sort-key-name"] = table.key[1]
        if table.exclude:
            parameters["exclude-columns"] = list(table.exclude)
        add(
            "object-mapping",
            f"map-{table.schema_}-{table.table}",
            **{
                "rule-action": "map-record-to-record",
                "object-locator": _locator(table.schema_, table.table),
                "target-table-name": table_name(bus, source.name, table).dynamodb_table,
                "mapping-parameters": parameters,
            },
        )
    return {"rules": rules}


def _locator(schema: str, table: str) -> dict[str, str]:
    return {"schema-name": schema, "table-name": table}


@cache
def task_settings() -> dict[str, Any]:
    """The replication task settings every source uses: one reviewed file."""
    settings: dict[str, Any] = json.loads(TASK_SETTINGS_FILE.read_text(encoding="utf-8"))
    return settings


@dataclass(frozen=True, slots=True)
class TargetTable:
    """Where DMS puts one source table: the DynamoDB table, its key and dropped columns."""

    name: str
    #: ``[partition]`` or ``[partition, sort]`` from an object mapping; None: the source
    #: table's primary key.
    key: tuple[str, ...] | None
    exclude: frozenset[str]


def resolve(mappings: dict[str, Any], schema: str, table: str) -> TargetTable | None:
    """Apply rendered TableMappings to a source table as DMS does; None when not selected."""
    rules = mappings["rules"]
    selected = False
    for rule in rules:
        if rule["rule-type"] == "selection" and _matches(rule["object-locator"], schema, table):
            selected = rule["rule-action"] == "include"
    if not selected:
        return None
    for rule in rules:
        if rule["rule-type"] == "object-mapping" and _matches(rule["object-locator"], schema, table):
            parameters = rule["mapping-parameters"]
            key = [parameters["partition-key-name"]]
            if "sort-key-name" in parameters:
                key.append(parameters["sort-key-name"])
            return TargetTable(
                rule["target-table-name"], tuple(key), frozenset(parameters.get("exclude-columns", ()))
            )
    name = table
    for rule in rules:
        if rule["rule-type"] == "transformation" and _matches(rule["object-locator"], schema, table):
            if rule["rule-action"] == "add-prefix":
                name = rule["value"] + name
            elif rule["rule-action"] == "add-suffix":
                name = name + rule["value"]
    return TargetTable(name, None, frozenset())


def _matches(locator: dict[str, str], schema: str, table: str) -> bool:
    return _like(locator["schema-name"], schema) and _like(locator["table-name"], table)


@cache
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("%")))


def _like(pattern: str, name: str) -> bool:
    """DMS object-locator matching: ``%`` is any run of characters."""
    return _wildcard(pattern).fullmatch(name) is not None
