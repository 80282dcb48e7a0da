"""One moto server on 127.0.0.1 standing in for DynamoDB, DynamoDB Streams, Kinesis, SQS and
Lambda's event-source-mapping API, and boto3 clients that talk to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from local.net import free_port

REGION = "us-east-1"
#: moto accepts any credentials; these only keep boto3 from looking for real ones.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


@dataclass
class LocalAws:
    """A moto server in a process of its own (``start``/``stop``; its request handling then
    does not compete with the handlers for this interpreter) and clients bound to it."""

    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60.0) -> str:
        self.port = self.port or free_port()
        root = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local.moto_server", "--port", str(self.port)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "functions")])},
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the moto server exited with status {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self.endpoint_url
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the moto server did not listen on port {self.port} in {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            # One client serves every poller thread (a shard per consumer and table).
            config=Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=64),
            **LOCAL_CREDENTIALS,
        )

    def environment(self) -> dict[str, str]:
        """What the deployed handlers' boto3 clients need to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
        }


def detach_moto_invocations() -> None:
    """Leave event delivery to the local Lambda service.

    moto invokes a mapped function itself on every stream write (in Docker) and, when that
    returns, drops the DynamoDB stream's records. Here functions are metadata only and the
    local Lambda service polls the streams, as Lambda does in AWS.
    """
    from moto.awslambda.models import LambdaBackend

    def deliver_nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    setattr(LambdaBackend, "send_dynamodb_items", deliver_nothing)  # noqa: B010
    setattr(LambdaBackend, "send_kinesis_message", deliver_nothing)  # noqa: B010
