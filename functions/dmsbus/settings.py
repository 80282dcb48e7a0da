"""Environment variables of dmsbus functions, parsed once at cold start with errors that
name the variable. Shared by the glue and discovery, which publish with the same settings."""

from __future__ import annotations

from collections.abc import Mapping

from dmsbus import variables
from dmsbus.ddbjson import NumberMode
from dmsbus.publisher import PublisherSettings

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class SettingsError(ValueError):
    """An environment variable of a function is missing or malformed."""


def required(environ: Mapping[str, str], name: str, who: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is required by the {who} and is not set")
    return value


def required_integer(environ: Mapping[str, str], name: str, who: str) -> int:
    """An integer the deployment always sets (its default lives in config/model.py only)."""
    raw = required(environ, name, who)
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"environment variable {name} must be an integer, not {raw!r}") from None


def optional(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name, "").strip() or None


def flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"environment variable {name} must be true or false, not {raw!r}")


def integer(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"environment variable {name} must be an integer, not {raw!r}") from None


def numbers(environ: Mapping[str, str]) -> NumberMode:
    mode = environ.get(variables.NUMBERS, "string").strip() or "string"
    if mode == "string":
        return "string"
    if mode == "number":
        return "number"
    raise SettingsError(f"{variables.NUMBERS} must be 'string' or 'number', not {mode!r}")


def publisher(environ: Mapping[str, str]) -> PublisherSettings:
    """How the bus's stream is written: ``BUS_AGGREGATE``, ``BUS_AGGREGATE_MAX_BYTES``,
    ``BUS_PUT_MAX_ATTEMPTS``."""
    defaults = PublisherSettings()
    try:
        return PublisherSettings(
            aggregate=flag(environ, variables.AGGREGATE, defaults.aggregate),
            max_aggregate_bytes=integer(environ, variables.AGGREGATE_MAX_BYTES, defaults.max_aggregate_bytes),
            max_attempts=integer(environ, variables.PUT_MAX_ATTEMPTS, defaults.max_attempts),
        )
    except SettingsError:
        raise
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
