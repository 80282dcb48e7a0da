"""``dmsbus doctor``'s MySQL-family checks (source_admin.core) on real MariaDB servers: the
schema tests' server, which runs without a binary log, and one started here with
``--log-bin --binlog-format=ROW``, as DMS's change data capture needs it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import pymysql
import pytest
from moto import mock_aws

from dmsbus import variables
from dmsbus_cli.main import main
from local.functions import LambdaContext
from local.postgres import SOURCE_URL_VARIABLE
from source_admin.core import (
    Grants,
    MysqlServer,
    Report,
    Selection,
    doctor,
    mysql_findings,
    parse_grants,
)
from tests.schema.conftest import MariaDB, mariadb_server

SHOP = """
CREATE TABLE {db}.customers (id INT NOT NULL PRIMARY KEY, email VARCHAR(80) NOT NULL UNIQUE, city VARCHAR(40));
CREATE TABLE {db}.visits (id INT NOT NULL PRIMARY KEY, customer_id INT NOT NULL);
CREATE TABLE {db}.notes (body TEXT);
"""


@pytest.fixture(scope="module")
def binlog_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """A MariaDB that writes the binary log as DMS needs it, with DMS's user granted what the
    guide lists (MariaDB shows REPLICATION CLIENT as BINLOG MONITOR)."""
    options = ("--log-bin=mysql-bin", "--binlog-format=ROW", "--server-id=1", "--expire-logs-days=1")
    with mariadb_server(tmp_path_factory.mktemp("mariadb-binlog"), *options) as (port, sock):
        server = MariaDB("127.0.0.1", port, "dms", secrets.token_hex(12), sock)
        with server.admin() as admin, admin.cursor() as cursor:
            cursor.execute("CREATE USER 'dms'@'%%' IDENTIFIED BY %s", (server.password,))
            cursor.execute("GRANT SELECT, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'dms'@'%'")
            cursor.execute("CREATE DATABASE shop")
            for statement in SHOP.format(db="shop").strip().split(";\n"):
                cursor.execute(statement)
        yield server


def shop_on(server: MariaDB, database: str) -> None:
    with server.admin() as admin, admin.cursor() as cursor:
        for statement in SHOP.format(db=database).strip().split(";\n"):
            cursor.execute(statement)


READY = Selection.from_settings(["shop.customers", "shop.visits"])


def test_a_server_writing_the_binary_log_as_dms_needs_passes(binlog_mariadb: MariaDB) -> None:
    # Given binary logging in ROW format, FULL row images, a day's retention, DMS's grants,
    # and tables with one-column primary keys
    with binlog_mariadb.connect() as connection:
        # When the doctor reads it as DMS's user
        report = doctor(connection, "mariadb", READY)
    # Then nothing is missing, and it says what it looked at
    assert report.findings == ()
    assert "log_bin: ON" in report.checked
    assert "binlog_format: ROW" in report.checked
    assert "privileges of 'dms'@'%': REPLICATION CLIENT, REPLICATION SLAVE" in report.checked


def test_a_server_without_the_binary_log_is_named(mariadb: MariaDB, mysql_database: str) -> None:
    # Given the schema tests' server (--skip-log-bin) and DMS's user without replication grants
    shop_on(mariadb, mysql_database)
    with mariadb.connect() as connection:
        report = doctor(connection, "mariadb", Selection.from_settings([f"{mysql_database}.customers"]))
    # Then the binary log, its format and the replication privileges are named, each with a fix
    missing = {f.check: f for f in report.missing}
    assert missing["log_bin"].found.startswith("binary logging is off")
    assert missing["log_bin"].fix.startswith("log-bin = mysql-bin")
    assert missing["binlog_format"].fix == "binlog_format = ROW in my.cnf, then restart the server"
    assert missing["binlog_format"].assessment == "mariadb-check-binlog-format"
    assert missing["privileges"].fix == "GRANT REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'dms'@'%';"
    assert {f.page for f in missing.values()} == {"CHAP_Source.MySQL"}
    # and binary logs kept forever are advice (disk), not a reason to fail
    (advice,) = report.advice
    assert advice.check == "binlog_retention" and advice.assessment == "mariadb-check-expire-logs-days"


def test_tables_without_a_key_and_a_key_that_is_not_unique_are_named(binlog_mariadb: MariaDB) -> None:
    # Given notes without a primary key, and visits keyed by customer_id in config
    selection = Selection.from_settings(["shop.notes", "shop.visits"], ["shop.visits=customer_id"])
    with binlog_mariadb.connect() as connection:
        report = doctor(connection, "mariadb", selection)
    # Then both are named: no DynamoDB key for notes, overwritten items for visits
    found = {f.check: f for f in report.missing}
    assert found["primary_key"].found.startswith("shop.notes has no primary key and config gives it no key")
    assert found["key"].found.startswith("shop.visits: key [customer_id] is not unique")
    assert "CREATE UNIQUE INDEX `visits_dmsbus_key` ON `shop`.`visits` (customer_id);" in found["key"].fix


def test_a_key_a_unique_index_covers_passes_whatever_its_case(binlog_mariadb: MariaDB) -> None:
    selection = Selection.from_settings(["shop.customers"], ["shop.customers=EMAIL"])
    with binlog_mariadb.connect() as connection:
        assert doctor(connection, "mariadb", selection).findings == ()


def test_a_key_declared_a_number_of_a_varchar_column_is_named(binlog_mariadb: MariaDB) -> None:
    selection = Selection.from_settings(["shop.customers"], ["shop.customers=email:number"])
    with binlog_mariadb.connect() as connection:
        (finding,) = doctor(connection, "mariadb", selection).missing
    assert finding.check == "key_types" and "email is varchar, which DMS writes as a string" in finding.found


def test_a_table_the_user_cannot_select_is_named(binlog_mariadb: MariaDB) -> None:
    # Given a user with the replication grants and SELECT on one table only
    password = secrets.token_hex(8)
    with binlog_mariadb.admin() as admin, admin.cursor() as cursor:
        cursor.execute("CREATE USER 'narrow'@'%%' IDENTIFIED BY %s", (password,))
        cursor.execute("GRANT REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'narrow'@'%'")
        cursor.execute("GRANT SELECT ON shop.customers TO 'narrow'@'%'")
        cursor.execute("GRANT INSERT ON shop.visits TO 'narrow'@'%'")
    try:
        with pymysql.connect(
            host=binlog_mariadb.host, port=binlog_mariadb.port, user="narrow", password=password
        ) as connection:
            report = doctor(connection, "mariadb", READY)
    finally:
        with binlog_mariadb.admin() as admin, admin.cursor() as cursor:
            cursor.execute("DROP USER 'narrow'@'%'")
    # Then the table it cannot read is named, with the grant that fixes it
    (finding,) = report.missing
    assert finding.check == "select" and finding.found.startswith("the user cannot SELECT shop.visits")
    assert finding.fix == "GRANT SELECT ON `shop`.`visits` TO 'narrow'@'%';"
    assert finding.assessment == "mariadb-check-select-privileges"


# --- SHOW GRANTS as MySQL and MariaDB print it --------------------------------------------


def test_grants_read_both_spellings_and_every_level() -> None:
    mariadb = parse_grants(
        [
            "GRANT SELECT, BINLOG MONITOR, REPLICATION SLAVE ON *.* TO `dms`@`%` IDENTIFIED BY PASSWORD '*AB'",
        ]
    )
    mysql = parse_grants(
        [
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `dms`@`%`",
            "GRANT SELECT ON `shop\\_1`.* TO `dms`@`%`",
            "GRANT SELECT ON `sales`.`orders` TO `dms`@`%`",
            "GRANT SELECT (`id`, `total`) ON `sales`.`invoices` TO `dms`@`%`",
            "GRANT `dms_role`@`%` TO `dms`@`%`",
        ]
    )
    assert mariadb.has("REPLICATION CLIENT") and mariadb.has("REPLICATION SLAVE")
    assert mariadb.has("SELECT", "any", "table")
    assert mysql.has("REPLICATION CLIENT") and not mysql.has("SELECT")
    # a database-level grant's `\_` is a literal underscore, not any character
    assert mysql.has("SELECT", "shop_1", "t") and not mysql.has("SELECT", "shopx1", "t")
    assert mysql.has("SELECT", "sales", "orders")
    # SELECT on some columns is not SELECT on the table: DMS reads every column
    assert not mysql.has("SELECT", "sales", "invoices")
    assert mysql.roles and not mariadb.roles


def test_all_privileges_holds_the_replication_ones() -> None:
    grants = parse_grants(["GRANT ALL PRIVILEGES ON *.* TO `admin`@`localhost` WITH GRANT OPTION"])
    assert grants.has("REPLICATION SLAVE") and grants.has("SELECT", "shop", "visits")


# --- binary log retention: RDS's hours, a self-managed server's expiry --------------------


def server(*, managed: bool, hours: int | None = None, **values: str) -> MysqlServer:
    base = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "server_id": "1"}
    grants = Grants(global_=frozenset({"REPLICATION CLIENT", "REPLICATION SLAVE", "SELECT"}))
    return MysqlServer({**base, **values}, managed, hours, None, "'dms'@'%'", grants)


@pytest.mark.parametrize(
    ("hours", "missing"),
    [(None, "'binlog retention hours' is not set"), (12, "'binlog retention hours' is 12"), (24, None)],
)
def test_on_rds_binlog_retention_hours_is_24_or_more(hours: int | None, missing: str | None) -> None:
    found = mysql_findings(server(managed=True, hours=hours), "mysql")[1]
    assert [f.found.split(":")[0] for f in found] == ([] if missing is None else [missing])
    if missing:
        assert found[0].fix == "CALL mysql.rds_set_configuration('binlog retention hours', 24);"
        assert found[0].assessment == "mysql-check-binlog-retention-time"


@pytest.mark.parametrize(
    ("values", "blocking"),
    [
        ({"binlog_expire_logs_seconds": "2592000"}, None),  # MySQL 8's default: 30 days
        ({"binlog_expire_logs_seconds": "3600"}, True),
        ({"binlog_expire_logs_seconds": "0", "expire_logs_days": "2"}, None),
        ({"expire_logs_days": "0.500000"}, True),  # MariaDB keeps days as a fraction
        ({"binlog_expire_logs_seconds": "0", "expire_logs_days": "0"}, False),  # never purged: disk
    ],
)
def test_a_self_managed_server_keeps_binary_logs_a_day(values: dict[str, str], blocking: bool | None) -> None:
    found = mysql_findings(server(managed=False, **values), "mysql")[1]
    assert [f.blocking for f in found] == ([] if blocking is None else [blocking])


def test_binlog_row_image_minimal_is_named() -> None:
    (finding,) = mysql_findings(server(managed=True, hours=24, binlog_row_image="MINIMAL"), "aurora")[1]
    assert finding.check == "binlog_row_image"
    assert (
        finding.fix
        == "binlog_row_image = FULL in the DB parameter group (Aurora: the DB cluster parameter group)"
    )
    assert finding.assessment == "mysql-check-binlog-image"


# --- the handler and the CLI on a MySQL-family source -------------------------------------


def test_the_handler_reads_a_mariadb_source_with_dms_credentials(
    binlog_mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {
        variables.BUS_NAME: "demo",
        variables.SOURCE_NAME: "shop",
        variables.SOURCE_ENGINE: "mariadb",
        variables.SOURCE_DATABASE: "shop",
        variables.CREDENTIALS_NAME: "dmsbus/shop",
        variables.SOURCE_TABLES: "shop.customers,shop.%",
        variables.SOURCE_KEYS: "shop.customers=email",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # Given its secret as RDS keeps it, TLS required (the default) of a server without TLS
    secret = {"host": binlog_mariadb.host, "port": binlog_mariadb.port, "username": "dms"}
    secret["password"] = binlog_mariadb.password
    with mock_aws():
        secretsmanager = boto3.client("secretsmanager", region_name="us-east-1")
        secretsmanager.create_secret(Name="dmsbus/shop", SecretString=json.dumps(secret))
        from source_admin import handler as admin_handler

        admin_handler.settings.cache_clear()
        admin_handler.secretsmanager.cache_clear()
        try:
            # Then the connection is what is missing, as DMS's endpoint would find it
            refused = admin_handler.handler({"action": "doctor"}, LambdaContext("demo-shop-admin", 256, 60))
            assert [f.check for f in Report.from_json(refused).missing] == ["connection"]
            # and without TLS (sslmode: disable) the doctor reads the source
            secretsmanager.put_secret_value(
                SecretId="dmsbus/shop", SecretString=json.dumps({**secret, "sslmode": "disable"})
            )
            answer = admin_handler.handler({"action": "doctor"}, LambdaContext("demo-shop-admin", 256, 60))
            with pytest.raises(ValueError, match="drop-slot is for PostgreSQL sources"):
                admin_handler.handler(
                    {"action": "drop-slot", "slot": "s"}, LambdaContext("demo-shop-admin", 256, 60)
                )
        finally:
            admin_handler.settings.cache_clear()
            admin_handler.secretsmanager.cache_clear()
    # Then the one table without a primary key the wildcard matches is what is missing
    (finding,) = Report.from_json(answer).missing
    assert finding.found.startswith("shop.notes has no primary key")


def write_config(folder: Path, database: str, *tables: str) -> Path:
    (folder / "sources").mkdir(parents=True)
    (folder / "bus.yaml").write_text("name: demo\n", encoding="utf-8")
    listed = "".join(f"  - schema: {database}\n    table: {table}\n" for table in tables)
    (folder / "sources" / "shop.yaml").write_text(
        "name: shop\nengine: mariadb\nserver: db.example.com\ndatabase: shop\n"
        "credentials:\n  secret: dmsbus/shop\nnetwork:\n  create_vpc: true\n  egress: nat\n"
        f"tables:\n{listed}",
        encoding="utf-8",
    )
    return folder


def test_the_cli_exits_0_on_a_ready_mariadb(
    binlog_mariadb: MariaDB,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a config listing two tables with primary keys, and the source's URL
    config = write_config(tmp_path, "shop", "customers", "visits")
    url = f"mysql://dms:{binlog_mariadb.password}@127.0.0.1:{binlog_mariadb.port}/shop?sslmode=disable"
    monkeypatch.setenv(SOURCE_URL_VARIABLE, url)
    # When the doctor runs, then it exits 0, saying what it checked, and never the password
    assert main(["doctor", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "doctor: checked log_bin: ON" in out and "doctor: ready for DMS" in out
    assert binlog_mariadb.password not in out


def test_the_cli_exits_1_on_a_mariadb_without_the_binary_log(
    mariadb: MariaDB,
    mysql_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shop_on(mariadb, mysql_database)
    config = write_config(tmp_path, mysql_database, "customers")
    monkeypatch.setenv(
        SOURCE_URL_VARIABLE, f"mysql://dms:{mariadb.password}@127.0.0.1:{mariadb.port}/?sslmode=disable"
    )
    assert main(["doctor", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "doctor: MISSING log_bin: binary logging is off" in out
    assert "          page: CHAP_Source.MySQL" in out
    assert (
        "--include-only mariadb-check-binlog-format,mariadb-check-expire-logs-days,mariadb-check-replication-privileges"
        in out
    )


def test_the_cli_says_when_tls_is_asked_of_a_server_without_it(
    mariadb: MariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "shop", "customers")
    monkeypatch.setenv(SOURCE_URL_VARIABLE, f"mysql://dms:{mariadb.password}@127.0.0.1:{mariadb.port}/")
    assert main(["doctor", "--config", str(config)]) == 2
    assert "SSL is required but the server doesn't support it" in capsys.readouterr().err
