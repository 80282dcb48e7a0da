"""What DMS needs of a source and does not find there (``dmsbus doctor``), and dropping a
logical replication slot DMS left behind.

Every check reads the source through one open DB-API connection (psycopg for the PostgreSQL
engines, pymysql for the MySQL family) with a few catalog queries, and each finding names
the check, what was found, the fix (a command or a setting), the page of the DMS User Guide
that requires it and, where DMS's own premigration assessment covers the check, that
assessment's API key (``IncludeOnly`` of StartReplicationTaskAssessmentRun:
CHAP_Tasks.AssessmentReport.PG, CHAP_Tasks.AssessmentReport.MySQL,
CHAP_Tasks.AssessmentReport.MariaDB). A finding is ``blocking`` when DMS fails, suspends a
table or loses changes without the fix; otherwise it is the guide's advice.

PostgreSQL (CHAP_Source.PostgreSQL, "Enabling CDC ..." for self-managed and AWS-managed
sources, and "Limitations"):
- ``wal_level = logical`` (on RDS and Aurora: ``rds.logical_replication = 1``);
- a free replication slot and a free WAL sender for the task ("Slots open automatically as
  soon as a task starts and remain open even when the task is no longer running"; the
  guide asks for ``max_wal_senders`` "greater than 1");
- ``wal_sender_timeout``: 0, or "a minimum of 10000 milliseconds (10 seconds)", "and fails
  if the value is less than 10000"; under 5 minutes is advised (Multi-AZ failover);
- the user: a superuser on a self-managed server; on RDS and Aurora "the account must have
  the rds_superuser role and the rds_replication role";
- "A captured table must have a primary key. If a table doesn't have a primary key, AWS
  DMS ignores DELETE and UPDATE record operations" unless its replica identity is FULL
  (assessment postgres-check-pk).

MySQL, MariaDB, Aurora MySQL (CHAP_Source.MySQL): binary logging on, ``binlog_format =
ROW``, ``binlog_row_image = FULL``, ``server_id`` 1 or greater, the binary logs kept (RDS:
"call mysql.rds_set_configuration('binlog retention hours', 24)"; self-managed:
``expire_logs_days`` "1 or greater"), REPLICATION CLIENT and REPLICATION SLAVE ("required
for change data capture") and SELECT on the replicated tables.

Both: every selected table has a DynamoDB key. "AWS DMS only supports replication of
tables with non-composite primary keys, unless you specify an object mapping for the target
table with a custom partition key or sort key, or both" (CHAP_Target.DynamoDB), so a table
needs a one-column primary key or a ``key`` in config; and a ``key`` must be unique in the
source (a primary key or a unique index on some of its columns, which may not be NULL):
rows that share a key would overwrite one DynamoDB item without a word.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
import pymysql

from dmsbus.schemas import MYSQL_ENGINES, MYSQL_KINDS, POSTGRES_ENGINES, POSTGRES_KINDS
from dmsbus.table_mappings import like, pattern

POSTGRES_PAGE = "CHAP_Source.PostgreSQL"
MYSQL_PAGE = "CHAP_Source.MySQL"
DYNAMODB_PAGE = "CHAP_Target.DynamoDB"
#: The guide's minimum of a non-zero ``wal_sender_timeout``, and its advised maximum.
WAL_SENDER_TIMEOUT_MIN_MS = 10_000
WAL_SENDER_TIMEOUT_ADVISED_MAX_MS = 300_000
#: RDS's 'binlog retention hours' the guide sets (and assessment ...-binlog-retention-time).
RETENTION_HOURS = 24
#: A self-managed server's binary logs: kept at least a day ("expire_logs_days ... 1 or greater").
RETENTION_SECONDS = 86_400


class UnsupportedEngineError(ValueError):
    """A source engine the doctor has no checks for."""


@dataclass(frozen=True, slots=True)
class Finding:
    """Something DMS needs and does not find."""

    #: The check's name: ``wal_level``, ``primary_key``, ``binlog_format`` ...
    check: str
    found: str
    fix: str
    #: The DMS User Guide page that requires it (``CHAP_Source.PostgreSQL`` ...).
    page: str
    #: DMS's premigration assessment that checks it too (its API key), when there is one.
    assessment: str | None = None
    #: DMS fails, suspends a table or misses changes without the fix; False: advice.
    blocking: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "found": self.found,
            "fix": self.fix,
            "page": self.page,
            "assessment": self.assessment,
            "blocking": self.blocking,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        try:
            return cls(
                check=str(data["check"]),
                found=str(data["found"]),
                fix=str(data["fix"]),
                page=str(data["page"]),
                assessment=None if data.get("assessment") is None else str(data["assessment"]),
                blocking=bool(data.get("blocking", True)),
            )
        except KeyError as exc:
            raise ValueError(f"a finding without {exc.args[0]!r}: {dict(data)!r}") from None


@dataclass(frozen=True, slots=True)
class Report:
    """The checks run on one source: what each found, and what is missing."""

    engine: str
    #: One line per check: what it looked at and what it found.
    checked: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def missing(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.blocking)

    @property
    def advice(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if not finding.blocking)

    @property
    def ready(self) -> bool:
        return not self.missing

    @property
    def assessments(self) -> tuple[str, ...]:
        """DMS's premigration assessments that cover the findings, each once."""
        return tuple(dict.fromkeys(f.assessment for f in self.findings if f.assessment))

    def as_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "ready": self.ready,
            "checked": list(self.checked),
            "findings": [finding.as_json() for finding in self.findings],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        if not isinstance(data.get("findings"), list) or not isinstance(data.get("checked"), list):
            raise ValueError(f"not a doctor report (no findings and checked lists): {str(dict(data))[:300]}")
        return cls(
            engine=str(data.get("engine", "")),
            checked=tuple(str(line) for line in data["checked"]),
            findings=tuple(Finding.from_json(item) for item in data["findings"]),
        )


def unreachable(engine: str, error: Exception) -> Report:
    """The report of a source DMS's credentials do not reach: the first thing DMS needs."""
    page = MYSQL_PAGE if engine in MYSQL_ENGINES else POSTGRES_PAGE
    return Report(
        engine=engine,
        checked=("connection: failed",),
        findings=(
            Finding(
                check="connection",
                found=f"cannot connect with the credentials DMS's endpoint reads: {error}",
                fix=(
                    "check the secret's host, port, username and password, that the source admits "
                    "connections from the function's subnets (its security group"
                    + ("" if engine in MYSQL_ENGINES else ", pg_hba.conf")
                    + "), and that it takes TLS (or the secret says sslmode: disable)"
                ),
                page=page,
            ),
        ),
    )


# --- what config selects -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedTable:
    """A table config lists, with its ``key`` (None: its primary key is DynamoDB's)."""

    schema: str
    table: str
    key: tuple[str, ...] | None = None
    #: Each key attribute's DynamoDB type as config declares it (``string``/``number``).
    key_types: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Wildcard:
    """A wildcard selection: every table of ``schema`` whose name matches ``pattern``
    (``%`` any run of characters; every other character stands for itself)."""

    schema: str
    pattern: str


_KEY_COLUMN = r"[^.=+:]+(?::(?:string|number))?"
_KEY_ENTRY = re.compile(
    rf"(?P<schema>[^.=+]+)\.(?P<table>[^.=+]+)=(?P<columns>{_KEY_COLUMN}(?:\+{_KEY_COLUMN})?)"
)


@dataclass(frozen=True, slots=True)
class Selection:
    """The tables a source's task selects, as config says: plain data (functions never
    import config)."""

    tables: tuple[ListedTable, ...] = ()
    wildcards: tuple[Wildcard, ...] = ()

    @classmethod
    def from_settings(cls, patterns: Iterable[str], keys: Iterable[str] = ()) -> Selection:
        """From the schema function's ``schema.table`` patterns (one with ``%`` is a wildcard
        selection, any other a listed table) and ``schema.table=partition[+sort]`` keys, each
        column with its declared type (``order_id:number``) or without. Raises ValueError
        naming the entry that is neither."""
        key_of: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...] | None]] = {}
        for entry in keys:
            match = _KEY_ENTRY.fullmatch(entry)
            if match is None:
                raise ValueError(
                    f"{entry!r} is not schema.table=partition[:type] or schema.table=partition[:type]+sort[:type]"
                )
            parts = [column.partition(":") for column in match["columns"].split("+")]
            typed = [kind for _, _, kind in parts if kind]
            if typed and len(typed) != len(parts):
                raise ValueError(f"{entry!r}: give every key column its type, or none")
            key_of[(match["schema"], match["table"])] = (tuple(c for c, _, _ in parts), tuple(typed) or None)
        tables: list[ListedTable] = []
        wildcards: list[Wildcard] = []
        for entry in patterns:
            schema, dot, table = entry.partition(".")
            if not dot or not schema or not table:
                raise ValueError(f"{entry!r} is not schema.table")
            if "%" in table:
                wildcards.append(Wildcard(schema, table))
            else:
                key, types = key_of.pop((schema, table), (None, None))
                tables.append(ListedTable(schema, table, key, types))
        if key_of:
            names = ", ".join(f"{s}.{t}" for s, t in key_of)
            raise ValueError(f"keys of tables that are not listed: {names}")
        return cls(tuple(tables), tuple(wildcards))

    def patterns(self) -> tuple[str, ...]:
        return (
            *(f"{t.schema}.{t.table}" for t in self.tables),
            *(f"{w.schema}.{w.pattern}" for w in self.wildcards),
        )

    def keys(self) -> tuple[str, ...]:
        def columns(table: ListedTable) -> str:
            assert table.key is not None
            if table.key_types is None:
                return "+".join(table.key)
            return "+".join(f"{c}:{kind}" for c, kind in zip(table.key, table.key_types, strict=True))

        return tuple(f"{t.schema}.{t.table}={columns(t)}" for t in self.tables if t.key)

    @property
    def schemas(self) -> tuple[str, ...]:
        return tuple(sorted({t.schema for t in self.tables} | {w.schema for w in self.wildcards}))


@dataclass(frozen=True, slots=True)
class TableFacts:
    """What the catalog says of one table."""

    schema: str
    table: str
    columns: tuple[str, ...]
    not_null: frozenset[str]
    #: In key order; () when the table has none.
    primary_key: tuple[str, ...]
    #: Every unique index (and the primary key) on plain columns, whole and valid.
    unique_keys: tuple[frozenset[str], ...]
    #: Whether the connected user may SELECT the table.
    readable: bool
    #: PostgreSQL's ``relreplident``: d(efault), n(othing), f(ull), i(ndex); None elsewhere.
    replica_identity: str | None = None
    #: Each column's type as the catalog names it, and what DMS writes of it to DynamoDB:
    #: ``string``, ``number``, or None (nothing a key attribute can be).
    types: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


def doctor(connection: Any, engine: str, selection: Selection) -> Report:
    """Every check of ``engine``'s source, read through ``connection``."""
    if engine in POSTGRES_ENGINES:
        return postgres_report(connection, engine, selection)
    if engine in MYSQL_ENGINES:
        return mysql_report(connection, engine, selection)
    raise UnsupportedEngineError(
        f"the doctor checks PostgreSQL ({', '.join(sorted(POSTGRES_ENGINES))}) and MySQL-family "
        f"({', '.join(sorted(MYSQL_ENGINES))}) sources, not {engine}"
    )


def _fetch(connection: Any, query: str, parameters: Any = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(query, parameters)
        return list(cursor.fetchall())


# --- PostgreSQL ----------------------------------------------------------------------------

PG_SETTINGS_QUERY = """
SELECT name, setting FROM pg_settings
 WHERE name IN ('wal_level', 'max_replication_slots', 'max_wal_senders', 'wal_sender_timeout',
                'rds.logical_replication')
"""
#: The user and its roles (``rds_*`` exist on RDS and Aurora only), and what is in use.
PG_SERVER_QUERY = """
SELECT current_user::text, r.rolsuper, r.rolreplication,
       to_regrole('rds_superuser') IS NOT NULL,
       coalesce(pg_has_role(current_user, to_regrole('rds_superuser')::oid, 'MEMBER'), false),
       coalesce(pg_has_role(current_user, to_regrole('rds_replication')::oid, 'MEMBER'), false),
       (SELECT count(*) FROM pg_replication_slots),
       (SELECT count(*) FROM pg_stat_replication)
  FROM pg_roles r WHERE r.rolname = current_user
"""
#: The tables of the selected schemas: columns, NOT NULL columns, SELECT, replica identity.
PG_TABLES_QUERY = """
SELECT n.nspname::text, c.relname::text, c.relreplident::text, has_table_privilege(c.oid, 'SELECT'),
       array(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       array(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull),
       array(SELECT coalesce(b.typname, t.typname)::text FROM pg_attribute a
               JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       array(SELECT CASE WHEN a.atttypmod >= 4 THEN ((a.atttypmod - 4) >> 16) & 65535 END FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)
"""
#: Their primary keys and unique indexes on plain columns (no expression, not partial,
#: valid), key columns only (not INCLUDE's), in index order.
PG_UNIQUE_QUERY = """
SELECT n.nspname::text, c.relname::text, i.indisprimary,
       array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
              WHERE k.n <= i.indnkeyatts ORDER BY k.n)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
   AND c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)
"""


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """What the PostgreSQL checks read of the server and the connected user."""

    settings: Mapping[str, str]
    user: str
    superuser: bool
    replication: bool
    #: RDS or Aurora: the ``rds_superuser`` role exists.
    rds: bool
    rds_superuser: bool
    rds_replication: bool
    slots_used: int
    senders_used: int

    def number(self, name: str) -> int:
        return int(self.settings.get(name) or 0)


def read_postgres(connection: Any) -> PostgresServer:
    settings = {str(name): str(value) for name, value in _fetch(connection, PG_SETTINGS_QUERY)}
    (row,) = _fetch(connection, PG_SERVER_QUERY)
    user, superuser, replication, rds, rds_superuser, rds_replication, slots, senders = row
    return PostgresServer(
        settings=settings,
        user=str(user),
        superuser=bool(superuser),
        replication=bool(replication),
        rds=bool(rds) or "rds.logical_replication" in settings,
        rds_superuser=bool(rds_superuser),
        rds_replication=bool(rds_replication),
        slots_used=int(slots),
        senders_used=int(senders),
    )


def read_postgres_tables(connection: Any, schemas: Iterable[str]) -> dict[tuple[str, str], TableFacts]:
    """The tables of ``schemas`` (two catalog queries, whatever their number)."""
    wanted = sorted(set(schemas))
    if not wanted:
        return {}
    unique: dict[tuple[str, str], list[frozenset[str]]] = {}
    primary: dict[tuple[str, str], tuple[str, ...]] = {}
    for schema, table, is_primary, columns in _fetch(connection, PG_UNIQUE_QUERY, (wanted,)):
        unique.setdefault((schema, table), []).append(frozenset(columns))
        if is_primary:
            primary[(schema, table)] = tuple(columns)
    tables: dict[tuple[str, str], TableFacts] = {}
    rows = _fetch(connection, PG_TABLES_QUERY, (wanted,))
    for schema, table, identity, readable, columns, not_null, bases, precisions in rows:
        where = (schema, table)
        tables[where] = TableFacts(
            schema=schema,
            table=table,
            columns=tuple(columns),
            not_null=frozenset(not_null),
            primary_key=primary.get(where, ()),
            unique_keys=tuple(unique.get(where, ())),
            readable=bool(readable),
            replica_identity=identity,
            types={
                column: (base, dynamodb_key_type("postgres", base, precision))
                for column, base, precision in zip(columns, bases, precisions, strict=True)
            },
        )
    return tables


def dynamodb_key_type(engine: str, base: str, precision: int | None = None) -> str | None:
    """What DMS writes to DynamoDB for a column of type ``base`` (pg_type's name, domains
    resolved; MySQL's DATA_TYPE), as a key attribute's type: ``number`` (N), ``string`` (S),
    or None when it is nothing a key can be (a BLOB DMS does not write, MySQL's BIT as a
    BOOL). docs/dms.md, "Data types", from CHAP_Source.PostgreSQL, CHAP_Source.MySQL and
    CHAP_Target.DynamoDB: a PostgreSQL boolean is CHAR(5), a numeric of over 38 digits a
    STRING."""
    mysql = engine in MYSQL_ENGINES
    kind = (MYSQL_KINDS if mysql else POSTGRES_KINDS).get(base, "text")
    if kind == "unwritten":
        return None
    if kind == "boolean":
        return None if mysql else "string"
    if kind in ("integer", "decimal", "float"):
        wide = not mysql and base == "numeric" and precision is not None and precision > 38
        return "string" if wide else "number"
    return "string"


def postgres_report(connection: Any, engine: str, selection: Selection) -> Report:
    server = read_postgres(connection)
    checked, findings = postgres_findings(server)
    tables = read_postgres_tables(connection, selection.schemas)
    more_checked, more = table_findings(selection, tables, engine=engine, user=_pg_ident(server.user))
    return Report(engine, (*checked, *more_checked), (*findings, *more))


def postgres_findings(server: PostgresServer) -> tuple[list[str], list[Finding]]:
    """The server's checks, from what was read: (what each found, what is missing)."""
    checked: list[str] = []
    findings: list[Finding] = []
    where = (
        "in the DB parameter group (Aurora: the DB cluster parameter group)"
        if server.rds
        else "in postgresql.conf (or ALTER SYSTEM SET ...)"
    )
    restart = where + (", then reboot" if server.rds else ", then restart the server")
    reload = where + ("" if server.rds else ", then SELECT pg_reload_conf();")

    wal_level = server.settings.get("wal_level", "?")
    checked.append(f"wal_level: {wal_level}")
    if wal_level != "logical":
        findings.append(
            Finding(
                check="wal_level",
                found=f"wal_level is {wal_level}: DMS's change data capture reads logical decoding",
                fix=(
                    "rds.logical_replication = 1 " + restart + " (it sets wal_level = logical)"
                    if server.rds
                    else "wal_level = logical " + restart
                ),
                page=POSTGRES_PAGE,
                assessment="postgres-check-wallevel",
            )
        )

    slots = server.number("max_replication_slots")
    free_slots = slots - server.slots_used
    checked.append(f"replication slots: {free_slots} of {slots} free")
    if free_slots < 1:
        findings.append(
            Finding(
                check="replication_slots",
                found=(
                    f"max_replication_slots is {slots} and {server.slots_used} slots exist: none is free "
                    "for the task's slot (a slot stays after its task stops)"
                ),
                fix=(
                    "raise max_replication_slots " + restart + ", or drop slots nothing reads: "
                    "SELECT slot_name, active FROM pg_replication_slots; "
                    "SELECT pg_drop_replication_slot('<slot>');"
                ),
                page=POSTGRES_PAGE,
                assessment="postgres-check-replication-slots-count",
            )
        )

    senders = server.number("max_wal_senders")
    free_senders = senders - server.senders_used
    checked.append(f"WAL senders: {free_senders} of {senders} free")
    if free_senders < 1:
        findings.append(
            Finding(
                check="wal_senders",
                found=f"max_wal_senders is {senders} and {server.senders_used} are in use: none is free for the task",
                fix="raise max_wal_senders " + restart,
                page=POSTGRES_PAGE,
                assessment="postgres-check-maxwalsenders",
            )
        )
    elif senders <= 1:
        findings.append(
            Finding(
                check="wal_senders",
                found=f"max_wal_senders is {senders}; the guide asks for a value greater than 1",
                fix="max_wal_senders = 2 or more " + restart,
                page=POSTGRES_PAGE,
                assessment="postgres-check-maxwalsenders",
                blocking=False,
            )
        )

    timeout = server.number("wal_sender_timeout")
    checked.append(f"wal_sender_timeout: {timeout} ms")
    if 0 < timeout < WAL_SENDER_TIMEOUT_MIN_MS:
        findings.append(
            Finding(
                check="wal_sender_timeout",
                found=f"wal_sender_timeout is {timeout} ms: a DMS task with CDC fails under 10000 ms",
                fix="wal_sender_timeout = 0 (no timeout) or at least 10000 (10 s) " + reload,
                page=POSTGRES_PAGE,
                assessment="postgres-check-walsenderstimeout",
            )
        )
    elif timeout > WAL_SENDER_TIMEOUT_ADVISED_MAX_MS:
        findings.append(
            Finding(
                check="wal_sender_timeout",
                found=(
                    f"wal_sender_timeout is {timeout} ms: over 5 minutes delays a Multi-AZ failover "
                    "of the replication instance"
                ),
                fix="wal_sender_timeout under 300000 (5 min) " + reload,
                page=POSTGRES_PAGE,
                blocking=False,
            )
        )

    user = _pg_ident(server.user)
    if server.rds:
        held = {"rds_superuser": server.rds_superuser, "rds_replication": server.rds_replication}
        roles = [role for role, member in held.items() if not member]
        checked.append(
            f"privileges of {server.user}: "
            + (f"lacks {', '.join(roles)}" if roles else "rds_superuser, rds_replication")
        )
        if roles:
            findings.append(
                Finding(
                    check="privileges",
                    found=f"user {server.user} is not a member of {' and '.join(roles)}",
                    fix=f"as the master user: GRANT {', '.join(roles)} TO {user};",
                    page=POSTGRES_PAGE,
                )
            )
    else:
        checked.append(
            f"privileges of {server.user}: " + ("superuser" if server.superuser else "not a superuser")
        )
        if not server.superuser:
            has = (
                "it has REPLICATION, which is not enough" if server.replication else "nor has it REPLICATION"
            )
            findings.append(
                Finding(
                    check="privileges",
                    found=(
                        f"user {server.user} is not a superuser ({has}): on a self-managed server DMS's "
                        "full load and CDC need superuser permissions"
                    ),
                    fix=f"ALTER ROLE {user} WITH SUPERUSER;",
                    page=POSTGRES_PAGE,
                )
            )
    return checked, findings


_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")


def _pg_ident(name: str) -> str:
    return name if _PLAIN_IDENTIFIER.fullmatch(name) else '"' + name.replace('"', '""') + '"'


def _pg_table(facts: TableFacts) -> str:
    return f"{_pg_ident(facts.schema)}.{_pg_ident(facts.table)}"


# --- the tables: a DynamoDB key for each, unique, readable --------------------------------


def selected_tables(
    selection: Selection, tables: Mapping[tuple[str, str], TableFacts]
) -> tuple[dict[tuple[str, str], ListedTable | Wildcard], list[ListedTable]]:
    """The catalog's tables the selection selects, each with what selects it, as the task's
    object locators select them (``dmsbus.table_mappings.like``); and the listed tables the
    catalog lacks."""
    selected: dict[tuple[str, str], ListedTable | Wildcard] = {}
    absent: list[ListedTable] = []
    for listed in selection.tables:
        where = (listed.schema, listed.table)
        if where in tables:
            selected[where] = listed
        else:
            absent.append(listed)
    for wildcard in selection.wildcards:
        locator = pattern(wildcard.pattern)
        for schema, table in sorted(tables):
            if schema == wildcard.schema and like(locator, table):
                selected.setdefault((schema, table), wildcard)
    return dict(sorted(selected.items())), absent


def table_findings(
    selection: Selection, tables: Mapping[tuple[str, str], TableFacts], *, engine: str, user: str
) -> tuple[list[str], list[Finding]]:
    """Each selected table's DynamoDB key (its primary key, or config's unique ``key``), and
    whether ``user`` (as a SQL grantee) may read it."""
    mysql = engine in MYSQL_ENGINES
    selected, absent = selected_tables(selection, tables)
    findings: list[Finding] = [
        Finding(
            check="table",
            found=f"{t.schema}.{t.table} is listed in config and the source has no such table"
            + (" (or the user has no privilege on it)" if mysql else ""),
            fix="create it, or remove it from config: DMS replicates nothing of it until it exists",
            page=MYSQL_PAGE if mysql else POSTGRES_PAGE,
            assessment="all-check-source-selection-rules",
            blocking=False,
        )
        for t in absent
    ]
    by_wildcard = sum(isinstance(chooser, Wildcard) for chooser in selected.values())
    checked = [
        f"tables: {len(selected)} selected ({len(selected) - by_wildcard} listed, {by_wildcard} by a wildcard), "
        "each for its DynamoDB key, the key's uniqueness and SELECT"
    ]
    for where, chooser in selected.items():
        facts = tables[where]
        if isinstance(chooser, ListedTable) and chooser.key:
            findings += _key_findings(facts, chooser.key, mysql=mysql)
            findings += _key_type_findings(facts, chooser, mysql=mysql)
        else:
            findings += _primary_key_findings(facts, chooser, engine=engine)
        keyed = isinstance(chooser, ListedTable) and bool(chooser.key)
        if keyed and engine in POSTGRES_ENGINES and not facts.primary_key and facts.replica_identity != "f":
            findings.append(_replica_identity(facts))
        if engine in POSTGRES_ENGINES:
            findings += _lob_primary_key(facts)
        if not facts.readable:
            table = f"`{facts.schema}`.`{facts.table}`" if mysql else _pg_table(facts)
            findings.append(
                Finding(
                    check="select",
                    found=f"the user cannot SELECT {facts.name}: DMS's full load reads it",
                    fix=f"GRANT SELECT ON {table} TO {user};",
                    page=MYSQL_PAGE if mysql else POSTGRES_PAGE,
                    assessment=_assessment(engine, "select-privileges")
                    if mysql
                    else "postgres-check-select-object-privileges",
                )
            )
    return checked, findings


def _assessment(engine: str, name: str) -> str:
    """A MySQL-family assessment's key: MariaDB's have their own prefix."""
    return f"{'mariadb' if engine == 'mariadb' else 'mysql'}-check-{name}"


def _columns(columns: Iterable[str]) -> str:
    return ", ".join(columns)


def _key_findings(facts: TableFacts, key: tuple[str, ...], *, mysql: bool) -> list[Finding]:
    """Config's ``key`` against the catalog: its columns exist, are NOT NULL and cover a
    unique key (a key that holds a unique key's columns is unique too)."""
    fold = str.lower if mysql else str
    columns = {fold(c) for c in facts.columns}
    written = f"key [{_columns(key)}]"
    missing = [c for c in key if fold(c) not in columns]
    if missing:
        return [
            Finding(
                check="key",
                found=f"{facts.name}: {written} names {_columns(missing)}, which the table does not have",
                fix=f"give key columns of {facts.name} in config: {_columns(facts.columns)}",
                page=DYNAMODB_PAGE,
            )
        ]
    found: list[Finding] = []
    held = {fold(c) for c in key}
    if not any({fold(c) for c in unique} <= held for unique in facts.unique_keys):
        primary = (
            f"its primary key is ({_columns(facts.primary_key)})"
            if facts.primary_key
            else "it has no primary key"
        )
        index = f"`{facts.table}_dmsbus_key`" if mysql else _pg_ident(f"{facts.table}_dmsbus_key")
        table = f"`{facts.schema}`.`{facts.table}`" if mysql else _pg_table(facts)
        found.append(
            Finding(
                check="key",
                found=(
                    f"{facts.name}: {written} is not unique in the source (no primary key or unique index on "
                    f"these columns; {primary}): rows with the same key overwrite one DynamoDB item"
                ),
                fix=(
                    f"a key that holds a unique key's columns, or make it one: CREATE UNIQUE INDEX {index} "
                    f"ON {table} ({_columns(key)});"
                ),
                page=DYNAMODB_PAGE,
            )
        )
    nullable = [c for c in key if fold(c) not in {fold(n) for n in facts.not_null}]
    if nullable:
        table = f"`{facts.schema}`.`{facts.table}`" if mysql else _pg_table(facts)
        fix = (
            f"ALTER TABLE {table} MODIFY {nullable[0]} <its type> NOT NULL; (each of {_columns(nullable)})"
            if mysql
            else " ".join(f"ALTER TABLE {table} ALTER COLUMN {_pg_ident(c)} SET NOT NULL;" for c in nullable)
        )
        found.append(
            Finding(
                check="key",
                found=(
                    f"{facts.name}: key column {_columns(nullable)} may be NULL: a DynamoDB item needs "
                    "every key attribute, and NULLs are not unique"
                ),
                fix=fix,
                page=DYNAMODB_PAGE,
            )
        )
    return found


def _key_type_findings(facts: TableFacts, listed: ListedTable, *, mysql: bool) -> list[Finding]:
    """Config's ``key_types`` (the object mapping's ``attribute-sub-type``) against what DMS
    writes of each key column: a ``number`` attribute of a column DMS writes as a string
    fails every row whose value is not a number; a column DMS does not write cannot be a
    key at all; a ``string`` of a number column is advice (the key is the number's text)."""
    found: list[Finding] = []
    fold: Callable[[str], str] = str.lower if mysql else str
    types = {fold(column): kind for column, kind in facts.types.items()}
    for index, column in enumerate(listed.key or ()):
        if fold(column) not in types:
            continue  # named by _key_findings
        source_type, written = types[fold(column)]
        declared = listed.key_types[index] if listed.key_types else None
        fix = (
            f"key_types: [{', '.join(kind or '?' for kind in _written_types(listed, types, fold))}] in config"
        )
        if written is None:
            found.append(
                Finding(
                    check="key_types",
                    found=f"{facts.name}: key column {column} is {source_type}, which DMS does not write to "
                    "DynamoDB as a string or a number: it cannot be a key attribute",
                    fix=f"a key of other columns for {facts.name} in config",
                    page=DYNAMODB_PAGE,
                )
            )
        elif declared is not None and declared != written:
            found.append(
                Finding(
                    check="key_types",
                    found=f"{facts.name}: key column {column} is {source_type}, which DMS writes as a {written}, "
                    f"and config's key_types declare a {declared}"
                    + (": a row whose value is not a number fails" if declared == "number" else ""),
                    fix=fix,
                    page=DYNAMODB_PAGE,
                    blocking=declared == "number",
                )
            )
    return found


def _written_types(
    listed: ListedTable, types: Mapping[str, tuple[str, str | None]], fold: Callable[[str], str]
) -> list[str | None]:
    return [types.get(fold(column), ("", None))[1] for column in listed.key or ()]


def _primary_key_findings(
    facts: TableFacts, chooser: ListedTable | Wildcard, *, engine: str
) -> list[Finding]:
    """A table without ``key``: its primary key is DynamoDB's, so it must have one column."""

    def give(key: str) -> str:
        if isinstance(chooser, Wildcard):
            return (
                f"list {facts.name} under tables: with key: {key}, and narrow selection "
                f"{chooser.schema}.{chooser.pattern} so that it no longer matches it (config refuses a table "
                "two rules name)"
            )
        return f"give {facts.name} key: {key} in config"

    unique = "[one or two NOT NULL columns a unique index covers]"
    if not facts.primary_key:
        identity = (
            f"; then ALTER TABLE {_pg_table(facts)} REPLICA IDENTITY FULL; (without a primary key the WAL "
            "carries no old row for UPDATE and DELETE)"
            if engine in POSTGRES_ENGINES
            else ""
        )
        return [
            Finding(
                check="primary_key",
                found=(
                    f"{facts.name} has no primary key and config gives it no key: DMS has no DynamoDB key "
                    "for it and suspends it"
                ),
                fix=f"add a primary key, or {give(unique)}{identity}",
                page=DYNAMODB_PAGE,
                assessment="postgres-check-pk" if engine in POSTGRES_ENGINES else None,
            )
        ]
    if len(facts.primary_key) == 1:
        return []
    if len(facts.primary_key) == 2:
        fix = give(f"[{_columns(facts.primary_key)}]")
    else:
        fix = give(unique) + (
            f" (DynamoDB keys have at most two attributes; the primary key has {len(facts.primary_key)})"
        )
    return [
        Finding(
            check="primary_key",
            found=(
                f"{facts.name}: its primary key ({_columns(facts.primary_key)}) is composite and config gives no "
                "key: without an object mapping DMS replicates only tables with a one-column primary key, "
                "and suspends this one"
            ),
            fix=fix,
            page=DYNAMODB_PAGE,
        )
    ]


#: PostgreSQL types DMS maps to a LOB (NCLOB or CLOB: CHAP_Source.PostgreSQL's data types);
#: an array's pg_type name starts with ``_``.
_PG_LOB_TYPES = frozenset(
    {"text", "json", "jsonb", "xml", "tsvector", "tsquery", "path", "polygon", "hstore"}
)


def _pg_lob(base: str) -> bool:
    return base in _PG_LOB_TYPES or base.startswith("_")


def _lob_primary_key(facts: TableFacts) -> list[Finding]:
    """Advice: a primary key column DMS reads as a LOB. "DMS does not support replication if
    the source table has an LOB column as a primary key" (assessment postgres-check-pk-lob),
    and DMS maps ``text`` to NCLOB; whether DMS counts a ``text`` key as a LOB is open."""
    lobs = [c for c in facts.primary_key if _pg_lob(facts.types.get(c, ("", None))[0])]
    if not lobs:
        return []
    kinds = ", ".join(f"{c} ({facts.types[c][0]})" for c in lobs)
    return [
        Finding(
            check="primary_key_lob",
            found=(
                f"{facts.name}: primary key column {kinds} is a type DMS maps to a LOB (NCLOB/CLOB), and DMS's "
                "assessment says it does not replicate a table whose primary key is a LOB"
            ),
            fix=(
                f"run the assessment on the task; if it fails, ALTER TABLE {_pg_table(facts)} ALTER COLUMN "
                f"{_pg_ident(lobs[0])} TYPE varchar(n) (WSTRING, not a LOB)"
            ),
            page="CHAP_Tasks.AssessmentReport.PG",
            assessment="postgres-check-pk-lob",
            blocking=False,
        )
    ]


def _replica_identity(facts: TableFacts) -> Finding:
    return Finding(
        check="replica_identity",
        found=(
            f"{facts.name} has no primary key and its replica identity is not FULL: DMS ignores its UPDATE "
            "and DELETE"
        ),
        fix=f"add a primary key, or ALTER TABLE {_pg_table(facts)} REPLICA IDENTITY FULL;",
        page=POSTGRES_PAGE,
        assessment="postgres-check-pk",
    )


# --- MySQL, MariaDB, Aurora MySQL -------------------------------------------------------

MYSQL_VARIABLES_QUERY = """
SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', 'server_id',
    'binlog_expire_logs_seconds', 'expire_logs_days', 'basedir', 'aurora_version')
"""
#: One database per query, named as a constant (MySQL 5.7 and MariaDB narrow
#: information_schema's scans only by such constants).
MYSQL_TABLES_QUERY = """
SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA = %s
"""
MYSQL_COLUMNS_QUERY = """
SELECT TABLE_NAME, COLUMN_NAME, IS_NULLABLE = 'NO', LOWER(DATA_TYPE) FROM information_schema.COLUMNS
 WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION
"""
#: Unique indexes (PRIMARY among them); a functional index part has no COLUMN_NAME.
MYSQL_UNIQUE_QUERY = """
SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS
 WHERE TABLE_SCHEMA = %s AND NON_UNIQUE = 0 ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""
#: Privilege names as MariaDB 10.5+ spells them: REPLICATION CLIENT is BINLOG MONITOR there,
#: and REPLICATION REPLICA a synonym of REPLICATION SLAVE.
_PRIVILEGE_ALIASES = {
    "BINLOG MONITOR": "REPLICATION CLIENT",
    "REPLICATION REPLICA": "REPLICATION SLAVE",
    "ALL": "ALL PRIVILEGES",
}
_GRANT = re.compile(
    r"GRANT (?P<privileges>.+?) ON (?:TABLE )?(?P<database>\*|`(?:[^`]|``)*`)\.(?P<table>\*|`(?:[^`]|``)*`) TO ",
    re.IGNORECASE,
)
_ROLE_GRANT = re.compile(r"GRANT [^(]*? TO ", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Grants:
    """What SHOW GRANTS says the connected account holds (privileges of its roles are not
    listed there: ``roles`` says whether it has any)."""

    global_: frozenset[str] = frozenset()
    #: (database pattern as stored: ``%``/``_`` wildcards, ``\\`` escapes; privileges)
    databases: tuple[tuple[str, frozenset[str]], ...] = ()
    tables: tuple[tuple[str, str, frozenset[str]], ...] = ()
    roles: bool = False

    def has(self, privilege: str, database: str | None = None, table: str | None = None) -> bool:
        everything = "ALL PRIVILEGES"
        if self.global_ & {privilege, everything}:
            return True
        if database is None:
            return False
        if any(
            _database_matches(p, database) and held & {privilege, everything} for p, held in self.databases
        ):
            return True
        return any(
            d == database and t == table and held & {privilege, everything} for d, t, held in self.tables
        )


def parse_grants(lines: Iterable[str]) -> Grants:
    """SHOW GRANTS's lines, as MySQL and MariaDB print them. A column-level privilege
    (``SELECT (a, b)``) does not count: DMS reads every column."""
    global_: set[str] = set()
    databases: list[tuple[str, frozenset[str]]] = []
    tables: list[tuple[str, str, frozenset[str]]] = []
    roles = False
    for line in lines:
        match = _GRANT.match(line)
        if match is None:
            roles = roles or (_ROLE_GRANT.match(line) is not None and " ON " not in line.upper())
            continue
        privileges = frozenset(
            _PRIVILEGE_ALIASES.get(name, name)
            for name in (part.strip().upper() for part in _split_privileges(match["privileges"]))
            if "(" not in name
        )
        database, table = _unquote(match["database"]), _unquote(match["table"])
        if database == "*":
            global_ |= privileges
        elif table == "*":
            databases.append((database, privileges))
        else:
            tables.append((database, table, privileges))
    return Grants(frozenset(global_), tuple(databases), tuple(tables), roles)


def _split_privileges(text: str) -> list[str]:
    parts: list[str] = []
    depth, current = 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def _database_matches(stored: str, database: str) -> bool:
    """A database-level grant's name: ``%`` and ``_`` are wildcards unless escaped (``\\_``)."""
    regex, escaped = "", False
    for char in stored:
        if escaped:
            regex += re.escape(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            regex += ".*" if char == "%" else "." if char == "_" else re.escape(char)
    return re.fullmatch(regex, database) is not None


@dataclass(frozen=True, slots=True)
class MysqlServer:
    """What the MySQL-family checks read of the server and the connected account."""

    variables: Mapping[str, str]
    #: RDS or Aurora: their binary logs are kept for 'binlog retention hours'.
    managed: bool
    #: RDS's 'binlog retention hours' (None: not set, or not read: ``retention_error``).
    retention_hours: int | None
    retention_error: str | None
    #: ``'user'@'host'``, as GRANT names the account.
    account: str
    grants: Grants


def read_mysql(connection: Any, engine: str) -> MysqlServer:
    variables = {str(name).lower(): str(value) for name, value in _fetch(connection, MYSQL_VARIABLES_QUERY)}
    managed = (
        engine == "aurora"
        or "aurora_version" in variables
        or variables.get("basedir", "").startswith("/rdsdbbin")
    )
    hours: int | None = None
    error: str | None = None
    if managed:
        hours, error = _rds_retention(connection)
    ((current,),) = _fetch(connection, "SELECT CURRENT_USER()")
    user, _, host = str(current).rpartition("@")
    account = "'{}'@'{}'".format(user.replace("'", "''"), host.replace("'", "''"))
    grants = parse_grants(str(row[0]) for row in _fetch(connection, "SHOW GRANTS"))
    return MysqlServer(variables, managed, hours, error, account, grants)


def _rds_retention(connection: Any) -> tuple[int | None, str | None]:
    """RDS's 'binlog retention hours' (``CALL mysql.rds_show_configuration``)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("CALL mysql.rds_show_configuration")
            rows = list(cursor.fetchall())
            while cursor.nextset():
                pass
    except pymysql.MySQLError as exc:
        return None, str(exc)
    for name, value, *_ in rows:
        if str(name) == "binlog retention hours":
            return (int(value) if value not in (None, "", "NULL") else None), None
    return None, None


def read_mysql_tables(connection: Any, schemas: Iterable[str]) -> dict[tuple[str, str], TableFacts]:
    """The tables of ``schemas`` (databases) the account sees, three queries per database."""
    tables: dict[tuple[str, str], TableFacts] = {}
    for database in sorted(set(schemas)):
        names = [str(row[0]) for row in _fetch(connection, MYSQL_TABLES_QUERY, (database,))]
        columns: dict[str, list[str]] = {}
        not_null: dict[str, set[str]] = {}
        types: dict[str, dict[str, tuple[str, str | None]]] = {}
        for table, column, required, base in _fetch(connection, MYSQL_COLUMNS_QUERY, (database,)):
            columns.setdefault(str(table), []).append(str(column))
            types.setdefault(str(table), {})[str(column)] = (str(base), dynamodb_key_type("mysql", str(base)))
            if required:
                not_null.setdefault(str(table), set()).add(str(column))
        indexes: dict[tuple[str, str], list[str | None]] = {}
        for table, index, column in _fetch(connection, MYSQL_UNIQUE_QUERY, (database,)):
            indexes.setdefault((str(table), str(index)), []).append(None if column is None else str(column))
        for table in names:
            unique = {
                index: parts
                for (owner, index), parts in indexes.items()
                if owner == table and None not in parts
            }
            tables[(database, table)] = TableFacts(
                schema=database,
                table=table,
                columns=tuple(columns.get(table, ())),
                not_null=frozenset(not_null.get(table, ())),
                primary_key=tuple(str(c) for c in unique.get("PRIMARY", ())),
                unique_keys=tuple(frozenset(str(c) for c in parts) for parts in unique.values()),
                readable=True,  # from the grants, below
                types=types.get(table, {}),
            )
    return tables


def mysql_report(connection: Any, engine: str, selection: Selection) -> Report:
    server = read_mysql(connection, engine)
    checked, findings = mysql_findings(server, engine)
    tables = {
        where: _readable(facts, server.grants)
        for where, facts in read_mysql_tables(connection, selection.schemas).items()
    }
    more_checked, more = table_findings(selection, tables, engine=engine, user=server.account)
    if server.grants.roles and any(f.check in ("privileges", "select") for f in more + findings):
        more.append(
            Finding(
                check="privileges",
                found="the account has roles, whose privileges SHOW GRANTS does not list: the privileges named may come from them",
                fix="SHOW GRANTS FOR CURRENT_USER() USING <role>; to see them, or grant them to the account itself",
                page=MYSQL_PAGE,
                blocking=False,
            )
        )
    return Report(engine, (*checked, *more_checked), (*findings, *more))


def _readable(facts: TableFacts, grants: Grants) -> TableFacts:
    return replace(facts, readable=grants.has("SELECT", facts.schema, facts.table))


def mysql_findings(server: MysqlServer, engine: str) -> tuple[list[str], list[Finding]]:
    """The server's checks, from what was read: (what each found, what is missing)."""
    checked: list[str] = []
    findings: list[Finding] = []
    variables = server.variables
    where = (
        "in the DB parameter group (Aurora: the DB cluster parameter group)"
        if server.managed
        else "in my.cnf, then restart the server"
    )

    log_bin = variables.get("log_bin", "OFF").upper()
    checked.append(f"log_bin: {log_bin}")
    if log_bin not in ("ON", "1"):
        findings.append(
            Finding(
                check="log_bin",
                found="binary logging is off: DMS's change data capture reads the binary log",
                fix=(
                    "turn on automated backups (a backup retention period of 1 day or more): RDS then "
                    "writes binary logs"
                    if server.managed
                    else "log-bin = mysql-bin and server_id = 1 (or greater) in my.cnf, then restart the server"
                ),
                page=MYSQL_PAGE,
                assessment=None if engine == "mariadb" else "mysql-check-binlog-enabled",
            )
        )

    for name, wanted, assessment in (
        ("binlog_format", "ROW", "binlog-format"),
        ("binlog_row_image", "FULL", "binlog-image"),
    ):
        value = variables.get(name, "?")
        checked.append(f"{name}: {value}")
        if value.upper() != wanted:
            findings.append(
                Finding(
                    check=name,
                    found=f"{name} is {value}: DMS's change data capture needs {wanted}",
                    fix=f"{name} = {wanted} {where}",
                    page=MYSQL_PAGE,
                    assessment=_assessment(engine, assessment),
                )
            )

    server_id = int(variables.get("server_id") or 0)
    if not server.managed:
        checked.append(f"server_id: {server_id}")
        if server_id < 1:
            findings.append(
                Finding(
                    check="server_id",
                    found=f"server_id is {server_id}: the guide asks for 1 or greater",
                    fix=f"server_id = 1 {where}",
                    page=MYSQL_PAGE,
                    assessment=_assessment(engine, "server-id"),
                )
            )

    findings += _retention(server, engine, checked)

    client = server.grants.has("REPLICATION CLIENT")
    slave = server.grants.has("REPLICATION SLAVE")
    lacking = [
        name for name, held in (("REPLICATION CLIENT", client), ("REPLICATION SLAVE", slave)) if not held
    ]
    checked.append(
        f"privileges of {server.account}: "
        + (f"lacks {', '.join(lacking)}" if lacking else "REPLICATION CLIENT, REPLICATION SLAVE")
    )
    if lacking:
        findings.append(
            Finding(
                check="privileges",
                found=(
                    f"the account {server.account} lacks {' and '.join(lacking)} (MariaDB 10.5+ shows REPLICATION "
                    "CLIENT as BINLOG MONITOR): DMS's change data capture needs them"
                ),
                fix=f"GRANT {', '.join(lacking)} ON *.* TO {server.account};",
                page=MYSQL_PAGE,
                assessment=_assessment(engine, "replication-privileges"),
            )
        )
    return checked, findings


def _retention(server: MysqlServer, engine: str, checked: list[str]) -> list[Finding]:
    """How long the binary logs stay: RDS's 'binlog retention hours', or a self-managed
    server's expiry (``binlog_expire_logs_seconds``, else ``expire_logs_days``; 0: never)."""
    assessment = _assessment(engine, "binlog-retention-time")
    if server.managed:
        if server.retention_error is not None:
            checked.append("binlog retention hours: not read")
            return [
                Finding(
                    check="binlog_retention",
                    found=f"cannot read 'binlog retention hours' ({server.retention_error})",
                    fix="as the master user: CALL mysql.rds_show_configuration; it must be 24 or more",
                    page=MYSQL_PAGE,
                    assessment=assessment,
                    blocking=False,
                )
            ]
        hours = server.retention_hours
        checked.append(f"binlog retention hours: {'not set' if hours is None else hours}")
        if hours is not None and hours >= RETENTION_HOURS:
            return []
        return [
            Finding(
                check="binlog_retention",
                found=(
                    "'binlog retention hours' is not set: RDS purges binary logs as soon as it can"
                    if hours is None
                    else f"'binlog retention hours' is {hours}: a task stopped for longer loses its place"
                ),
                fix=f"CALL mysql.rds_set_configuration('binlog retention hours', {RETENTION_HOURS});",
                page=MYSQL_PAGE,
                assessment=assessment,
            )
        ]
    seconds = float(server.variables.get("binlog_expire_logs_seconds") or 0)
    if seconds <= 0:
        seconds = float(server.variables.get("expire_logs_days") or 0) * RETENTION_SECONDS
    checked.append(
        f"binary logs kept: {'until purged by hand' if seconds <= 0 else f'{seconds / 3600:g} hours'}"
    )
    if seconds <= 0:
        return [
            Finding(
                check="binlog_retention",
                found="binary logs are never purged (expiry 0): the guide asks for expire_logs_days 1 or greater",
                fix="expire_logs_days = 1 (or binlog_expire_logs_seconds = 86400) or more, in my.cnf",
                page=MYSQL_PAGE,
                assessment=_assessment(engine, "expire-logs-days"),
                blocking=False,
            )
        ]
    if seconds < RETENTION_SECONDS:
        return [
            Finding(
                check="binlog_retention",
                found=f"binary logs are purged after {seconds / 3600:g} hours: the guide asks for a day or more",
                fix="expire_logs_days = 1 (or binlog_expire_logs_seconds = 86400) or more, in my.cnf",
                page=MYSQL_PAGE,
                assessment=_assessment(engine, "expire-logs-days"),
            )
        ]
    return []


# --- dropping DMS's replication slot ------------------------------------------------------

#: PostgreSQL's slot names: lower-case letters, digits and underscores, up to 63.
SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
SLOT_QUERY = """
SELECT slot_type, database::text, active, active_pid, current_database()::text
  FROM pg_replication_slots WHERE slot_name = %s
"""


@dataclass(frozen=True, slots=True)
class SlotResult:
    """What ``drop-slot`` did: ``dropped``, ``absent`` (nothing to do) or ``refused``;
    ``active``: refused because a process still reads the slot (a task that has just
    stopped may hold it a moment longer)."""

    slot: str
    result: str
    message: str
    active: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "action": "drop-slot",
            "slot": self.slot,
            "result": self.result,
            "message": self.message,
            "active": self.active,
        }


def drop_slot(connection: Any, slot: str) -> SlotResult:
    """Drop logical replication slot ``slot`` of the connected database, unless a process
    reads it (DMS's task while it runs): DMS leaves its slot when a task stops, and the
    source keeps WAL for it without bound (CHAP_Source.PostgreSQL)."""
    if not SLOT_NAME.fullmatch(slot):
        raise ValueError(f"slot {slot!r} is not a replication slot name (a-z, 0-9 and _, up to 63)")
    command = f"SELECT pg_drop_replication_slot('{slot}');"
    rows = _fetch(connection, SLOT_QUERY, (slot,))
    if not rows:
        return SlotResult(slot, "absent", f"no replication slot {slot}: nothing to drop")
    kind, database, active, pid, current = rows[0]
    if kind != "logical":
        return SlotResult(slot, "refused", f"slot {slot} is a {kind} slot, not one DMS makes: left as it is")
    if database != current:
        return SlotResult(
            slot, "refused", f"slot {slot} belongs to database {database}, not {current}: run {command} there"
        )
    if active:
        return SlotResult(
            slot,
            "refused",
            f"slot {slot} is active (process {pid} reads it): stop the task that reads it, then {command}",
            active=True,
        )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    except psycopg.errors.ObjectInUse as exc:
        return SlotResult(
            slot, "refused", f"slot {slot} became active ({exc}): stop its task, then {command}", active=True
        )
    except psycopg.errors.UndefinedObject:
        return SlotResult(slot, "absent", f"no replication slot {slot}: dropped meanwhile")
    return SlotResult(slot, "dropped", f"dropped replication slot {slot} of database {database}")


#: The connected database's logical slots, with the WAL each keeps (``restart_lsn`` up to
#: now): what the lifecycle compares before and after the first start to tell DMS's slot,
#: and what the scheduled watch measures.
LOGICAL_SLOTS_QUERY = """
SELECT slot_name::text, plugin::text, active,
       COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
FROM pg_replication_slots
WHERE slot_type = 'logical' AND database = current_database()
ORDER BY slot_name
"""


@dataclass(frozen=True, slots=True)
class SlotState:
    slot: str
    plugin: str
    active: bool
    retained_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "plugin": self.plugin,
            "active": self.active,
            "retained_bytes": self.retained_bytes,
        }


def logical_slots(connection: Any) -> list[SlotState]:
    """The logical replication slots of the connected PostgreSQL database."""
    return [
        SlotState(str(name), str(plugin), bool(active), int(retained))
        for name, plugin, active, retained in _fetch(connection, LOGICAL_SLOTS_QUERY)
    ]


def inactive_retained_bytes(slots: Iterable[SlotState]) -> int:
    """The most WAL a slot no process reads keeps: DMS's while its task is stopped (start:
    false, or a long stop), or one a deleted task left (0: none)."""
    return max((slot.retained_bytes for slot in slots if not slot.active), default=0)
