"""The local CreateTable rule hands discovery the event EventBridge delivers in AWS."""

from __future__ import annotations

from discovery.core import tables_in_event
from local.lambda_service import create_table_event


def test_the_rule_event_names_the_new_table_to_discovery() -> None:
    # Given the event the local rule sends for a table DMS created
    event = create_table_event("demo.legacy.audit.event_payment")

    # When discovery reads it
    tables = tables_in_event(event)

    # Then discovery works on that table alone (not a sweep)
    assert tables == ["demo.legacy.audit.event_payment"]
    assert event["detail-type"] == "AWS API Call via CloudTrail"
    assert event["source"] == "aws.dynamodb"
