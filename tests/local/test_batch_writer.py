"""The DMS stand-in's BatchWriter against moto's DynamoDB: as few requests as DynamoDB and
moto accept, each row's writes in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.dms import BatchWriter


@pytest.fixture
def dynamodb() -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """A client with tables ``a`` and ``b`` (key ``id``), and the BatchWriteItem requests it sends."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for table in ["a", "b"]:
            client.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
                BillingMode="PAY_PER_REQUEST",
            )
        sent: list[dict[str, Any]] = []
        client.meta.events.register(
            "provide-client-params.dynamodb.BatchWriteItem",
            lambda params, **_: sent.append(params["RequestItems"]),
        )
        yield client, sent


def _key(number: int) -> dict[str, Any]:
    return {"id": {"N": str(number)}}


def _names(client: Any, table: str) -> dict[str, str]:
    return {item["id"]["N"]: item["v"]["S"] for item in client.scan(TableName=table)["Items"]}


def test_the_same_key_in_two_tables_shares_a_request(dynamodb: tuple[Any, list[dict[str, Any]]]) -> None:
    client, sent = dynamodb
    # Given puts of keys 1..10 to table a and to table b
    writer = BatchWriter(client)
    for number in range(1, 11):
        for table in ["a", "b"]:
            writer.put(table, _key(number), {**_key(number), "v": {"S": f"{table}{number}"}})
    # When the writer is flushed
    writer.flush()
    # Then 20 writes went in one request, and every item is there
    assert [sum(len(requests) for requests in batch.values()) for batch in sent] == [20]
    assert _names(client, "a") == {str(n): f"a{n}" for n in range(1, 11)}
    assert _names(client, "b") == {str(n): f"b{n}" for n in range(1, 11)}


def test_a_row_written_twice_goes_in_two_requests_in_order(
    dynamodb: tuple[Any, list[dict[str, Any]]],
) -> None:
    client, sent = dynamodb
    # Given a row of table a put, put again, then deleted and put once more
    writer = BatchWriter(client)
    writer.put("a", _key(1), {**_key(1), "v": {"S": "first"}})
    writer.put("a", _key(2), {**_key(2), "v": {"S": "other"}})
    writer.put("a", _key(1), {**_key(1), "v": {"S": "second"}})
    writer.delete("a", _key(2))
    writer.put("a", _key(2), {**_key(2), "v": {"S": "back"}})
    # When the writer is flushed
    writer.flush()
    # Then each repeat of a row started a new request, and the last write of each row stands
    assert len(sent) == 3
    assert _names(client, "a") == {"1": "second", "2": "back"}


def test_equal_deletes_in_two_tables_go_in_two_requests(dynamodb: tuple[Any, list[dict[str, Any]]]) -> None:
    client, sent = dynamodb
    # Given key 1 in both tables
    for table in ["a", "b"]:
        client.put_item(TableName=table, Item={**_key(1), "v": {"S": table}})
    # When the writer deletes it from both (moto refuses equal keys in one request)
    writer = BatchWriter(client)
    writer.delete("a", _key(1))
    writer.delete("b", _key(1))
    writer.flush()
    # Then it sent two requests and both rows are gone
    assert len(sent) == 2
    assert _names(client, "a") == {} and _names(client, "b") == {}


def test_a_full_batch_is_sent_at_25_writes(dynamodb: tuple[Any, list[dict[str, Any]]]) -> None:
    client, sent = dynamodb
    # Given 30 puts
    writer = BatchWriter(client)
    for number in range(30):
        writer.put("a", _key(number), {**_key(number), "v": {"S": "x"}})
    # When nothing has been flushed yet, then the first 25 are sent already
    assert [len(batch["a"]) for batch in sent] == [25]
    # And flushing sends the other 5
    writer.flush()
    assert [len(batch["a"]) for batch in sent] == [25, 5]
    assert len(_names(client, "a")) == 30
