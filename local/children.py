"""Child processes of local mode (the workload, the DMS stand-in's task): started with
``spawn`` (never a fork of this threaded process), deaf to Ctrl-C, which is the parent's to
handle (it stops them), and stopped through an event, then killed if they do not end."""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable
from typing import Any

#: Where children and what they share (values, events, queues) come from.
SPAWN = multiprocessing.get_context("spawn")


def start_child(target: Callable[..., None], args: tuple[Any, ...], *, name: str) -> Any:
    """``target(*args)`` in a new daemon process, started."""
    process = SPAWN.Process(target=_without_ctrl_c, args=(target, *args), name=name, daemon=True)
    if threading.current_thread() is not threading.main_thread():
        process.start()  # only the main thread sets handlers; a caller off it has its own
        return process
    # Deaf from its first instruction, not only once its target runs: a spawned child first
    # imports the parent's main module (a second or more, loaded), and a Ctrl-C to the
    # process group meanwhile printed a KeyboardInterrupt traceback there. An ignored SIGINT
    # survives exec, and Python leaves it ignored ("SIGINT is translated into a
    # KeyboardInterrupt exception if the parent process has not changed it": the signal
    # module's docs). A Ctrl-C in the instant of the start is the parent's to miss.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
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
