from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from dmsbus.ddbjson import DecodeError, Decoder

decoder = Decoder()
numbers = Decoder("number")


# ---- one behaviour per value type -------------------------------------------------------


def test_string_is_kept_as_is() -> None:
    # Given an S value with unicode
    # When decoded
    # Then it is the same string
    assert decoder.value({"S": "Grüße, 世界"}) == "Grüße, 世界"


def test_integral_number_becomes_an_int() -> None:
    assert decoder.value({"N": "-42"}) == -42
    assert (
        decoder.value({"N": "12345678901234567890123456789012345678"})
        == 12345678901234567890123456789012345678
    )


def test_integral_number_in_exponent_form_becomes_an_int() -> None:
    assert decoder.value({"N": "1E+3"}) == 1000


def test_decimal_number_keeps_its_exact_text() -> None:
    # Given a non-integral N
    # When decoded in the default (string) mode
    # Then the exact decimal text comes back as a string
    assert decoder.value({"N": "0.1"}) == "0.1"
    assert decoder.value({"N": "-12.50"}) == "-12.50"


def test_decimal_number_in_number_mode_is_an_exact_decimal() -> None:
    assert numbers.value({"N": "0.1"}) == Decimal("0.1")
    assert numbers.value({"N": "7"}) == 7


def test_bool_and_null() -> None:
    assert decoder.value({"BOOL": False}) is False
    assert decoder.value({"NULL": True}) is None


def test_binary_from_a_lambda_event_stays_base64() -> None:
    assert decoder.value({"B": "AAEC"}) == "AAEC"


def test_binary_from_boto3_becomes_base64() -> None:
    assert decoder.value({"B": b"\x00\x01\x02"}) == "AAEC"


def test_list_and_map_decode_recursively() -> None:
    value = {"L": [{"N": "1"}, {"M": {"a": {"S": "x"}, "b": {"L": []}}}]}
    assert decoder.value(value) == [1, {"a": "x", "b": []}]


def test_string_set_is_sorted() -> None:
    assert decoder.value({"SS": ["b", "a", "c"]}) == ["a", "b", "c"]


def test_number_set_is_sorted_by_value_under_the_number_rules() -> None:
    assert decoder.value({"NS": ["10", "9", "-1.5", "2"]}) == ["-1.5", 2, 9, 10]


def test_binary_set_is_sorted_by_bytes() -> None:
    high, low = base64.b64encode(b"\xff").decode(), base64.b64encode(b"\x01").decode()
    assert decoder.value({"BS": [high, low]}) == [low, high]


def test_image_decodes_every_attribute() -> None:
    image = {"id": {"N": "1"}, "name": {"S": "a"}, "tags": {"SS": ["y", "x"]}, "gone": {"NULL": True}}
    assert decoder.image(image) == {"id": 1, "name": "a", "tags": ["x", "y"], "gone": None}


# ---- errors name the attribute -----------------------------------------------------------


def test_bad_number_error_names_the_nested_attribute() -> None:
    # Given an image whose nested list holds a malformed number
    image = {"id": {"N": "1"}, "lines": {"L": [{"M": {"qty": {"N": "1"}}}, {"M": {"qty": {"N": "lots"}}}]}}
    # When decoded
    # Then the error names the path to the attribute and the value
    with pytest.raises(DecodeError, match=r"lines\[1\]\.qty: N value 'lots' is not a number"):
        decoder.image(image)


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(DecodeError, match=r"price: unknown DynamoDB type 'DECIMAL'"):
        decoder.image({"price": {"DECIMAL": "1"}})


def test_non_string_s_value_is_an_error() -> None:
    with pytest.raises(DecodeError, match=r"name: S value 5 is not a string"):
        decoder.image({"name": {"S": 5}})


def test_non_string_n_value_is_an_error() -> None:
    with pytest.raises(DecodeError, match=r"qty: N value 5 is not a string"):
        decoder.image({"qty": {"N": 5}})


def test_unknown_number_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="numbers must be 'string' or 'number'"):
        Decoder("float")  # type: ignore[arg-type]


# ---- conformance with boto3's TypeDeserializer ---------------------------------------------

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# Numbers as DynamoDB holds them: up to 38 significant digits, exponent within its range.
_numbers = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: d.is_zero() or (len(d.as_tuple().digits) <= 38 and -130 < d.adjusted() < 126)
)
_scalars = st.one_of(
    st.text(max_size=20),
    _numbers,
    st.booleans(),
    st.none(),
    st.binary(max_size=16).map(Binary),
)
_sets = st.one_of(
    st.sets(st.text(max_size=8), min_size=1, max_size=5),
    st.sets(_numbers.map(lambda d: d.normalize()), min_size=1, max_size=5).filter(
        lambda s: len({x.normalize() for x in s}) == len(s)
    ),
    st.sets(st.binary(min_size=1, max_size=8).map(Binary), min_size=1, max_size=5),
)
_values = st.recursive(
    st.one_of(_scalars, _sets),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _reference(value: Any) -> Any:
    """What envelope v1 says a TypeDeserializer value becomes."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode()
    if isinstance(value, set):
        items = [_reference(item) for item in value]
        if all(isinstance(item, Binary) for item in value):
            return sorted(items, key=base64.b64decode)
        if all(isinstance(item, Decimal) for item in value):
            return [_reference(item) for item in sorted(value)]
        return sorted(items)
    if isinstance(value, list):
        return [_reference(item) for item in value]
    if isinstance(value, dict):
        return {name: _reference(item) for name, item in value.items()}
    return value


def _bytes(value: Any) -> bytes:
    return bytes(getattr(value, "value", value))


def _lambda_json(av: Any) -> Any:
    """boto3 wire values -> Lambda event values (binary as base64 text)."""
    if isinstance(av, dict):
        if set(av) == {"B"}:
            return {"B": base64.b64encode(_bytes(av["B"])).decode()}
        if set(av) == {"BS"}:
            return {"BS": [base64.b64encode(_bytes(b)).decode() for b in av["BS"]]}
        return {name: _lambda_json(item) for name, item in av.items()}
    if isinstance(av, list):
        return [_lambda_json(item) for item in av]
    return av


@settings(max_examples=400, deadline=None)
@given(_values)
def test_decoder_agrees_with_type_deserializer_on_every_type(value: Any) -> None:
    # Given any DynamoDB value, serialized by boto3 as DynamoDB would hold it
    wire = _serializer.serialize(value)
    # When both decoders read it
    expected = _reference(_deserializer.deserialize(wire))
    ours = numbers.value(_lambda_json(wire))
    # Then they agree under the envelope's value rules (number mode keeps Decimals to compare)
    assert ours == expected


@settings(max_examples=200, deadline=None)
@given(_numbers)
def test_string_mode_decimal_text_is_the_exact_number(number: Decimal) -> None:
    # Given a number as DynamoDB JSON text
    text = _serializer.serialize(number)["N"]
    # When decoded in string mode
    ours = decoder.value({"N": text})
    # Then an int is exactly the value, and a string is the original text of a non-integral value
    reference = _deserializer.deserialize({"N": text})
    if isinstance(ours, int):
        assert ours == reference
    else:
        assert ours == text
        assert Decimal(ours) == reference
        assert reference != reference.to_integral_value()
