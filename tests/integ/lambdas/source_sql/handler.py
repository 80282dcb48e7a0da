"""The throwaway source's SQL, run in the database's VPC with the credentials DMS uses.

Two callers: the database stack's seed custom resource (CloudFormation's Create request,
through the CDK Provider framework: the seed runs before DMS's task exists, so DMS full-loads
it), and the integ test's assertions (``{"step": "changes"}``, ``{"step": "lobs"}``), which
run after the task replicates. Every statement is its own transaction (autocommit), so the
changes reach DMS in the order written here.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

#: The values every row of ``samples`` holds: one row full-loaded (id 1), one written by CDC
#: (id 2), so the string forms DMS writes can be compared between the two phases. The
#: database's ``timezone`` is Asia/Kolkata (+05:30): a ``timestamptz`` DMS converts to UTC
#: reads ``10:00:00.5``, one written in the server's zone ``15:30:00.5``.
SAMPLE_VALUES = (
    "'2026-11-01', '2026-11-01 12:00:00', '2026-11-01 10:00:00.5+00', '08:30:00', "
    "'08:30:00+02', 0.611111104488373, 'ab', true"
)
#: LOB lengths in characters (ASCII, so bytes too): near 64 KB and near 300 KB.
LOB_64K = 65_000
LOB_300K = 300_000

STEPS: dict[str, list[str]] = {
    "seed": [
        "CREATE TABLE orders (id integer PRIMARY KEY, note text, amount numeric(10, 2))",
        "INSERT INTO orders VALUES (1, 'one', 10.50), (2, 'two', 20), (3, 'three', 30)",
        "CREATE TABLE samples (id integer PRIMARY KEY, d date, ts timestamp, tstz timestamptz, "
        "t time, ttz timetz, n numeric, ch char(5), b boolean)",
        f"INSERT INTO samples VALUES (1, {SAMPLE_VALUES})",
        "CREATE TABLE lobs (id integer PRIMARY KEY, body text)",
        f"INSERT INTO lobs VALUES (10, repeat('a', {LOB_64K}))",
        # Selected by no rule until the wildcard step adds `public.late_%` to the task.
        "CREATE TABLE late_arrivals (id integer PRIMARY KEY, note text)",
        "INSERT INTO late_arrivals VALUES (1, 'first'), (2, 'second'), (3, 'third')",
    ],
    "changes": [
        # One row's whole life, in order: the probe must see c, u, d.
        "INSERT INTO orders VALUES (4, 'four', 40)",
        "UPDATE orders SET note = NULL WHERE id = 4",
        "DELETE FROM orders WHERE id = 4",
        # A row that stays, updated to NULL: does its DynamoDB item keep the old note?
        "UPDATE orders SET note = NULL WHERE id = 2",
        # A row whose item carries the checker's marker: does an UPDATE keep it?
        "UPDATE orders SET amount = 31 WHERE id = 3",
        f"INSERT INTO samples VALUES (2, {SAMPLE_VALUES})",
    ],
    "lobs": [
        f"INSERT INTO lobs VALUES (1, repeat('b', {LOB_64K}))",
        f"INSERT INTO lobs VALUES (2, repeat('c', {LOB_300K}))",
    ],
}


@functools.cache
def _secrets() -> Any:
    import boto3

    return boto3.client("secretsmanager")


def connect() -> Any:
    import psycopg

    secret = json.loads(_secrets().get_secret_value(SecretId=os.environ["SECRET_ARN"])["SecretString"])
    return psycopg.connect(
        host=secret["host"],
        port=int(secret["port"]),
        user=secret["username"],
        password=secret["password"],
        dbname=os.environ["DATABASE"],
        sslmode="require",
        autocommit=True,
        connect_timeout=30,
    )


def run(step: str) -> int:
    statements = STEPS[step]
    with connect() as connection:
        for statement in statements:
            connection.execute(statement)
    return len(statements)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    if "RequestType" in event:  # the seed custom resource: only its creation seeds
        if event["RequestType"] == "Create":
            run("seed")
        return {"PhysicalResourceId": "dmsbus-integ-seed"}
    return {"done": True, "statements": run(event["step"])}
