"""The shipped pg_mirror consumer on the whole local data path: its database converges to
the source, follows the source's schema, and the check that says so can fail."""

from __future__ import annotations

import threading

import psycopg

from local.demo import Workload
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
