"""Child processes of local mode (the workload, the DMS stand-in's task): started with
``spawn`` (never a fork of this threaded process), deaf to Ctrl-C, which is the parent's to
handle (it stops them), and stopped through an event, then killed if they do not end."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from typing import Any

#: Where children and what they share (values, events, queues) come from.
SPAWN = multiprocessing.get_context("spawn")


def start_child(target: Callable[..., None], args: tuple[Any, ...], *, name: str) -> Any:
    """``target(*args)`` in a new daemon process, started."""
    process = SPAWN.Process(target=_without_ctrl_c, args=(target, *args), name=name, daemon=True)
    process.start()
    return process


def stop_child(process: Any, stop: Any, *, timeout: float) -> None:
    """Set ``stop``, wait up to ``timeout`` seconds for ``process`` to end, then kill it."""
    stop.set()
    if process is not None:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()


def _without_ctrl_c(target: Callable[..., None], *args: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    target(*args)
