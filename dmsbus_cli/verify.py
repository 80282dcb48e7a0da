"""``dmsbus verify [--config DIR] [--source NAME] [--state DIR] [--sample N | --all]``: the
source against the reporting mirror, per table, while ``dmsbus up`` runs or after it.

It reads a sample of each table (``--sample``, 1000 rows by default; ``--all`` for every
row), maps it as DMS does, and looks the rows up in the mirror by key (local/verify.py).
Rows the mirror lacks or holds otherwise are lost; rows whose only difference is a column
the source filled without a change (``ADD COLUMN ... DEFAULT``) are reported apart, as
stale after DDL. Exit status 1 when a row is lost.

The source is ``DMSBUS_SOURCE_URL``, else the one a running ``dmsbus up`` noted in its state
folder; the mirror ``DMSBUS_MIRROR_URL``, else ``up``'s, else ``<source database>_mirror``.

``--target`` compares the source with the bus's DynamoDB tables instead, where DMS writes
(``up``'s moto server, ``--endpoint-url``, or AWS with ``--profile``/``--region``): rows
missing or different there, and values an item keeps that its source row no longer has
(NULL): the sign that DMS applies an UPDATE as an UpdateItem that leaves NULL columns out
(docs/dms.md, open question 12).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import boto3
from psycopg.conninfo import make_conninfo

from dmsbus_cli.connect import UP_FILE, local_session
from dmsbus_cli.connect import noted as noted_by_up
from local.__main__ import config_and_source
from local.demo import mirror_schema_template
from local.dms import DmsStandIn
from local.postgres import SOURCE_URL_VARIABLE
from local.runtime import MIRROR_URL_VARIABLE, database_name
from local.verify import DEFAULT_SAMPLE, TargetCheck, check_mirror, check_target


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "verify",
        help="compare the source with the reporting mirror, per table",
        description=__doc__.split("\n\n")[1],
    )
    command.add_argument("--config", type=Path, default=repository / "config", help="config folder")
    command.add_argument("--source", help="source name in config/sources (default: the first)")
    command.add_argument("--state", type=Path, default=Path(".dmsbus"), help="dmsbus up's state folder")
    how = command.add_mutually_exclusive_group()
    how.add_argument(
        "--sample", type=int, default=DEFAULT_SAMPLE, help=f"rows per table (default {DEFAULT_SAMPLE})"
    )
    how.add_argument("--all", action="store_true", help="every row of every table")
    command.add_argument(
        "--tables", help="schema.table names, comma-separated (default: every selected table)"
    )
    command.add_argument(
        "--target", action="store_true", help="compare with the bus's DynamoDB tables, where DMS writes"
    )
    where = command.add_mutually_exclusive_group()
    where.add_argument("--profile", help="--target in AWS: the profile (default: the standard chain)")
    where.add_argument("--endpoint-url", help="--target: an AWS endpoint (a moto server)")
    command.add_argument("--region", help="--target in AWS: the region")
    command.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    chosen = config_and_source(arguments.config, arguments.source, "verify")
    if chosen is None:
        return 2
    config, source = chosen
    noted = noted_by_up(arguments.state)
    source_url = os.environ.get(SOURCE_URL_VARIABLE) or noted.get("source_url")
    if not source_url:
        print(
            f"verify: no source: set {SOURCE_URL_VARIABLE}, or run `dmsbus up` (it notes its database "
            f"in {arguments.state / UP_FILE})",
            file=sys.stderr,
        )
        return 2
    tables: set[tuple[str, str]] | None = None
    if arguments.tables:
        tables = set()
        for name in (n.strip() for n in arguments.tables.split(",") if n.strip()):
            schema, dot, table = name.partition(".")
            if not dot:
                print(f"verify: --tables: {name!r} is not schema.table", file=sys.stderr)
                return 2
            tables.add((schema, table))
    dms = DmsStandIn(source_url, config.bus.name, source, dynamodb=None)
    if tables is not None and (unknown := _unknown(dms, tables)):
        print(f"verify: --tables {unknown}: not tables this source selects", file=sys.stderr)
        return 2
    sample = None if arguments.all else arguments.sample
    if arguments.target:
        dynamodb = _dynamodb(arguments, noted)
        if dynamodb is None:
            return 2
        return _report_target(check_target(dms, dynamodb, sample=sample, tables=tables))
    mirror_url = os.environ.get(MIRROR_URL_VARIABLE) or noted.get("mirror_url") or _next_to(source_url)
    template = mirror_schema_template(config.bus)
    if template is None:
        print("verify: bus.yaml has no pg_mirror consumer: there is no mirror to compare", file=sys.stderr)
        return 2
    checks = check_mirror(
        dms,
        mirror_url,
        numbers=config.bus.glue.numbers,
        schema_template=template,
        sample=sample,
        tables=tables,
    )
    for check in checks:
        print("\n".join(f"verify: {line}" for line in check.describe()))
    lost = sum(len(check.lost) for check in checks)
    stale = sum(len(check.stale) for check in checks)
    print(
        f"verify: {sum(c.compared for c in checks)} rows of {len(checks)} tables against the mirror: "
        f"{lost} lost, {stale} stale after DDL"
    )
    return 1 if lost else 0


def _unknown(dms: DmsStandIn, tables: set[tuple[str, str]]) -> str:
    with dms.connect() as connection:
        return ", ".join(f"{s}.{t}" for s, t in sorted(tables - set(dms.source_tables(connection))))


def _dynamodb(arguments: argparse.Namespace, noted: dict[str, str]) -> Any:
    """DynamoDB where the bus runs: --endpoint-url, else up's moto server unless a --profile
    is given, else AWS."""
    endpoint = arguments.endpoint_url or (None if arguments.profile else noted.get("aws_endpoint"))
    if endpoint:
        return local_session(arguments.region).client("dynamodb", endpoint_url=endpoint)
    session = boto3.session.Session(profile_name=arguments.profile, region_name=arguments.region)
    if session.region_name is None:
        print("verify: --target: no AWS region: pass --region, or set one in the profile", file=sys.stderr)
        return None
    return session.client("dynamodb")


def _report_target(checks: list[TargetCheck]) -> int:
    for check in checks:
        print("\n".join(f"verify: {line}" for line in check.describe()))
    kept = {column for check in checks for column in check.kept}
    rows = sum(len(keys) for check in checks for keys in check.kept.values())
    problems = sum(len(check.missing) + len(check.different) for check in checks)
    missing_tables = [check.table for check in checks if check.no_table]
    if missing_tables:
        print(f"verify: no such DynamoDB table: {', '.join(missing_tables)} (not created by DMS yet?)")
    print(
        f"verify: {sum(c.compared for c in checks)} rows of {len(checks)} tables against DynamoDB: "
        f"{problems} missing or different (replication lag shows here too), {rows} values kept after NULL"
    )
    if rows:
        print(
            f"verify: DynamoDB keeps values the source no longer has ({', '.join(sorted(kept))}): DMS applies "
            "an UPDATE as an UpdateItem that leaves NULL columns out (docs/dms.md, open question 12). Every "
            "later image carries the old value: typed events show it instead of null."
        )
    else:
        print(
            "verify: no item keeps a value its source row has as NULL: consistent with DMS writing each "
            "UPDATE as a whole item (docs/dms.md, open question 12); rows updated to NULL show it best"
        )
    return 1 if rows or problems else 0


def _next_to(source_url: str) -> str:
    """``<database>_mirror`` on the source's server, where ``dmsbus up`` makes the mirror."""
    return make_conninfo(source_url, dbname=f"{database_name(source_url)}_mirror")
