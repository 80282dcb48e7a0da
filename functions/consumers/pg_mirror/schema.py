"""How the mirror types its columns: a PostgreSQL type inferred from each value, widened
when values disagree (docs/consumers.md has the table).

| value in the event                         | column            |
|--------------------------------------------|-------------------|
| true / false                               | boolean           |
| integer within 64 bits                     | bigint            |
| integer beyond 64 bits, exact decimal      | numeric           |
| float (``numbers: number`` on the bus)     | double precision  |
| string (dates, times and, in the default   | text              |
|   ``numbers: string`` mode, decimals too)  |                   |
| array / object                             | jsonb             |

Two numeric types widen to ``numeric``; any other disagreement widens to ``text``, which
holds every value (booleans as ``true``/``false``, numbers as their decimal text, arrays
and objects as JSON). A column never narrows, and none is ever dropped.

On a bus that types its events (``glue.typed``), a column of the event's schema takes the
source's type instead (:func:`source_type`), and values that do not match are cast; a
column an untyped event brings takes its type from the table's latest schema (or, for a
column dropped from the source since, the newest earlier version that has it), never from
the value.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from dmsbus.schemas import MYSQL_ENGINES, Column

BOOLEAN = "boolean"
BIGINT = "bigint"
NUMERIC = "numeric"
DOUBLE = "double precision"
TEXT = "text"
JSONB = "jsonb"

#: The types the mirror chooses; a column an operator has altered to another type (say
#: ``timestamptz``) is left as it is and written through PostgreSQL's casts.
MANAGED = frozenset({BOOLEAN, BIGINT, NUMERIC, DOUBLE, TEXT, JSONB})
_NUMBERS = frozenset({BIGINT, NUMERIC, DOUBLE})
_INT64 = range(-(2**63), 2**63)

#: PostgreSQL truncates longer identifiers, which could merge two columns.
MAX_IDENTIFIER_BYTES = 63


class MirrorSchemaError(ValueError):
    """A value or a name the mirror cannot hold without losing data."""


class SchemaNotReadyError(RuntimeError):
    """On a typed bus, a column (or table) to create whose source type the schema table does
    not give yet: the batch fails, and Lambda hands it again (not a poison event)."""


def value_type(value: Any) -> str | None:
    """The column type a value asks for; None for a null (it fits any column)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return BIGINT if value in _INT64 else NUMERIC
    if isinstance(value, Decimal):
        return NUMERIC
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return TEXT
    if isinstance(value, (list, dict)):
        return JSONB
    raise MirrorSchemaError(f"a {type(value).__name__} value has no mirror column type")


#: The source's base types (pg_type.typname, domains resolved) the mirror creates as they
#: are, in PostgreSQL's own spelling (``format_type``), and what it takes for the others.
#: A type whose text DMS does not write in a form PostgreSQL reads back for sure (intervals,
#: arrays, enums, network and user types) is ``text``, as DMS wrote it.
_SOURCE_TYPES: dict[str, str] = {
    "bool": BOOLEAN,
    "int2": "smallint",
    "int4": "integer",
    "int8": BIGINT,
    "float4": "real",
    "float8": DOUBLE,
    # money's text depends on lc_monetary; DMS writes it as a number
    "money": NUMERIC,
    "date": "date",
    "time": "time without time zone",
    # DMS writes a timetz as a TIME: the offset is gone (docs/dms.md)
    "timetz": "time without time zone",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "json": "json",
    "jsonb": JSONB,
    "uuid": "uuid",
    "text": TEXT,
}


#: MySQL's and MariaDB's data types -> PostgreSQL's, as ``format_type`` spells them (an
#: UNSIGNED integer takes the next wider type); the rest (text types, enum, set) is text.
_MYSQL_TYPES: dict[str, tuple[str, str]] = {  # data type -> (signed, unsigned)
    "tinyint": ("smallint", "smallint"),
    "smallint": ("smallint", "integer"),
    "mediumint": ("integer", "integer"),
    "int": ("integer", BIGINT),
    "bigint": (BIGINT, "numeric(20,0)"),
    "year": ("smallint", "smallint"),
    "float": ("real", "real"),
    "double": (DOUBLE, DOUBLE),
    "bit": (BOOLEAN, BOOLEAN),
    "date": ("date", "date"),
    "datetime": ("timestamp without time zone",) * 2,
    "timestamp": ("timestamp with time zone",) * 2,
    # MySQL's TIME spans -838:59:59 to 838:59:59: a duration, not a time of day
    "time": ("interval", "interval"),
    "json": (JSONB, JSONB),
}


def source_type(column: Column) -> str | None:
    """The mirror column type of a source column, as ``format_type`` spells it; None for a
    column DMS never writes (``bytea``, ``oid``; MySQL's binary types): the mirror would
    only ever hold NULL."""
    if not column.written:
        return None
    if column.engine in MYSQL_ENGINES:
        if column.base == "decimal":
            return f"numeric({column.precision},{column.scale or 0})" if column.precision else NUMERIC
        if column.base in ("char", "varchar") and column.length:
            return f"{'character varying' if column.base == 'varchar' else 'character'}({column.length})"
        signed, unsigned = _MYSQL_TYPES.get(column.base, (TEXT, TEXT))
        return unsigned if "unsigned" in column.type.lower() else signed
    if column.base == "numeric":
        if column.precision:
            return f"numeric({column.precision},{column.scale or 0})"
        return NUMERIC
    if column.base in ("varchar", "bpchar"):
        kind = "character varying" if column.base == "varchar" else "character"
        return f"{kind}({column.length})" if column.length else (TEXT if column.base == "bpchar" else kind)
    return _SOURCE_TYPES.get(column.base, TEXT)


def widen(current: str | None, wanted: str | None) -> str | None:
    """The narrowest managed type holding values of both types."""
    if current is None:
        return wanted
    if wanted is None or current == wanted:
        return current
    if current in _NUMBERS and wanted in _NUMBERS:
        return NUMERIC
    return TEXT


def column_value(value: Any, column_type: str) -> Any:
    """The parameter that stores ``value`` in a column of ``column_type``."""
    if value is None:
        return None
    if column_type == TEXT:
        return as_text(value)
    if column_type == JSONB:
        # a string is the JSON text itself: a typed event's (json stays the source's text)
        return value if isinstance(value, str) else Jsonb(value)
    if isinstance(value, float) and column_type.startswith(NUMERIC):
        return Decimal(repr(value))
    if isinstance(value, (list, dict)):
        return as_text(value)  # an operator's own type: let PostgreSQL cast the JSON text
    return value


def as_text(value: Any) -> str:
    """A value as a ``text`` column holds it (what PostgreSQL's ``::text`` of the narrower
    type gives for booleans and numbers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, Decimal)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def check_identifier(name: str, what: str) -> str:
    if not name:
        raise MirrorSchemaError(f"{what} has an empty name")
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise MirrorSchemaError(
            f"{what} {name!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifiers"
        )
    return name
