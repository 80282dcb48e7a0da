"""``dmsbus up``'s status line: the untyped events of a typed bus since start, from the
running totals of what its functions emitted (local/emf.py)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from config.functions import discovery_name, glue_name
from config.loader import load_config
from config.model import BusConfig
from dmsbus.metrics import emit_untyped
from dmsbus_cli.up import SourceActivity, _status
from local.emf import EmfMetrics
from local.functions import LocalFunction
from local.runtime import LocalRuntime, local_bus

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config")
UNTYPED_BUS = local_bus(CONFIG.bus)
TYPED_BUS = UNTYPED_BUS.model_copy(update={"glue": UNTYPED_BUS.glue.model_copy(update={"typed": True})})


def _running(bus: BusConfig, tmp_path: Path) -> LocalRuntime:
    """A runtime as `up` holds it once running: the stand-in and the Lambda service are
    stand-ins with their counters at rest; the metrics are real."""
    runtime = LocalRuntime(bus=bus, source=CONFIG.sources[0], state_dir=tmp_path)
    runtime.metrics = EmfMetrics(None)
    runtime.stand_in = SimpleNamespace(  # type: ignore[assignment]
        changes_applied=0, loading=False, rows_loaded=0, suspended={}, exceptions=0
    )
    runtime.service = SimpleNamespace(  # type: ignore[assignment]
        lag_seconds=lambda name: 0.0, handled=lambda name: 0, mappings=lambda: []
    )
    return runtime


def _emit(runtime: LocalRuntime, service: str, untyped: dict[str, int]) -> None:
    """``service`` counts untyped events as the glue does, run as a local function."""

    def handler(event: dict[str, Any], context: Any) -> None:
        emit_untyped(service, untyped)

    LocalFunction(
        name=service, environment={}, handler=handler, log=io.StringIO(), metrics=runtime.metrics
    ).invoke({})


def test_a_typed_bus_shows_the_glue_and_discovery_untyped_events_since_start(tmp_path: Path) -> None:
    # Given the glue counted untyped events twice and discovery's backfill once
    runtime = _running(TYPED_BUS, tmp_path)
    _emit(runtime, glue_name(TYPED_BUS), {"demo.legacy.public.customers": 3, "demo.legacy.public.orders": 1})
    _emit(runtime, glue_name(TYPED_BUS), {"demo.legacy.public.orders": 2})
    _emit(runtime, discovery_name(TYPED_BUS), {"demo.legacy.public.customers": 5})
    # When up's status line is made
    line = _status(runtime, SourceActivity("", []), glue_name(TYPED_BUS), [])
    # Then it shows their sum (each event once: the total, not the per-table metrics too)
    assert "| tables 0 | untyped 11" in line


def test_an_untyped_bus_shows_no_untyped_count(tmp_path: Path) -> None:
    runtime = _running(UNTYPED_BUS, tmp_path)
    line = _status(runtime, SourceActivity("", []), glue_name(UNTYPED_BUS), [])
    assert "untyped" not in line
