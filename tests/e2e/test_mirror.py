"""The shipped pg_mirror consumer on the whole local data path: its database converges to
the source, follows the source's schema, and the check that says so can fail."""

from __future__ import annotations

import threading
import time

import psycopg

from config.functions import bucket_name, consumer_name
from dmsbus_cli.main import main
from local.demo import Workload
from local.runtime import database_name, store_secret, with_database
from tests.e2e.conftest import Pipeline


def test_given_a_converged_mirror_when_a_mirror_row_is_changed_behind_its_back_then_the_check_reports_it(
    pipeline: Pipeline,
) -> None:
    # Given a workload replicated into the mirror
    pipeline.wait_attached()
    Workload(pipeline.url, rate=400).run(changes=100, stop=threading.Event())
    assert list(pipeline.converge().describe()) == []

    # When someone edits a mirror row directly
    with psycopg.connect(pipeline.runtime.mirror_url, autocommit=True) as mirror:
        mirror.execute("UPDATE public.products SET title = 'tampered' WHERE sku = 'SKU-0001'")

    # Then the mirror check finds exactly that row
    (problem,) = pipeline.mirror().describe()
    assert problem.startswith("different: mirror public.products ('SKU-0001',)")


def test_given_a_source_table_gains_a_column_when_rows_use_it_then_the_mirror_adds_it(
    pipeline: Pipeline,
) -> None:
    # Given the pipeline running on the sample schema
    pipeline.wait_attached()

    # When customers gains a column and rows are written with it
    with psycopg.connect(pipeline.url, autocommit=True) as source:
        source.execute("ALTER TABLE customers ADD COLUMN loyalty_points integer")
        source.execute(
            "INSERT INTO customers (id, name, city, loyalty_points) VALUES (9001, 'Ada', 'Łódź', 120), (9002, 'Bo', NULL, 7)"
        )
        source.execute("UPDATE customers SET loyalty_points = loyalty_points + 1 WHERE id = 9001")

    # Then the mirror has the column, typed from the values, and equals the source
    assert list(pipeline.converge().describe()) == []
    with psycopg.connect(pipeline.runtime.mirror_url) as mirror:
        assert mirror.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'"
        ).fetchone() == ("bigint",)
        assert mirror.execute("SELECT loyalty_points FROM public.customers WHERE id = 9001").fetchone() == (
            121,
        )


def test_given_the_archive_of_a_run_when_replayed_into_a_fresh_mirror_then_it_equals_the_source(
    pipeline: Pipeline,
) -> None:
    # Given a workload with a late table, archived by the s3_archive consumer (moto's S3)
    pipeline.wait_attached()
    Workload(pipeline.url, rate=400).run(changes=200, stop=threading.Event(), late_table_at=100)
    assert list(pipeline.converge().describe()) == []
    fresh = with_database(pipeline.runtime.mirror_url, f"{database_name(pipeline.url)}_replayed")
    with psycopg.connect(pipeline.url, autocommit=True) as server:
        server.execute(f'CREATE DATABASE "{database_name(fresh)}"')
    bus = pipeline.runtime.bus
    (archive,) = [entry for entry in bus.consumers if entry.bucket is not None]
    # (the fresh mirror's secret, as RDS would keep it; the consumer reads it by name)
    store_secret(pipeline.runtime.aws.client("secretsmanager"), "dmsbus-test/replayed", fresh)
    command = [
        "replay",
        f"--bucket={bucket_name(consumer_name(bus.name, archive))}",
        f"--endpoint-url={pipeline.runtime.aws.endpoint_url}",
        "--consumer=pg-mirror",
        "--env=DMSBUS_SECRET=dmsbus-test/replayed",
    ]
    try:
        # When the whole archive is replayed into the pg_mirror consumer of a fresh database
        # (again while the archive consumer may still be catching up: replays are idempotent)
        deadline = time.monotonic() + 30
        while True:
            assert main(command) == 0
            result = pipeline.mirror(fresh)
            if result.lost == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)

        # Then the fresh mirror equals the source, row by row
        assert list(result.describe()) == []
        assert result.tables == 6
    finally:
        with psycopg.connect(pipeline.url, autocommit=True) as server:
            server.execute(f'DROP DATABASE IF EXISTS "{database_name(fresh)}" WITH (FORCE)')
