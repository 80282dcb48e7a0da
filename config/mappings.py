"""DMS TableMappings rendered from a source's config (DMS's own rules: docs/dms.md).

Every selected table gets its DynamoDB name, ``{bus}.{source}.{schema}.{table}[.v{n}]``
(ARCHITECTURE.md), from exactly one rule, because DMS applies at most one transformation
rule action to an object (CHAP_Tasks.CustomizingTasks.TableMapping.SelectionTransformation.
Transformations):
- a listed table with a ``key`` or ``exclude``: an ``object-mapping``
  (``map-record-to-record``) whose ``target-table-name`` is the full name, and no
  transformation matches it;
- a versioned listed table without one: a ``rename`` to the full name;
- a plain listed table: an ``add-prefix`` on that table alone;
- a wildcard selection: an ``add-prefix`` on its pattern, which also names a plain listed
  table it matches (that table then gets no rule of its own).
Config validation (``config.model.SourceConfig``) refuses what would still put two rules
on one object: overlapping selections, or a versioned/keyed table a selection matches.

Names are written as object locators: ``_`` is one character there, so a literal
underscore is ``[_]``; ``%`` in a config pattern stays the wildcard. ``resolve``
(``dmsbus.table_mappings``) applies rendered rules the way DMS does; the task lifecycle
function and local mode's DMS stand-in use it, so the CDK task, the reloads and local mode
read the same JSON.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from config.model import SelectionConfig, SourceConfig, TableConfig
from dmsbus.names import TableName
from dmsbus.table_mappings import TargetTable, escape, like, pattern, resolve

TASK_SETTINGS_FILE = Path(__file__).with_name("dms-task-settings.json")

__all__ = ["TargetTable", "render_table_mappings", "resolve", "table_name", "task_settings"]


def table_name(bus: str, source: str, table: TableConfig) -> TableName:
    return TableName(bus, source, table.schema_, table.table, table.version_suffix)


def prefix(bus: str, source: str, schema: str) -> str:
    return f"{bus}.{source}.{schema}."


def covered_by(table: TableConfig, selections: list[SelectionConfig]) -> SelectionConfig | None:
    """The wildcard selection whose add-prefix also matches this listed table, if any."""
    for selection in selections:
        if selection.schema_ == table.schema_ and like(pattern(selection.table), table.table):
            return selection
    return None


def render_table_mappings(bus: str, source: SourceConfig) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []

    def add(rule_type: str, name: str, **fields: Any) -> None:
        # Rule names must be unique; identifiers may hold `-`, so the number makes them so.
        number = len(rules) + 1
        rules.append(
            {"rule-type": rule_type, "rule-id": str(number), "rule-name": f"{number}-{name}", **fields}
        )

    def table_locator(table: TableConfig) -> dict[str, str]:
        return {"schema-name": escape(table.schema_), "table-name": escape(table.table)}

    def selection_locator(selection: SelectionConfig) -> dict[str, str]:
        return {"schema-name": escape(selection.schema_), "table-name": pattern(selection.table)}

    for table in source.tables:
        add(
            "selection",
            f"include-{table.schema_}.{table.table}",
            **{"object-locator": table_locator(table), "rule-action": "include"},
        )
    for selection in source.selections:
        add(
            "selection",
            f"include-{selection.schema_}.{selection.table.replace('%', 'any')}",
            **{"object-locator": selection_locator(selection), "rule-action": "include"},
        )
    for selection in source.selections:
        add(
            "transformation",
            f"prefix-{selection.schema_}.{selection.table.replace('%', 'any')}",
            **{
                "rule-target": "table",
                "object-locator": selection_locator(selection),
                "rule-action": "add-prefix",
                "value": prefix(bus, source.name, selection.schema_),
            },
        )
    for table in source.tables:
        full_name = table_name(bus, source.name, table).dynamodb_table
        if table.key is not None:
            assert table.key_types is not None  # the config model requires them with a key
            parameters: dict[str, Any] = {"partition-key-name": table.key[0]}
            if len(table.key) == 2:
                parameters["sort-key-name"] = table.key[1]
            if table.exclude:
                parameters["exclude-columns"] = list(table.exclude)
            # The key attributes, declared as every documented DynamoDB object mapping does
            # (CHAP_Target.DynamoDB, "Using object mapping to migrate data to DynamoDB");
            # the other columns map to attributes of their own name (map-record-to-record).
            parameters["attribute-mappings"] = [
                {
                    "target-attribute-name": column,
                    "attribute-type": "scalar",
                    "attribute-sub-type": kind,
                    "value": "${" + column + "}",
                }
                for column, kind in zip(table.key, table.key_types, strict=True)
            ]
            add(
                "object-mapping",
                f"map-{table.schema_}.{table.table}",
                **{
                    "rule-action": "map-record-to-record",
                    "object-locator": table_locator(table),
                    "target-table-name": full_name,
                    "mapping-parameters": parameters,
                },
            )
        elif table.version is not None:
            add(
                "transformation",
                f"rename-{table.schema_}.{table.table}",
                **{
                    "rule-target": "table",
                    "object-locator": table_locator(table),
                    "rule-action": "rename",
                    "value": full_name,
                },
            )
        elif covered_by(table, source.selections) is None:
            add(
                "transformation",
                f"prefix-{table.schema_}.{table.table}",
                **{
                    "rule-target": "table",
                    "object-locator": table_locator(table),
                    "rule-action": "add-prefix",
                    "value": prefix(bus, source.name, table.schema_),
                },
            )
    return {"rules": rules}


@cache
def task_settings() -> dict[str, Any]:
    """The replication task settings every source uses: one reviewed file."""
    settings: dict[str, Any] = json.loads(TASK_SETTINGS_FILE.read_text(encoding="utf-8"))
    return settings
