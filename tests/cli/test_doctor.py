"""``dmsbus doctor``: here against a real PostgreSQL (``DMSBUS_SOURCE_URL``), in AWS through
the deployed source admin function (Lambda's API model, botocore's Stubber), and the look
``dmsbus up`` takes at its source before the stand-in starts."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from config.loader import load_config
from config.plan import selection_of
from dmsbus_cli import doctor as doctor_command
from dmsbus_cli.doctor import startup_warnings
from dmsbus_cli.main import main
from local.demo import create_schema
from local.postgres import SOURCE_URL_VARIABLE
from source_admin.core import Finding, Report, Selection

REPO = Path(__file__).resolve().parents[2]
SOURCE = """name: shop
engine: postgres
server: db.example.com
database: shop
credentials:
  secret: dmsbus/shop
network:
  create_vpc: true
  egress: nat
tables:
  - schema: public
    table: orders
  - schema: public
    table: order_lines
    key: [order_id, line_no]
    key_types: [number, number]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A bus with one PostgreSQL source: orders (its primary key) and order_lines (a key)."""
    (tmp_path / "sources").mkdir()
    (tmp_path / "bus.yaml").write_text("name: demo\n", encoding="utf-8")
    (tmp_path / "sources" / "shop.yaml").write_text(SOURCE, encoding="utf-8")
    return tmp_path


@pytest.fixture
def source_url(database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SOURCE_URL_VARIABLE, database)
    return database


def test_a_ready_source_exits_0_and_says_what_it_checked(
    config: Path, source_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a source whose tables have a primary key, or a key config gives that is one
    with psycopg.connect(source_url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);"
            "CREATE TABLE order_lines (order_id bigint, line_no int, PRIMARY KEY (order_id, line_no));"
        )
    # When the doctor runs here, then it exits 0 and lists each check
    assert main(["doctor", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "doctor: checked wal_level: logical" in out
    assert "doctor: checked tables: 2 selected (2 listed, 0 by a wildcard)" in out
    assert out.rstrip().endswith("doctor: ready for DMS (0 advice)")


def test_a_source_that_is_not_ready_exits_1_naming_each_table_fix_and_page(
    config: Path, source_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given orders without a primary key, and order_lines whose config key is not unique
    with psycopg.connect(source_url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE orders (id bigint, total numeric);"
            "CREATE TABLE order_lines (id bigint PRIMARY KEY, order_id bigint NOT NULL, line_no int NOT NULL);"
        )
    # When the doctor runs, then it exits 1
    assert main(["doctor", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    # and names both tables, each with its fix and page, and DMS's own assessment
    assert "doctor: MISSING primary_key: public.orders has no primary key and config gives it no key" in out
    assert "doctor: MISSING key: public.order_lines: key [order_id, line_no] is not unique" in out
    assert "          page: CHAP_Target.DynamoDB" in out
    assert "--include-only postgres-check-pk" in out
    assert out.rstrip().endswith(
        "doctor: 2 missing, 0 advice: DMS would fail, suspend tables or miss changes"
    )


def test_without_a_source_it_says_where_one_comes_from(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(SOURCE_URL_VARIABLE, raising=False)
    assert main(["doctor", "--config", str(config), "--state", str(tmp_path / "no-up")]) == 2
    assert f"doctor: no source: set {SOURCE_URL_VARIABLE}, run `dmsbus up`" in capsys.readouterr().err


def test_the_selection_is_the_one_the_function_reads_from_its_settings(config: Path) -> None:
    # Given the config's source, as the admin function's settings carry it
    selection = selection_of(load_config(config).sources[0])
    # Then the listed tables keep their keys, and the settings' strings read back the same
    assert selection.patterns() == ("public.orders", "public.order_lines")
    assert selection.keys() == ("public.order_lines=order_id:number+line_no:number",)
    assert selection.tables[1].key_types == ("number", "number")
    assert Selection.from_settings(selection.patterns(), selection.keys()) == selection


# --- in AWS: the deployed source admin function, against Lambda's API model ---------------

NOT_READY = Report(
    engine="postgres",
    checked=("wal_level: replica",),
    findings=(
        Finding(
            check="wal_level",
            found="wal_level is replica: DMS's change data capture reads logical decoding",
            fix="rds.logical_replication = 1 in the DB parameter group (Aurora: the DB cluster parameter group), "
            "then reboot (it sets wal_level = logical)",
            page="CHAP_Source.PostgreSQL",
            assessment="postgres-check-wallevel",
        ),
    ),
)


def stubbed_lambda(payload: bytes, *, function_error: str | None = None) -> tuple[Any, Stubber]:
    client = boto3.client("lambda", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    response: dict[str, Any] = {
        "StatusCode": 200,
        "Payload": StreamingBody(io.BytesIO(payload), len(payload)),
    }
    if function_error:
        response["FunctionError"] = function_error
    stubber.add_response(
        "invoke", response, {"FunctionName": "demo-shop-admin", "Payload": b'{"action":"doctor"}'}
    )
    return client, stubber


def test_in_aws_it_prints_the_functions_findings_and_exits_1(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the deployed admin function, which finds wal_level=replica on the source
    client, stubber = stubbed_lambda(json.dumps(NOT_READY.as_json()).encode())
    monkeypatch.setattr(doctor_command, "lambda_client", lambda arguments: client)
    # When the doctor asks it (one synchronous invoke of {bus}-{source}-admin)
    with stubber:
        code = main(["doctor", "--config", str(config), "--region", "eu-west-1"])
        stubber.assert_no_pending_responses()
    # Then it prints the finding with its fix and page, and exits 1
    out = capsys.readouterr().out
    assert code == 1
    assert "doctor: source shop (postgres), by demo-shop-admin with DMS's credentials" in out
    assert "doctor: MISSING wal_level: wal_level is replica" in out
    assert "          fix:  rds.logical_replication = 1 in the DB parameter group" in out
    assert "          DMS's premigration assessment postgres-check-wallevel checks this too" in out


def test_in_aws_a_ready_source_exits_0(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = Report(engine="postgres", checked=("wal_level: logical",), findings=())
    client, stubber = stubbed_lambda(json.dumps(ready.as_json()).encode())
    monkeypatch.setattr(doctor_command, "lambda_client", lambda arguments: client)
    with stubber:
        assert main(["doctor", "--config", str(config), "--region", "eu-west-1"]) == 0
    assert "doctor: ready for DMS" in capsys.readouterr().out


def test_in_aws_a_function_that_fails_is_an_error_naming_it(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = b'{"errorMessage": "environment variable DMSBUS_SOURCE_TABLES is required", "errorType": "SettingsError"}'
    client, stubber = stubbed_lambda(failure, function_error="Unhandled")
    monkeypatch.setattr(doctor_command, "lambda_client", lambda arguments: client)
    with stubber:
        assert main(["doctor", "--config", str(config), "--region", "eu-west-1"]) == 2
    assert "doctor: demo-shop-admin failed: " in capsys.readouterr().err


# --- dmsbus up's look at its source -------------------------------------------------------


def test_up_warns_of_what_would_fail_in_aws_on_the_sample_schema(database: str) -> None:
    # Given the sample schema, whose audit.event_session (composite key) the wildcard selects
    create_schema(database)
    source = load_config(REPO / "config").sources[0]
    # When up looks at it before the stand-in starts
    warnings = startup_warnings(database, source)
    # Then it names that table as what DMS would suspend, and products' text key as advice
    lines = warnings.splitlines()
    assert lines[0].startswith("doctor: here the stand-in runs; in AWS, DMS would not find what it needs")
    assert lines[1].startswith("  ! primary_key: audit.event_session: its primary key")
    assert lines[2].startswith("  - primary_key_lob: public.products: primary key column sku (text)")
    assert len(lines) == 3


def test_up_says_nothing_of_a_ready_source(config: Path, database: str) -> None:
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY);"
            "CREATE TABLE order_lines (order_id bigint, line_no int, PRIMARY KEY (order_id, line_no));"
        )
    assert startup_warnings(database, load_config(config).sources[0]) == ""
