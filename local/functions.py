"""Functions as the local Lambda service runs them: the deployed handler modules, loaded
fresh per "container", invoked in-process with their own environment and a Lambda context.

A function is either a handler file under ``functions/`` (``glue``, ``discovery``,
``consumers/log_changes``: ``handler.py``'s ``handler``, exactly what Lambda runs) or, for
local tools such as the demo's verifier, a callable.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

FUNCTIONS_ROOT = Path(__file__).resolve().parent.parent / "functions"
ACCOUNT = "123456789012"
REGION = "us-east-1"

logger = logging.getLogger("dmsbus.local.functions")

Handler = Callable[[dict[str, Any], Any], Any]

#: One invocation at a time in this process: each sets its function's environment in
#: ``os.environ`` (where the deployed code reads it), which is process-wide.
_INVOKE_LOCK = threading.RLock()


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
    _loaded: Handler | None = field(default=None, repr=False)

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
        output = contextlib.redirect_stdout(self.log) if self.log is not None else contextlib.nullcontext()
        with _INVOKE_LOCK, output, _environment({**self.environment, "AWS_LAMBDA_FUNCTION_NAME": self.name}):
            try:
                return self._handler()(event, context)
            except Exception as exc:
                logger.debug("%s raised", self.name, exc_info=True)
                if self.log is not None:
                    traceback.print_exc(file=self.log)
                raise FunctionError(f"{self.name}: {type(exc).__name__}: {exc}") from exc

    def cold_start(self) -> None:
        """Drop the loaded module: the next invocation imports it again (a new container)."""
        self._loaded = None

    def _handler(self) -> Handler:
        if self._loaded is None:
            self._loaded = self.handler if self.handler is not None else self._load()
        return self._loaded

    def _load(self) -> Handler:
        path = FUNCTIONS_ROOT / str(self.folder) / "handler.py"
        module_name = f"_dmsbus_local_{self.name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
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


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
