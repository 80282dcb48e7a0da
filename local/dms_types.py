"""What AWS DMS writes to a DynamoDB target for each PostgreSQL type (docs/dms.md, "Data
types", is this module as a table, with the page each row comes from).

DMS maps a source type to its own type ("Source data types for PostgreSQL",
CHAP_Source.PostgreSQL), then its type to DynamoDB's ("Target data types for DynamoDB",
CHAP_Target.DynamoDB): numbers become N, booleans a ``CHAR(5)`` "true"/"false" string, dates
and times strings, LOBs (text, json, jsonb, arrays, xml ...) strings within ``LobMaxSize``,
BLOBs (bytea) and OIDs nothing. Where the pages are silent this module takes the
conservative reading and docs/dms.md says so.

Input is a column's value in PostgreSQL's text form, as the full load's ``::text`` and
pgoutput send it. ``DataError`` is a value DMS cannot write (the task's DataErrorPolicy
applies to its row); ``TaskError`` one that stops the task (a LOB over LobMaxSize with
FailTasksOnLobTruncation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any, Literal

#: DMS's intermediate types, as named on CHAP_Source.PostgreSQL.
DmsType = Literal[
    "INT2", "INT4", "INT8", "REAL4", "REAL8", "NUMERIC", "NUMERIC(28,6)", "NUMERIC(38,4)", "STRING",
    "WSTRING", "CHAR(5)", "DATE", "TIME", "DATETIME", "CLOB", "NCLOB", "BLOB", "NOT MIGRATED",
]  # fmt: skip


class DataError(ValueError):
    """A value DMS cannot write: the row is an apply exception (DataErrorPolicy LOG_ERROR)."""


class TaskError(RuntimeError):
    """A value that stops the whole DMS task."""


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A column's PostgreSQL type: its OID and type modifier (precision, length)."""

    oid: int
    typmod: int = -1


# PostgreSQL's built-in type OIDs (pg_type.dat).
BOOL, BYTEA, INT8, INT2, INT4, TEXT, OID, JSON, XML = 16, 17, 20, 21, 23, 25, 26, 114, 142
FLOAT4, FLOAT8, MONEY, BPCHAR, VARCHAR, DATE, TIME = 700, 701, 790, 1042, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ, NUMERIC, JSONB, UUID = 1114, 1184, 1186, 1266, 1700, 3802, 2950
TSVECTOR, TSQUERY, PATH, POLYGON = 3614, 3615, 602, 604
CHAR1 = 18  # "char", one byte
#: Built-in types DMS maps to STRING (uuid, network addresses, bits, geometry, interval,
#: pg_lsn, xid): their text as PostgreSQL writes it.
STRINGS = frozenset({UUID, 869, 650, 829, 774, 1560, 1562, 600, 628, 601, 603, 718, INTERVAL, 3220, 28})
#: Types with OIDs from here on are user-defined or come with extensions (FirstNormalObjectId).
FIRST_USER_OID = 16384

#: Built-in types with a DMS type of their own; every other type is looked up in the
#: catalog (arrays, enums, domains, composites, extensions' types like hstore).
BUILT_IN: dict[int, DmsType] = {
    INT2: "INT2",
    INT4: "INT4",
    INT8: "INT8",
    FLOAT4: "REAL4",
    FLOAT8: "REAL8",
    MONEY: "NUMERIC(38,4)",
    BOOL: "CHAR(5)",
    BPCHAR: "WSTRING",
    VARCHAR: "WSTRING",
    CHAR1: "WSTRING",
    TEXT: "NCLOB",
    JSON: "NCLOB",
    JSONB: "NCLOB",
    XML: "CLOB",
    TSVECTOR: "CLOB",
    TSQUERY: "CLOB",
    PATH: "CLOB",
    POLYGON: "CLOB",
    BYTEA: "BLOB",
    OID: "NOT MIGRATED",
    DATE: "DATE",
    TIME: "TIME",
    TIMETZ: "TIME",
    TIMESTAMP: "DATETIME",
    TIMESTAMPTZ: "DATETIME",
}
LOBS: frozenset[DmsType] = frozenset({"CLOB", "NCLOB"})
#: DynamoDB's limit on an item, names and values together ("Service, account, and table
#: quotas in Amazon DynamoDB").
MAX_ITEM_BYTES = 400 * 1024
#: DynamoDB numbers keep 38 significant digits; NUMERIC(28,6) keeps 22 before the point.
_UNBOUNDED_SCALE = Decimal("0.000001")
_UNBOUNDED_INTEGER_DIGITS = 22
_MONEY_SCALE = Decimal("0.0001")
_NOT_MONEY = re.compile(r"[^0-9.\-]")
#: Wide enough for every number PostgreSQL sends: arithmetic here never rounds by accident.
_EXACT = Context(prec=1000)


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What pg_type says of a type that is not built in: its kind and base type."""

    #: ``b`` base, ``c`` composite, ``d`` domain, ``e`` enum, ``r``/``m`` range.
    typtype: str
    #: ``A`` for arrays.
    category: str
    #: A domain's underlying type (its typmod is the domain's).
    base: int = 0
    base_typmod: int = -1


def numeric_precision(typmod: int) -> int | None:
    """NUMERIC(p,s)'s p from the column's type modifier; None when unbounded."""
    if typmod < 4:
        return None
    return ((typmod - 4) >> 16) & 0xFFFF


def dms_type(column: ColumnType, lookup: Callable[[int], TypeInfo]) -> tuple[DmsType, ColumnType]:
    """The DMS type of a column, and the column type it is read as (a domain's base)."""
    if column.oid == NUMERIC:
        precision = numeric_precision(column.typmod)
        if precision is None:
            return "NUMERIC(28,6)", column
        return ("NUMERIC" if precision <= 38 else "STRING"), column
    known = BUILT_IN.get(column.oid)
    if known is not None:
        return known, column
    if column.oid in STRINGS:
        return "STRING", column
    info = lookup(column.oid)
    if info.typtype == "d" and info.base:
        return dms_type(ColumnType(info.base, info.base_typmod), lookup)
    if info.category == "A" or info.typtype == "c":
        return "NCLOB", column  # ARRAY and COMPOSITE
    if info.typtype == "b" and info.category == "U" and column.oid >= FIRST_USER_OID:
        return "NCLOB", column  # extensions' types, hstore among them
    return "STRING", column  # enum, range, uuid, inet, cidr, macaddr, bit, interval, geometry ...


def lob_size(text: str, kind: DmsType) -> int:
    """A LOB's size against LobMaxSize: DMS treats an NCLOB's "each character as a
    double-byte character" (CHAP_Source.PostgreSQL), so two bytes a character; a CLOB's
    UTF-8 bytes."""
    return 2 * len(text) if kind == "NCLOB" else len(text.encode("utf-8"))


def dynamodb_value(
    text: str, kind: DmsType, column: ColumnType, *, lob_max_bytes: int, fail_on_lob_truncation: bool = True
) -> dict[str, Any] | None:
    """One value as DMS writes it to DynamoDB; None: not written (not migrated)."""
    if kind in ("INT2", "INT4", "INT8"):
        return {"N": str(int(text))}
    if kind in ("REAL4", "REAL8", "NUMERIC"):
        return {"N": dynamodb_number(text)}
    if kind == "NUMERIC(28,6)":
        return {"N": _unbounded(text)}
    if kind == "NUMERIC(38,4)":
        return {"N": _money(text)}
    if kind == "CHAR(5)":
        return {"S": "true" if text in ("t", "true") else "false"}
    if kind == "WSTRING":
        # PostgreSQL endpoint setting TrimSpaceInChar, "to trim data on CHAR and NCHAR data
        # types", defaults to true (API_PostgreSQLSettings): a CHAR(n)'s padding is gone,
        # in full load and CDC alike.
        return {"S": text.rstrip(" ") if column.oid == BPCHAR else text}
    if kind == "DATE":
        return {"S": _date(text)}
    if kind == "TIME":
        return {"S": _time(text)}
    if kind == "DATETIME":
        return {"S": _datetime(text)}
    if kind in LOBS:
        size = lob_size(text, kind)
        if size > lob_max_bytes:
            if fail_on_lob_truncation:
                raise TaskError(
                    f"a {kind} value of {size} bytes (as DMS counts a {kind}) is over the task's LobMaxSize "
                    f"({lob_max_bytes} bytes); with FailTasksOnLobTruncation the task fails instead of "
                    "truncating it"
                )
            # "LOBs that exceed the maximum LOB size are truncated" (CHAP_Tasks.LOBSupport)
            keep = lob_max_bytes // 2 if kind == "NCLOB" else lob_max_bytes
            cut = (
                text[:keep]
                if kind == "NCLOB"
                else text.encode("utf-8")[:keep].decode("utf-8", errors="ignore")
            )
            return {"S": cut}
        return {"S": text}
    if kind in ("BLOB", "NOT MIGRATED"):
        # "AWS DMS doesn't support LOB data unless it is a CLOB" (CHAP_Target.DynamoDB);
        # "The OID LOB data type isn't migrated to the target" (CHAP_Source.PostgreSQL).
        return None
    return {"S": text}


def _decimal(text: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise DataError(f"{text!r} is not a number") from None
    if not number.is_finite():
        raise DataError(f"{text!r} has no DynamoDB number")
    return number


def _plain(number: Decimal) -> str:
    # DynamoDB stores numbers normalized (12.50 reads back as 12.5); moto keeps the text it
    # is given, so write what DynamoDB would return.
    return format(number.normalize(_EXACT), "f") if number else "0"


def dynamodb_number(text: str) -> str:
    """A number as DynamoDB stores it; DataError when it is not one DynamoDB holds."""
    number = _decimal(text)
    if len(number.normalize(_EXACT).as_tuple().digits) > 38:
        raise DataError(f"{text!r} has more than the 38 significant digits of a DynamoDB number")
    return _in_range(number, text)


def _in_range(number: Decimal, text: str) -> str:
    """DynamoDB numbers are 0 or of magnitude 1E-130 to below 1E+126 ("Data types")."""
    if number and not -130 <= number.adjusted() <= 125:
        raise DataError(f"{text!r} is outside DynamoDB's number range (1E-130 to 1E+126)")
    return _plain(number)


def _unbounded(text: str) -> str:
    """NUMERIC without precision is NUMERIC(28,6) in DMS (CHAP_Source.PostgreSQL,
    limitations): rounded to 6 decimals; one with more than 22 integer digits does not fit."""
    number = _decimal(text).quantize(_UNBOUNDED_SCALE, rounding=ROUND_HALF_UP, context=_EXACT)
    if number.adjusted() >= _UNBOUNDED_INTEGER_DIGITS:
        raise DataError(f"{text!r} does not fit DMS's NUMERIC(28,6) for an unbounded numeric")
    return _plain(number)


def _money(text: str) -> str:
    """MONEY is NUMERIC(38,4). PostgreSQL writes it with the session's lc_monetary, which
    the stand-in pins to C (``$1,234.50``, ``-$12.00``)."""
    negative = "-" in text or "(" in text
    digits = _NOT_MONEY.sub("", text).replace("-", "")
    number = _decimal(digits).quantize(_MONEY_SCALE, context=_EXACT)
    return _plain(-number if negative else number)


def _date(text: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise DataError(f"date {text!r} has no DMS DATE (BC, infinity or beyond year 9999)")
    return text


def _time(text: str) -> str:
    """TIME and TIME WITH TIME ZONE are DMS TIME: hours, minutes, seconds, no offset."""
    match = re.fullmatch(r"(\d{2}:\d{2}:\d{2})(\.\d+)?([+-]\d{2}(:?\d{2})*)?", text)
    if match is None:
        raise DataError(f"time {text!r} has no DMS TIME")
    fraction = (match.group(2) or ".")[1:].ljust(6, "0")
    return f"{match.group(1)}.{fraction}"


def _datetime(text: str) -> str:
    """DATETIME: ``YYYY-MM-DD HH:MM:SS.ffffff``, a TIMESTAMP WITH TIME ZONE in UTC. The
    DynamoDB target's string form is not documented; this is the form DMS documents for S3
    (``yyyy-MM-dd HH:mm:ss.SSSSSS``)."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise DataError(
            f"timestamp {text!r} has no DMS DATETIME (BC, infinity or beyond year 9999)"
        ) from None
    # isoformat, not strftime: a year before 1000 keeps its four digits
    return moment.isoformat(" ", "microseconds")


def item_bytes(item: Mapping[str, Mapping[str, Any]]) -> int:
    """An item's size as DynamoDB counts it ("Item sizes and formats"): names and values in
    UTF-8, a number 1 byte per two significant digits plus 1, a boolean 1 byte."""
    size = 0
    for name, value in item.items():
        size += len(name.encode("utf-8"))
        if "S" in value:
            size += len(str(value["S"]).encode("utf-8"))
        elif "N" in value:
            digits = str(value["N"]).lstrip("-").replace(".", "").strip("0") or "0"
            size += (len(digits) + 1) // 2 + 1
        else:
            size += 1
    return size
