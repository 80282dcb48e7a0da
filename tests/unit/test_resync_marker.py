"""The resync marker: `dmsbus resync` sets it on a bus table's item, and the glue turns a
change of nothing but the marker into an `r` event, in the row's stream order; the marker
is never part of a row's image."""

from __future__ import annotations

import pytest

from dmsbus.changes import ChangeBuilder, resync_marker
from dmsbus.consumer import Selection
from dmsbus.envelope import RESYNC_ATTRIBUTE, ChangeEvent
from tests.streams import insert, modify, remove

ROW = {"id": 7, "status": "paid"}


def test_a_change_of_the_marker_alone_is_a_read_of_the_row_for_the_named_consumer(
    builder: ChangeBuilder,
) -> None:
    # Given the row carried an earlier run's marker, and resync sets another for pg-mirror
    record = modify(
        {**ROW, RESYNC_ATTRIBUTE: "run-1"},
        {**ROW, RESYNC_ATTRIBUTE: resync_marker("run-2", "demo-pg-mirror")},
        sequence="000000000000000000042",
    )
    # When the glue reads it
    event = builder.from_stream_record(record)
    # Then it is the row, read, in the stream's order, for pg-mirror only
    assert (event.op, event.before, event.after) == ("r", None, ROW)
    assert (event.source.snapshot, event.source.resync_for, event.source.sequence) == (
        True,
        "demo-pg-mirror",
        "000000000000000000042",
    )
    assert ChangeEvent.from_json(event.to_json()).source.resync_for == "demo-pg-mirror"


def test_a_first_marker_for_every_consumer_is_a_read_for_all(builder: ChangeBuilder) -> None:
    event = builder.from_stream_record(modify(ROW, {**ROW, RESYNC_ATTRIBUTE: resync_marker("run-1", None)}))
    assert (event.op, event.source.resync_for, event.after) == ("r", None, ROW)


@pytest.mark.parametrize(
    ("record", "op"),
    [
        # the row changed while it carried a marker (DMS updated it in place)
        (
            modify(
                {**ROW, RESYNC_ATTRIBUTE: "run-1"}, {**ROW, "status": "shipped", RESYNC_ATTRIBUTE: "run-1"}
            ),
            "u",
        ),
        # DMS replaced the whole item: the marker is gone
        (modify({**ROW, RESYNC_ATTRIBUTE: "run-1"}, {**ROW, "status": "shipped"}), "u"),
        (remove({**ROW, RESYNC_ATTRIBUTE: "run-1"}), "d"),
        (insert({**ROW, RESYNC_ATTRIBUTE: "run-1"}), "c"),
    ],
)
def test_the_marker_never_shows_in_an_image(
    builder: ChangeBuilder, record: dict[str, object], op: str
) -> None:
    event = builder.from_stream_record(record)
    assert event.op == op
    for image in (event.before, event.after):
        assert image is None or RESYNC_ATTRIBUTE not in image


def test_an_event_without_a_target_keeps_its_bytes(builder: ChangeBuilder) -> None:
    event = builder.from_stream_record(modify(ROW, {**ROW, "status": "shipped"}))
    assert b"resync_for" not in event.to_json()


@pytest.mark.parametrize(
    ("function", "target", "delivered"),
    [
        ("demo-pg-mirror", "demo-pg-mirror", True),
        ("demo-archive", "demo-pg-mirror", False),
        ("demo-archive", None, True),
        (None, "demo-pg-mirror", True),  # a deployment that does not know its name
    ],
)
def test_a_resync_read_reaches_only_the_consumer_it_is_for(
    builder: ChangeBuilder, function: str | None, target: str | None, delivered: bool
) -> None:
    event = builder.from_stream_record(modify(ROW, {**ROW, RESYNC_ATTRIBUTE: resync_marker("run-1", target)}))
    environ = {"AWS_LAMBDA_FUNCTION_NAME": function} if function else {}
    assert Selection.from_env(environ).matches(event) is delivered
