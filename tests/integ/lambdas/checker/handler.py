"""The integ test's checker: what the assertions ask about DMS's tables, the probe's events
and the task, one step per invocation (``{"step": ...}``), answered as JSON.

Checks (the assertions expect a value): ``seen``, ``mark``, ``row``, ``task``, ``lobs``.
Questions (docs/dms.md, "Open questions for the first real deploy"): ``null``, ``marker``,
``forms``, ``wildcard``. A question waits for what it needs, up to ``QUESTION_MINUTES``
after it was first asked, and then is ``settled`` with whatever it saw: its answer is never
a failure. Every answer is also logged as one JSON line starting with ``ANSWER_MARK``, so
``tests/integ/leftovers.py`` finds it after the stacks are gone (the function's log group
is Lambda's own, not the stack's).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

#: Attribute the ``mark`` step puts on an item DMS wrote (open question 11).
MARKER = "dmsbus_integ_marker"
ANSWER_MARK = "dmsbus-integ-answer"
QUESTION_MINUTES = 15
#: What docs/dms.md ("Data types") and local mode's stand-in assume DMS writes for the
#: values of ``samples`` (tests/integ/lambdas/source_sql: SAMPLE_VALUES).
DOCUMENTED_FORMS: dict[str, dict[str, str]] = {
    "d": {"S": "2026-11-01"},
    "ts": {"S": "2026-11-01 12:00:00.000000"},
    "tstz": {"S": "2026-11-01 10:00:00.500000"},
    "t": {"S": "08:30:00.000000"},
    "ttz": {"S": "08:30:00.000000"},
    "n": {"N": "0.611111"},
    "ch": {"S": "ab"},
    "b": {"S": "true"},
}
#: ``lobs`` rows and the length of their ``body`` in the source.
LOB_LENGTHS = {10: 65_000, 1: 65_000, 2: 300_000}
LATE_ROWS = 3
RESTING = ("stopped", "ready", "failed")


@functools.cache
def _client(service: str) -> Any:
    import boto3

    return boto3.client(service)


def _table(name: str) -> str:
    """A table DMS writes: ``{bus}.{source}.public.{name}``."""
    return f"{os.environ['TABLE_PREFIX']}.{name}"


def _item(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    dynamodb = _client("dynamodb")
    try:
        found = dynamodb.get_item(TableName=_table(table), Key=key, ConsistentRead=True)
    except dynamodb.exceptions.ResourceNotFoundException:
        return None
    item: dict[str, Any] | None = found.get("Item")
    return item


def row_key(schema: str, table: str, key: dict[str, Any]) -> str:
    """The probe's ``row`` (tests/integ/lambdas/probe/handler.py; a test keeps them equal)."""
    return f"{schema}.{table}|{json.dumps(key, sort_keys=True, separators=(',', ':'))}"


def _events(table: str, key: dict[str, Any]) -> list[dict[str, Any]]:
    """The probe's events for one row, in stream order."""
    found = _client("dynamodb").query(
        TableName=os.environ["PROBE_TABLE"],
        KeyConditionExpression="#row = :row",
        ExpressionAttributeNames={"#row": "row"},
        ExpressionAttributeValues={":row": {"S": row_key("public", table, key)}},
        ConsistentRead=True,
    )
    return [
        {
            "op": item["op"]["S"],
            "before": json.loads(item["before"]["S"]),
            "after": json.loads(item["after"]["S"]),
        }
        for item in found["Items"]
    ]


def _first_asked(name: str) -> float:
    """When this question was first asked (kept in the probe table), in epoch seconds."""
    dynamodb = _client("dynamodb")
    now = time.time()
    try:
        dynamodb.put_item(
            TableName=os.environ["PROBE_TABLE"],
            Item={"row": {"S": f"checker#{name}"}, "position": {"S": "asked"}, "at": {"N": str(now)}},
            ConditionExpression="attribute_not_exists(#row)",
            ExpressionAttributeNames={"#row": "row"},
        )
    except dynamodb.exceptions.ConditionalCheckFailedException:
        kept = dynamodb.get_item(
            TableName=os.environ["PROBE_TABLE"],
            Key={"row": {"S": f"checker#{name}"}, "position": {"S": "asked"}},
            ConsistentRead=True,
        )
        return float(kept["Item"]["at"]["N"])
    return now


def _remember(name: str, values: dict[str, Any]) -> None:
    _client("dynamodb").put_item(
        TableName=os.environ["PROBE_TABLE"],
        Item={
            "row": {"S": f"checker#{name}"},
            "position": {"S": "value"},
            "value": {"S": json.dumps(values)},
        },
    )


def _recalled(name: str) -> dict[str, Any]:
    kept = _client("dynamodb").get_item(
        TableName=os.environ["PROBE_TABLE"],
        Key={"row": {"S": f"checker#{name}"}, "position": {"S": "value"}},
        ConsistentRead=True,
    )
    return json.loads(kept["Item"]["value"]["S"]) if "Item" in kept else {}


def _task() -> dict[str, Any]:
    tasks = _client("dms").describe_replication_tasks(
        Filters=[{"Name": "replication-task-arn", "Values": [os.environ["TASK_ARN"]]}], WithoutSettings=True
    )["ReplicationTasks"]
    task = tasks[0]
    start = task.get("ReplicationTaskStartDate")
    return {
        "status": task["Status"],
        "resting": task["Status"] in RESTING,
        "start_date": start.isoformat() if start is not None else None,
        "failure": task.get("LastFailureMessage"),
        "stop_reason": task.get("StopReason"),
    }


# --- pure answers, from what the steps read ----------------------------------------------


def row_history(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The ops of one row in order, and the columns its first update cleared (present and
    not null in the insert's ``after``, null or absent in the update's)."""
    ops = [event["op"] for event in events]
    cleared: list[str] = []
    inserted = next((event["after"] for event in events if event["op"] in ("c", "r")), None)
    updated = next((event["after"] for event in events if event["op"] == "u"), None)
    if inserted is not None and updated is not None:
        cleared = sorted(
            name for name, value in inserted.items() if value is not None and updated.get(name) is None
        )
    return {"ops": ops, "cleared": cleared}


def null_answer(item: dict[str, Any] | None, old_value: str) -> str:
    """Open question 12 from the item of a row whose ``note`` was updated to NULL."""
    if item is None:
        return "the item is missing"
    if "note" in item:
        return (
            f"UpdateItem that leaves NULL columns out: the item keeps note={item['note']} after "
            "UPDATE ... SET note = NULL"
        )
    return f"whole item: after UPDATE ... SET note = NULL the item has no note (it was {old_value!r})"


def marker_answer(item: dict[str, Any] | None) -> str:
    """Open question 11 from the item that carried ``MARKER`` before its row was updated."""
    if item is None:
        return "the item is missing"
    if MARKER in item:
        return "UpdateItem: an attribute DMS does not write survives an UPDATE of the row"
    return "whole-item PutItem: an UPDATE of the row removed an attribute DMS does not write"


def forms_answer(full_load: dict[str, Any] | None, cdc: dict[str, Any] | None) -> dict[str, Any]:
    """Open question 6: each column's DynamoDB value after the full load and after CDC,
    against what docs/dms.md documents."""
    columns = {}
    differ = []
    for column, documented in DOCUMENTED_FORMS.items():
        loaded = (full_load or {}).get(column)
        changed = (cdc or {}).get(column)
        columns[column] = {"full_load": loaded, "cdc": changed, "documented": documented}
        if loaded != documented or changed != documented:
            differ.append(column)
    summary = "as documented" if not differ else f"differ from docs/dms.md: {', '.join(differ)}"
    return {"answer": summary, "columns": columns}


def lob_answer(lengths: dict[int, int | None], task: dict[str, Any]) -> dict[str, Any]:
    """Open question on LOB sizes: every ``lobs`` row's ``body`` reached its item whole."""
    uncut = all(lengths.get(row) == length for row, length in LOB_LENGTHS.items())
    if uncut:
        answer = "uncut: 65,000 (full load and CDC) and 300,000 characters reached their items whole"
    else:
        answer = f"not whole: lengths {lengths}, expected {LOB_LENGTHS}; task {task['status']}"
        if task.get("failure"):
            answer += f": {task['failure']}"
    return {"uncut": uncut, "answer": answer, "lengths": {str(row): n for row, n in lengths.items()}}


def wildcard_answer(count: int | None, elapsed_minutes: float) -> tuple[bool, str]:
    """Open question 1 from the new selection's table (``count``: its items, None: no table)."""
    if count is not None and count >= LATE_ROWS:
        return True, f"loaded: resume-processing created the table and loaded its {count} rows"
    if elapsed_minutes < QUESTION_MINUTES:
        return False, "waiting"
    if count is None:
        return True, f"not loaded: no table {QUESTION_MINUTES} minutes after resume-processing"
    return (
        True,
        f"partly: the table exists with {count} of {LATE_ROWS} rows {QUESTION_MINUTES} minutes after resume",
    )


# --- steps -----------------------------------------------------------------------------


def step_seen(event: dict[str, Any]) -> dict[str, Any]:
    missing = [row for row in event["rows"] if not _events(row["table"], row["key"])]
    return {"missing": missing}


def step_mark(event: dict[str, Any]) -> dict[str, Any]:
    _client("dynamodb").update_item(
        TableName=_table("orders"),
        Key={"id": {"N": "3"}},
        UpdateExpression="SET #marker = :marker",
        ConditionExpression="attribute_exists(id)",
        ExpressionAttributeNames={"#marker": MARKER},
        ExpressionAttributeValues={":marker": {"S": "set-by-the-integ-test"}},
    )
    return {"marked": True}


def step_row(event: dict[str, Any]) -> dict[str, Any]:
    return row_history(_events(event["table"], event["key"]))


def _settled_after_update(name: str, row_id: int) -> tuple[bool, float]:
    """Whether the probe saw the update of ``orders`` row ``row_id``; minutes asked."""
    elapsed = (time.time() - _first_asked(name)) / 60
    updated = any(event["op"] == "u" for event in _events("orders", {"id": row_id}))
    return updated, elapsed


def step_null(event: dict[str, Any]) -> dict[str, Any]:
    # An UpdateItem that leaves the NULL column out changes nothing, and DynamoDB Streams
    # record no event for it: the update of row 3, made after row 2's in the same table,
    # shows DMS has applied row 2's.
    updated, elapsed = _settled_after_update("null", 2)
    later = any(event["op"] == "u" for event in _events("orders", {"id": 3}))
    if not (updated or later) and elapsed < QUESTION_MINUTES:
        return {"settled": False}
    if not (updated or later):
        return {
            "settled": True,
            "answer": f"no update event for orders ids 2 and 3 in {QUESTION_MINUTES} minutes",
        }
    answer = null_answer(_item("orders", {"id": {"N": "2"}}), "two")
    return {"settled": True, "answer": answer, "stream_event_for_the_update": updated}


def step_marker(event: dict[str, Any]) -> dict[str, Any]:
    updated, elapsed = _settled_after_update("marker", 3)
    if not updated and elapsed < QUESTION_MINUTES:
        return {"settled": False}
    if not updated:
        return {"settled": True, "answer": f"no update event for orders id 3 in {QUESTION_MINUTES} minutes"}
    return {"settled": True, "answer": marker_answer(_item("orders", {"id": {"N": "3"}}))}


def step_forms(event: dict[str, Any]) -> dict[str, Any]:
    elapsed = (time.time() - _first_asked("forms")) / 60
    full_load = _item("samples", {"id": {"N": "1"}})
    cdc = _item("samples", {"id": {"N": "2"}})
    if (full_load is None or cdc is None) and elapsed < QUESTION_MINUTES:
        return {"settled": False}
    return {"settled": True, **forms_answer(full_load, cdc)}


def step_task(event: dict[str, Any]) -> dict[str, Any]:
    return _task()


def step_wildcard_stop(event: dict[str, Any]) -> dict[str, Any]:
    task = _task()
    _remember("wildcard", {"start_date_before": task["start_date"]})
    if task["status"] == "running":
        _client("dms").stop_replication_task(ReplicationTaskArn=os.environ["TASK_ARN"])
    return {"stopping": task["status"] == "running"}


def step_wildcard_modify(event: dict[str, Any]) -> dict[str, Any]:
    _client("dms").modify_replication_task(
        ReplicationTaskArn=os.environ["TASK_ARN"], TableMappings=json.dumps(event["mappings"])
    )
    return {"modified": True}


def step_wildcard_resume(event: dict[str, Any]) -> dict[str, Any]:
    task = _task()
    kept = _recalled("wildcard")
    if "status_after_modify" not in kept:  # a retried invocation starts nothing twice
        kept["status_after_modify"] = task["status"]
        _remember("wildcard", kept)
        _client("dms").start_replication_task(
            ReplicationTaskArn=os.environ["TASK_ARN"], StartReplicationTaskType="resume-processing"
        )
    return {"resumed": True}


def step_wildcard(event: dict[str, Any]) -> dict[str, Any]:
    elapsed = (time.time() - _first_asked("wildcard")) / 60
    dynamodb = _client("dynamodb")
    try:
        count: int | None = dynamodb.scan(
            TableName=_table("late_arrivals"), Select="COUNT", ConsistentRead=True
        )["Count"]
    except dynamodb.exceptions.ResourceNotFoundException:
        count = None
    settled, answer = wildcard_answer(count, elapsed)
    if not settled:
        return {"settled": False}
    kept = _recalled("wildcard")
    task = _task()
    return {
        "settled": True,
        "answer": answer,
        # Open question 2: the status of a task that has run, after ModifyReplicationTask.
        "status_after_modify": kept.get("status_after_modify"),
        # Open question 5: whether ReplicationTaskStartDate changes on resume-processing.
        "start_date_changed_on_resume": kept.get("start_date_before") != task["start_date"],
        "task": task["status"],
    }


def step_lobs(event: dict[str, Any]) -> dict[str, Any]:
    lengths: dict[int, int | None] = {}
    for row in LOB_LENGTHS:
        item = _item("lobs", {"id": {"N": str(row)}})
        lengths[row] = len(item["body"]["S"]) if item is not None and "body" in item else None
    return lob_answer(lengths, _task())


STEPS = {
    "seen": step_seen,
    "mark": step_mark,
    "row": step_row,
    "task": step_task,
    "null": step_null,
    "marker": step_marker,
    "forms": step_forms,
    "wildcard_stop": step_wildcard_stop,
    "wildcard_modify": step_wildcard_modify,
    "wildcard_resume": step_wildcard_resume,
    "wildcard": step_wildcard,
    "lobs": step_lobs,
}
#: Steps whose result answers an open question: logged for tests/integ/leftovers.py.
QUESTIONS = ("null", "marker", "forms", "wildcard", "lobs")


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    step = event["step"]
    result = STEPS[step](event)
    if step in QUESTIONS and result.get("settled", True):
        print(json.dumps({ANSWER_MARK: step, **result}, sort_keys=True))
    return result
