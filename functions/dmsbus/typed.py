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

A value that does not convert, an attribute the schema lacks, or a new image that does not
look as DMS writes the schema's columns (a value of another DynamoDB type, an integer column
holding a fraction, a NOT NULL column absent) raises :class:`TypingError`. The glue then asks
the source's catalog at once (:meth:`SchemaCache.refreshed`: a synchronous call of the
source's schema function, for at most ``glue.typed_wait_seconds``) and types the record with
what it finds: the DDL moment costs one call, a record that fits costs none. Only when the
catalog cannot be read in time, or does not explain the image, does the event go out
untyped, as DMS wrote it, and counted (docs/envelope.md, "Typed values").
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any, Protocol

import boto3
from botocore.config import Config
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


class MismatchError(TypingError):
    """A new image that does not look as DMS writes the schema's columns: a value of another
    DynamoDB type than the column's (a retype: ``int`` to ``text`` turns N into S), a fraction
    in an integer column (``int`` to ``numeric``), a NOT NULL column absent (dropped). The
    value may convert: only the catalog tells whether the table changed."""

    def __init__(self, columns: list[str], why: str) -> None:
        super().__init__(f"columns {columns}: {why}")
        self.columns = columns
        self.column = columns[0]


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


#: The timestamp kinds and the suffix their typed form takes.
_ZONES: dict[Kind, str] = {"timestamptz": "Z", "timestamp": ""}

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
    if _wide(column):
        return _wide_number
    return CONVERTERS[column.kind]


def _wide(column: Column) -> bool:
    return column.kind == "decimal" and (column.precision or 0) > NUMERIC_MAX_PRECISION


#: The DynamoDB type DMS writes each kind as (docs/dms.md, "Data types"): a new image's
#: attribute of another type is a sign of a retype. Booleans, timestamps and the wide
#: numerics are checked by their converters; an integer also by its value (a fraction is
#: a numeric now). What a kind is checked for, it must be: an unexpected form the catalog
#: does not explain (:meth:`ImageTyper.tolerate`) is not checked again for that version.
_WRITTEN_AS: dict[Kind, str] = {
    "integer": "N",
    "decimal": "N",
    "float": "N",
    "date": "S",
    "time": "S",
    "json": "S",
    "text": "S",
}


class ImageTyper:
    """Types images of one schema version. Build once per version: it holds each
    column's converter, and what a new image must look like to fit the version."""

    __slots__ = (
        "_as_n",
        "_booleans",
        "_calls",
        "_converting",
        "_decoded_as",
        "_fast_integers",
        "_integers",
        "_keys",
        "_names",
        "_nulls",
        "_required",
        "_stamps",
        "_written_as",
        "converted",
        "dropped",
        "schema",
    )

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        written = [column for column in schema.columns if column.written]
        #: Every written column in the schema's order, NULL until the image says otherwise.
        self._nulls = dict.fromkeys(column.name for column in written)
        self._converting = tuple(
            (column.name, convert) for column in written if (convert := _converter(column)) is not None
        )
        self._names = frozenset(column.name for column in schema.columns)
        #: The columns whose values typing changes (a key of only other columns stays as it is).
        self.converted = frozenset(name for name, _ in self._converting)
        # The glue's hot path converts booleans and timestamps inline (a call per value
        # costs more than the conversion); the other converters are called
        self._booleans = tuple(name for name, convert in self._converting if convert is _boolean)
        self._stamps = tuple(
            (name, zone)
            for column in written
            if (zone := _ZONES.get(column.kind)) is not None
            for name in (column.name,)
        )
        inline = {*self._booleans, *(name for name, _ in self._stamps)}
        self._calls = tuple(entry for entry in self._converting if entry[0] not in inline)
        #: A new image always holds these: DMS writes every value pgoutput and the binlog
        #: send, and a NOT NULL column has one. Absent: the column was dropped.
        self._required = frozenset(
            column.name for column in written if not column.nullable and column.key is None
        )
        self._written_as = tuple(
            (column.name, _WRITTEN_AS[column.kind])
            for column in written
            if column.kind in _WRITTEN_AS and not _wide(column)
        )
        self._integers = tuple(column.name for column in written if column.kind == "integer")
        self._keys = frozenset(column.name for column in schema.columns if column.key is not None)
        self._group()
        #: Columns dropped since the versions before (or that the catalog said are no more):
        #: left out of an image that still has them (an item written before the DROP).
        self.dropped: frozenset[str] = frozenset()

    def image(
        self, image: dict[str, Any] | None, written: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dict[str, Any] | None:
        """The typed image, in the schema's column order; None stays None. ``written``: the
        image as DMS wrote it (DynamoDB JSON), given for a new image of a change: it must
        then look as DMS writes this version's columns (:class:`MismatchError`). Columns
        dropped since (:attr:`dropped`) are left out."""
        if image is None:
            return None
        if not image.keys() <= self._names:
            image = self._without_dropped(image)
        if written is not None:
            self._check(image, written)
        return self._converted(image)

    def new_image(self, image: dict[str, Any], written: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """``image(image, written)`` of a new image, on the glue's hot path. Its checks are the
        ones a value's typed form depends on: a NOT NULL column absent (dropped: not a null),
        a fraction in an integer column (retyped to a numeric), a string in a numeric column
        that DMS wrote as S (retyped to text). A retype between text and other types whose
        values DMS writes alike, or whose JSON form is the new type's already (``text`` to
        ``integer`` gives 12 where it gave "12"), is labelled with its version once the sweep
        has read it: checking every string column of every row costs the glue a tenth of
        its time (bench/glue_bench.py)."""
        keys = image.keys()
        if not keys <= self._names:
            image = self._without_dropped(image)
            keys = image.keys()
        if self._required and not keys >= self._required:
            self._check(image, written)
        get = image.get
        for name in self._fast_integers:
            if type(get(name, 0)) is not int:
                self._check(image, written)
                break
        for name in self._as_n:
            if type(get(name)) is str and "N" not in written[name]:
                self._check(image, written)
                break
        return self._converted(image)

    def _without_dropped(self, image: dict[str, Any]) -> dict[str, Any]:
        """An image with attributes that are no columns of this version: without them when
        they are columns dropped since, else :class:`MissingColumnError` naming them."""
        extra = image.keys() - self._names
        if not extra <= self.dropped:
            raise MissingColumnError(sorted(extra))
        return {name: value for name, value in image.items() if name not in extra}

    def old_image(self, image: dict[str, Any]) -> dict[str, Any]:
        """``image(image)`` of an old image, on the glue's hot path."""
        if not image.keys() <= self._names:
            return self.image(image)  # type: ignore[return-value]
        return self._converted(image)

    def _converted(self, image: dict[str, Any]) -> dict[str, Any]:
        typed = {**self._nulls, **image}
        for name in self._booleans:
            value = typed[name]
            if value is not None:
                if value == "false" or value is False:  # DMS's text (PostgreSQL), or BOOL (MySQL's BIT)
                    typed[name] = False
                elif value == "true" or value is True:
                    typed[name] = True
                else:
                    typed[name] = self._convert(name, _boolean, value)
        for name, zone in self._stamps:
            value = typed[name]
            # DMS's form, told by its separators (a full pattern match costs 3 times this)
            if value is not None:
                if (
                    type(value) is str
                    and len(value) > 13
                    and value[10] == " "
                    and value[13] == ":"
                    and value[4] == "-"
                ):
                    typed[name] = f"{value[:10]}T{value[11:]}{zone}"
                else:
                    typed[name] = self._convert(name, _timestamp(zone), value)
        for name, convert in self._calls:
            value = typed[name]
            if value is not None:
                typed[name] = self._convert(name, convert, value)
        return typed

    @staticmethod
    def _convert(name: str, convert: Converter, value: Any) -> Any:
        """A value the inline conversion did not take, through the converter: its result,
        or its error naming the column."""
        try:
            return convert(value)
        except TypingError as exc:
            error = TypingError(f"column {name}: {exc}")
            error.column = name
            raise error from None

    def _group(self) -> None:
        """The checked columns as the fast check reads them: each S column's and integer
        column's decoded type (an absent one, a NULL, counting as right), and the numeric
        columns, whose decoded string must have been an N."""
        integers = frozenset(self._integers)
        self._decoded_as = tuple(
            (name, int, 0) if name in integers else (name, str, "")
            for name, kind in self._written_as
            if kind == "S" or name in integers
        )
        self._as_n = tuple(name for name, kind in self._written_as if kind == "N" and name not in integers)
        # A key column's retype is left to the sweep: it is in every row, and rarely retyped
        self._fast_integers = tuple(name for name in self._integers if name not in self._keys)

    def _check(self, image: dict[str, Any], written: Mapping[str, Mapping[str, Any]]) -> None:
        """The glue's hot path, on decoded values: an S decodes to a str only, an N to an
        int (whole) or to a str (string numbers: a fraction) or a Decimal (JSON numbers),
        BOOL to a bool, L and M to a list and a dict. An N fraction in a text column (a
        retype to numeric) decodes as the same string the new type gives: left to the
        sweep. The slow loop names the column."""
        if not image.keys() >= self._required:
            raise MismatchError(sorted(self._required - image.keys()), "NOT NULL, and absent")
        get = image.get
        for name, kind, absent in self._decoded_as:
            if type(get(name, absent)) is not kind:
                break
        else:
            for name in self._as_n:
                if type(get(name)) is str and "N" not in written[name]:
                    break
            else:
                return
        for name, tag in self._written_as:
            attribute = written.get(name)
            if attribute is not None and tag not in attribute:
                raise MismatchError([name], f"DMS writes it as {tag}, the image has {sorted(attribute)}")
        for name in self._integers:
            value = image.get(name)
            if value is not None and type(value) is not int:
                raise MismatchError([name], "an integer column, and the value is not one")
        for name, kind, _ in self._decoded_as:
            if name in image and type(image[name]) is not kind:
                raise MismatchError(
                    [name], f"DMS writes it as a string, the image has {type(image[name]).__name__}"
                )

    @property
    def names(self) -> frozenset[str]:
        """The version's columns."""
        return self._names

    def tolerate(self, error: TypingError) -> bool:
        """The catalog has this version still: what the ``error``'s columns looked like is
        how DMS writes them (a type whose DynamoDB form the table in docs/dms.md does not
        name), or attributes that are no columns of it are columns dropped since (an item
        written before the DROP). Whether it is tolerated: not checked again."""
        if isinstance(error, MissingColumnError):
            self.dropped |= frozenset(error.attributes)
            return True
        if not isinstance(error, MismatchError):
            return False
        leave = frozenset(error.columns)
        self._required -= leave
        self._written_as = tuple(entry for entry in self._written_as if entry[0] not in leave)
        self._integers = tuple(name for name in self._integers if name not in leave)
        self._group()
        return True


class SchemaSource(Protocol):
    """Where the glue finds a table's schema (``SchemaCache``; a dict in tests)."""

    def typer(self, name: TableName) -> ImageTyper | None:
        """The table's schema as the source last said it, if one is known."""
        ...

    def refreshed(
        self, name: TableName, held: ImageTyper | None, error: TypingError | None
    ) -> ImageTyper | None:
        """After ``held`` (None: no schema known) could not type an image (``error``): the
        typer to try again, from the source's catalog as it is now, or None (untyped)."""
        ...

    def begin(self, deadline: float | None = None) -> None:
        """A new batch, to end by ``deadline`` (time.monotonic): its waits are shared."""
        ...


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


#: Makes a Lambda client whose calls give up after so many seconds (the synchronous read of
#: a schema may take what is left of ``glue.typed_wait_seconds``, no more).
ClientFactory = Callable[[float], Any]

#: The synchronous call's connect timeout (Lambda's endpoint answers within it, or is out
#: of reach); its read timeout is the rest of the wait.
_CONNECT_SECONDS = 1.0


def sync_lambda_client(seconds: float) -> Any:
    """A Lambda client whose calls give up after ``seconds`` of reading (and a second to
    connect), not retried by the client (:meth:`SchemaRefresher.read_now` asks again while
    its wait lasts)."""
    return boto3.client(
        "lambda",
        config=Config(
            read_timeout=seconds,
            connect_timeout=_CONNECT_SECONDS,
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )


def schema_cache(
    settings: PublishingSettings,
    *,
    dynamodb: Any,
    lambda_client: Any,
    sync_clients: ClientFactory | None = None,
) -> SchemaCache | None:
    """The cache of a function that types events, asking the schema functions for tables
    it has no schema of, or None when the bus does not type its events."""
    if not (settings.typed and settings.schema_table):
        return None
    functions = settings.schema_function_of
    return SchemaCache(
        SchemaStore(dynamodb, settings.schema_table),
        ttl=settings.schema_ttl_seconds,
        wait=settings.typed_wait_seconds or 0,
        refresher=SchemaRefresher(lambda_client, functions, sync_clients=sync_clients) if functions else None,
    )


#: Lambda's answers to a synchronous Invoke worth asking again within the wait: throttling
#: (the schema function's reserved concurrency) and Lambda's own passing faults (API_Invoke).
_ASK_AGAIN = frozenset(
    {"TooManyRequestsException", "ServiceException", "ResourceNotReadyException", "EC2ThrottledException"}
)


class SchemaRefresher:
    """Asks a source's schema function to read a table now.

    - :meth:`request`: Lambda's asynchronous Invoke (``InvocationType=Event``), which Lambda
      queues and retries twice on an error (invocation-async-error-handling): discovery's,
      for a table it has just found. At most once per table every ``every`` seconds per
      container; a request that cannot be sent is logged, never raised.
    - :meth:`read_now`: a synchronous Invoke (``RequestResponse``, API_Invoke), answered once
      the function has stored what it read: the glue's, at a DDL moment. It gives up when the
      wait is over (each call's timeout is what is left of it), and says so: never raised.
    """

    def __init__(
        self,
        lambda_client: Any,
        functions: Mapping[str, str],
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        sync_clients: ClientFactory | None = None,
    ) -> None:
        self.client = lambda_client
        self.functions = dict(functions)
        self.every = every
        self._clock = clock
        self._sleep = sleep
        self._asked: dict[tuple[str, str, str], float] = {}
        self._make_client = sync_clients
        #: One client per whole second of timeout: made once, at the first call that needs it.
        self._sync_clients: dict[int, Any] = {}

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

    def read_now(
        self, name: TableName, reason: str, until: float, landed: Callable[[], bool] | None = None
    ) -> bool:
        """Whether the source's schema function read the table and stored its schema before
        ``until`` (on the clock). Throttled, or failing (the source restarting), it is asked
        again while there is time, unless ``landed`` says the schema is stored meanwhile
        (another container's call). A call is made only with a whole second left, and its
        connect and read timeouts together are what is left: the wait is never exceeded."""
        function = self.functions.get(name.source)
        if function is None:
            return False
        payload = RefreshRequest((f"{name.schema}.{name.table}",), reason).payload()
        pause = 0.1
        why = "no time left"
        while (left := until - self._clock()) >= 1.0 + _CONNECT_SECONDS:
            try:
                response = self._client(left).invoke(
                    FunctionName=function, InvocationType="RequestResponse", Payload=payload
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                why = f"{code}: {exc}"
                if code not in _ASK_AGAIN:
                    break
            except BotoCoreError as exc:  # the call's timeout: the wait is over
                why = str(exc)
                break
            else:
                failed = response.get("FunctionError")
                detail = _function_error(response)  # read to its end: the connection is freed
                if not failed:
                    return True
                why = detail or str(failed)
            if landed is not None and landed():
                return True
            self._sleep(min(pause, max(0.0, until - self._clock())))
            pause = min(pause * 2, 2.0)
        logger.warning(
            "schema function %s did not read %s.%s in time (%s): its events go out untyped",
            function, name.schema, name.table, why,
        )  # fmt: skip
        return False

    def _client(self, left: float) -> Any:
        """A client whose connect and read timeouts together fit in ``left`` seconds."""
        if self._make_client is None:
            return self.client
        seconds = max(1, math.floor(left - _CONNECT_SECONDS))
        client = self._sync_clients.get(seconds)
        if client is None:
            client = self._sync_clients[seconds] = self._make_client(seconds)
        return client


def _function_error(response: Mapping[str, Any]) -> str:
    """What a failed invocation said (its type and the start of its message)."""
    try:
        body = json.loads(response["Payload"].read())
        return (
            f"{body.get('errorType', response['FunctionError'])}: {str(body.get('errorMessage', ''))[:300]}"
        )
    except Exception:  # an answer that is not Lambda's error JSON: the header says enough
        return str(response.get("FunctionError"))


class SchemaCache:
    """Each table's latest schema as a typer, per container: read from the store at first
    use and again after ``ttl`` seconds. When a typer cannot type an image, :meth:`refreshed`
    asks the store and then the source's catalog for the schema as it is now.

    Bounds: the catalog calls of one batch (:meth:`begin`) share one wait, ``wait`` seconds
    at most (and never past the invocation's deadline); one question (the version held and
    the columns in doubt) goes to the catalog at most once every ``retry`` seconds per
    table; after a wait that came to nothing, the table's images that do not fit go out
    untyped without waiting for ``backoff`` seconds, the store looked at once every
    ``retry`` seconds meanwhile (another container's call may have stored the schema)."""

    def __init__(
        self,
        store: SchemaStore,
        *,
        ttl: float = 300.0,
        retry: float = 10.0,
        wait: float = 0.0,
        backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        refresher: SchemaRefresher | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.retry = retry
        self.wait = wait
        self.backoff = backoff
        self._clock = clock
        #: Asked to read a table the store has no schema of, or one whose columns changed.
        self.refresher = refresher
        #: source.schema.table -> (typer or None, when to read it again)
        self._known: dict[str, tuple[ImageTyper | None, float]] = {}
        #: source.schema.table -> {question asked of the catalog: until when not again}
        self._asked: dict[str, dict[tuple[int | None, tuple[str, ...]], float]] = {}
        #: source.schema.table -> until when its images go out untyped without a wait
        self._unreadable: dict[str, float] = {}
        #: source.schema.table -> when the store may be looked at again during the backoff
        self._looked: dict[str, float] = {}
        #: Until when this batch may wait for catalogs (None: the first call sets it); no
        #: batch begun, each read waits on its own.
        self._batched = False
        self._until: float | None = None
        self._deadline: float | None = None

    def begin(self, deadline: float | None = None) -> None:
        """A new batch: its catalog calls share one wait, which ends by ``deadline`` (the
        invocation's, on this cache's clock) at the latest."""
        self._batched, self._until, self._deadline = True, None, deadline

    def typer(self, name: TableName) -> ImageTyper | None:
        table_key = qualified(name.source, name.schema, name.table)
        known = self._known.get(table_key)
        now = self._clock()
        if known is not None and now < known[1]:
            return known[0]
        try:
            schema = self.store.latest(table_key)
        except (ClientError, BotoCoreError, SchemaError) as exc:
            logger.warning("schema of %s not read, its events go out untyped: %s", table_key, exc)
            return self._keep(table_key, known, now)
        except Exception:  # a stored schema this code cannot use: untyped, never held back
            logger.exception("schema of %s not usable, its events go out untyped", table_key)
            return self._keep(table_key, known, now)
        return self._install(table_key, schema, known[0] if known is not None else None, now)

    def _install(
        self, table_key: str, schema: TableSchema | None, held: ImageTyper | None, now: float
    ) -> ImageTyper | None:
        """``schema`` as the table's typer (the held one, when it is that version)."""
        if schema is None:
            typer = None
        elif held is not None and held.schema == schema:
            typer = held  # the same version: keep its converters and what it tolerates
        else:
            typer = ImageTyper(schema)
            if held is not None:  # what the held version had and this one has not: dropped
                typer.dropped = (held.dropped | held.names) - typer.names
        self._known[table_key] = (typer, now + (self.ttl if typer is not None else self.retry))
        return typer

    def _keep(
        self, table_key: str, known: tuple[ImageTyper | None, float] | None, now: float
    ) -> ImageTyper | None:
        """After a failed read: what was known, until the next try."""
        typer = known[0] if known is not None else None
        self._known[table_key] = (typer, now + self.retry)
        return typer

    def refreshed(
        self, name: TableName, held: ImageTyper | None, error: TypingError | None
    ) -> ImageTyper | None:
        """The typer to try an image again with, after ``held`` failed it with ``error``
        (``held`` None: no schema stored): a newer version from the store (the sweep or
        another container read it), else from the catalog read now; the held one when the
        catalog has that version still and ``error`` was only a :class:`MismatchError`, or
        columns the catalog does not have (then tolerated: dropped since); None when the
        image must go out untyped."""
        table_key = qualified(name.source, name.schema, name.table)
        now = self._clock()
        try:
            if now < self._unreadable.get(table_key, float("-inf")):
                # The source could not be read a moment ago: no wait, but another container
                # may have stored the schema since
                if now < self._looked.get(table_key, float("-inf")):
                    return None
                self._looked[table_key] = now + self.retry
                return self._newer(table_key, held, now)
            question = (held.schema.version if held is not None else None, tuple(_columns(error)))
            asked = self._asked.setdefault(table_key, {})
            if now < asked.get(question, float("-inf")):
                return self._tolerated(table_key, held, error) if self.refresher is not None else None
            for old in [old for old, until in asked.items() if until <= now]:
                del asked[old]
            asked[question] = now + self.retry
            newer = self._newer(table_key, held, now)
            if newer is not None or self.refresher is None:
                return newer  # without a schema function, nothing tells a column dropped
            reason = str(error)[:200] if error is not None else "no schema stored"
            read = self.refresher.read_now(
                name, reason, self._wait_until(now), landed=lambda: self._landed(table_key, held)
            )
            if not read:
                self._unreadable[table_key] = self._clock() + self.backoff
                self._looked[table_key] = self._clock() + self.retry
                return None
            newer = self._newer(table_key, held, self._clock())
        except (ClientError, BotoCoreError, SchemaError) as exc:  # the store: untyped, nothing tolerated
            logger.warning("schema of %s not read: %s", table_key, exc)
            return None
        if newer is not None:
            logger.info("%s: schema v%d read at once (%s)", table_key, newer.schema.version, reason)
            return newer
        return self._tolerated(table_key, held, error)

    def _wait_until(self, now: float) -> float:
        """The end of this batch's wait for catalogs: set by its first call."""
        if not self._batched:
            return now + self.wait
        if self._until is None:
            self._until = now + self.wait
            if self._deadline is not None:
                self._until = min(self._until, self._deadline)
        return self._until

    def _tolerated(
        self, table_key: str, held: ImageTyper | None, error: TypingError | None
    ) -> ImageTyper | None:
        """The held typer, when the catalog (asked now or a moment ago) still has its version
        and ``error`` is one it may tolerate."""
        if held is not None and error is not None and held.tolerate(error):
            logger.info("%s: the catalog has v%d still; %s", table_key, held.schema.version, error)
            return held
        return None

    def _landed(self, table_key: str, held: ImageTyper | None) -> bool:
        """Whether the store has a version newer than ``held``'s (read errors: not yet)."""
        try:
            schema = self.store.latest(table_key)
        except Exception:  # asked again at the next try
            return False
        return schema is not None and (held is None or schema.version > held.schema.version)

    def _newer(self, table_key: str, held: ImageTyper | None, now: float) -> ImageTyper | None:
        """The store's latest version, installed, when it is newer than ``held``'s; a store
        that cannot be read raises (ClientError, BotoCoreError, SchemaError)."""
        schema = self.store.latest(table_key)
        if schema is None or (held is not None and schema.version <= held.schema.version):
            return None
        return self._install(table_key, schema, held, now)


def _columns(error: TypingError | None) -> list[str]:
    if isinstance(error, MissingColumnError):
        return error.attributes
    if isinstance(error, MismatchError):
        return error.columns
    return [error.column] if error is not None and error.column else []
