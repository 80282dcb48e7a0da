"""A real MariaDB server for the MySQL-family catalog tests: Debian's ``mariadb-server``
(``make test`` installs it), started on a free port in a throwaway data folder, with a
replication user as DMS's endpoint would have (its password made up per run)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest


@dataclass(frozen=True)
class MariaDB:
    host: str
    port: int
    user: str
    password: str
    socket: str

    def connect(self, **extra: Any) -> pymysql.Connection[Any]:
        """As the replication user, over TCP, as the schema function connects."""
        return pymysql.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, autocommit=True, **extra
        )

    def admin(self) -> pymysql.Connection[Any]:
        """As root, over the server's socket: to make databases and tables."""
        return pymysql.connect(
            unix_socket=self.socket, user=pwd.getpwuid(os.geteuid()).pw_name, autocommit=True
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _program(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (str(Path(d, name)) for d in ("/usr/sbin", "/usr/bin") if Path(d, name).is_file()), None
        )
        if found:
            return found
    pytest.fail(
        f"MariaDB's server ({names[0]}) is not installed: `make test` installs Debian's mariadb-server "
        "(or: apt-get install mariadb-server)"
    )


@contextmanager
def mariadb_server(root: Path, *options: str) -> Iterator[tuple[int, str]]:
    """A MariaDB server in ``root`` (its data initialized there) with ``options`` on its
    command line, until the block ends: its port and socket."""
    server, install = _program("mariadbd", "mysqld"), _program("mariadb-install-db", "mysql_install_db")
    user = pwd.getpwuid(os.geteuid()).pw_name  # root's socket login is this user's
    subprocess.run(
        [install, "--no-defaults", f"--datadir={root / 'data'}", f"--user={user}", "--skip-test-db",
         "--auth-root-authentication-method=socket"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port, sock = _free_port(), str(root / "mysqld.sock")
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={root / 'data'}", f"--user={user}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={sock}", f"--pid-file={root / 'mysqld.pid'}",
         "--innodb-buffer-pool-size=16M", *options],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                pymysql.connect(unix_socket=sock, user=user, autocommit=True).close()
                break
            except pymysql.err.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"MariaDB did not start: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield port, sock
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    with mariadb_server(tmp_path_factory.mktemp("mariadb"), "--skip-log-bin") as (port, sock):
        server = MariaDB("127.0.0.1", port, "dms", secrets.token_hex(12), sock)
        with server.admin() as admin, admin.cursor() as cursor:
            # DMS's MySQL endpoint user reads the tables and the catalog
            cursor.execute("CREATE USER 'dms'@'%%' IDENTIFIED BY %s", (server.password,))
            cursor.execute("GRANT SELECT, SHOW VIEW ON *.* TO 'dms'@'%'")
        yield server


@pytest.fixture
def mysql_database(mariadb: MariaDB) -> Iterator[str]:
    """A fresh, empty database (MySQL's schema), dropped after the test."""
    name = f"t_{secrets.token_hex(4)}"
    with mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with mariadb.admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {name}")
