"""Typed settings: each function's environment as one frozen dataclass, written by the
deployment plan (``config/plan.py``: ``model.environment()``) and read by the function at
cold start (``Model.from_environ(os.environ)``), with errors that name the variable.

A field is declared with :func:`variable`, which gives its environment variable's name
(from ``dmsbus.variables``). Field types: ``str``, ``int``, ``bool``, a ``Literal`` of
strings, ``tuple[str, ...]`` (comma-separated), any of them ``| None`` (unset), and a nested
model (its variables are the parent's). Defaults: a variable the deployment always writes
has none here (its default is config/model.py's); a default here is for a tunable the
deployment never writes, so no default is defined twice (tests/unit/test_settings.py).

Why not pydantic or Powertools' parser: the functions' layer does not ship pydantic (a
binary wheel per architecture, and its import on every cold start), and these models need
no more than this.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self, get_args, get_origin

from dmsbus import variables
from dmsbus.ddbjson import NumberMode
from dmsbus.publisher import PublisherSettings

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
#: Field metadata: the environment variable's name, and what to do when it is missing.
_VARIABLE = "dmsbus.variable"
_HINT = "dmsbus.hint"


class SettingsError(ValueError):
    """An environment variable of a function is missing or malformed."""


def variable(name: str, *, default: Any = dataclasses.MISSING, hint: str = "") -> Any:
    """A field read from, and written to, environment variable ``name``. ``hint``: what to
    do when it is missing (appended to the error)."""
    metadata = {_VARIABLE: name, _HINT: hint}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Base of a function's settings model. ``WHO`` names the function in errors."""

    WHO: ClassVar[str] = "function"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        """The model from ``environ``: a missing required variable or a malformed value
        raises SettingsError naming the variable. Variables it does not declare are ignored
        (Lambda's own, a consumer's own)."""
        return cls(**_read(cls, environ, cls.WHO))

    def environment(self) -> dict[str, str]:
        """The variables that give this model back: unset (None) ones and ones at their
        default are left out. String values are kept as they are (a deployment's
        reference, say a CloudFormation token)."""
        written: dict[str, str] = {}
        for item, kind in _fields(type(self)):
            value = getattr(self, item.name)
            if isinstance(kind, type) and issubclass(kind, Settings):
                written.update(value.environment())
            elif value is not None and (item.default is dataclasses.MISSING or value != item.default):
                written[item.metadata[_VARIABLE]] = _write(value)
        return written

    @classmethod
    def variables(cls) -> dict[str, bool]:
        """Every variable the model reads -> whether it has a default (or may be unset)."""
        names: dict[str, bool] = {}
        for item, kind in _fields(cls):
            if isinstance(kind, type) and issubclass(kind, Settings):
                names.update(kind.variables())
            else:
                names[item.metadata[_VARIABLE]] = item.default is not dataclasses.MISSING
        return names


#: Each model's fields with their resolved types, worked out once per class.
_FIELDS: dict[type[Settings], tuple[tuple[dataclasses.Field[Any], Any], ...]] = {}


def _fields(cls: type[Settings]) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    """The model's variable fields and nested models, with their resolved types."""
    known = _FIELDS.get(cls)
    if known is not None:
        return known
    for klass in cls.__mro__:
        loose = [name for name, value in vars(klass).items() if isinstance(value, dataclasses.Field)]
        if loose:
            raise TypeError(f"{klass.__name__} declares {loose} but is not a @dataclass: decorate it")
    hints = typing.get_type_hints(cls)
    found: list[tuple[dataclasses.Field[Any], Any]] = []
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        nested = isinstance(kind, type) and issubclass(kind, Settings)
        if not nested:
            _check_type(f"{cls.__name__}.{item.name}", kind)
            if _VARIABLE not in item.metadata:
                raise TypeError(f"{cls.__name__}.{item.name} is neither a variable() nor a nested model")
        found.append((item, kind))
    _FIELDS[cls] = tuple(found)
    return _FIELDS[cls]


def _read(cls: type[Settings], environ: Mapping[str, str], who: str) -> dict[str, Any]:
    """The model's values; every missing or malformed variable is named in one error."""
    problems: list[str] = []
    values = _values(cls, environ, who, problems)
    if problems:
        raise SettingsError("; ".join(problems))
    return values


def _values(cls: type[Settings], environ: Mapping[str, str], who: str, problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item, kind in _fields(cls):
        if isinstance(kind, type) and issubclass(kind, Settings):
            nested = _values(kind, environ, kind.WHO if "WHO" in vars(kind) else who, problems)
            if not problems:
                try:
                    values[item.name] = kind(**nested)
                except SettingsError as exc:
                    problems.append(str(exc))
            continue
        name = item.metadata[_VARIABLE]
        raw = environ.get(name, "").strip()
        if not raw:
            if item.default is dataclasses.MISSING:
                hint = item.metadata[_HINT]
                problems.append(
                    f"environment variable {name} is required by the {who} and is not set"
                    + (f": {hint}" if hint else "")
                )
            continue
        try:
            values[item.name] = _parse(name, raw, kind)
        except SettingsError as exc:
            problems.append(str(exc))
    return values


def _check_type(where: str, kind: Any) -> None:
    """Only the types :func:`_parse` reads, so that a model fails when it is first used."""
    options = [o for o in get_args(kind) if o is not type(None)] if _is_union(kind) else [kind]
    if len(options) != 1:
        raise TypeError(f"{where}: a variable is one type, or one type | None (not {kind!r})")
    (only,) = options
    if isinstance(only, type) and issubclass(only, Settings):
        raise TypeError(f"{where}: a nested model cannot be optional")
    if only in (str, int, bool) or (
        get_origin(only) is Literal and all(isinstance(a, str) for a in get_args(only))
    ):
        return
    if get_origin(only) is tuple and get_args(only) == (str, ...):
        return
    raise TypeError(
        f"{where}: {only!r} is not a variable type (str, int, bool, Literal of str, tuple[str, ...])"
    )


def _is_union(kind: Any) -> bool:
    return get_origin(kind) in (typing.Union, types.UnionType)


_INTEGER = re.compile(r"[+-]?\d+")


def _parse(name: str, raw: str, kind: Any) -> Any:
    options = get_args(kind) if _is_union(kind) else (kind,)
    kind = next(option for option in options if option is not type(None))
    if kind is str:
        return raw
    if kind is bool:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise SettingsError(f"environment variable {name} must be true or false, not {raw!r}")
    if kind is int:
        if not _INTEGER.fullmatch(raw):
            raise SettingsError(f"environment variable {name} must be an integer, not {raw!r}")
        return int(raw)
    if get_origin(kind) is Literal:
        allowed = get_args(kind)
        if raw not in allowed:
            choices = " or ".join(repr(choice) for choice in allowed)
            raise SettingsError(f"environment variable {name} must be {choices}, not {raw!r}")
        return raw
    if get_origin(kind) is tuple:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    raise TypeError(f"variable {name}: unsupported type {kind!r}")


def _write(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, str):
        return value  # kept as is: a str subclass (a plan's reference) stays one
    return str(value)


#: The publisher's own defaults, for the tunables no deployment writes.
_PUBLISHER = PublisherSettings()


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishingSettings(Settings):
    """How the glue and discovery's backfill write the bus stream."""

    bus: str = variable(variables.BUS_NAME)
    stream_name: str = variable(variables.STREAM_NAME)
    aggregate: bool = variable(variables.AGGREGATE)
    numbers: NumberMode = variable(variables.NUMBERS)
    aggregate_max_bytes: int = variable(variables.AGGREGATE_MAX_BYTES, default=_PUBLISHER.max_aggregate_bytes)
    put_max_attempts: int = variable(variables.PUT_MAX_ATTEMPTS, default=_PUBLISHER.max_attempts)
    #: Type events with their tables' schemas, read from ``schema_table``.
    typed: bool = variable(variables.TYPED)
    schema_table: str | None = variable(variables.SCHEMA_TABLE, default=None)
    #: A dropped column shows as null until the cache reads the next version.
    schema_ttl_seconds: int = variable(variables.SCHEMA_TTL_SECONDS, default=60)
    #: At a DDL moment, how long to wait for the source's catalog before publishing untyped
    #: (config's ``glue.typed_wait_seconds``, which the deployment plan writes; unset: the
    #: catalog is not read at once, and the images go out untyped until the sweep's read).
    typed_wait_seconds: int | None = variable(variables.TYPED_WAIT_SECONDS, default=None)
    #: ``source=function``: each source's schema function, asked to read a table when
    #: discovery finds it and when the glue meets columns its schema lacks.
    schema_functions: tuple[str, ...] | None = variable(variables.SCHEMA_FUNCTIONS, default=None)

    def __post_init__(self) -> None:
        try:
            self.publisher  # noqa: B018  # validated now, at cold start
        except ValueError as exc:
            raise SettingsError(
                f"{variables.AGGREGATE_MAX_BYTES}/{variables.PUT_MAX_ATTEMPTS}: {exc}"
            ) from None
        malformed = [entry for entry in self.schema_functions or () if not all(entry.partition("="))]
        if malformed:
            raise SettingsError(f"{variables.SCHEMA_FUNCTIONS}: {malformed} are not source=function")

    @property
    def schema_function_of(self) -> dict[str, str]:
        """Each source's schema function name."""
        pairs = (entry.partition("=") for entry in self.schema_functions or ())
        return {source: function for source, _, function in pairs}

    @property
    def publisher(self) -> PublisherSettings:
        return PublisherSettings(
            aggregate=self.aggregate,
            max_aggregate_bytes=self.aggregate_max_bytes,
            max_attempts=self.put_max_attempts,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsumerSettings(Settings):
    """What dmsbus sets on every consumer: its bus, its dead-letter queue, the selection
    of its config entry, and its secret's name and bucket when the entry has them. A
    consumer's own variables (its config entry's ``environment``) are its own model's:
    ``pg_mirror``'s and ``s3_archive``'s extend this one."""

    WHO: ClassVar[str] = "consumer"
    #: Whether the consumer takes typed events (a bus with ``glue.typed``); one that does
    #: not is refused on such a bus at synth rather than fed values it does not expect.
    TYPED_EVENTS: ClassVar[bool] = True

    bus: str | None = variable(variables.BUS_NAME, default=None)
    dlq_url: str | None = variable(variables.DLQ_URL, default=None)
    tables: tuple[str, ...] | None = variable(variables.TABLES, default=None)
    ops: tuple[str, ...] | None = variable(variables.OPS, default=None)
    secret: str | None = variable(variables.CREDENTIALS_NAME, default=None)
    bucket: str | None = variable(variables.BUCKET, default=None)
    #: On a bus that types its events: where ``event.schema`` is read from.
    schema_table: str | None = variable(variables.SCHEMA_TABLE, default=None)
