"""``dmsbus new-consumer NAME --tables public.orders [--ops c,u]``: a consumer to start from.

Writes ``functions/consumers/<folder>/handler.py`` (the decorated function),
``tests/consumers/test_<folder>.py`` (a test made with the consumer test kit that passes as
written) and the consumer's entry in ``config/bus.yaml``, inserted as text so that the
file's comments and layout stay; the new config must load, or nothing is written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.loader import BUS_FILE, ConfigError, load_config
from config.model import ConsumerConfig

_CONSUMERS_KEY = re.compile(r"^consumers:\s*(\[\s*\])?\s*(#.*)?$")
_ANY_CONSUMERS_KEY = re.compile(r"^consumers:")
_ITEM = re.compile(r"^( *)- ")
_TOP_LEVEL = re.compile(r"^[A-Za-z_]")
_FOLDER = re.compile(r"[a-z][a-z0-9_]*")
#: Sample images per op for the generated test (keys and values as the bus delivers them).
_OPS = ("c", "u", "d", "r")


class NewConsumerError(ValueError):
    """A consumer that cannot be created; the message says why."""


@dataclass(frozen=True)
class Plan:
    name: str
    folder: str
    tables: tuple[str, ...]
    ops: tuple[str, ...] | None
    handler: Path
    test: Path
    bus_file: Path


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "new-consumer",
        help="write a consumer's handler, its test and its bus.yaml entry",
        description=__doc__.split("\n\n")[1],
    )
    command.add_argument(
        "name", help="the consumer's name (the function is {bus}-{name}): letters, digits, '-'"
    )
    command.add_argument(
        "--tables", required=True, help="schema.table patterns it receives, comma-separated ('*' wildcards)"
    )
    command.add_argument(
        "--ops", help="ops it receives, comma-separated: c, u, d, r, s (default: every row change)"
    )
    command.add_argument("--config", type=Path, default=repository / "config", help="config folder")
    command.add_argument("--repository", type=Path, default=repository, help=argparse.SUPPRESS)
    command.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    try:
        plan = create(
            arguments.repository,
            arguments.config,
            arguments.name,
            tables=[t.strip() for t in arguments.tables.split(",") if t.strip()],
            ops=[o.strip() for o in arguments.ops.split(",") if o.strip()] if arguments.ops else None,
        )
    except (NewConsumerError, ConfigError) as exc:
        print(f"new-consumer: {exc}", file=sys.stderr)
        return 2
    root = arguments.repository
    for path in (plan.handler, plan.test, plan.bus_file):
        print(f"new-consumer: wrote {path.relative_to(root) if path.is_relative_to(root) else path}")
    print(f"new-consumer: run its test: .venv/bin/pytest {plan.test.relative_to(root)}")
    return 0


def create(repository: Path, config: Path, name: str, *, tables: list[str], ops: list[str] | None) -> Plan:
    """Write the consumer; NewConsumerError (nothing written) when it cannot be."""
    folder = name.replace("-", "_")
    if not _FOLDER.fullmatch(folder):
        raise NewConsumerError(
            f"name {name!r}: use lowercase letters, digits, '-' and '_', starting with a letter "
            "(its folder is a Python package)"
        )
    if not tables:
        raise NewConsumerError("--tables: name at least one schema.table pattern")
    bus_file = config / BUS_FILE
    current = load_config(config, repo=repository)
    if any(entry.name == name for entry in current.bus.consumers):
        raise NewConsumerError(f"{bus_file}: a consumer named {name!r} exists already")
    code = f"functions/consumers/{folder}"
    handler = repository / code / "handler.py"
    test = repository / "tests" / "consumers" / f"test_{folder}.py"
    for path in (handler.parent, test):
        if path.exists():
            raise NewConsumerError(f"{path} exists already: choose another name")
    # The entry must be one the config model takes (patterns, ops), before anything is written.
    try:
        ConsumerConfig.model_validate({"name": name, "code": code, "tables": tables, "ops": ops})
    except ValueError as exc:
        raise NewConsumerError(f"the entry for {name!r} is not valid: {exc}") from None
    plan = Plan(name, folder, tuple(tables), None if ops is None else tuple(ops), handler, test, bus_file)
    original = bus_file.read_text(encoding="utf-8")
    handler.parent.mkdir(parents=True)
    try:
        (handler.parent / "__init__.py").write_text("", encoding="utf-8")
        handler.write_text(handler_source(plan), encoding="utf-8")
        test.parent.mkdir(parents=True, exist_ok=True)
        test.write_text(test_source(plan), encoding="utf-8")
        bus_file.write_text(with_entry(original, entry_yaml(plan, code)), encoding="utf-8")
        load_config(config, repo=repository)
    except BaseException:
        bus_file.write_text(original, encoding="utf-8")
        for path in (handler.parent / "__init__.py", handler, test):
            path.unlink(missing_ok=True)
        handler.parent.rmdir()
        raise
    return plan


def entry_yaml(plan: Plan, code: str) -> str:
    lines = [
        f"  - name: {plan.name}",
        f"    code: {code}",
        f"    tables: [{', '.join(_quoted(t) for t in plan.tables)}]",
    ]
    if plan.ops is not None:
        lines.append(f"    ops: [{', '.join(plan.ops)}]")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def with_entry(text: str, entry: str) -> str:
    """``bus.yaml`` with ``entry`` last in its ``consumers`` list, every other line kept
    (comments too), indented as the list's items are. NewConsumerError for a ``consumers``
    written otherwise than as a block list (or ``[]``)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if _ANY_CONSUMERS_KEY.match(line)), None)
    if start is None:
        return "".join(lines) + "\nconsumers:\n" + entry
    header = _CONSUMERS_KEY.match(lines[start].rstrip("\n"))
    if header is None:
        raise NewConsumerError(
            f"bus.yaml: `{lines[start].strip()}`: write consumers as a block list (one '- name: ...' "
            "entry a line) to add one"
        )
    if header.group(1):  # consumers: [] (its comment kept)
        lines[start] = "consumers:" + (f"  {header.group(2)}" if header.group(2) else "") + "\n"
    end = start + 1
    last = start
    indent: str | None = None
    while end < len(lines) and not _TOP_LEVEL.match(lines[end]):
        if lines[end].strip() and not lines[end].lstrip().startswith("#"):
            last = end
            item = _ITEM.match(lines[end])
            if indent is None and item is not None:
                indent = item.group(1)
        end += 1
    if indent is not None and indent != "  ":
        entry = "".join(indent + line.removeprefix("  ") for line in entry.splitlines(keepends=True))
    return "".join(lines[: last + 1]) + entry + "".join(lines[last + 1 :])


def handler_source(plan: Plan) -> str:
    ops = f"\n    ops={json.dumps(list(plan.ops))}," if plan.ops is not None else ""
    return f'''"""The {plan.name} consumer: {", ".join(plan.tables)}.

Called once per change, in order per row (docs/writing-consumers.md). The values are what
DMS writes for each source type: docs/envelope.md, "What each source type becomes".
Raise to have the change retried, with every later one of its shard.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from dmsbus.consumer import ChangeEvent, consumer

logger = Logger(service="{plan.name}")


@consumer(
    tables={json.dumps(list(plan.tables))},{ops}
)
def handler(event: ChangeEvent) -> None:
    logger.info(
        "change",
        extra={{"id": event.id, "op": event.op, "table": event.qualified_table, "key": event.key}},
    )
'''


def test_source(plan: Plan) -> str:
    table = plan.tables[0].replace("*", "example")
    images = {
        "c": ['after={"id": 1, "status": "new"}'],
        "u": ['before={"id": 1, "status": "new"}', 'after={"id": 1, "status": "paid"}'],
        "d": ['before={"id": 1, "status": "paid"}'],
        "r": ['after={"id": 1, "status": "new"}'],
    }
    # One argument a line, with a trailing comma: the form ruff format keeps.
    changes = "\n".join(
        "        change(\n"
        + "".join(
            f"            {argument},\n"
            for argument in (json.dumps(table), json.dumps(op), 'key={"id": 1}', *images[op])
        )
        + "        ),"
        for op in (plan.ops or _OPS)
    )
    return f'''"""The {plan.name} consumer, run as Lambda runs it (the dmsbus.testing kit)."""

from __future__ import annotations

from consumers.{plan.folder}.handler import handler
from dmsbus.testing import change, invoke, kinesis_event


def test_every_change_it_takes_is_handled() -> None:
    # Given a change of each op it takes
    events = [
{changes}
    ]
    # When the handler runs on them, aggregated as the glue puts them on the stream
    failed = invoke(handler, kinesis_event(events))
    # Then no record is reported as failed
    assert failed == []
'''
