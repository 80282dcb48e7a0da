"""``dmsbus verify``'s core on the running local bus: a sample of the source against the
reporting mirror, rows lost told apart from rows stale after DDL."""

from __future__ import annotations

import threading

import psycopg
import pytest

from dmsbus_cli.main import main
from local.demo import Workload
from local.verify import check_target
from tests.e2e.conftest import Pipeline


def test_verify_tells_rows_lost_from_rows_stale_after_ddl(pipeline: Pipeline) -> None:
    # Given a converged bus
    Workload(pipeline.url, rate=400).run(changes=150, stop=threading.Event())
    assert list(pipeline.converge().describe()) == []
    # Then a sample of every table agrees with the mirror
    before = pipeline.verify()
    assert before["public.customers"][1:] == (0, 0) and before["public.customers"][0] > 0
    assert all(lost == stale == 0 for _, lost, stale in before.values())
    # When the source adds a column with a default (no WAL for existing rows) and a mirror
    # row goes missing
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("ALTER TABLE customers ADD COLUMN tier text DEFAULT 'gold'")
        (customer,) = connection.execute("SELECT min(id) FROM customers").fetchone() or (None,)
    with psycopg.connect(pipeline.runtime.mirror_url, autocommit=True) as mirror:
        mirror.execute("DELETE FROM public.customers WHERE id = %s", (customer,))
    # Then every row is stale after DDL but the missing one, which is lost
    after = pipeline.verify(sample=None)
    compared, lost, stale = after["public.customers"]
    assert (lost, stale) == (1, compared - 1)
    assert after["public.orders"][1:] == (0, 0)
    # And a value the mirror lacks in a column the source did not add so is a lost update
    with psycopg.connect(pipeline.runtime.mirror_url, autocommit=True) as mirror:
        (order,) = mirror.execute(
            "SELECT min(id) FROM public.orders WHERE status IS NOT NULL"
        ).fetchone() or (None,)
        mirror.execute("UPDATE public.orders SET status = NULL WHERE id = %s", (order,))
    assert pipeline.verify(sample=None)["public.orders"][1:] == (1, 0)


def test_the_demo_s_check_reports_rows_stale_after_ddl_apart_and_not_as_lost(pipeline: Pipeline) -> None:
    # Given a converged bus, When the source adds a column with a default (no WAL)
    Workload(pipeline.url, rate=400).run(changes=100, stop=threading.Event())
    assert list(pipeline.converge().describe()) == []
    with psycopg.connect(pipeline.url, autocommit=True) as connection:
        connection.execute("ALTER TABLE orders ADD COLUMN channel text DEFAULT 'web'")
        orders = connection.execute("SELECT count(*) FROM orders").fetchone()
    # Then the rebuilt state and the mirror hold every row, each one stale, none lost
    result = pipeline.converge()
    assert result.lost == 0
    assert orders is not None and len(result.stale) == 2 * orders[0] > 0
    assert all(line.startswith("stale after DDL") for line in result.describe())


def test_verify_finds_a_row_the_mirror_kept_after_the_source_deleted_it(pipeline: Pipeline) -> None:
    # Given a converged bus, and a mirror row the source does not have (a lost delete)
    Workload(pipeline.url, rate=400).run(changes=100, stop=threading.Event())
    assert list(pipeline.converge().describe()) == []
    assert all(lost == 0 for _, lost, _ in pipeline.verify(sample=None).values())
    with psycopg.connect(pipeline.runtime.mirror_url, autocommit=True) as mirror:
        mirror.execute("INSERT INTO public.orders (id, status) VALUES (987654, 'ghost')")
    # When verify compares every row, Then it is reported as lost
    assert pipeline.verify(sample=None)["public.orders"][1] == 1


def test_verify_target_finds_a_value_dynamodb_kept_after_the_source_set_it_to_null(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a converged bus, and a customer whose city the source set, then set to NULL
    pipeline.wait_attached()
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        db.execute("INSERT INTO customers (id, name, city) VALUES (9100, 'Ada', 'Kraków')")
        db.execute("UPDATE customers SET city = NULL WHERE id = 9100")
    assert list(pipeline.converge().describe()) == []
    assert pipeline.runtime.stand_in is not None
    dms, dynamodb = pipeline.runtime.stand_in.dms, pipeline.runtime.aws.client("dynamodb")
    customers = "demo.legacy.public.customers"
    # When the source is checked against DynamoDB: the stand-in writes whole items
    checked = check_target(dms, dynamodb, sample=None)
    found = [c for c in checked if c.table == customers]
    assert len(found) == 1, [c.table for c in checked]
    before = found[0]
    # Then nothing is kept, missing or different
    assert (before.kept, before.missing, before.different, before.compared > 0) == ({}, [], [], True)
    # When the item keeps the old city, as an UpdateItem leaving NULL columns out would
    dynamodb.update_item(
        TableName=customers,
        Key={"id": {"N": "9100"}},
        UpdateExpression="SET city = :city",
        ExpressionAttributeValues={":city": {"S": "Kraków"}},
    )
    (after,) = [c for c in check_target(dms, dynamodb, sample=None) if c.table == customers]
    # Then the check names the column and the row
    assert (after.kept, after.different) == ({"city": ["id=9100"]}, [])
    # And a column added with a default, which no change carried, is stale, not different
    with psycopg.connect(pipeline.url, autocommit=True) as db:
        db.execute("ALTER TABLE customers ADD COLUMN tier text DEFAULT 'basic'")
    (grown,) = [c for c in check_target(dms, dynamodb, sample=None) if c.table == customers]
    assert (grown.stale, grown.different) == (["id=9100"], [])
    # And `dmsbus verify --target` says what it means, and fails
    monkeypatch.setenv("DMSBUS_SOURCE_URL", pipeline.url)
    status = main(
        [
            "verify",
            "--target",
            "--all",
            "--tables",
            "public.customers",
            "--endpoint-url",
            pipeline.runtime.aws.endpoint_url,
        ]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "1 values kept after NULL" in out
    assert "DMS applies an UPDATE as an UpdateItem that leaves NULL columns out" in out
