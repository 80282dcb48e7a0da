"""``python -m local.moto_server --port N``: the local moto server in a process of its own,
so its request handling runs beside the handlers instead of sharing their interpreter.

One response is encoded here rather than by moto's generic serializer: DynamoDB Streams
``GetRecords``. The serializer walks every attribute of every image against the API model,
about 1 ms per stream record, which made it the whole data path's bottleneck. The backend's
result is already the wire format but for creation times and binary values, so it is
written with ``json.dumps`` (``tests/local/test_moto_server.py`` checks both encodings agree).

And moto's Kinesis shard scans all its records on every ``GetRecords`` (to find those after
the iterator) and copies all their sequence numbers on every ``PutRecord`` (to find the last):
each call costs time in proportion to everything the shard ever held, so the local bus
slowed down the longer it ran. :func:`index_kinesis_shards` keeps each shard's sequence
numbers in a list, so a read is a binary search plus its own records and a put is an append,
with the same results (tests/local/test_moto_server.py compares them).

The server itself is werkzeug's, as in moto's ``ThreadedMotoServer``, but connections are
kept open between requests (:class:`KeepAliveHandler`). What moto works out again on every
request is remembered (:func:`cache_request_routing`, :func:`find_account_backends_once`),
``BatchWriteItem`` is answered directly too, and moto's XML RequestId regex skips JSON bodies.
Each has a test against moto's own behaviour.

One change is for fidelity, not speed: DynamoDB stream shards number their records from
the time they are made (:func:`start_stream_sequences_at_the_time`), as DynamoDB's grow
over time, where moto starts every shard at one constant.
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import logging
import signal
import socket
import threading
import time
from bisect import bisect_right
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from moto.core.serialize import TimestampSerializer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from local.aws import detach_moto_invocations

#: What moto's serializer sends for DynamoDB and DynamoDB Streams (JSON protocol 1.0).
JSON_1_0 = "application/x-amz-json-1.0"


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
        return 200, {"Content-Type": JSON_1_0}, encode_stream_records(result)

    setattr(DynamoDBStreamsHandler, "get_records", get_records)  # noqa: B010


def encode_batch_writes_directly() -> None:
    """Answer DynamoDB ``BatchWriteItem`` with ``json.dumps`` of moto's result.

    The result is a few plain values (consumed capacity, nothing unprocessed), but moto's
    generic serializer walked it against the API model at ~0.7 ms a request, a tenth of the
    server's time under the DMS stand-in's writes (tests/local/test_moto_server.py checks both
    encodings agree)."""
    from moto.dynamodb.responses import DynamoHandler

    write = DynamoHandler.batch_write_item

    def batch_write_item(self: DynamoHandler) -> tuple[int, dict[str, str], str]:
        result = write(self)
        return 200, {"Content-Type": JSON_1_0}, json.dumps(result.result, separators=(",", ":"))

    setattr(DynamoHandler, "batch_write_item", batch_write_item)  # noqa: B010


def enrich_only_xml_bodies() -> None:
    """Let moto look for an XML ``<RequestId>`` to fill in only where there can be one.

    moto runs a regular expression over every response body for it, JSON bodies of stream
    records included (5% of the server's time). A body without ``<RequestId>`` gets the same
    headers and stays as it is."""
    from moto.core.responses import BaseResponse

    enrich = BaseResponse._enrich_response

    def enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
        if isinstance(body, str) and "<RequestId>" not in body:
            return enrich(headers, "")[0], body
        return enrich(headers, body)

    setattr(BaseResponse, "_enrich_response", staticmethod(enrich_response))  # noqa: B010


def _sequence_numbers(shard: Any) -> list[int]:
    """The shard's sequence numbers in order, kept beside its records (rebuilt if anything
    else changed the records)."""
    numbers: list[int] | None = shard.__dict__.get("_dmsbus_sequence_numbers")
    if numbers is None or len(numbers) != len(shard.records):
        numbers = list(shard.records)
        shard._dmsbus_sequence_numbers = numbers
    return numbers


def _get_records(shard: Any, last_sequence_id: str, limit: int | None) -> tuple[list[Any], int, int]:
    """moto's ``Shard.get_records``: the records after ``last_sequence_id``, at most ``limit``."""
    numbers = _sequence_numbers(shard)
    last = int(last_sequence_id)
    start = bisect_right(numbers, last)
    chosen = numbers[start:] if limit is None else numbers[start : start + limit]
    records = [shard.records[number] for number in chosen]
    if not records:
        return [], last, 0
    newest = shard.records[numbers[-1]]
    return records, records[-1].sequence_number, int((newest.created_at - records[-1].created_at) * 1000)


_PUT_LOCK = threading.Lock()


def _put_record(shard: Any, partition_key: str, data: str, explicit_hash_key: str) -> str:
    """moto's ``Shard.put_record``: the next sequence number, appended (under a lock: the
    server is threaded, and two puts must not take the same number)."""
    from moto.kinesis.models import Record

    with _PUT_LOCK:
        numbers = _sequence_numbers(shard)
        sequence_number = (numbers[-1] if numbers else 0) + 1
        shard.records[sequence_number] = Record(partition_key, data, sequence_number, explicit_hash_key)
        numbers.append(sequence_number)  # after the record: a reader never sees a missing one
    return str(sequence_number)


def index_kinesis_shards() -> None:
    """Make moto's Kinesis ``GetRecords`` and ``PutRecord(s)`` independent of the shard's size."""
    from moto.kinesis.models import Shard

    setattr(Shard, "get_records", _get_records)  # noqa: B010
    setattr(Shard, "put_record", _put_record)  # noqa: B010
    setattr(Shard, "get_min_sequence_number", lambda shard: (_sequence_numbers(shard) or [0])[0])  # noqa: B010
    setattr(Shard, "get_max_sequence_number", lambda shard: (_sequence_numbers(shard) or [0])[-1])  # noqa: B010


#: Where a stream shard's sequence numbers start: above moto's constant, then nanoseconds.
FIRST_STREAM_SEQUENCE = 2 * 10**21


def start_stream_sequences_at_the_time() -> None:
    """Start each DynamoDB stream shard's sequence numbers at the time it is created.

    DynamoDB's sequence numbers grow over time ("a sequence number, reflecting the order in
    which the record was published to the stream": API_streams_StreamRecord), also from one
    stream of a table to the next (the conservative reading: the page is silent on that);
    consumers that keep the newest sequence per row (pg_mirror) rely on it. moto starts every
    shard at one constant, so after ``dmsbus up`` restarts (moto's state is gone, the mirror's
    is not) a table's new changes would number below the old ones and be skipped."""
    from moto.dynamodb.models.table import StreamShard

    if getattr(StreamShard, "_dmsbus_time_sequences", False):
        return
    create = StreamShard.__init__

    def timed(self: Any, *args: Any, **kwargs: Any) -> None:
        create(self, *args, **kwargs)
        if not isinstance(getattr(self, "starting_sequence_number", None), int):
            raise RuntimeError("moto's StreamShard no longer has an integer starting_sequence_number")
        self.starting_sequence_number = FIRST_STREAM_SEQUENCE + time.time_ns()

    setattr(StreamShard, "__init__", timed)  # noqa: B010
    setattr(StreamShard, "_dmsbus_time_sequences", True)  # noqa: B010


def cache_request_routing() -> None:
    """Remember, per host and per class, what moto works out again on every request.

    Finding a request's backend lists moto's package directory (``list_of_moto_modules``) and
    tries every service's URL patterns; finding its action inspects every member of the
    responses class. Together that was a quarter of the server's time per request. Both
    answers depend only on their argument (a host name, a class), so each is kept.
    """
    import moto.core.responses
    import moto.core.utils

    find_backend = DomainDispatcherApplication.get_backend_for_host
    backends: dict[str | None, Any] = {}

    def get_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
        if host not in backends:
            backends[host] = find_backend(self, host)
        return backends[host]

    setattr(DomainDispatcherApplication, "get_backend_for_host", get_backend_for_host)  # noqa: B010
    names = functools.cache(moto.core.utils.method_names_from_class)
    setattr(moto.core.responses, "method_names_from_class", names)  # noqa: B010


def find_account_backends_once() -> None:
    """Let moto look up an account's backends without its global lock once they exist.

    Every backend access (each request, and each DynamoDB stream record) went through
    ``BackendDict._create_account_specific_backend``, which takes a lock shared by all of
    moto and looks for the dict in a list of every service's dicts by equality, comparing
    their contents. With the server's threads all doing it, writes queued on that lock.
    Once an account's backends exist the answer cannot change, so it is remembered; an
    account removed since (moto's reset) takes moto's own path again."""
    from moto.core.base_backend import BackendDict

    create = BackendDict._create_account_specific_backend
    created: set[tuple[int, str]] = set()

    def create_once(self: BackendDict[Any], account_id: str) -> None:
        if (id(self), account_id) in created and dict.__contains__(self, account_id):
            return
        create(self, account_id)
        created.add((id(self), account_id))

    setattr(BackendDict, "_create_account_specific_backend", create_once)  # noqa: B010


class KeepAliveHandler(MotoRequestHandler):
    """Werkzeug's request handler, keeping the connection open between requests.

    Werkzeug's development server closes every connection after one response, because
    ``http.server`` cannot skip a request body the application left unread. So every SDK call
    paid a TCP connect, a server thread and a close. Here the body is read whole before the
    application runs and the response is sent with its length, so a connection serves request
    after request, as AWS's endpoints do. Idle connections close after :attr:`timeout` seconds.
    """

    protocol_version = "HTTP/1.1"
    timeout = 300

    def setup(self) -> None:
        super().setup()
        # A response goes out as two writes (head, body): without this, Nagle's algorithm
        # holds the body until the client acknowledges the head, 40 ms later on Linux.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run_wsgi(self) -> None:
        environ = self.make_environ()
        stream = environ["wsgi.input"]  # chunked bodies come dechunked, ending on their own
        length = int(self.headers.get("Content-Length") or 0)
        environ["wsgi.input"] = io.BytesIO(
            stream.read() if environ.get("wsgi.input_terminated") else stream.read(length)
        )
        environ["wsgi.input_terminated"] = True
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                getattr(result, "close", lambda: None)()
        except Exception:
            logging.getLogger(__name__).exception("moto failed on %s %s", self.command, self.path)
            started[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            chunks[:] = [b"moto failed on this request; see the moto server's log"]
            self.close_connection = True
        status, headers = started
        data = b"".join(chunks)
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in ("connection", "transfer-encoding") and (
                self.command == "HEAD" or name.lower() != "content-length"
            ):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)


def serve(port: int) -> BaseWSGIServer:
    """moto's WSGI application on 127.0.0.1:``port`` (``serve_forever`` runs it), a thread
    per connection."""
    application = DomainDispatcherApplication(create_backend_app)
    return make_server("127.0.0.1", port, application, threaded=True, request_handler=KeepAliveHandler)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.moto_server")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    detach_moto_invocations()
    encode_stream_records_directly()
    index_kinesis_shards()
    encode_batch_writes_directly()
    enrich_only_xml_bodies()
    cache_request_routing()
    find_account_backends_once()
    start_stream_sequences_at_the_time()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = serve(arguments.port)
    threading.Thread(target=server.serve_forever, name="moto-server", daemon=True).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
