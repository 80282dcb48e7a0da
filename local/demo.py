"""The demo's parts: a sample legacy schema, a workload against it, a consumer that
rebuilds every table from the events it receives, and the check that the rebuilt state
equals the source.

Every row carries ``changed_at`` (set by PostgreSQL when the row is written), so the
consumer measures commit -> consumer latency per change.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from config.model import BusConfig
from config.plan import deployment_plan
from consumers.pg_mirror.settings import PgMirrorSettings
from dmsbus.consumer import ChangeEvent, ConsumerHandler, consumer
from dmsbus.ddbjson import Decoder, NumberMode
from dmsbus.names import TableName, parse_table_name
from dmsbus.schemas import SchemaStore
from dmsbus.typed import ImageTyper, TypingError
from local.children import SPAWN, start_child, stop_child
from local.dms import DmsStandIn
from local.verify import as_mirror_holds, mirror_columns, mirror_connection, mirror_selection

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id int PRIMARY KEY, name text NOT NULL, email text, phone text, city text, vip boolean,
    since date, country char(3), score numeric, prefs jsonb,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS products (
    sku text PRIMARY KEY, title text NOT NULL, price numeric(10,2), weight_kg double precision,
    thumbnail bytea, description text, spec text,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS orders (
    id bigint PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL, total numeric(12,2),
    note text, placed_at timestamp, changed_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS order_lines (
    order_id bigint, line_no int, sku text NOT NULL, qty int NOT NULL, unit_price numeric(10,2),
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (order_id, line_no));
CREATE SCHEMA IF NOT EXISTS audit;
CREATE TABLE IF NOT EXISTS audit.event_login (
    id bigint PRIMARY KEY, customer_id int, ok boolean, agent text,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp());
-- Selected by the audit.event_% wildcard, but its key is composite: DMS suspends it.
CREATE TABLE IF NOT EXISTS audit.event_session (
    customer_id int, started_at timestamptz, agent text, PRIMARY KEY (customer_id, started_at));
"""
#: A product whose item is over DynamoDB's 400 KB (two text columns of 210 KB, each within
#: the task's LobMaxSize): DMS logs it to awsdms_apply_exceptions and goes on.
OVERSIZED_SKU = "SKU-HUGE"
#: Created while the workload runs: the source's ``audit.event_%`` selection picks it up.
LATE_TABLE = "audit.event_payment"
LATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit.event_payment (
    id bigint PRIMARY KEY, order_id bigint, amount numeric(12,2), currency text,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp());
"""
NAMES = ["Zoë Ångström", "Łukasz Żółć", "山田 太郎", "Renée O'Hara", "Ægir 🦊", "José Núñez", "Ada", "Grace"]
CITIES = ["Łódź", "København", "東京", "São Paulo", None, "Zürich"]
STATUSES = ["new", "paid", "shipped", "cancelled"]


def create_schema(url: str, *, seed_rows: int = 20) -> None:
    """The sample schema with a few rows that the DMS stand-in's full load copies."""
    rng = random.Random(7)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(SCHEMA)
        for index in range(1, seed_rows + 1):
            connection.execute(
                "INSERT INTO products (sku, title, price, weight_kg, thumbnail, description)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    f"SKU-{index:04d}",
                    f"Produkt №{index} — “{rng.choice(NAMES)}”",
                    f"{rng.randint(1, 99999) / 100:.2f}",
                    None if index % 5 == 0 else rng.random() * 10,
                    bytes([index, 0, 255]),
                    f"Beschreibung {index}: " + "ü" * rng.randint(0, 40),
                ),
            )
        connection.execute(
            "INSERT INTO products (sku, title, description, spec) VALUES (%s, 'Oversized', %s, %s)"
            " ON CONFLICT DO NOTHING",
            (OVERSIZED_SKU, "d" * 210 * 1024, "s" * 210 * 1024),
        )
        connection.execute(
            "INSERT INTO audit.event_session VALUES (1, '2026-11-30 08:00:00+00', 'curl/8') ON CONFLICT DO NOTHING"
        )


@dataclass
class Workload:
    """Inserts, updates and deletes, one change per transaction, at ``rate`` per second."""

    url: str
    rate: float
    seed: int = 1
    committed: int = 0
    late_table_created: bool = False
    #: Where a workload running in a process of its own (WorkloadProcess) reports its
    #: commits: a shared counter (``.value``), or None.
    committed_counter: Any = field(default=None, repr=False)
    _rng: random.Random = field(init=False)
    _ids: dict[str, list[Any]] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def run(self, *, changes: int, stop: threading.Event, late_table_at: int | None = None) -> None:
        start = time.monotonic()
        with psycopg.connect(self.url, autocommit=True) as connection:
            for index in range(changes):
                if stop.is_set():
                    return
                if late_table_at is not None and index == late_table_at:
                    connection.execute(LATE_SCHEMA)
                    self.late_table_created = True
                self.change(connection)
                self.committed += 1
                if self.committed_counter is not None:
                    self.committed_counter.value = self.committed
                delay = start + (index + 1) / self.rate - time.monotonic()
                if delay > 0:
                    stop.wait(delay)

    def change(self, connection: psycopg.Connection[Any]) -> None:
        rng = self._rng
        tables = ["customers", "orders", "order_lines", "audit.event_login"]
        if self.late_table_created:
            tables.append(LATE_TABLE)
        table = rng.choice(tables)
        known = self._ids.setdefault(table, [])
        roll = rng.random()
        if known and roll < 0.1:
            key = known.pop(rng.randrange(len(known)))
            self._delete(connection, table, key)
        elif known and roll < 0.55:
            self._update(connection, table, rng.choice(known))
        else:
            known.append(self._insert(connection, table))

    def _insert(self, connection: psycopg.Connection[Any], table: str) -> Any:
        rng = self._rng
        number = self._next[table] = self._next.get(table, 0) + 1
        if table == "customers":
            connection.execute(
                "INSERT INTO customers (id, name, email, phone, city, vip, since, country, score, prefs)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    number,
                    rng.choice(NAMES),
                    f"c{number}@example.com",
                    None,
                    rng.choice(CITIES),
                    rng.choice([True, False, None]),
                    f"20{rng.randint(10, 26)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                    rng.choice(["PL", "DK", "JP", None]),
                    f"{rng.randint(0, 10**6)}.{rng.randint(0, 10**9):09d}",
                    json.dumps({"lang": rng.choice(["pl", "da", "ja"]), "news": rng.random() < 0.5}),
                ),
            )
            return (number,)
        if table == "orders":
            connection.execute(
                "INSERT INTO orders (id, customer_id, status, total, note, placed_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    number,
                    rng.randint(1, 50),
                    "new",
                    f"{rng.randint(0, 10**7) / 100:.2f}",
                    rng.choice([None, "geschenk 🎁", "fragile"]),
                    "2026-11-22 10:15:00.123456",
                ),
            )
            return (number,)
        if table == "order_lines":
            order_id, line_no = divmod(number, 4)
            connection.execute(
                "INSERT INTO order_lines (order_id, line_no, sku, qty, unit_price) VALUES (%s, %s, %s, %s, %s)",
                (
                    order_id,
                    line_no,
                    f"SKU-{rng.randint(1, 20):04d}",
                    rng.randint(1, 9),
                    f"{rng.randint(1, 9999) / 100:.2f}",
                ),
            )
            return (order_id, line_no)
        if table == "audit.event_login":
            connection.execute(
                "INSERT INTO audit.event_login (id, customer_id, ok, agent) VALUES (%s, %s, %s, %s)",
                (
                    number,
                    rng.randint(1, 50),
                    rng.random() < 0.9,
                    rng.choice(["curl/8", "Mozilla/5.0 (X11)", None]),
                ),
            )
            return (number,)
        connection.execute(
            "INSERT INTO audit.event_payment (id, order_id, amount, currency) VALUES (%s, %s, %s, %s)",
            (
                number,
                rng.randint(1, 50),
                f"{rng.randint(1, 10**6) / 100:.2f}",
                rng.choice(["EUR", "PLN", "JPY"]),
            ),
        )
        return (number,)

    def _update(self, connection: psycopg.Connection[Any], table: str, key: tuple[Any, ...]) -> None:
        rng = self._rng
        if table == "customers":
            connection.execute(
                "UPDATE customers SET city = %s, vip = %s, score = score + 1.0000005, changed_at = clock_timestamp()"
                " WHERE id = %s",
                (rng.choice(CITIES), rng.choice([True, False]), key[0]),
            )
        elif table == "orders":
            connection.execute(
                "UPDATE orders SET status = %s, total = total + 1.05, changed_at = clock_timestamp() WHERE id = %s",
                (rng.choice(STATUSES), key[0]),
            )
        elif table == "order_lines":
            connection.execute(
                "UPDATE order_lines SET qty = qty + 1, changed_at = clock_timestamp() WHERE order_id = %s AND line_no = %s",
                key,
            )
        elif table == "audit.event_login":
            connection.execute(
                "UPDATE audit.event_login SET ok = NOT ok, changed_at = clock_timestamp() WHERE id = %s", key
            )
        else:
            connection.execute(
                "UPDATE audit.event_payment SET amount = amount * 2, changed_at = clock_timestamp() WHERE id = %s",
                key,
            )

    def _delete(self, connection: psycopg.Connection[Any], table: str, key: tuple[Any, ...]) -> None:
        if table == "order_lines":
            connection.execute("DELETE FROM order_lines WHERE order_id = %s AND line_no = %s", key)
        else:
            connection.execute(f"DELETE FROM {table} WHERE id = %s", key)  # table is one of ours


class WorkloadProcess:
    """A workload run in a process of its own, as the legacy application it stands for is:
    its statements then do not compete with the data path for this interpreter, and a
    full-speed run commits as fast as PostgreSQL takes it. It carries on from the
    workload's state (the rows it knows, its numbering, its random sequence)."""

    def __init__(self, workload: Workload) -> None:
        self._committed = SPAWN.Value("q", workload.committed, lock=False)
        self._stop = SPAWN.Event()
        self._workload = workload
        self._process: Any = None

    def start(self, *, changes: int, late_table_at: int | None = None) -> None:
        self._process = start_child(
            _run_workload,
            (self._workload, self._committed, self._stop, changes, late_table_at),
            name="dmsbus-workload",
        )

    @property
    def committed(self) -> int:
        return int(self._committed.value)

    def is_alive(self) -> bool:
        return self._process is not None and bool(self._process.is_alive())

    @property
    def failed(self) -> bool:
        """It ended with an error (its traceback went to stderr)."""
        return self._process is not None and self._process.exitcode not in (0, None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the workload to end; RuntimeError when it failed."""
        if self._process is not None:
            self._process.join(timeout)
        if self.failed:
            raise RuntimeError(
                f"the workload failed (exit code {self._process.exitcode}); its traceback is above"
            )

    def stop(self) -> None:
        stop_child(self._process, self._stop, timeout=10)


def _run_workload(
    workload: Workload, committed: Any, stop: Any, changes: int, late_table_at: int | None
) -> None:
    workload.committed_counter = committed
    workload.run(changes=changes, stop=stop, late_table_at=late_table_at)


def key_text(key: Any) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class Rebuilt:
    """The tables as rebuilt from the events a consumer received, and latencies."""

    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    events: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    #: (commit time, latency in ms) of each measured change, for figures over a time window.
    samples: list[tuple[float, float]] = field(default_factory=list)
    #: Backfill reads (``r``) received, and when the last one came (epoch seconds).
    reads: int = 0
    last_read_at: float = 0.0
    #: (table, key) of rows whose last event a typed bus sent untyped (DMS's values).
    untyped: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The tables as rebuilt so far: a copy, taken while no event is being applied."""
        with self._lock:
            return {table: dict(rows) for table, rows in self.tables.items()}

    def untyped_rows(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self.untyped)

    def apply(self, event: ChangeEvent) -> None:
        received = time.time()
        with self._lock:
            self.events += 1
            if event.op == "r":
                self.reads += 1
                self.last_read_at = received
            rows = self.tables.setdefault(event.qualified_table, {})
            key = key_text(event.key)
            if event.source.typed is False:
                self.untyped.add((event.qualified_table, key))
            else:
                self.untyped.discard((event.qualified_table, key))
            if event.op == "d":
                rows.pop(key, None)
                return
            after = dict(event.after or {})
            rows[key] = after
            if event.op in ("c", "u") and isinstance(after.get("changed_at"), str):
                # DMS writes a timestamptz in UTC without an offset (docs/dms.md)
                written = datetime.fromisoformat(after["changed_at"]).replace(tzinfo=UTC).timestamp()
                latency = max(0.0, (received - written) * 1000)
                self.latencies_ms.append(latency)
                self.samples.append((written, latency))

    def handler(self) -> ConsumerHandler:
        """A consumer (the SDK's decorator: deaggregation, order, failure reporting)."""

        @consumer()
        def rebuild(event: ChangeEvent) -> None:
            self.apply(event)

        return rebuild

    def percentile(self, fraction: float) -> float:
        with self._lock:
            values = sorted(self.latencies_ms)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(fraction * len(values)))]

    def median(self) -> float:
        with self._lock:
            return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


@dataclass(frozen=True)
class Verification:
    tables: int
    rows: int
    #: Source rows missing or different in the rebuilt state, and rebuilt rows the source lacks.
    missing: list[str]
    different: list[str]
    extra: list[str]
    #: Rows whose only difference is columns the source has a value for and the other side
    #: lacks: stale after DDL (ADD COLUMN ... DEFAULT writes no WAL), not lost.
    stale: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.missing) + len(self.different) + len(self.extra)

    @classmethod
    def of(
        cls,
        expected: Mapping[Any, Mapping[Any, Any]],
        *,
        missing: list[str],
        different: list[str],
        extra: list[str],
        stale: list[str] | None = None,
    ) -> Verification:
        """Problems found comparing against ``expected`` (rows by key, per table)."""
        return cls(
            tables=len(expected),
            rows=sum(len(rows) for rows in expected.values()),
            missing=missing,
            different=different,
            extra=extra,
            stale=stale or [],
        )

    def plus(self, other: Verification | None) -> Verification:
        """Both checks' problems (``tables`` and ``rows`` stay this one's)."""
        if other is None:
            return self
        return Verification(
            tables=self.tables,
            rows=self.rows,
            missing=self.missing + other.missing,
            different=self.different + other.different,
            extra=self.extra + other.extra,
            stale=self.stale + other.stale,
        )

    def describe(self, limit: int = 5) -> Iterable[str]:
        for label, problems in (
            ("missing", self.missing),
            ("different", self.different),
            ("extra", self.extra),
        ):
            for problem in problems[:limit]:
                yield f"{label}: {problem}"
        for row in self.stale[:limit]:
            yield (
                f"stale after DDL (not lost; the source filled a column without a change, so none "
                f"carried it; an UPDATE of the row sends it): {row}"
            )


def stale_only(want: Mapping[str, Any], got: Mapping[str, Any], added: set[str]) -> bool:
    """Whether ``got`` differs from ``want`` only by lacking columns ``want`` has that the
    source added with a default (``added``): values no change carried, not a lost update."""
    lacking = set(want) - set(got)
    return (
        bool(lacking) and lacking <= added and set(got) <= set(want)
        and all(want[name] == value for name, value in got.items())
    )  # fmt: skip


def verify(
    dms: DmsStandIn, rebuilt: Rebuilt, *, numbers: NumberMode = "string", schemas: SchemaStore | None = None
) -> Verification:
    """Source (as DMS writes it, decoded as the glue decodes it) == rebuilt, row by row.
    On a typed bus (``schemas``: its schema table), both sides are compared typed with each
    table's latest schema: the source's rows, and rebuilt rows whose last event was untyped."""
    decoder = Decoder(numbers)
    typers = _Typers(schemas, dms.source.name)
    expected: dict[str, dict[str, dict[str, Any]]] = {}
    for target, item in dms.items():
        schema_table = ".".join(target.target.name.split(".")[2:4])
        row = decoder.image(item)
        row_key = {name: row[name] for name in target.key}
        expected.setdefault(schema_table, {})[key_text(row_key)] = typers.image(schema_table, row)
    missing: list[str] = []
    different: list[str] = []
    extra: list[str] = []
    stale: list[str] = []
    added_columns: dict[str, set[str]] = {}
    actual = rebuilt.snapshot()
    for table, key in rebuilt.untyped_rows() if schemas is not None else ():
        if key in actual.get(table, {}):
            actual[table][key] = typers.image(table, actual[table][key])
    for table, rows in expected.items():
        got = actual.get(table, {})
        for key, row in rows.items():
            if key not in got:
                missing.append(f"{table} {key}")
            elif (got_row := _present(got[key])) != (row := _present(row)):
                added = added_columns.setdefault(table, dms.added_with_default(*table.split(".", 1)))
                if stale_only(row, got_row, added):
                    stale.append(f"{table} {key}")
                else:
                    different.append(f"{table} {key}: source {row} != rebuilt {got[key]}")
        extra.extend(f"{table} {key}" for key in got.keys() - rows.keys())
    extra.extend(f"{table} (whole table)" for table in actual.keys() - expected.keys() if actual[table])
    return Verification.of(expected, missing=missing, different=different, extra=extra, stale=stale)


def _present(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's non-null values: a typed image's NULL columns, which DMS's items leave out."""
    return {name: value for name, value in row.items() if value is not None}


class _Typers:
    """Each table's latest schema from the bus's schema table (None: an untyped bus), read
    once per check; a row is typed with it as the glue types it, or kept as it is."""

    def __init__(self, store: SchemaStore | None, source: str) -> None:
        self.store = store
        self.source = source
        self._typers: dict[str, ImageTyper | None] = {}

    def image(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        if self.store is None:
            return row
        if table not in self._typers:
            schema = self.store.latest(f"{self.source}.{table}")
            self._typers[table] = ImageTyper(schema) if schema is not None else None
        typer = self._typers[table]
        if typer is None:
            return row
        try:
            return typer.image(row) or row
        except TypingError:
            return row  # compared as DMS wrote it: it differs, and is reported


def mirror_schema_template(bus: BusConfig) -> str | None:
    """The schema template of the bus's pg_mirror consumer, or None if it has none."""
    for planned in deployment_plan(bus).consumers:
        if isinstance(planned.settings, PgMirrorSettings):
            return planned.settings.mirror_schema
    return None


def verify_mirror(
    dms: DmsStandIn, mirror_url: str, *, numbers: NumberMode = "string", schema_template: str = "{schema}"
) -> Verification:
    """Source (as DMS writes it, decoded as the glue decodes it) == the reporting mirror,
    row by row and column by column. Values compare as the mirror's columns hold them
    (``local.verify.as_mirror_holds``); NULL columns are absent on both sides."""
    decoder = Decoder(numbers)
    decoded: dict[tuple[str, str], list[dict[str, Any]]] = {}
    keys: dict[tuple[str, str], list[str]] = {}
    name_of: dict[tuple[str, str], TableName] = {}
    for target, item in dms.items():
        name = parse_table_name(target.target.name)
        where = (schema_template.format(schema=name.schema, source=name.source, bus=name.bus), name.table)
        keys[where] = list(target.key)
        name_of[where] = name
        decoded.setdefault(where, []).append(decoder.image(item))
    expected: dict[tuple[str, str], dict[tuple[str, ...], dict[str, str]]] = {}
    missing: list[str] = []
    different: list[str] = []
    extra: list[str] = []
    stale: list[str] = []
    with mirror_connection(mirror_url) as connection:
        for (schema, table), images in decoded.items():
            label = f"{schema}.{table}"
            columns = mirror_columns(connection, schema, table)
            rows = expected[(schema, table)] = {
                tuple(row.get(part, "") for part in keys[(schema, table)]): row
                for row in as_mirror_holds(connection, images, columns)
            }
            if not columns:
                missing.append(f"{label} (no mirror table)")
                continue
            actual = _mirror_rows(connection, schema, table, keys[(schema, table)], columns)
            added: set[str] | None = None
            for key, want in rows.items():
                got = actual.get(key)
                if got is None:
                    missing.append(f"mirror {label} {key}")
                    continue
                if want != got:
                    if added is None:
                        added = dms.added_with_default(
                            name_of[(schema, table)].schema, name_of[(schema, table)].table
                        )
                    # a column the mirror never made is no lost update either
                    if stale_only(want, got, added | (set(want) - set(columns))):
                        stale.append(f"mirror {label} {key}")
                    else:
                        different.append(f"mirror {label} {key}: source {want} != mirror {got}")
            extra.extend(f"mirror {label} {key}" for key in actual.keys() - rows.keys())
    return Verification.of(expected, missing=missing, different=different, extra=extra, stale=stale)


def _mirror_rows(
    connection: psycopg.Connection[Any], schema: str, table: str, key: list[str], columns: dict[str, str]
) -> dict[tuple[str, ...], dict[str, str]]:
    """The mirror table's rows by key: non-null columns, as text."""
    names = list(columns)
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        mirror_selection(columns), sql.Identifier(schema), sql.Identifier(table)
    )
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for values in connection.execute(query):
        row = {name: value for name, value in zip(names, values, strict=True) if value is not None}
        rows[tuple(row.get(name, "") for name in key)] = row
    return rows


@dataclass
class BackgroundCheck:
    """A check (reading every source row: seconds on a large table) run in a thread of its
    own, so the caller's status line goes on; a new one starts only when the consumer has
    received something since the last began, or ``every`` seconds have passed."""

    check: Callable[[], Any]
    events: Callable[[], int]
    every: float = 5.0
    _thread: threading.Thread | None = None
    _result: Any = None
    _done: bool = False
    _started_at: float = 0.0
    _events_at_start: int = -1
    _error: BaseException | None = None

    def poll(self) -> Any:
        """The result of a finished check (once), else None; starts the next when due. A
        check that raised raises here."""
        if self._thread is not None and self._thread.is_alive():
            return None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._done:
            self._done = False
            return self._result
        now = time.monotonic()
        if self.events() != self._events_at_start or now - self._started_at >= self.every:
            self._events_at_start, self._started_at = self.events(), now
            self._thread = threading.Thread(target=self._run, name="demo-check", daemon=True)
            self._thread.start()
        return None

    def _run(self) -> None:
        try:
            self._result = self.check()
            self._done = True
        except Exception as exc:  # handed to the caller by poll()
            self._error = exc
