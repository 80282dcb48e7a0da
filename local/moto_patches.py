"""Replacements of moto internals, made safely: each is checked against moto before it is
made, applied at most once, and can be undone.

A :class:`Patch` names the moto attribute it replaces and the parameters it expects that
attribute to take. :func:`apply`:
- refuses, naming the attribute, when moto no longer has it or its parameters changed (a
  new moto pin must be looked at, not silently left unpatched);
- does nothing when the patch is already in place (applying twice would wrap a
  replacement in itself);
- remembers the original, which :func:`undo` puts back.

``local/moto_server.py`` applies them in the moto server's own process; tests apply them
with :func:`applied`, which undoes them after.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class PatchError(RuntimeError):
    """A patch that no longer fits moto; the message names the attribute."""


@dataclass(frozen=True)
class Patch:
    """``owner.attribute`` replaced by ``replace(original)``.

    ``owner`` is a dotted path (``moto.kinesis.models.Shard``: a module, or a class in one);
    ``parameters`` are the names the original takes, in order, as the replacement relies on
    (None: not a callable, or not checked)."""

    owner: str
    attribute: str
    parameters: tuple[str, ...] | None
    replace: Callable[[Any], Any]
    why: str = ""

    @property
    def name(self) -> str:
        return f"{self.owner}.{self.attribute}"


#: Patches in place: (owner object id, attribute) -> (original, what was set).
_APPLIED: dict[tuple[int, str], tuple[Any, Any]] = {}


def resolve(dotted: str) -> Any:
    """The module or class a dotted path names; PatchError naming it when moto lacks it."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            if not hasattr(found, part):
                raise PatchError(f"{dotted}: moto has no {part} there any longer")
            found = getattr(found, part)
        return found
    raise PatchError(f"{dotted}: no such module")


def check(patch: Patch) -> Any:
    """The attribute the patch replaces, as moto has it (unpatched); PatchError when it is
    gone or takes other parameters than the patch expects."""
    owner = resolve(patch.owner)
    entry = _APPLIED.get((id(owner), patch.attribute))
    if entry is not None and _raw(owner, patch.attribute) is entry[1]:
        return entry[0]
    if patch.attribute not in _members(owner):
        raise PatchError(f"{patch.name}: moto has no such attribute any longer")
    original = _raw(owner, patch.attribute)
    if patch.parameters is not None:
        function = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        try:
            actual = tuple(inspect.signature(function).parameters)
        except (TypeError, ValueError) as exc:
            raise PatchError(f"{patch.name}: not a function any longer ({exc})") from exc
        if actual != patch.parameters:
            raise PatchError(
                f"{patch.name}: moto's takes ({', '.join(actual)}), the patch expects "
                f"({', '.join(patch.parameters)}): look at it before moving moto's pin"
            )
    return original


def apply(patch: Patch) -> None:
    """Put the patch in place (once: applying it again changes nothing)."""
    owner = resolve(patch.owner)
    key = (id(owner), patch.attribute)
    entry = _APPLIED.get(key)
    if entry is not None and _raw(owner, patch.attribute) is entry[1]:
        return
    original = check(patch)
    unwrapped = original.__func__ if isinstance(original, staticmethod) else original
    replacement = patch.replace(unwrapped)
    if isinstance(original, staticmethod) and not isinstance(replacement, staticmethod):
        replacement = staticmethod(replacement)
    setattr(owner, patch.attribute, replacement)
    _APPLIED[key] = (original, _raw(owner, patch.attribute))


def undo(patch: Patch) -> None:
    """Put moto's original back, if the patch is in place."""
    owner = resolve(patch.owner)
    entry = _APPLIED.pop((id(owner), patch.attribute), None)
    if entry is not None:
        setattr(owner, patch.attribute, entry[0])


def is_applied(patch: Patch) -> bool:
    owner = resolve(patch.owner)
    entry = _APPLIED.get((id(owner), patch.attribute))
    return entry is not None and _raw(owner, patch.attribute) is entry[1]


@contextmanager
def applied(patches: Sequence[Patch]) -> Iterator[None]:
    """The patches in place for the block, moto as it was after it."""
    done: list[Patch] = []
    try:
        for patch in patches:
            if not is_applied(patch):
                apply(patch)
                done.append(patch)
        yield
    finally:
        for patch in reversed(done):
            undo(patch)


def _members(owner: Any) -> dict[str, Any]:
    if inspect.isclass(owner):
        found: dict[str, Any] = {}
        for klass in reversed(owner.__mro__):
            found.update(vars(klass))
        return found
    return dict(vars(owner))


def _raw(owner: Any, attribute: str) -> Any:
    """The attribute as stored (a staticmethod stays one), looked up the class way."""
    return _members(owner)[attribute]
