"""pytest fixtures for consumer tests: ``pytest_plugins = ["dmsbus.pytest_plugin"]`` in a
``conftest.py``.

```python
def test_a_failing_change_is_retried_with_every_later_one(consumer_failures) -> None:
    failed = consumer_failures(handler, [change(...), change(...)], aggregated=False)
    assert len(failed) == 1
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from dmsbus.consumer import ConsumerHandler
from dmsbus.envelope import ChangeEvent
from dmsbus.testing import invoke, kinesis_event

Run = Callable[..., list[str]]


@pytest.fixture
def consumer_failures() -> Run:
    """Runs a ``@consumer`` handler on change events (or on a ready Lambda event) and
    returns its ``batchItemFailures``: the Kinesis sequence numbers Lambda would retry."""

    def run(
        handler: ConsumerHandler,
        events: Sequence[ChangeEvent] | Mapping[str, Any],
        *,
        aggregated: bool = True,
    ) -> list[str]:
        event = events if isinstance(events, Mapping) else kinesis_event(events, aggregated=aggregated)
        return invoke(handler, event)

    return run
