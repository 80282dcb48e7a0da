"""DynamoDB JSON -> plain JSON values, per the value rules of envelope v1.

| DynamoDB | envelope value                                                          |
|----------|-------------------------------------------------------------------------|
| S        | string                                                                  |
| N        | int when integral, else the exact decimal text as a string              |
|          | (``numbers="number"``: a ``Decimal``, written as a JSON number)         |
| BOOL     | bool                                                                    |
| NULL     | None                                                                    |
| B        | base64 string (Lambda events carry base64 text; boto3 carries bytes)    |
| L / M    | list / dict, recursively                                                |
| SS/NS/BS | sorted arrays under the same rules (NS by numeric value, BS by bytes)   |

The decoder is hand-written because it sits on the glue's hot path (``bench/glue_bench.py``).
Its common shapes (S, N, M, L, NULL, BOOL, SS) are decoded by a compiled module,
``_dmsbus_ddbjson`` (``native/ddbjson.c``, shipped in the Lambda layer), which hands every
other value back to the pure-Python decoder below; without the module the Python decoder
does all of it, with the same results, about 8x slower. Conformance tests compare both with
boto3's ``TypeDeserializer`` on generated values of every type. The fast path tracks no
location; when it fails, a slow walk finds the offending attribute so the error names it.
"""

from __future__ import annotations

import base64
import binascii
import importlib
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol, cast

NumberMode = Literal["string", "number"]
AttributeValue = Mapping[str, Any]
Image = Mapping[str, AttributeValue]


class DecodeError(ValueError):
    """A DynamoDB JSON value that does not follow the DynamoDB type rules."""


class _Native(Protocol):
    """``_dmsbus_ddbjson``: decodes what it knows, calls ``fallback(av)`` for the rest."""

    def image(
        self,
        image: dict[str, Any],
        number: Callable[[Any], Any],
        fallback: Callable[[Any], Any],
        text: bool,
        /,
    ) -> dict[str, Any]: ...

    def value(
        self, av: Any, number: Callable[[Any], Any], fallback: Callable[[Any], Any], text: bool, /
    ) -> Any: ...


def _load_native() -> _Native | None:
    try:
        return cast(_Native, importlib.import_module("_dmsbus_ddbjson"))
    except ImportError:  # not built (pure-Python checkouts): same values, slower
        return None


_NATIVE = _load_native()
#: Whether the compiled fast path is loaded (the glue logs it at cold start).
NATIVE = _NATIVE is not None


def _number_text(text: Any) -> int | str:
    if type(text) is not str:
        raise DecodeError(f"N value {text!r} is not a string")
    if text.isascii():
        digits = text[1:] if text[:1] == "-" else text
        if digits.isdigit():
            return int(text)
        # Plain decimal notation ("12.5"): DynamoDB normalizes numbers, so a fraction that
        # does not end in 0 is not integral. Anything else takes the exact Decimal route.
        if digits.replace(".", "", 1).isdigit() and digits[-1] not in "0.":
            return text
    value = _decimal(text)  # exponent notation, trailing zeros, or not a number at all
    if value == value.to_integral_value():
        return int(value)
    return text


def _number_decimal(text: Any) -> int | Decimal:
    if type(text) is not str:
        raise DecodeError(f"N value {text!r} is not a string")
    if text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
        return int(text)
    value = _decimal(text)
    if value == value.to_integral_value():
        return int(value)
    return value


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise DecodeError(f"N value {text!r} is not a number") from None
    if not value.is_finite():
        raise DecodeError(f"N value {text!r} is not a finite number")
    # DynamoDB holds magnitudes from 1E-130 to under 1E+126. Beyond, an exponent of a few
    # characters ("1E999999999") would make int() build a gigantic integer for ever.
    if value and not _MIN_EXPONENT <= value.adjusted() <= _MAX_EXPONENT:
        raise DecodeError(f"N value {text!r} is outside DynamoDB's number range (1E-130 to 1E+126)")
    return value


_MIN_EXPONENT, _MAX_EXPONENT = -130, 125


def _binary(value: Any) -> str:
    if type(value) is str:
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            raise DecodeError(f"B value {value[:40]!r} is not base64") from None
        return value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise DecodeError(f"B value of type {type(value).__name__} is neither base64 text nor bytes")


def _binary_sort_key(text: str) -> bytes:
    return base64.b64decode(text)


class Decoder:
    """Decodes DynamoDB JSON images. One instance per number mode; reuse it.

    ``native``: None uses the compiled fast path when it is built, False never does, True
    requires it (ImportError otherwise)."""

    __slots__ = ("_decimal_key", "_fallback", "_native", "_number", "_text", "numbers")

    def __init__(self, numbers: NumberMode = "string", *, native: bool | None = None) -> None:
        if numbers not in ("string", "number"):
            raise ValueError(f"numbers must be 'string' or 'number', not {numbers!r}")
        if native and _NATIVE is None:
            raise ImportError("the compiled decoder _dmsbus_ddbjson is not built (python native/build.py)")
        self.numbers: NumberMode = numbers
        self._number: Callable[[Any], Any] = _number_text if numbers == "string" else _number_decimal
        self._decimal_key: Callable[[str], Decimal] = _decimal
        self._native = None if native is False else _NATIVE
        self._fallback: Callable[[Any], Any] = self._value
        self._text = numbers == "string"

    @property
    def native(self) -> bool:
        """Whether this decoder uses the compiled fast path."""
        return self._native is not None

    def value(self, av: AttributeValue) -> Any:
        """Decode one attribute value (``{"S": "x"}`` -> ``"x"``)."""
        native = self._native
        if native is not None:
            return native.value(av, self._number, self._fallback, self._text)
        return self._value(av)

    def _value(self, av: AttributeValue) -> Any:
        # The pure-Python decoder, and the compiled one's fallback for what it leaves alone.
        # `in` on the one-entry dict is the cheapest way to learn its type.
        if "S" in av:
            raw = av["S"]
            if type(raw) is not str:
                raise DecodeError(f"S value {raw!r} is not a string")
            return raw
        if "N" in av:
            return self._number(av["N"])
        if "M" in av:
            return self._image(av["M"])
        if "L" in av:
            value = self.value
            return [value(item) for item in av["L"]]
        if "NULL" in av:
            return None
        if "BOOL" in av:
            raw = av["BOOL"]
            if type(raw) is not bool:
                raise DecodeError(f"BOOL value {raw!r} is not a boolean")
            return raw
        if "SS" in av:
            return sorted(av["SS"])
        if "NS" in av:
            number = self._number
            return [number(text) for text in sorted(av["NS"], key=self._decimal_key)]
        if "B" in av:
            return _binary(av["B"])
        if "BS" in av:
            return sorted((_binary(item) for item in av["BS"]), key=_binary_sort_key)
        if not av:
            raise DecodeError("empty attribute value (no type)")
        raise DecodeError(f"unknown DynamoDB type {next(iter(av))!r}")

    def image(self, image: Image) -> dict[str, Any]:
        """Decode an item image (Keys, OldImage, NewImage, an M value or a scanned item)."""
        try:
            return self._image(image)
        except Exception as exc:
            raise DecodeError(self._locate(image, exc)) from exc

    def _image(self, image: Image) -> dict[str, Any]:
        native = self._native
        if native is not None and type(image) is dict:
            return native.image(image, self._number, self._fallback, self._text)
        return self._python_image(image)

    def _python_image(self, image: Image) -> dict[str, Any]:
        # The hot loop: the common types are decoded inline (a call per attribute costs as
        # much as the decoding, and `in` beats unpacking the one-entry dict); the rest go
        # through value().
        out: dict[str, Any] = {}
        value, number, nested = self.value, self._number, self._image
        for name, av in image.items():
            if "S" in av:
                raw = av["S"]
                if type(raw) is not str:
                    raise DecodeError(f"S value {raw!r} is not a string")
                out[name] = raw
            elif "N" in av:
                raw = av["N"]
                # A non-string raises here and image() names the attribute.
                out[name] = int(raw) if raw.isdigit() else number(raw)
            elif "M" in av:
                out[name] = nested(av["M"])
            elif "L" in av:
                out[name] = [value(item) for item in av["L"]]
            else:
                out[name] = value(av)
        return out

    def _locate(self, image: Any, original: Exception) -> str:
        """Find the attribute the fast path choked on and name it: ``price: N value 'x' ...``."""
        if not isinstance(image, Mapping):
            return f"image is a {type(image).__name__}, not an object"
        for name, av in image.items():
            problem = self._problem(av)
            if problem is not None:
                path, message = problem
                return f"{name}{path}: {message}"
        return str(original)

    def _problem(self, av: Any) -> tuple[str, str] | None:
        if not isinstance(av, Mapping):
            return "", f"attribute value is a {type(av).__name__}, not an object"
        if len(av) != 1:
            return "", f"attribute value must have exactly one type, has {sorted(av)!r}"
        ((tag, raw),) = av.items()
        try:
            if tag == "M":
                if not isinstance(raw, Mapping):
                    return "", "M value is not an object"
                for name, item in raw.items():
                    found = self._problem(item)
                    if found is not None:
                        return f".{name}{found[0]}", found[1]
            elif tag == "L":
                if not isinstance(raw, list):
                    return "", "L value is not an array"
                for index, item in enumerate(raw):
                    found = self._problem(item)
                    if found is not None:
                        return f"[{index}]{found[0]}", found[1]
            elif tag in ("SS", "NS", "BS") and not isinstance(raw, list):
                return "", f"{tag} value is not an array"
            else:
                self.value(av)
        except Exception as exc:
            return "", str(exc)
        return None


STRING_NUMBERS = Decoder("string")
