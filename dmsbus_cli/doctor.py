"""``dmsbus doctor [--config DIR] [--source NAME] [--state DIR] [--profile P | --endpoint-url URL]
[--region R]``: what DMS needs of a source and does not find there, each with its fix and
the AWS page that requires it. Exit status 1 when something is missing, 0 when not.

Here it connects to ``DMSBUS_SOURCE_URL`` (a ``postgresql://`` URL, or ``mysql://user:password@host:port/``
for a MySQL-family source), else to the source a running ``dmsbus up`` noted in its state
folder. With ``--profile``/``--region`` (or ``--endpoint-url``) it asks the source's deployed
admin function instead, which reaches the source from its network with the credentials DMS's
endpoint reads. The checks are the same either way (``source_admin.core``; docs/dms.md, "Is the
source ready?"), and ``dmsbus up`` runs them at its start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import psycopg
import pymysql
from botocore.exceptions import ProfileNotFound

from config.functions import source_admin_function_name
from config.model import SourceConfig
from config.plan import selection_of
from dmsbus.schemas import MYSQL_ENGINES, POSTGRES_ENGINES
from dmsbus.secrets import mysql_connect_arguments
from dmsbus.settings import SettingsError
from dmsbus_cli.connect import INVOKE_CONFIG, UP_FILE, InvokeError, lambda_invoker, local_session, noted
from local.__main__ import config_and_source
from local.postgres import SOURCE_URL_VARIABLE
from source_admin.core import Report, doctor

#: DMS's premigration assessment run, for the assessments the findings name.
ASSESSMENT_COMMAND = (
    "aws dms start-replication-task-assessment-run --replication-task-arn <task ARN> "
    "--service-access-role-arn <role ARN> --result-location-bucket <bucket> "
    "--assessment-run-name dmsbus-doctor --include-only {keys}"
)
_MYSQL_SCHEMES = ("mysql", "mariadb")


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "doctor",
        help="check that a source has what DMS needs (exit 1 when something is missing)",
        description=__doc__.split("\n\n")[1],
    )
    command.add_argument("--config", type=Path, default=repository / "config", help="config folder")
    command.add_argument("--source", help="source name in config/sources (default: the first)")
    command.add_argument("--state", type=Path, default=Path(".dmsbus"), help="dmsbus up's state folder")
    where = command.add_mutually_exclusive_group()
    where.add_argument("--profile", help="ask the deployed admin function in AWS, with this profile")
    where.add_argument("--endpoint-url", help="ask the admin function at this AWS endpoint")
    command.add_argument("--region", help="the deployed function's region (asks the function in AWS)")
    command.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    chosen = config_and_source(arguments.config, arguments.source, "doctor")
    if chosen is None:
        return 2
    config, source = chosen
    if source.engine not in POSTGRES_ENGINES | MYSQL_ENGINES:
        print(
            f"doctor: source {source.name} is {source.engine}; the doctor checks PostgreSQL and MySQL",
            file=sys.stderr,
        )
        return 2
    if arguments.profile or arguments.endpoint_url or arguments.region:
        client = lambda_client(arguments)
        if client is None:
            return 2
        name = source_admin_function_name(config.bus, source)
        try:
            report = remote_report(client, name)
        except InvokeError as exc:
            print(f"doctor: {exc}", file=sys.stderr)
            return 2
        return show(report, f"source {source.name} ({source.engine}), by {name} with DMS's credentials")
    url = os.environ.get(SOURCE_URL_VARIABLE) or noted(arguments.state).get("source_url")
    if not url:
        print(
            f"doctor: no source: set {SOURCE_URL_VARIABLE}, run `dmsbus up` (it notes its database in "
            f"{arguments.state / UP_FILE}), or pass --profile/--region to ask the deployed function",
            file=sys.stderr,
        )
        return 2
    try:
        report = local_report(url, source)
    except (ValueError, psycopg.Error, pymysql.MySQLError) as exc:
        print(f"doctor: the source at {_where(url)}: {exc}", file=sys.stderr)
        return 2
    return show(report, f"source {source.name} ({source.engine}) at {_where(url)}")


def lambda_client(arguments: argparse.Namespace) -> Any:
    """Lambda where the bus is deployed (or at ``--endpoint-url``); None once said why."""
    if arguments.endpoint_url:
        session: Any = local_session(arguments.region)
        return session.client("lambda", endpoint_url=arguments.endpoint_url, config=INVOKE_CONFIG)
    try:
        session = boto3.session.Session(profile_name=arguments.profile, region_name=arguments.region)
    except ProfileNotFound as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return None
    if session.region_name is None:
        print(
            "doctor: no AWS region: pass --region, or set one in the profile or AWS_REGION", file=sys.stderr
        )
        return None
    return session.client("lambda", config=INVOKE_CONFIG)


def remote_report(client: Any, function_name: str) -> Report:
    """The deployed admin function's report (one synchronous invoke of Lambda ``client``)."""
    response = lambda_invoker(client)(function_name, {"action": "doctor"})
    try:
        return Report.from_json(response)
    except ValueError as exc:
        raise InvokeError(f"{function_name} answered no report: {exc}") from exc


def connect_local(url: str, engine: str) -> Any:
    """The source at ``url`` (one connection, autocommit). A MySQL URL's user, password,
    host and port are read as an RDS secret's, TLS as the function's (``?sslmode=disable``
    turns it off)."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if engine in MYSQL_ENGINES:
        if scheme not in _MYSQL_SCHEMES:
            raise ValueError(
                f"source is {engine}: expected mysql://user:password@host:port/, not a {scheme or 'conninfo'} URL"
            )
        return pymysql.connect(
            **mysql_connect_arguments(SOURCE_URL_VARIABLE, _url_secret(url)), autocommit=True
        )
    if scheme in _MYSQL_SCHEMES:
        raise ValueError(f"source is {engine}: expected a postgresql:// URL, not {scheme}://")
    return psycopg.connect(url, autocommit=True, application_name="dmsbus-doctor")


def _url_secret(url: str) -> str:
    """A MySQL URL as the JSON secret RDS keeps (host, port, username, password, sslmode)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise SettingsError(f"{SOURCE_URL_VARIABLE}: no host in the URL")
    sslmode = parse_qs(parts.query).get("sslmode", ["require"])[0]
    return json.dumps(
        {
            "host": parts.hostname,
            "port": parts.port or 3306,
            "username": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "sslmode": sslmode,
        }
    )


def local_report(url: str, source: SourceConfig) -> Report:
    with connect_local(url, source.engine) as connection:
        return doctor(connection, source.engine, selection_of(source))


def show(report: Report, where: str) -> int:
    """Print the report: what was checked, then each finding with its fix and page. Exit
    status 1 when something is missing."""
    print(f"doctor: {where}")
    for line in report.checked:
        print(f"doctor: checked {line}")
    for finding in report.findings:
        mark = "MISSING" if finding.blocking else "advice"
        print(f"doctor: {mark} {finding.check}: {finding.found}")
        print(f"          fix:  {finding.fix}")
        print(f"          page: {finding.page}")
        if finding.assessment:
            print(f"          DMS's premigration assessment {finding.assessment} checks this too")
    missing, advice = len(report.missing), len(report.advice)
    if report.assessments:
        keys = ",".join(report.assessments)
        print(f"doctor: to let DMS check the same on the task: {ASSESSMENT_COMMAND.format(keys=keys)}")
    if missing:
        print(f"doctor: {missing} missing, {advice} advice: DMS would fail, suspend tables or miss changes")
        return 1
    print(f"doctor: ready for DMS ({advice} advice)")
    return 0


def startup_warnings(url: str, source: SourceConfig) -> str:
    """``dmsbus up``'s look at its source: what would fail in AWS, as warnings ('' when
    nothing would). One connection, a few catalog queries; a failure to check is said, not
    raised (the stand-in runs regardless)."""
    if source.engine not in POSTGRES_ENGINES:
        return ""
    try:
        report = local_report(url, source)
    except (ValueError, psycopg.Error) as exc:
        return f"doctor: could not check the source for DMS: {exc}"
    if not report.findings:
        return ""
    lines = [
        "doctor: here the stand-in runs; in AWS, DMS would not find what it needs "
        "(`dmsbus doctor` for the fixes):"
        if report.missing
        else "doctor: advice for AWS (`dmsbus doctor` for the fixes):"
    ]
    lines += [f"  {'!' if f.blocking else '-'} {f.check}: {f.found} ({f.page})" for f in report.findings]
    return "\n".join(lines)


def _where(url: str) -> str:
    """Host, port and database of a URL, without its credentials."""
    if "://" not in url:
        return "the conninfo's server"
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or ''}{parts.path}"
