from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from local.postgres import SOURCE_URL_VARIABLE, EmbeddedPostgres, check_logical

# The consumer test kit's fixtures (consumer_failures), as a consumer's own tests use them.
pytest_plugins = ["dmsbus.pytest_plugin"]

# No test may reach AWS: moto answers everything, with fake credentials.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"  # moto's fake credentials
os.environ["AWS_SECURITY_TOKEN"] = "testing"
os.environ["AWS_SESSION_TOKEN"] = "testing"
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "dmsbus-tests")


# A real PostgreSQL (the embedded server, or DMSBUS_SOURCE_URL) for local mode and e2e tests.
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    url = os.environ.get(SOURCE_URL_VARIABLE)
    if url:
        check_logical(url)
        yield url
        return
    # Not under pytest's 0700 temp folder: the server may run as its own user (as root).
    home = Path(tempfile.mkdtemp(prefix="dmsbus-test-postgres-"))
    home.chmod(0o755)
    server = EmbeddedPostgres(home / "data")
    url = server.start()
    check_logical(url)
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def database(postgres_server: str) -> Iterator[str]:
    """A fresh database per test (replication slots belong to one database)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
            (name,),
        )
        connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
