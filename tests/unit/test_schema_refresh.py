"""Asking a source's schema function to read a table now: discovery sends Lambda an
asynchronous Invoke (``dmsbus.schemas.RefreshRequest``) for a table it finds, at most once a
minute per table (the glue's synchronous read at a DDL moment: test_typing_at_ddl.py). Against moto, with the local moto server's queue of asynchronous invocations
(what the local Lambda service runs), so each request is read back as Lambda would queue it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dmsbus.names import TableName
from dmsbus.schemas import RefreshRequest, SchemaError
from dmsbus.settings import PublishingSettings, SettingsError
from dmsbus.typed import SchemaRefresher
from local.moto_patches import applied
from local.moto_server import QUEUE_INVOCATIONS
from tests.unit.conftest import deploy_function, queued_invocations

REGION = "us-east-1"
SCHEMA_FUNCTION = "demo-legacy-schema"
ORDERS = TableName("demo", "legacy", "public", "orders")
LINES = TableName("demo", "legacy", "public", "order_lines")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lambda_client() -> Iterator[Any]:
    """moto's Lambda, queueing asynchronous invocations as the local moto server does, with
    the source's schema function deployed."""
    with mock_aws(), applied([QUEUE_INVOCATIONS]):
        client = boto3.client("lambda", region_name=REGION)
        deploy_function(client, SCHEMA_FUNCTION, "source_schema.handler.handler")
        yield client


def test_a_request_is_an_asynchronous_invoke_of_the_sources_schema_function(lambda_client: Any) -> None:
    # When the glue asks for the orders' schema
    refresher = SchemaRefresher(lambda_client, {"legacy": SCHEMA_FUNCTION})
    sent = refresher.request(ORDERS, "columns ['coupon'] not in schema")
    # Then Lambda holds one asynchronous invocation of the schema function naming the table
    (invocation,) = queued_invocations()
    assert (sent, invocation) == (
        True,
        {
            "function": SCHEMA_FUNCTION,
            "payload": {"tables": ["public.orders"], "reason": "columns ['coupon'] not in schema"},
            "attempt": 1,
        },
    )
    # And the schema function reads it back as a request for that table
    assert RefreshRequest.from_event(invocation["payload"]) == RefreshRequest(
        ("public.orders",), "columns ['coupon'] not in schema"
    )


def test_a_table_is_asked_for_at_most_once_a_minute(lambda_client: Any) -> None:
    clock = Clock()
    refresher = SchemaRefresher(lambda_client, {"legacy": SCHEMA_FUNCTION}, clock=clock)
    # When the orders are asked for twice, the lines once, and the orders a minute later
    asked = [refresher.request(ORDERS, "a"), refresher.request(ORDERS, "b"), refresher.request(LINES, "c")]
    clock.now += 60
    asked.append(refresher.request(ORDERS, "d"))
    # Then the second request for the orders was not sent
    assert asked == [True, False, True, True]
    assert [invocation["payload"]["reason"] for invocation in queued_invocations()] == ["a", "c", "d"]


def test_a_source_without_a_schema_function_is_not_asked(lambda_client: Any) -> None:
    refresher = SchemaRefresher(lambda_client, {"other": SCHEMA_FUNCTION})
    assert (refresher.request(ORDERS, "a"), queued_invocations()) == (False, [])


def test_a_request_that_cannot_be_sent_is_logged_and_not_raised(
    lambda_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a schema function not deployed (the source's stack comes after the bus's)
    refresher = SchemaRefresher(lambda_client, {"legacy": "demo-legacy-schema-not-there"})
    # When the glue asks, then nothing is raised, and the log says what failed
    with caplog.at_level(logging.WARNING, logger="dmsbus.typed"):
        assert refresher.request(ORDERS, "a") is False
    assert "schema function demo-legacy-schema-not-there not asked for" in caplog.text


@pytest.mark.parametrize(
    "event",
    [{}, {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, None],
    ids=["by-hand", "schedule", "none"],
)
def test_an_event_without_tables_asks_for_every_table(event: Any) -> None:
    assert RefreshRequest.from_event(event) == RefreshRequest()


def test_a_request_naming_tables_otherwise_than_schema_table_is_refused_naming_them() -> None:
    with pytest.raises(SchemaError, match=r"tables must be a list of 'schema.table', not \['orders'\]"):
        RefreshRequest.from_event({"tables": ["orders"]})


def test_schema_functions_not_written_source_equals_function_are_named() -> None:
    with pytest.raises(
        SettingsError, match=r"BUS_SCHEMA_FUNCTIONS: \['demo-legacy-schema'\] are not source=function"
    ):
        PublishingSettings.from_environ(
            {
                "BUS_NAME": "demo",
                "BUS_STREAM_NAME": "demo-bus",
                "BUS_AGGREGATE": "true",
                "BUS_NUMBERS": "string",
                "BUS_TYPED": "true",
                "BUS_SCHEMA_FUNCTIONS": "legacy=demo-legacy-schema,demo-legacy-schema",
            }
        )
