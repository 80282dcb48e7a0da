"""One moto server on 127.0.0.1 standing in for DynamoDB, DynamoDB Streams, Kinesis, SQS and
Lambda's event-source-mapping API, and boto3 clients that talk to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.parsers import ResponseParserFactory

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
            env=dict(os.environ),
            # Its own session: a terminal's Ctrl-C is for the caller, which stops the server
            # once it has drained (dmsbus up), not for moto mid-drain.
            start_new_session=True,
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

    def client(self, service: str, *, wire_records: bool = False, validate: bool = True) -> Any:
        """A client of the local server; with ``wire_records``, its ``GetRecords`` results are
        the JSON the server sent (see :class:`WireRecords`). ``validate=False`` skips botocore's
        check of every request parameter against the API model, for local mode's own clients
        (the DMS stand-in, the local Lambda service), whose requests are built by code, not
        passed in by a user; moto still rejects what AWS would."""
        session: Any = wire_records_session() if wire_records else boto3
        return session.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            # One client serves every poller thread (a shard per consumer and table).
            config=Config(
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=64,
                parameter_validation=validate,
            ),
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


class WireRecords(ResponseParserFactory):
    """Response parsers that hand a stream's successful ``GetRecords`` result over as the JSON
    it arrived in, and parse everything else as botocore does.

    Lambda's events carry what the wire carries: DynamoDB JSON images, base64 data and epoch
    seconds. botocore's parser walks every attribute of every record against the API model
    to make datetimes and bytes of them, and the local Lambda service then turned them back;
    that walk was a large part of the local data path's time per change. Errors (an expired
    iterator, throttling) still go through botocore's parser, so retries and exceptions are
    unchanged.
    """

    def create_parser(self, protocol_name: str) -> Any:
        return _WireRecordsParser(super().create_parser(protocol_name))


def wire_records_session() -> boto3.Session:
    """A boto3 session whose clients parse responses with :class:`WireRecords`."""
    core = botocore.session.get_session()
    core.register_component("response_parser_factory", WireRecords())
    return boto3.Session(botocore_session=core)


class _WireRecordsParser:
    def __init__(self, parser: Any) -> None:
        self._parser = parser

    def parse(self, response: dict[str, Any], shape: Any) -> Any:
        if shape is None or shape.name != "GetRecordsOutput" or response["status_code"] >= 300:
            return self._parser.parse(response, shape)
        parsed: dict[str, Any] = json.loads(response["body"])
        parsed["ResponseMetadata"] = {
            "HTTPStatusCode": response["status_code"],
            "HTTPHeaders": response["headers"],
        }
        return parsed
