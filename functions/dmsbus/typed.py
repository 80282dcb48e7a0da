"""Typed values: DMS's values (as the glue decodes them from DynamoDB) turned back into
the source's types with the table's schema (docs/envelope.md, "Typed values").

| kind | DMS writes (docs/dms.md) | the typed value |
|---|---|---|
| boolean | S ``"true"``/``"false"`` | ``true``/``false`` |
| integer, decimal, float | N (S for ``numeric(p,s)``, p ≥ 39) | today's rules: an integer, or the exact decimal text |
| timestamptz | S ``2026-11-01 10:00:00.500000``, in UTC | ``"2026-11-01T10:00:00.500000Z"`` |
| timestamp | S ``2026-11-01 12:00:00.000000`` | ``"2026-11-01T12:00:00.000000"``, no offset |
| date, time | S ``2026-11-01``, ``08:30:00.000000`` | as written (ISO-8601 already) |
| json | S, the source's text | the same string (Debezium's choice): parse it yourself |
| text and the rest | S | the same string |
| unwritten (``bytea``, ``oid``) | nothing | left out of the image: DMS never writes it, so NULL cannot be told from a value |

Every other column of the schema is in the typed image: a column DMS left out is NULL
("NULL data from the source are ignored on the target").

A value that does not convert, or an attribute the schema lacks, raises
:class:`TypingError`: the glue then publishes the event untyped, as DMS wrote it, and asks
for the schema again. Nothing is held back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from dmsbus.names import TableName
from dmsbus.schemas import Column, Kind, RefreshRequest, SchemaError, SchemaStore, TableSchema, qualified

if TYPE_CHECKING:  # dmsbus.settings imports the publisher, which imports this module
    from dmsbus.settings import PublishingSettings

logger = logging.getLogger("dmsbus.typed")

Converter = Callable[[Any], Any]

_INTEGER = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")


class TypingError(ValueError):
    """An image the schema cannot type; the message names the attribute (and shows the
    value: for tests and debugging, never for logs). ``column``: which."""

    column: str | None = None


class MissingColumnError(TypingError):
    """An attribute the schema does not have: the source's table changed since it was read."""

    def __init__(self, attributes: list[str]) -> None:
        super().__init__(f"attributes {attributes} are not columns of the known schema")
        self.attributes = attributes


_BOOLEANS: dict[Any, bool] = {"true": True, "false": False, True: True, False: False}


def _boolean(value: Any) -> bool:
    try:
        return _BOOLEANS[value]
    except (KeyError, TypeError):
        raise TypingError(f"{value!r} is not DMS's boolean text") from None


def _wide_number(value: Any) -> Any:
    """A numeric(p,s) with p >= 39, which DMS writes as S: the rules of the decoded N
    values, as DynamoDB normalizes them (an integer when integral, else the decimal text
    without trailing zeros). It stays text in ``numbers: number`` mode too."""
    if type(value) is int or isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        if _INTEGER.fullmatch(value):
            return int(value)
        if _DECIMAL.fullmatch(value):
            number = Decimal(value)
            if number == number.to_integral_value():
                return int(number)
            return format(number.normalize(_EXACT), "f")
    raise TypingError(f"{value!r} is not a number")


#: Wide enough for every numeric PostgreSQL holds: normalizing never rounds.
_EXACT = Context(prec=1000)
#: Above it DMS writes a numeric as STRING, not as NUMERIC (CHAP_Source.PostgreSQL).
NUMERIC_MAX_PRECISION = 38


def _timestamp(zone: str) -> Converter:
    def convert(value: Any) -> str:
        # DMS's form, told by its separators (a full pattern match costs the glue 3 times this)
        try:
            if value[10] == " " and value[13] == ":" and value[4] == "-":
                return value[:10] + "T" + value[11:] + zone  # type: ignore[no-any-return]
        except (IndexError, TypeError):
            pass
        raise TypingError(f"{value!r} is not DMS's DATETIME text")

    return convert


#: Integers, floats and numerics up to p = 38 arrive as N, decoded by today's rules already.
CONVERTERS: dict[Kind, Converter | None] = {
    "boolean": _boolean,
    "integer": None,
    "decimal": None,
    "float": None,
    "timestamptz": _timestamp("Z"),
    "timestamp": _timestamp(""),
    "date": None,
    "time": None,
    "json": None,
    "text": None,
}


def _converter(column: Column) -> Converter | None:
    if column.kind == "decimal" and (column.precision or 0) > NUMERIC_MAX_PRECISION:
        return _wide_number
    return CONVERTERS[column.kind]


class ImageTyper:
    """Types images of one schema version. Build once per version: it holds each
    column's converter."""

    __slots__ = ("_converting", "_names", "_nulls", "converted", "schema")

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        #: Every written column in the schema's order, NULL until the image says otherwise.
        self._nulls = dict.fromkeys(column.name for column in schema.columns if column.written)
        self._converting = tuple(
            (column.name, convert)
            for column in schema.columns
            if column.written and (convert := _converter(column)) is not None
        )
        self._names = frozenset(column.name for column in schema.columns)
        #: The columns whose values typing changes (a key of only other columns stays as it is).
        self.converted = frozenset(name for name, _ in self._converting)

    def image(self, image: dict[str, Any] | None) -> dict[str, Any] | None:
        """The typed image, in the schema's column order; None stays None."""
        if image is None:
            return None
        if not image.keys() <= self._names:
            raise MissingColumnError(sorted(image.keys() - self._names))
        typed = {**self._nulls, **image}
        for name, convert in self._converting:
            value = typed[name]
            if value is not None:
                try:
                    typed[name] = convert(value)
                except TypingError as exc:
                    error = TypingError(f"column {name}: {exc}")
                    error.column = name
                    raise error from None
        return typed


class SchemaSource(Protocol):
    """Where the glue finds a table's schema (``SchemaCache``; a dict in tests)."""

    def typer(self, name: TableName) -> ImageTyper | None: ...

    def stale(self, name: TableName, attributes: list[str]) -> None: ...


class SchemaVersions:
    """The schema versions typed events name, per container (a version never changes):
    what the consumer SDK gives as ``event.schema``."""

    def __init__(self, store: SchemaStore) -> None:
        self.store = store
        self._known: dict[tuple[str, str, str, int], TableSchema] = {}

    def of(self, source: str, schema: str, table: str, version: int) -> TableSchema | None:
        """The version, or None when the store does not have it or cannot be read (then it
        is asked again next time)."""
        key = (source, schema, table, version)
        found = self._known.get(key)
        if found is not None:
            return found
        name = qualified(source, schema, table)
        try:
            found = self.store.version(name, version)
        except Exception:  # the consumer goes on with event.schema None
            logger.exception("schema %s v%d not read", name, version)
            return None
        if found is not None:
            self._known[key] = found
        return found


def schema_cache(settings: PublishingSettings, *, dynamodb: Any, lambda_client: Any) -> SchemaCache | None:
    """The cache of a function that types events, asking the schema functions for tables
    it has no schema of, or None when the bus does not type its events."""
    if not (settings.typed and settings.schema_table):
        return None
    functions = settings.schema_function_of
    return SchemaCache(
        SchemaStore(dynamodb, settings.schema_table),
        ttl=settings.schema_ttl_seconds,
        refresher=SchemaRefresher(lambda_client, functions) if functions else None,
    )


class SchemaRefresher:
    """Asks a source's schema function to read a table now: Lambda's asynchronous Invoke
    (``InvocationType=Event``), which Lambda queues and retries twice on an error
    (invocation-async-error-handling). At most once per table every ``every`` seconds per
    container; a request that cannot be sent is logged, never raised: events go on."""

    def __init__(
        self,
        lambda_client: Any,
        functions: Mapping[str, str],
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = lambda_client
        self.functions = dict(functions)
        self.every = every
        self._clock = clock
        self._asked: dict[tuple[str, str, str], float] = {}

    def request(self, name: TableName, reason: str) -> bool:
        """Whether a request for the table was sent now."""
        function = self.functions.get(name.source)
        if function is None:
            return False
        key = (name.source, name.schema, name.table)
        now = self._clock()
        if now < self._asked.get(key, float("-inf")) + self.every:
            return False
        self._asked[key] = now
        request = RefreshRequest((f"{name.schema}.{name.table}",), reason)
        try:
            self.client.invoke(FunctionName=function, InvocationType="Event", Payload=request.payload())
        except (ClientError, BotoCoreError) as exc:
            logger.warning("schema function %s not asked for %s: %s", function, key, exc)
            return False
        logger.info("schema function %s asked for %s.%s: %s", function, name.schema, name.table, reason)
        return True


class SchemaCache:
    """Each table's latest schema as a typer, per container: read from the store at first
    use, again after ``ttl`` seconds, and sooner (``retry`` seconds) after an image had a
    column the schema lacks or the store could not be read. A table without a schema, or a
    store that fails, gives None: its events go out untyped, never held back."""

    def __init__(
        self,
        store: SchemaStore,
        *,
        ttl: float = 300.0,
        retry: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        refresher: SchemaRefresher | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.retry = retry
        self._clock = clock
        #: Asked to read a table the store has no schema of, or one whose columns changed.
        self.refresher = refresher
        #: source.schema.table -> (typer or None, when to read it again)
        self._known: dict[str, tuple[ImageTyper | None, float]] = {}

    def typer(self, name: TableName) -> ImageTyper | None:
        table_key = qualified(name.source, name.schema, name.table)
        known = self._known.get(table_key)
        now = self._clock()
        if known is not None and now < known[1]:
            return known[0]
        try:
            schema = self.store.latest(table_key)
            typer = ImageTyper(schema) if schema is not None else None
        except (ClientError, BotoCoreError, SchemaError) as exc:
            logger.warning("schema of %s not read, its events go out untyped: %s", table_key, exc)
            return self._keep(table_key, known, now)
        except Exception:  # a stored schema this code cannot use: untyped, never held back
            logger.exception("schema of %s not usable, its events go out untyped", table_key)
            return self._keep(table_key, known, now)
        if known is not None and known[0] is not None and schema is not None and known[0].schema == schema:
            typer = known[0]  # the same version: keep its converters
        if schema is None and self.refresher is not None:
            self.refresher.request(name, "no schema stored")
        self._known[table_key] = (typer, now + (self.ttl if typer is not None else self.retry))
        return typer

    def _keep(
        self, table_key: str, known: tuple[ImageTyper | None, float] | None, now: float
    ) -> ImageTyper | None:
        """After a failed read: what was known, until the next try."""
        typer = known[0] if known is not None else None
        self._known[table_key] = (typer, now + self.retry)
        return typer

    def stale(self, name: TableName, attributes: list[str]) -> None:
        """An image had ``attributes`` the schema lacks: read the schema again soon."""
        table_key = qualified(name.source, name.schema, name.table)
        known = self._known.get(table_key)
        soon = self._clock() + self.retry
        if known is not None and known[1] > soon:
            # Once per retry period, not per event
            self._known[table_key] = (known[0], soon)
            logger.info("%s has columns its schema lacks (%s): reading it again", table_key, attributes)
        if self.refresher is not None:  # it asks once a minute per table at most
            self.refresher.request(name, f"columns {attributes} not in schema")
