"""``python -m local.moto_server --port N``: the local moto server in a process of its own,
so its request handling runs beside the handlers instead of sharing their interpreter.

One response is encoded here rather than by moto's generic serializer: DynamoDB Streams
``GetRecords``. The serializer walks every attribute of every image against the API model,
about 1 ms per stream record, which made it the whole data path's bottleneck. The backend's
result is already the wire format but for creation times and binary values, so it is
written with ``json.dumps`` (``tests/local/test_moto_server.py`` checks both encodings agree).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import signal
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from moto.core.serialize import TimestampSerializer
from moto.server import ThreadedMotoServer

from local.aws import detach_moto_invocations

#: What moto's serializer sends for DynamoDB Streams (JSON protocol 1.0).
STREAMS_CONTENT_TYPE = "application/x-amz-json-1.0"


def encode_stream_records(result: Mapping[str, Any]) -> str:
    """A DynamoDB Streams ``GetRecords`` result (moto's backend) as its response body."""
    return json.dumps(result, default=_wire, separators=(",", ":"))


def _wire(value: object) -> float | str:
    """What JSON cannot encode itself: timestamps as epoch seconds, binary as base64."""
    if isinstance(value, datetime):
        return TimestampSerializer._timestamp_unixtimestamp(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not part of a GetRecords response")


def encode_stream_records_directly() -> None:
    """Answer DynamoDB Streams ``GetRecords`` with :func:`encode_stream_records`."""
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    def get_records(self: DynamoDBStreamsHandler) -> tuple[int, dict[str, str], str]:
        limit = self._get_param("Limit")
        result = self.backend.get_records(self._get_param("ShardIterator"), 1000 if limit is None else limit)
        return 200, {"Content-Type": STREAMS_CONTENT_TYPE}, encode_stream_records(result)

    setattr(DynamoDBStreamsHandler, "get_records", get_records)  # noqa: B010


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.moto_server")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    detach_moto_invocations()
    encode_stream_records_directly()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=arguments.port, verbose=False)
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    main()
