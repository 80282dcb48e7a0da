"""The integ test's own functions, on real values: the probe's items and the checker's
answers (the parts that run without AWS)."""

from __future__ import annotations

import json

from dmsbus.consumer import Received
from dmsbus.envelope import ChangeEvent
from tests.integ.lambdas.checker import handler as checker
from tests.integ.lambdas.probe import handler as probe
from tests.integ.lambdas.source_sql import handler as source_sql


def _event(op: str, before: dict | None, after: dict | None) -> ChangeEvent:
    return ChangeEvent.from_dict(
        {
            "v": 1,
            "id": "integ.legacy.public.orders/000000000000000000000042",
            "op": op,
            "ts_ms": 1_796_000_000_000,
            "source": {
                "bus": "integ",
                "source": "legacy",
                "schema": "public",
                "table": "orders",
                "version": None,
                "dynamodb_table": "integ.legacy.public.orders",
                "sequence": "000000000000000000000042",
                "snapshot": False,
                "ttl": False,
            },
            "key": {"id": 4},
            "before": before,
            "after": after,
        }
    )


def test_the_probe_keys_a_row_as_the_checker_queries_it_and_sorts_its_events_by_stream_position() -> None:
    # Given two events of one row, the second later in the shard
    first = Received(
        _event("c", None, {"id": 4, "note": "four"}),
        b"{}",
        "49650000000000000000000000000000000000000000000000000002",
        0,
    )
    second = Received(
        _event("u", {"id": 4, "note": "four"}, {"id": 4, "note": None}),
        b"{}",
        "49650000000000000000000000000000000000000000000000000010",
        3,
    )

    # When the probe makes their items
    items = [probe.probe_item(first), probe.probe_item(second)]

    # Then both carry the checker's row key, and their positions sort in stream order
    assert {item["row"] for item in items} == {checker.row_key("public", "orders", {"id": 4})}
    assert items[0]["position"] < items[1]["position"]
    assert json.loads(items[1]["after"]) == {"id": 4, "note": None}


def test_the_probe_keeps_a_long_value_as_its_length_and_hash() -> None:
    # Given an insert with a 300,000-character LOB
    event = _event("c", None, {"id": 2, "body": "c" * 300_000})

    # When the probe makes its item
    item = probe.probe_item(Received(event, b"{}", "1", 0))

    # Then the value is its length and SHA-256, small enough for one DynamoDB item
    after = json.loads(item["after"])
    assert after["body"]["length"] == 300_000
    assert len(after["body"]["sha256"]) == 64
    assert len(item["after"]) < 200


def test_a_row_history_lists_its_ops_and_the_columns_its_update_cleared() -> None:
    # Given the probe's events for a row inserted, updated to NULL and deleted
    events = [
        {"op": "c", "before": None, "after": {"id": 4, "note": "four", "amount": 40}},
        {"op": "u", "before": {"id": 4, "note": "four", "amount": 40}, "after": {"id": 4, "amount": 40}},
        {"op": "d", "before": {"id": 4, "amount": 40}, "after": None},
    ]

    # When the checker reads them  Then it sees c, u, d and the note cleared
    assert checker.row_history(events) == {"ops": ["c", "u", "d"], "cleared": ["note"]}


def test_an_item_keeping_the_old_value_answers_update_item() -> None:
    # Given the item of a row updated to NULL that still holds its old note
    item = {"id": {"N": "2"}, "note": {"S": "two"}, "amount": {"N": "20"}}

    # When the question is answered  Then the answer is UpdateItem, with the kept value
    assert checker.null_answer(item, "two").startswith("UpdateItem that leaves NULL columns out")
    # and an item without the attribute answers "whole item"
    assert checker.null_answer({"id": {"N": "2"}}, "two").startswith("whole item")


def test_the_marker_answer_tells_update_item_from_put_item() -> None:
    # Given items after an UPDATE of their row, with and without the checker's marker
    kept = {"id": {"N": "3"}, checker.MARKER: {"S": "set-by-the-integ-test"}}
    gone = {"id": {"N": "3"}, "amount": {"N": "31"}}

    # When the question is answered  Then each names its write
    assert checker.marker_answer(kept).startswith("UpdateItem")
    assert checker.marker_answer(gone).startswith("whole-item PutItem")


def test_forms_as_documented_answer_so_and_a_difference_is_named() -> None:
    # Given a full-load item as docs/dms.md documents it and a CDC item with a timestamptz
    # in the server's zone (Asia/Kolkata) instead of UTC
    full_load = dict(checker.DOCUMENTED_FORMS)
    cdc = {**checker.DOCUMENTED_FORMS, "tstz": {"S": "2026-11-01 15:30:00.500000"}}

    # When the question is answered
    answer = checker.forms_answer(full_load, cdc)

    # Then it names the column that differs and keeps both values
    assert answer["answer"] == "differ from docs/dms.md: tstz"
    assert answer["columns"]["tstz"]["cdc"] == {"S": "2026-11-01 15:30:00.500000"}
    assert checker.forms_answer(full_load, full_load)["answer"] == "as documented"


def test_the_documented_forms_are_those_of_the_values_the_source_writes() -> None:
    # Given the values the SQL function writes into `samples`  Then every column the
    # checker compares is among them, in the table's column order
    columns = ["d", "ts", "tstz", "t", "ttz", "n", "ch", "b"]
    assert list(checker.DOCUMENTED_FORMS) == columns
    assert "t time, ttz timetz, n numeric, ch char(5), b boolean" in source_sql.STEPS["seed"][2]
    assert len(source_sql.SAMPLE_VALUES.split(", ")) == len(columns)


def test_lob_lengths_whole_are_uncut_and_a_cut_one_is_reported_with_the_task() -> None:
    # Given every LOB row whole, then the 300,000-character one cut to 262,144 and a failed task
    whole = dict(checker.LOB_LENGTHS)
    cut = {**whole, 2: 262_144}
    failed = {"status": "failed", "failure": "LOB truncation"}

    # When the checks run  Then the first is uncut, the second names the lengths and the failure
    assert checker.lob_answer(whole, {"status": "running"})["uncut"] is True
    answer = checker.lob_answer(cut, failed)
    assert answer["uncut"] is False
    assert "262144" in answer["answer"] and "LOB truncation" in answer["answer"]
    assert checker.LOB_LENGTHS[2] == source_sql.LOB_300K


def test_the_wildcard_question_waits_then_settles_either_way() -> None:
    # Given the new selection's table: loaded, absent early, absent late, partly loaded late
    minutes = checker.QUESTION_MINUTES

    # Then each settles as it should
    assert checker.wildcard_answer(3, 1) == (
        True,
        "loaded: resume-processing created the table and loaded its 3 rows",
    )
    assert checker.wildcard_answer(None, 1) == (False, "waiting")
    assert checker.wildcard_answer(None, minutes)[1].startswith("not loaded")
    assert checker.wildcard_answer(1, minutes)[1].startswith("partly")
