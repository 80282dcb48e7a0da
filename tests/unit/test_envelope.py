from __future__ import annotations

import json
from decimal import Decimal

import pytest

from dmsbus.envelope import ChangeEvent, EnvelopeError, Source, UnsupportedVersionError


def _event(**overrides: object) -> ChangeEvent:
    fields: dict[str, object] = {
        "id": "demo.legacy.public.orders/000000000000000000012345",
        "op": "u",
        "ts_ms": 1700000000123,
        "source": Source(
            bus="demo",
            source="legacy",
            schema="public",
            table="orders",
            version=None,
            dynamodb_table="demo.legacy.public.orders",
            sequence="000000000000000000012345",
        ),
        "key": {"id": 42},
        "before": {"id": 42, "status": "new"},
        "after": {"id": 42, "status": "paid"},
    }
    fields.update(overrides)
    return ChangeEvent(**fields)  # type: ignore[arg-type]


def test_json_matches_the_documented_example() -> None:
    # Given the event of ARCHITECTURE.md's example
    # When serialized
    data = json.loads(_event().to_json())
    # Then it is exactly the documented object, v first
    assert list(data) == ["v", "id", "op", "ts_ms", "source", "key", "before", "after"]
    assert data == {
        "v": 1,
        "id": "demo.legacy.public.orders/000000000000000000012345",
        "op": "u",
        "ts_ms": 1700000000123,
        "source": {
            "bus": "demo",
            "source": "legacy",
            "schema": "public",
            "table": "orders",
            "version": None,
            "dynamodb_table": "demo.legacy.public.orders",
            "sequence": "000000000000000000012345",
            "snapshot": False,
            "ttl": False,
        },
        "key": {"id": 42},
        "before": {"id": 42, "status": "new"},
        "after": {"id": 42, "status": "paid"},
    }


def test_round_trip_gives_an_equal_event() -> None:
    event = _event()
    assert ChangeEvent.from_json(event.to_json()) == event


def test_integers_beyond_64_bits_stay_exact_both_ways() -> None:
    # Given a DynamoDB number of 38 digits
    big = 12345678901234567890123456789012345678
    event = _event(after={"id": 42, "amount": big})
    # When serialized and parsed back
    data = event.to_json()
    # Then the JSON holds the integer literally and parsing keeps it exact
    assert b'"amount":12345678901234567890123456789012345678' in data
    assert ChangeEvent.from_json(data).after == {"id": 42, "amount": big}


def test_number_mode_decimals_are_exact_json_numbers() -> None:
    # Given an event decoded in number mode (Decimal values)
    event = _event(after={"id": 42, "price": Decimal("19.990")})
    # When serialized
    data = event.to_json()
    # Then the number is written with its exact text, and can be read back exactly
    assert b'"price":19.990' in data
    assert ChangeEvent.from_json(data, exact_decimals=True).after == {"id": 42, "price": Decimal("19.990")}


def test_unknown_version_is_rejected_with_a_clear_error() -> None:
    # Given an envelope from a newer producer
    raw = json.loads(_event().to_json())
    raw["v"] = 2
    # When parsed
    # Then the error names the version, the event and what to do
    with pytest.raises(UnsupportedVersionError, match=r"v=2.*reads v=1 only.*upgrade"):
        ChangeEvent.from_json(json.dumps(raw))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw.pop("op"), "field op is missing"),
        (lambda raw: raw.update(op="x"), "op 'x' is not one of c, u, d, r"),
        (lambda raw: raw.update(ts_ms="soon"), "field ts_ms must be int, not str"),
        (lambda raw: raw.update(ts_ms=True), "field ts_ms must be int, not bool"),
        (lambda raw: raw["source"].pop("sequence"), "field source.sequence is missing"),
        (lambda raw: raw.update(op="c"), "op 'c' must have before = null"),
        (lambda raw: raw.update(op="d"), "op 'd' must have after = null"),
        (lambda raw: raw.update(after=None), "op 'u' needs an after image"),
    ],
)
def test_malformed_envelope_errors_name_the_field(mutate, message) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads(_event().to_json())
    mutate(raw)
    with pytest.raises(EnvelopeError, match=message):
        ChangeEvent.from_dict(raw)


def test_not_json_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="not valid JSON"):
        ChangeEvent.from_json(b"\xf3\x89\x9a\xc2garbage")


def test_qualified_table_and_the_deprecated_idempotency_key() -> None:
    event = _event()
    assert event.qualified_table == "public.orders"
    with pytest.deprecated_call(match="use id"):
        assert event.idempotency_key == event.id


def test_backfill_read_event_round_trips_with_no_before() -> None:
    # Given a backfill event (op r, snapshot source, no before image)
    event = _event(op="r", before=None, source=_event().source)
    event.source.snapshot = True
    # When serialized and parsed
    parsed = ChangeEvent.from_json(event.to_json())
    # Then it is the same read event
    assert (parsed.op, parsed.before, parsed.after, parsed.source.snapshot) == ("r", None, event.after, True)
