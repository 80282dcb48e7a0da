"""Load ``config/`` (``bus.yaml`` and ``sources/*.yaml``) into one validated ``Config``.

Every problem is a ``ConfigError`` whose lines each name the file and the field:
``config/sources/legacy.yaml: tables[2].schema: 'or ders' is not an identifier``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from config.functions import replication_identifier, source_function_names
from config.model import DMS_NAME_LENGTH, BusConfig, Config, SourceConfig
from dmsbus.names import TableName

BUS_FILE = "bus.yaml"
SOURCES_DIR = "sources"
#: DynamoDB table names and Lambda function names have these limits.
MAX_TABLE_NAME = 255
MAX_FUNCTION_NAME = 64
# Keys that would carry a credential in plain text, anywhere in a file.
M = TypeVar("M", BusConfig, SourceConfig)
_SECRET_KEY = re.compile(r"(?i)^(password|passwd|pwd|secret_?string|secret_?value|.*_password)$")


class ConfigError(ValueError):
    """A config that cannot be deployed; ``problems`` are ``file: field: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML would silently keep the last one."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)  # type: ignore[no-untyped-call]
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_config(
    root: Path | str, *, previous: Path | str | None = None, repo: Path | str | None = None
) -> Config:
    """Load and validate ``root``. ``previous``, another config folder (the deployed one),
    turns on the checks between versions; ``repo`` is where consumer ``code`` folders are
    looked up (default: ``root``'s parent)."""
    root = Path(root)
    repo = Path(repo) if repo is not None else root.resolve().parent
    config = _load(root, repo)
    if previous is not None:
        before = _load(Path(previous), repo, check_code=False)
        problems = list(_backwards(root, before, config))
        if problems:
            raise ConfigError(problems)
    return config


def _load(root: Path, repo: Path, *, check_code: bool = True) -> Config:
    problems: list[str] = []
    bus_path = root / BUS_FILE
    bus: BusConfig | None = None
    if not bus_path.is_file():
        problems.append(f"{bus_path}: missing (the bus: name, kinesis, consumers ...)")
    else:
        bus = _parse(bus_path, BusConfig, problems)
        if bus is not None and check_code:
            problems.extend(_consumer_problems(bus_path, bus, repo))
    sources: list[SourceConfig] = []
    source_paths = sorted((root / SOURCES_DIR).glob("*.y*ml"))
    if not source_paths:
        problems.append(f"{root / SOURCES_DIR}: no source files (one YAML file per source database)")
    for path in source_paths:
        source = _parse(path, SourceConfig, problems)
        if source is None:
            continue
        if source.name != path.stem:
            problems.append(f"{path}: name: {source.name!r} must match the file name {path.stem!r}")
            continue
        if bus is not None:
            problems.extend(_name_problems(path, bus, source))
        same = next((other for other in sources if other.name.lower() == source.name.lower()), None)
        if same is not None:
            problems.append(
                f"{path}: name: {source.name!r} and source {same.name!r} name the same DMS resources "
                "(DMS stores identifiers in lowercase: API_CreateReplicationInstance); rename one"
            )
            continue
        sources.append(source)
    if problems:
        raise ConfigError(problems)
    assert bus is not None
    return Config(bus=bus, sources=sources)


def _parse(path: Path, model: type[M], problems: list[str]) -> M | None:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        problems.append(f"{path}: not valid YAML: {_yaml_problem(exc)}")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot be read: {exc}")
        return None
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be a mapping of settings, not {type(raw).__name__}")
        return None
    secrets = list(_secret_literals(raw, ""))
    if secrets:
        problems.extend(
            f"{path}: {where}: a credential literal is not allowed in config; "
            "put it in Secrets Manager and name the secret in credentials.secret"
            for where in secrets
        )
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(f"{path}: {_location(error['loc'])}: {_message(error)}" for error in exc.errors())
        return None


def _secret_literals(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _SECRET_KEY.match(key) and isinstance(item, str | int):
                yield path
            else:
                yield from _secret_literals(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _secret_literals(item, f"{where}[{index}]")


def _location(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[", "list[", "constrained-")):
            continue  # pydantic's names for union members, not fields
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see docs/config.md for the settings)"
    if error["type"] == "missing":
        return "required and missing"
    if "input" in error and error["type"] not in ("value_error",) and not isinstance(error["input"], dict):
        return f"{message} (got {error['input']!r})"
    return message


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


def _consumer_problems(path: Path, bus: BusConfig, repo: Path) -> Iterator[str]:
    for index, consumer in enumerate(bus.consumers):
        where = f"{path}: consumers[{index}]"
        parts = consumer.code.split("/")
        if parts[:2] != ["functions", "consumers"] or len(parts) != 3 or not all(parts):
            yield f"{where}.code: {consumer.code!r} must be functions/consumers/<folder>"
            continue
        folder = repo / consumer.code
        if not (folder / "handler.py").is_file():
            yield f"{where}.code: {folder} has no handler.py (the folder is missing or empty)"
        function_name = f"{bus.name}-{consumer.name}"
        if len(function_name) > MAX_FUNCTION_NAME:
            yield (
                f"{where}.name: the function name {function_name!r} is over "
                f"{MAX_FUNCTION_NAME} characters; shorten the bus or consumer name"
            )


def _name_problems(path: Path, bus: BusConfig, source: SourceConfig) -> Iterator[str]:
    identifier = replication_identifier(bus.name, source.name)
    if len(identifier) > DMS_NAME_LENGTH:
        yield (
            f"{path}: name: the DMS replication instance identifier {identifier!r} (bus name, '-', "
            f"source name) is over DMS's {DMS_NAME_LENGTH} characters (API_CreateReplicationInstance); "
            "shorten the bus or source name"
        )
        return
    for function_name in source_function_names(bus, source):
        if len(function_name) > MAX_FUNCTION_NAME:
            yield (
                f"{path}: name: the function name {function_name!r} is over {MAX_FUNCTION_NAME} "
                "characters; shorten the bus or source name"
            )
    for index, table in enumerate(source.tables):
        name = TableName(bus.name, source.name, table.schema_, table.table, table.version_suffix)
        if len(name.dynamodb_table) > MAX_TABLE_NAME:
            yield (
                f"{path}: tables[{index}]: the DynamoDB table name {name.dynamodb_table!r} is over "
                f"{MAX_TABLE_NAME} characters"
            )


def _backwards(root: Path, before: Config, after: Config) -> Iterator[str]:
    """Changes that cannot be deployed over ``before``: a version going backwards (its old
    DynamoDB table and stream are gone) or a key changed without a reload."""
    old_sources = {source.name: source for source in before.sources}
    for source in after.sources:
        old = old_sources.get(source.name)
        if old is None:
            continue
        old_tables = {(table.schema_, table.table): table for table in old.tables}
        path = root / SOURCES_DIR / f"{source.name}.yaml"
        for index, table in enumerate(source.tables):
            previous = old_tables.get((table.schema_, table.table))
            if previous is None:
                continue
            was, now = previous.version or 0, table.version or 0
            if now < was:
                yield (
                    f"{path}: tables[{index}].version: {table.version} goes backwards from "
                    f"{previous.version}; a reload needs a higher version"
                )
            elif now == was and (previous.key, previous.key_types) != (table.key, table.key_types):
                yield (
                    f"{path}: tables[{index}].key: changing the key ({previous.key} {previous.key_types} -> "
                    f"{table.key} {table.key_types}) needs a reload: bump version"
                )
