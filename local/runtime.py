"""The whole local data path, started and stopped as one: PostgreSQL (embedded, or
``DMSBUS_SOURCE_URL``), the moto server, the bus provisioned from ``config/``, the DMS
stand-in replicating one source, and the local Lambda service running discovery (on a
short sweep), the glue and the consumers.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import consumers.pg_mirror as pg_mirror_package
from config.functions import discovery_name
from config.model import BusConfig, SourceConfig
from dmsbus import variables
from dmsbus.schemas import SchemaStore
from local.aws import LocalAws
from local.bus import LocalBus
from local.children import SPAWN, start_child, stop_child
from local.dms import DmsStandIn
from local.emf import EmfMetrics
from local.lambda_service import LocalLambdaService, Schedule, TableRule
from local.postgres import SOURCE_URL_VARIABLE, EmbeddedPostgres, check_logical

logger = logging.getLogger("dmsbus.local")

#: Where local mode's mirror database is (a PostgreSQL URL; default: ``<source>_mirror``).
#: Local only: the deployed pg_mirror reads its Secrets Manager secret, which local mode
#: makes in moto from this URL, as RDS makes one in AWS.
MIRROR_URL_VARIABLE = "DMSBUS_MIRROR_URL"

#: The shipped mirror consumer's handler, named by its own package.
PG_MIRROR_HANDLER = f"{pg_mirror_package.__name__}.handler.handler"


def rds_secret(url: str) -> str:
    """A PostgreSQL URL as the JSON secret RDS and Aurora keep (host, port, username,
    password, dbname; sslmode from the URL, else prefer: local servers have no TLS)."""
    parts = conninfo_to_dict(url)
    return json.dumps(
        {
            "engine": "postgres",
            "host": parts.get("host", "localhost"),
            "port": int(parts.get("port") or 5432),
            "dbname": parts.get("dbname", "postgres"),
            "username": parts.get("user", "postgres"),
            "password": parts.get("password", ""),
            "sslmode": parts.get("sslmode", "prefer"),
        }
    )


def store_secret(secretsmanager: Any, name: str, url: str) -> None:
    """Secret ``name`` in (moto's) Secrets Manager, holding ``url``'s database."""
    try:
        secretsmanager.create_secret(Name=name, SecretString=rds_secret(url))
    except secretsmanager.exceptions.ResourceExistsException:
        secretsmanager.put_secret_value(SecretId=name, SecretString=rds_secret(url))


def local_bus(bus: BusConfig) -> BusConfig:
    """The config as local mode runs it: the glue invoked as soon as records arrive (its
    configured batching window trades latency for fuller aggregates in AWS)."""
    return bus.model_copy(update={"glue": bus.glue.model_copy(update={"batching_window_seconds": 0})})


@dataclass
class StandInRunner:
    """The DMS stand-in's task: full load on its first start, then CDC until stopped.

    CDC runs in a process of its own, as DMS is a service of its own: decoding the slot and
    writing DynamoDB then do not compete with the handlers for this interpreter (at full
    speed they took a quarter of it). ``dms`` here serves the full load, reloads and reads of
    the source; the process builds its own from the same settings."""

    dms: DmsStandIn
    #: The local moto server's port, for the process's DynamoDB client.
    aws_port: int
    poll_seconds: float = 0.02

    def __post_init__(self) -> None:
        self._applied = SPAWN.Value("q", 0, lock=False)  # written by the process only
        self._exceptions = SPAWN.Value("q", 0, lock=False)  # likewise
        self._loaded = SPAWN.Value("q", 0, lock=False)  # rows of the full load, likewise
        self._loading = SPAWN.Value("b", 0, lock=False)
        self._stop = SPAWN.Event()
        self._reported: Any = SPAWN.Queue()
        self._suspensions: Any = SPAWN.Queue()
        self._errors: list[str] = []
        self._suspended: dict[str, str] = {}
        self._process: Any = None

    def start(self) -> None:
        """Start the task: its slot now, then in its process the full load when the slot is
        new (as DMS's full-load-and-cdc task loads, then applies what changed meanwhile), and
        CDC. Nothing here waits for the load: ``loading`` and ``rows_loaded`` tell."""
        self._stop.clear()
        first = self.dms.start()
        self._loading.value = 1 if first else 0
        task = _Task(
            self.dms.url,
            self.dms.bus,
            self.dms.source,
            self.dms.slot,
            self.dms.publication,
            self.dms.apply_threads,
            self.aws_port,
            self.poll_seconds,
            full_load=first,
        )
        channels = _Channels(
            self._applied,
            self._stop,
            self._reported,
            self._exceptions,
            self._suspensions,
            self._loaded,
            self._loading,
        )
        self._process = start_child(_run_task, (task, channels), name="dmsbus-dms-stand-in")

    @property
    def loading(self) -> bool:
        """The full load is under way (CDC starts after it)."""
        return bool(self._loading.value) and self.errors == []

    @property
    def rows_loaded(self) -> int:
        """Rows the full load has written so far."""
        return int(self._loaded.value)

    def wait_loaded(self, timeout: float = 300.0) -> None:
        """Until the full load is done; RuntimeError when the task stopped or time ran out."""
        deadline = time.monotonic() + timeout
        while self._loading.value:
            if self.errors:
                raise RuntimeError(f"the DMS stand-in stopped: {self.errors[-1]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the full load did not finish in {timeout:.0f} s")
            time.sleep(0.05)

    @property
    def changes_applied(self) -> int:
        """Changes the task has written since this runner started it."""
        return int(self._applied.value)

    @property
    def exceptions(self) -> int:
        """Rows logged to ``awsdms_apply_exceptions`` (full load and CDC): not replicated."""
        return self.dms.exceptions + int(self._exceptions.value)

    @property
    def suspended(self) -> dict[str, str]:
        """Tables DMS suspended (``schema.table``: why): not replicated."""
        while True:
            try:
                table, why = self._suspensions.get_nowait()
            except queue.Empty:
                break
            self._suspended[table] = why
        found = {f"{schema}.{table}": why for (schema, table), why in self.dms.suspended.items()}
        return {**found, **self._suspended}

    @property
    def errors(self) -> list[str]:
        """Why the task stopped, if it did (shown in progress)."""
        while True:
            try:
                self._errors.append(self._reported.get_nowait())
            except queue.Empty:
                break
        process = self._process
        if not self._errors and process is not None and process.exitcode not in (None, 0):
            self._errors.append(f"its process exited with status {process.exitcode}")
        return list(self._errors)

    def stop(self) -> None:
        stop_child(self._process, self._stop, timeout=30)
        self._process = None


@dataclass(frozen=True)
class _Task:
    """What the task's process needs to build its own stand-in (a boto3 client cannot be
    sent to another process)."""

    url: str
    bus: str
    source: SourceConfig
    slot: str
    publication: str
    apply_threads: int
    aws_port: int
    poll_seconds: float
    full_load: bool = False


@dataclass(frozen=True)
class _Channels:
    """What the task's process shares with the runner: counters, the stop event, and queues
    for why it stopped and which tables it suspended."""

    applied: Any
    stop: Any
    reported: Any
    exceptions: Any
    suspensions: Any
    loaded: Any
    loading: Any


def _load(dms: DmsStandIn, channels: _Channels, report: Callable[[], None]) -> None:
    """The full load, beside CDC in the same process (each table's changes wait for it)."""
    try:
        dms.load_concurrently(progress=lambda rows: setattr(channels.loaded, "value", rows))
    except Exception as exc:  # the task stops, as DMS's would
        report()
        logger.exception("DMS stand-in's full load failed")
        channels.reported.put(f"{type(exc).__name__}: {exc}")
        channels.stop.set()
        return
    channels.loaded.value = dms.rows_loaded
    report()


def _run_task(task: _Task, channels: _Channels) -> None:
    applied, stop, reported = channels.applied, channels.stop, channels.reported
    dynamodb = LocalAws(port=task.aws_port).client("dynamodb", validate=False)
    dms = DmsStandIn(
        task.url,
        task.bus,
        task.source,
        dynamodb,
        slot=task.slot,
        publication=task.publication,
        apply_threads=task.apply_threads,
    )
    connection: psycopg.Connection[Any] | None = None
    told: set[tuple[str, str]] = set()

    def report() -> None:
        channels.exceptions.value = dms.exceptions
        for (schema, table), why in list(dms.suspended.items()):
            if (schema, table) not in told:
                told.add((schema, table))
                channels.suspensions.put((f"{schema}.{table}", why))

    loader: threading.Thread | None = None
    if task.full_load:
        loader = threading.Thread(
            target=_load, args=(dms, channels, report), name="dms-full-load", daemon=True
        )
        loader.start()
    try:
        while not stop.is_set():
            try:
                if connection is None or connection.closed or connection.broken:
                    connection = dms.connect(autocommit=True)
                changes = dms.poll(connection=connection)
            except Exception as exc:  # the task stops, as DMS's would; shown in progress
                report()
                logger.exception("DMS stand-in stopped")
                reported.put(f"{type(exc).__name__}: {exc}")
                return
            applied.value += changes
            report()
            # Loaded once the load is over and every change it held is applied.
            if loader is not None and not loader.is_alive() and not dms.holding():
                channels.loading.value = 0
            if not changes:
                stop.wait(task.poll_seconds)
    finally:
        if connection is not None:
            connection.close()
        if channels.loading.value:
            # Stopped mid-load: the slot has moved past changes the load held in memory and
            # some tables are not loaded. Without the slot, the next start loads them all.
            logger.warning("the task stopped during its full load: the next start loads again")
            dms.drop_slot()


@dataclass
class LocalRuntime:
    bus: BusConfig
    source: SourceConfig
    state_dir: Path
    #: An existing PostgreSQL (>= 12, wal_level=logical); None: start the embedded one.
    source_url: str | None = None
    #: Discovery's schedule; new tables are taken up at once by the CreateTable rule.
    sweep_seconds: float = 30.0
    function_environment: Mapping[str, str] = field(default_factory=dict)
    #: Each function's stdout (logs, EMF metrics) goes to ``state_dir/logs/<function>.log``.
    function_logs: bool = True
    aws: LocalAws = field(default_factory=LocalAws)
    postgres: EmbeddedPostgres | None = None
    local_bus: LocalBus | None = None
    service: LocalLambdaService | None = None
    stand_in: StandInRunner | None = None
    #: CloudWatch's part of the functions' EMF (local/emf.py): their metrics on moto's
    #: CloudWatch, and running totals since ``start_aws`` (``dmsbus up``'s status line).
    metrics: EmfMetrics | None = None
    database_url: str = ""
    #: The reporting mirror's database (pg_mirror consumers): ``DMSBUS_MIRROR_URL``, or
    #: ``<source database>_mirror`` created next to the source.
    mirror_url: str = ""
    #: The embedded PostgreSQL's data in ``state_dir/postgres``, kept after stop (``dmsbus up``:
    #: the next start resumes from its replication slot); otherwise a temporary folder.
    keep_database: bool = False
    _postgres_home: Path | None = None
    _mirror_created: bool = False

    @classmethod
    def from_environment(
        cls, bus: BusConfig, source: SourceConfig, state_dir: Path, **kwargs: Any
    ) -> LocalRuntime:
        return cls(
            bus=bus,
            source=source,
            state_dir=state_dir,
            source_url=os.environ.get(SOURCE_URL_VARIABLE),
            mirror_url=os.environ.get(MIRROR_URL_VARIABLE, ""),
            **kwargs,
        )

    # -- start ---------------------------------------------------------------------------

    def start_database(self) -> str:
        """The source database (created in the server if missing); returns its URL."""
        if self.source_url:
            server_url = self.source_url
        else:
            # Not under a 0700 folder: as root the server runs as its own user.
            if self.keep_database:
                self._postgres_home = self.state_dir / "postgres"
                self._postgres_home.mkdir(parents=True, exist_ok=True)
            else:
                self._postgres_home = Path(tempfile.mkdtemp(prefix="dmsbus-postgres-"))
            self._postgres_home.chmod(0o755)
            self.postgres = EmbeddedPostgres(self._postgres_home / "data", durable=self.keep_database)
            server_url = self.postgres.start()
        check_logical(server_url)
        if self.source_url:
            self.database_url = server_url
        else:
            self.database_url = _create_database(server_url, self.source.database)
        if not self.mirror_url:
            self.mirror_url = _create_database(server_url, database_name(self.database_url) + "_mirror")
            self._mirror_created = True
        return self.database_url

    def schema_store(self) -> SchemaStore | None:
        """The bus's schema table on the moto server, when the bus types its events."""
        if self.local_bus is None or self.local_bus.plan.schema_table is None:
            return None
        return SchemaStore(self.aws.client("dynamodb"), self.local_bus.plan.schema_table.name)

    def drop_mirror(self) -> None:
        """Drop the mirror database this runtime created (tests; the demo keeps it)."""
        server_url = self.source_url or self.database_url
        if self._mirror_created and server_url:
            with psycopg.connect(server_url, autocommit=True) as connection:
                connection.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database_name(self.mirror_url))
                    )
                )
            self._mirror_created = False

    def start_aws(self) -> None:
        self.aws.start()
        self.metrics = EmfMetrics(self.aws.client("cloudwatch"))
        self.local_bus = LocalBus(
            self.bus,
            self.aws,
            extra_environment=dict(self.function_environment),
            sources=[self.source],
            metrics=self.metrics,
        )
        self.local_bus.provision()
        if self.local_bus.plan.schema_table is not None and self.database_url:
            # The source's credentials, which its schema function reads as DMS's endpoint does,
            # and its database as local mode runs it (the stand-in reads the same)
            store_secret(self.aws.client("secretsmanager"), self.source.credentials.secret, self.database_url)
            for function in self.local_bus.plan.functions:
                if function.source == self.source.name:
                    running = self.local_bus.functions[function.name]
                    running.environment = {
                        **running.environment,
                        variables.SOURCE_DATABASE: database_name(self.database_url),
                    }
        # The mirror consumers' secrets, as RDS keeps them in AWS (their `secret` in config).
        if self.mirror_url:
            for entry in self.bus.consumers:
                if (
                    entry.handler == PG_MIRROR_HANDLER
                    and entry.secret
                    and not entry.secret.startswith("arn:")
                ):
                    store_secret(self.aws.client("secretsmanager"), entry.secret, self.mirror_url)

    def attach_logs(self) -> None:
        """Every registered function without a log gets its file under ``state_dir/logs``."""
        assert self.local_bus is not None
        folder = self.state_dir / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        for function in self.local_bus.functions.values():
            if function.log is None:
                function.log = (folder / f"{function.name}.log").open("a", encoding="utf-8", buffering=1)

    def start_dms(self, source: SourceConfig | None = None) -> StandInRunner:
        self.source = source or self.source
        dms = DmsStandIn(
            self.database_url, self.bus.name, self.source, self.aws.client("dynamodb", validate=False)
        )
        self.stand_in = StandInRunner(dms, self.aws.port)
        self.stand_in.start()
        return self.stand_in

    def start_lambda(self) -> LocalLambdaService:
        assert self.local_bus is not None, "start_aws() first"
        self.service = LocalLambdaService(
            functions=self.local_bus.functions,
            lambda_client=self.aws.client("lambda"),
            dynamodbstreams=self.aws.client("dynamodbstreams", wire_records=True, validate=False),
            kinesis=self.aws.client("kinesis", wire_records=True, validate=False),
            sqs=self.aws.client("sqs"),
            s3=self.aws.client("s3"),
            state_dir=self.state_dir,
            schedules=[
                Schedule(discovery_name(self.bus), self.sweep_seconds),
                # The sources' schema functions, every sweep (in AWS: every sweep_minutes)
                *(
                    Schedule(function.name, self.sweep_seconds)
                    for function in self.local_bus.plan.functions
                    if function.schedule_minutes is not None
                ),
            ],
            dynamodb=self.aws.client("dynamodb"),
            table_rules=[TableRule(discovery_name(self.bus))],
        )
        if self.function_logs:
            self.attach_logs()
        self.service.start()
        return self.service

    # -- stop ----------------------------------------------------------------------------

    def stop_lambda(self) -> None:
        if self.service is not None:
            self.service.stop()
            for function in self.service.functions.values():
                function.cold_start()
            self.service = None

    def stop_dms(self) -> None:
        if self.stand_in is not None:
            self.stand_in.stop()
            self.stand_in = None

    def stop(self) -> None:
        """Everything this runtime started, in reverse order; safe to call twice."""
        self.stop_lambda()
        for function in self.local_bus.functions.values() if self.local_bus else ():
            if function.log is not None:
                release_log(function.log)
                function.log = None
        self.stop_dms()
        if self.metrics is not None:
            self.metrics.stop()  # what the functions wrote reaches moto before it stops
        self.aws.stop()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self._postgres_home is not None:
            if not self.keep_database:
                shutil.rmtree(self._postgres_home, ignore_errors=True)
            self._postgres_home = None


def database_name(url: str) -> str:
    """The database a URL or conninfo string names."""
    return str(conninfo_to_dict(url)["dbname"])


def _create_database(server_url: str, name: str) -> str:
    """``name`` on the server of ``server_url`` (created if missing); returns its URL."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def with_database(url: str, name: str) -> str:
    """The same server and user, another database (a URL stays a URL)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path="/" + quote(name)))
    return make_conninfo(url, dbname=name)


def release_log(log: TextIO) -> None:
    """Close a function's log file and detach the logging handlers writing to it.

    Powertools' Logger binds its handler to ``sys.stdout`` as it was when the handler
    module was imported (the log file here) and marks the logging logger initialised, so a
    later Logger of the same service (in this process) would write to the closed file.
    """
    for candidate in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(candidate, logging.Logger):
            continue
        for handler in list(candidate.handlers):
            if getattr(handler, "stream", None) is log:
                candidate.removeHandler(handler)
        if not candidate.handlers:
            for marker in ("init", "powertools_handler"):  # Powertools' "already set up" marks
                if hasattr(candidate, marker):
                    delattr(candidate, marker)
    log.close()
