from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from dmsbus.ddbjson import NATIVE, DecodeError, Decoder, NumberMode

#: Both decoders: the compiled fast path (native/ddbjson.c, built by `make test`) and the pure
#: Python one it falls back to. Every behaviour below holds for both.
KINDS = {"compiled": True, "python": False}


@pytest.fixture(params=sorted(KINDS))
def decoder(request: pytest.FixtureRequest) -> Decoder:
    return Decoder(native=KINDS[request.param])


@pytest.fixture(params=sorted(KINDS))
def numbers(request: pytest.FixtureRequest) -> Decoder:
    return Decoder("number", native=KINDS[request.param])


# ---- one behaviour per value type -------------------------------------------------------


def test_string_is_kept_as_is(decoder: Decoder) -> None:
    # Given an S value with unicode
    # When decoded
    # Then it is the same string
    assert decoder.value({"S": "Grüße, 世界"}) == "Grüße, 世界"


def test_integral_number_becomes_an_int(decoder: Decoder) -> None:
    assert decoder.value({"N": "-42"}) == -42
    assert (
        decoder.value({"N": "12345678901234567890123456789012345678"})
        == 12345678901234567890123456789012345678
    )


def test_integral_number_in_exponent_form_becomes_an_int(decoder: Decoder) -> None:
    assert decoder.value({"N": "1E+3"}) == 1000


def test_decimal_number_keeps_its_exact_text(decoder: Decoder) -> None:
    # Given a non-integral N
    # When decoded in the default (string) mode
    # Then the exact decimal text comes back as a string
    assert decoder.value({"N": "0.1"}) == "0.1"
    assert decoder.value({"N": "-12.50"}) == "-12.50"


def test_decimal_number_in_number_mode_is_an_exact_decimal(numbers: Decoder) -> None:
    assert numbers.value({"N": "0.1"}) == Decimal("0.1")
    assert numbers.value({"N": "7"}) == 7


def test_bool_and_null(decoder: Decoder) -> None:
    assert decoder.value({"BOOL": False}) is False
    assert decoder.value({"NULL": True}) is None


def test_binary_from_a_lambda_event_stays_base64(decoder: Decoder) -> None:
    assert decoder.value({"B": "AAEC"}) == "AAEC"


def test_binary_from_boto3_becomes_base64(decoder: Decoder) -> None:
    assert decoder.value({"B": b"\x00\x01\x02"}) == "AAEC"


def test_list_and_map_decode_recursively(decoder: Decoder) -> None:
    value = {"L": [{"N": "1"}, {"M": {"a": {"S": "x"}, "b": {"L": []}}}]}
    assert decoder.value(value) == [1, {"a": "x", "b": []}]


def test_string_set_is_sorted(decoder: Decoder) -> None:
    assert decoder.value({"SS": ["b", "a", "c"]}) == ["a", "b", "c"]


def test_number_set_is_sorted_by_value_under_the_number_rules(decoder: Decoder) -> None:
    assert decoder.value({"NS": ["10", "9", "-1.5", "2"]}) == ["-1.5", 2, 9, 10]


def test_binary_set_is_sorted_by_bytes(decoder: Decoder) -> None:
    high, low = base64.b64encode(b"\xff").decode(), base64.b64encode(b"\x01").decode()
    assert decoder.value({"BS": [high, low]}) == [low, high]


def test_image_decodes_every_attribute(decoder: Decoder) -> None:
    image = {"id": {"N": "1"}, "name": {"S": "a"}, "tags": {"SS": ["y", "x"]}, "gone": {"NULL": True}}
    assert decoder.image(image) == {"id": 1, "name": "a", "tags": ["x", "y"], "gone": None}


# ---- errors name the attribute -----------------------------------------------------------


def test_bad_number_error_names_the_nested_attribute(decoder: Decoder) -> None:
    # Given an image whose nested list holds a malformed number
    image = {"id": {"N": "1"}, "lines": {"L": [{"M": {"qty": {"N": "1"}}}, {"M": {"qty": {"N": "lots"}}}]}}
    # When decoded
    # Then the error names the path to the attribute and the value
    with pytest.raises(DecodeError, match=r"lines\[1\]\.qty: N value 'lots' is not a number"):
        decoder.image(image)


def test_unknown_type_is_an_error(decoder: Decoder) -> None:
    with pytest.raises(DecodeError, match=r"price: unknown DynamoDB type 'DECIMAL'"):
        decoder.image({"price": {"DECIMAL": "1"}})


def test_non_string_s_value_is_an_error(decoder: Decoder) -> None:
    with pytest.raises(DecodeError, match=r"name: S value 5 is not a string"):
        decoder.image({"name": {"S": 5}})


def test_non_string_n_value_is_an_error(decoder: Decoder) -> None:
    with pytest.raises(DecodeError, match=r"qty: N value 5 is not a string"):
        decoder.image({"qty": {"N": 5}})


def test_number_beyond_dynamodb_range_is_an_error_not_a_huge_integer(decoder: Decoder) -> None:
    # Given an N whose short text names an integer of a billion digits
    # When decoded
    # Then it is refused at once, naming the attribute and DynamoDB's range
    with pytest.raises(DecodeError, match=r"qty: N value '1E999999999' is outside DynamoDB's number range"):
        decoder.image({"qty": {"N": "1E999999999"}})


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


def _lambda_json(av: dict[str, Any]) -> dict[str, Any]:
    """A boto3 attribute value -> as a Lambda event carries it (binary as base64 text)."""
    ((tag, raw),) = av.items()
    if tag == "B":
        return {"B": base64.b64encode(_bytes(raw)).decode()}
    if tag == "BS":
        return {"BS": [base64.b64encode(_bytes(b)).decode() for b in raw]}
    if tag == "M":
        return {"M": {name: _lambda_json(item) for name, item in raw.items()}}
    if tag == "L":
        return {"L": [_lambda_json(item) for item in raw]}
    return av


@settings(max_examples=400, deadline=None)
@given(_values)
def test_decoder_agrees_with_type_deserializer_on_every_type(value: Any) -> None:
    # Given any DynamoDB value, serialized by boto3 as DynamoDB would hold it
    wire = _serializer.serialize(value)
    # When boto3 and both of our decoders read it
    expected = _reference(_deserializer.deserialize(wire))
    for native in KINDS.values():
        ours = Decoder("number", native=native).value(_lambda_json(wire))
        # Then they agree under the envelope's value rules (number mode keeps Decimals to compare)
        assert ours == expected


@settings(max_examples=200, deadline=None)
@given(_numbers)
def test_string_mode_decimal_text_is_the_exact_number(number: Decimal) -> None:
    # Given a number as DynamoDB JSON text
    text = _serializer.serialize(number)["N"]
    reference = _deserializer.deserialize({"N": text})
    for native in KINDS.values():
        # When decoded in string mode
        ours = Decoder(native=native).value({"N": text})
        # Then an int is exactly the value, and a string is the original text of a non-integral value
        if isinstance(ours, int):
            assert ours == reference
        else:
            assert ours == text
            assert Decimal(ours) == reference
            assert reference != reference.to_integral_value()


# ---- the compiled decoder is the Python one, faster ------------------------------------------


def _outcome(decoder: Decoder, method: str, value: Any) -> tuple[str, Any]:
    try:
        return "value", getattr(decoder, method)(value)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _typed(value: Any) -> Any:
    """A value with the type of every part spelled out: 1, "1" and Decimal(1) all differ."""
    if isinstance(value, dict):
        return {name: _typed(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return (type(value).__name__, value)


def _same_for_both(method: str, value: Any, numbers: NumberMode = "string") -> tuple[str, Any]:
    compiled = _outcome(Decoder(numbers, native=True), method, value)
    python = _outcome(Decoder(numbers, native=False), method, value)
    assert _typed(compiled) == _typed(python)
    return compiled


def test_the_compiled_decoder_is_built_and_used_by_default() -> None:
    # Given the tree `make test` built (native/build.py into the venv)
    # When a decoder is made without saying which
    # Then it uses the compiled fast path, as the glue does in Lambda
    assert NATIVE
    assert Decoder().native
    assert not Decoder(native=False).native


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _values, max_size=6), st.sampled_from(["string", "number"]))
def test_compiled_and_python_decoders_give_the_same_images(item: dict[str, Any], mode: NumberMode) -> None:
    # Given any item image, as a Lambda event carries it
    image = _lambda_json(_serializer.serialize(item))["M"]
    # When both decoders read it, in either number mode
    # Then they give equal values of the same types
    kind, _ = _same_for_both("image", image, mode)
    assert kind == "value"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789-+.eE _\u0663", max_size=24), st.sampled_from(["string", "number"]))
def test_compiled_and_python_decoders_agree_on_any_number_text(text: str, mode: NumberMode) -> None:
    # Given N text that may be a number, an odd number or junk
    # When both decoders read it
    # Then they give the same value of the same type, or the same error
    _same_for_both("image", {"n": {"N": text}}, mode)


class _Mapping(Mapping[str, Any]):
    def __init__(self, inner: dict[str, Any]) -> None:
        self._inner = inner

    def __getitem__(self, key: str) -> Any:
        return self._inner[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)


@pytest.mark.parametrize(
    "av",
    [
        {"S": "x", "N": "1"},  # two types: the first in the Python decoder's order wins
        {"NULL": False},
        {"BOOL": 1},
        {"S": b"bytes"},
        {"N": 12},
        {"N": "\ud800"},  # a lone surrogate
        {"L": ({"S": "tuple"},)},
        {"M": _Mapping({"a": {"S": "mapping"}})},
        _Mapping({"S": "mapping"}),
        {"SS": "not a list"},
        {"SS": ["b", 1]},
        {},
        ["S"],
        {"X": "1"},
        {"L": [{"N": "1"}, {"M": {"deep": {"N": "1e40"}}}]},
    ],
)
def test_compiled_and_python_decoders_agree_on_odd_shapes(av: Any) -> None:
    # Given an attribute value the compiled decoder does not handle itself
    # When both decoders read it alone and inside an image
    # Then they give the same value, or the same error naming the same place
    _same_for_both("value", av)
    _same_for_both("image", {"attribute": av})


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    # Given a value nested far deeper than any row (the C code must not overflow its stack)
    av: dict[str, Any] = {"S": "bottom"}
    for _ in range(100_000):
        av = {"M": {"a": av}}
    # When the compiled decoder reads it
    # Then it raises a Python error
    with pytest.raises((DecodeError, RecursionError)):
        Decoder(native=True).value(av)
