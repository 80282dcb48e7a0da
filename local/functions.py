"""Functions as the local Lambda service runs them: the deployed handler modules, loaded
fresh per "container", invoked in-process with their own environment and a Lambda context.

Each function is one container: its invocations run one at a time, while different
functions run at once, as separate Lambdas do (the glue is not held up by a consumer's
database transaction). What Lambda keeps apart per container is kept apart per thread:
while a function runs, its thread sees ``os.environ`` overlaid with the function's
environment and its ``sys.stdout`` writes go to the function's log; other threads see
neither.

A function is either a handler file under ``functions/`` (``glue``, ``discovery``,
``consumers/log_changes``: ``handler.py``'s ``handler``, exactly what Lambda runs) or, for
local tools such as the demo's verifier, a callable.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import boto3

from local.emf import EmfMetrics

FUNCTIONS_ROOT = Path(__file__).resolve().parent.parent / "functions"
ACCOUNT = "123456789012"
REGION = "us-east-1"
#: Where the local moto server queues asynchronous invocations (Invoke with
#: ``InvocationType=Event``) for the local Lambda service to run: Lambda's own event queue
#: (invocation-async), made a queue of moto's SQS.
INVOCATIONS_QUEUE = "dmsbus-local-lambda-invocations"

logger = logging.getLogger("dmsbus.local.functions")

Handler = Callable[[dict[str, Any], Any], Any]
#: How often a watched function looks at its code's modification times.
CODE_CHECK_SECONDS = 1.0


class ThreadEnviron(MutableMapping[str, str]):
    """``os.environ`` as each thread sees it: the process's variables, overlaid by a
    function's own while it runs in that thread. Writes go to the overlay when there is
    one (a handler setting a variable changes its own environment only)."""

    def __init__(self, base: MutableMapping[str, str]) -> None:
        self.base = base
        self._local = threading.local()

    @property
    def overlay(self) -> dict[str, str | None] | None:
        """This thread's function's variables (None: removed by it); None outside functions."""
        return getattr(self._local, "values", None)

    @contextmanager
    def scoped(self, values: Mapping[str, str]) -> Iterator[None]:
        saved = self.overlay
        self._local.values = dict(values)
        try:
            yield
        finally:
            self._local.values = saved

    def __getitem__(self, name: str) -> str:
        overlay = self.overlay
        if overlay is None or name not in overlay:
            return self.base[name]
        value = overlay[name]
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        overlay = self.overlay
        if overlay is None:
            self.base[name] = value
        else:
            overlay[name] = value

    def __delitem__(self, name: str) -> None:
        overlay = self.overlay
        if overlay is None:
            del self.base[name]
            return
        if name not in self:
            raise KeyError(name)
        overlay[name] = None

    def __iter__(self) -> Iterator[str]:
        overlay = self.overlay or {}
        yield from (name for name, value in overlay.items() if value is not None)
        yield from (name for name in self.base if name not in overlay)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copy(self) -> dict[str, str]:
        return dict(self)


class ThreadStdout(io.TextIOBase):
    """``sys.stdout`` as each thread sees it: a function's log while it runs there, each
    write also handed to the function's reader (CloudWatch's EMF extraction, local/emf.py)."""

    def __init__(self, base: TextIO) -> None:
        self.base = base
        self._local = threading.local()

    @property
    def target(self) -> TextIO:
        """The running function's log; outside an invocation, where the process's stdout goes
        now (a handler made during an invocation keeps this object, and whoever replaced
        ``sys.stdout`` since, a test's capture say, must still get its writes)."""
        target: TextIO | None = getattr(self._local, "target", None)
        if target is not None:
            return target
        current = sys.stdout
        return self.base if current is self else current

    @contextmanager
    def scoped(self, target: TextIO | None, reader: Callable[[str], None] | None = None) -> Iterator[None]:
        saved = getattr(self._local, "target", None), getattr(self._local, "reader", None)
        self._local.target, self._local.reader = target, reader
        try:
            yield
        finally:
            self._local.target, self._local.reader = saved

    def write(self, text: str) -> int:
        written = self.target.write(text)
        reader: Callable[[str], None] | None = getattr(self._local, "reader", None)
        if reader is not None:
            reader(text)
        return written

    def flush(self) -> None:
        self.target.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()


_INSTALL_LOCK = threading.Lock()


def _scopes() -> tuple[ThreadEnviron, ThreadStdout]:
    """Put the per-thread ``os.environ`` and ``sys.stdout`` in place (once per process)."""
    with _INSTALL_LOCK:
        if not isinstance(os.environ, ThreadEnviron):
            # Replaced, not cleared: every variable stays readable through it.
            os.environ = ThreadEnviron(os.environ)  # type: ignore[assignment]  # noqa: B003
            # botocore sessions keep the environ they were made with: the handlers'
            # clients must come from a default session made with this one.
            boto3.DEFAULT_SESSION = None
        if not isinstance(sys.stdout, ThreadStdout):
            sys.stdout = ThreadStdout(sys.stdout)
        return os.environ, sys.stdout  # type: ignore[return-value]


class FunctionError(RuntimeError):
    """The handler raised (Lambda's ``FunctionError: Unhandled``)."""


@dataclass
class LambdaContext:
    """What Lambda passes as ``context`` (the attributes Powertools and our handlers read)."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return function_arn(self.function_name)

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self._started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


@dataclass
class LocalFunction:
    """A registered function: ``folder`` under ``functions/`` or a ``handler`` callable."""

    name: str
    environment: Mapping[str, str]
    folder: str | None = None
    handler: Handler | None = None
    timeout_seconds: int = 60
    memory_mb: int = 256
    #: Where the function's stdout goes (its logs and EMF metrics, CloudWatch's part in
    #: AWS); None: this process's stdout.
    log: TextIO | None = None
    #: CloudWatch's extraction of the EMF metrics in that stdout; None: not extracted.
    metrics: EmfMetrics | None = None
    #: Reload the handler when its folder's code changes (``dmsbus up``): an edit takes
    #: effect at the next invocation, as a deploy of new code does in AWS.
    watch_code: bool = False
    _loaded: Handler | None = field(default=None, repr=False)
    _code: tuple[tuple[str, int], ...] = field(default=(), repr=False)
    _checked: float = field(default=0.0, repr=False)
    _module: str | None = field(default=None, repr=False)
    #: One container: one invocation at a time.
    _busy: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.handler is None):
            raise ValueError(f"function {self.name}: give exactly one of folder and handler")
        if self.folder is not None and not (FUNCTIONS_ROOT / self.folder / "handler.py").is_file():
            raise ValueError(
                f"function {self.name}: {FUNCTIONS_ROOT / self.folder / 'handler.py'} does not exist"
            )

    def invoke(self, event: dict[str, Any]) -> Any:
        """Run the handler as Lambda would; its exception becomes ``FunctionError``."""
        context = LambdaContext(self.name, self.memory_mb, self.timeout_seconds)
        environ, stdout = _scopes()
        own = {**self.environment, "AWS_LAMBDA_FUNCTION_NAME": self.name}
        reader = self.metrics.reader() if self.metrics is not None else None
        with self._busy, stdout.scoped(self.log, reader), environ.scoped(own):
            try:
                return self._handler()(event, context)
            except Exception as exc:
                logger.debug("%s raised", self.name, exc_info=True)
                if self.log is not None:
                    traceback.print_exc(file=self.log)
                raise FunctionError(f"{self.name}: {type(exc).__name__}: {exc}") from exc

    def try_invoke(self, event: dict[str, Any]) -> tuple[bool, Any]:
        """``invoke`` when the container is free: ``(True, result)``; ``(False, None)`` at
        once when an invocation runs there (Lambda throttles a synchronous invocation that
        finds no free concurrency: local/lambda_service.py)."""
        if not self._busy.acquire(blocking=False):
            return False, None
        try:
            return True, self.invoke(event)
        finally:
            self._busy.release()

    def cold_start(self) -> None:
        """Drop the loaded module: the next invocation imports it again (a new container)."""
        self._loaded = None

    def _handler(self) -> Handler:
        if self._loaded is not None and self.watch_code and self.folder is not None:
            now = time.monotonic()
            if now - self._checked >= CODE_CHECK_SECONDS:
                self._checked = now
                if self._code_signature() != self._code:
                    logger.info("%s: its code changed, loading it again", self.name)
                    self._loaded = None
        if self._loaded is None:
            if self.handler is not None:
                self._loaded = self.handler
            else:
                self._code = self._code_signature()
                self._loaded = self._load()
        return self._loaded

    def _code_signature(self) -> tuple[tuple[str, int], ...]:
        """Every Python file of the function's folder with its modification time."""
        folder = FUNCTIONS_ROOT / str(self.folder)
        found = []
        for path in folder.rglob("*.py"):
            try:
                found.append((str(path), path.stat().st_mtime_ns))
            except OSError:  # an editor's lock link (.#handler.py), a file going away
                continue
        return tuple(sorted(found))

    def _load(self) -> Handler:
        path = FUNCTIONS_ROOT / str(self.folder) / "handler.py"
        if self.watch_code:
            # The folder's other modules are imported by package name (consumers.x.y): drop
            # them so that the new code's imports load them afresh too.
            package = str(self.folder).replace("/", ".")
            for loaded in [
                name for name in list(sys.modules) if name == package or name.startswith(package + ".")
            ]:
                sys.modules.pop(loaded, None)
            if self._module is not None:
                # The replaced container's module goes (its clients and connections with it).
                sys.modules.pop(self._module, None)
        module_name = f"_dmsbus_local_{self.name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        self._module = module_name
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise FunctionError(f"{self.name}: cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look it up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        handler: Handler = module.handler
        return handler
