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
slowed down the longer it ran. :data:`INDEX_KINESIS_SHARDS` keeps each shard's sequence
numbers in a list, so a read is a binary search plus its own records and a put is an append,
with the same results (tests/local/test_moto_server.py compares them).

The server itself is werkzeug's, as in moto's ``ThreadedMotoServer``, but connections are
kept open between requests (:class:`KeepAliveHandler`). What moto works out again on every
request is remembered (:data:`CACHE_REQUEST_ROUTING`, :data:`FIND_ACCOUNT_BACKENDS_ONCE`),
``BatchWriteItem`` is answered directly too, and moto's XML RequestId regex skips JSON bodies.
Each has a test against moto's own behaviour. All are :class:`local.moto_patches.Patch`
values (checked against moto, applied once, undoable), applied in this process only.

Two changes are for fidelity, not speed: DynamoDB stream shards number their records from
the time they are made (:data:`START_STREAM_SEQUENCES_AT_THE_TIME`), as DynamoDB's grow
over time, where moto starts every shard at one constant; and Lambda ``Invoke`` calls, both
asynchronous and synchronous, go to the local Lambda service through a queue
(:data:`QUEUE_INVOCATIONS`), where moto would run the function in Docker.
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
import uuid
from bisect import bisect_right
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from moto.awslambda.exceptions import LambdaClientError
from moto.core.serialize import TimestampSerializer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs.models import sqs_backends
from werkzeug.serving import BaseWSGIServer, make_server

from local.functions import INVOCATIONS_QUEUE
from local.lambda_service import EVENT, REPLY_QUEUE_PREFIX, REQUEST_RESPONSE, UNHANDLED, timeout_document
from local.moto_patches import Patch, apply, check

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


def _stream_records(_original: Any) -> Any:
    """DynamoDB Streams ``GetRecords`` answered with :func:`encode_stream_records`."""

    def get_records(self: Any) -> tuple[int, dict[str, str], str]:
        limit = self._get_param("Limit")
        result = self.backend.get_records(self._get_param("ShardIterator"), 1000 if limit is None else limit)
        return 200, {"Content-Type": JSON_1_0}, encode_stream_records(result)

    return get_records


#: Answer DynamoDB Streams ``GetRecords`` with :func:`encode_stream_records`.
ENCODE_STREAM_RECORDS = Patch(
    "moto.dynamodbstreams.responses.DynamoDBStreamsHandler", "get_records", ("self",), _stream_records
)


def _batch_writes(write: Any) -> Any:
    def batch_write_item(self: Any) -> tuple[int, dict[str, str], str]:
        result = write(self)
        return 200, {"Content-Type": JSON_1_0}, json.dumps(result.result, separators=(",", ":"))

    return batch_write_item


#: Answer DynamoDB ``BatchWriteItem`` with ``json.dumps`` of moto's result. The result is a
#: few plain values (consumed capacity, nothing unprocessed), but moto's generic serializer
#: walked it against the API model at ~0.7 ms a request, a tenth of the server's time under
#: the DMS stand-in's writes (tests/local/test_moto_server.py checks both encodings agree).
ENCODE_BATCH_WRITES = Patch(
    "moto.dynamodb.responses.DynamoHandler", "batch_write_item", ("self",), _batch_writes
)


def _enrich_xml_only(enrich: Any) -> Any:
    def enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
        if isinstance(body, str) and "<RequestId>" not in body:
            return enrich(headers, "")[0], body
        return enrich(headers, body)  # type: ignore[no-any-return]

    return enrich_response


#: Let moto look for an XML ``<RequestId>`` to fill in only where there can be one. moto runs
#: a regular expression over every response body for it, JSON bodies of stream records
#: included (5% of the server's time). A body without ``<RequestId>`` gets the same headers
#: and stays as it is.
ENRICH_ONLY_XML_BODIES = Patch(
    "moto.core.responses.BaseResponse", "_enrich_response", ("headers", "body"), _enrich_xml_only
)


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


def _min_sequence_number(shard: Any) -> int:
    return (_sequence_numbers(shard) or [0])[0]


def _max_sequence_number(shard: Any) -> int:
    return (_sequence_numbers(shard) or [0])[-1]


_SHARD = "moto.kinesis.models.Shard"

#: Make moto's Kinesis ``GetRecords`` and ``PutRecord(s)`` independent of the shard's size.
INDEX_KINESIS_SHARDS = (
    Patch(_SHARD, "get_records", ("self", "last_sequence_id", "limit"), lambda _: _get_records),
    Patch(
        _SHARD, "put_record", ("self", "partition_key", "data", "explicit_hash_key"), lambda _: _put_record
    ),
    Patch(_SHARD, "get_min_sequence_number", ("self",), lambda _: _min_sequence_number),
    Patch(_SHARD, "get_max_sequence_number", ("self",), lambda _: _max_sequence_number),
)

#: Where a stream shard's sequence numbers start: above moto's constant, then nanoseconds.
FIRST_STREAM_SEQUENCE = 2 * 10**21


def _timed(create: Any) -> Any:
    def timed(self: Any, account_id: str, table: Any) -> None:
        create(self, account_id, table)
        if not isinstance(getattr(self, "starting_sequence_number", None), int):
            raise RuntimeError("moto's StreamShard no longer has an integer starting_sequence_number")
        self.starting_sequence_number = FIRST_STREAM_SEQUENCE + time.time_ns()

    return timed


#: Start each DynamoDB stream shard's sequence numbers at the time it is created.
#:
#: DynamoDB's sequence numbers grow over time ("a sequence number, reflecting the order in
#: which the record was published to the stream": API_streams_StreamRecord), also from one
#: stream of a table to the next (the conservative reading: the page is silent on that);
#: consumers that keep the newest sequence per row (pg_mirror) rely on it. moto starts every
#: shard at one constant, so after ``dmsbus up`` restarts (moto's state is gone, the
#: mirror's is not) a table's new changes would number below the old ones and be skipped.
START_STREAM_SEQUENCES_AT_THE_TIME = Patch(
    "moto.dynamodb.models.table.StreamShard", "__init__", ("self", "account_id", "table"), _timed
)


def _cached_backends(find_backend: Any) -> Any:
    backends: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host not in backends:
            backends[host] = find_backend(self, host)
        return backends[host]

    return get_backend_for_host


#: Remember, per host and per class, what moto works out again on every request. Finding a
#: request's backend lists moto's package directory (``list_of_moto_modules``) and tries
#: every service's URL patterns; finding its action inspects every member of the responses
#: class. Together that was a quarter of the server's time per request. Both answers depend
#: only on their argument (a host name, a class), so each is kept.
CACHE_REQUEST_ROUTING = (
    Patch(
        "moto.moto_server.werkzeug_app.DomainDispatcherApplication",
        "get_backend_for_host",
        ("self", "host"),
        _cached_backends,
    ),
    Patch("moto.core.responses", "method_names_from_class", ("clazz",), functools.cache),
)


def _created_once(create: Any) -> Any:
    created: set[tuple[int, str]] = set()

    def create_once(self: Any, account_id: str) -> None:
        if (id(self), account_id) in created and dict.__contains__(self, account_id):
            return
        create(self, account_id)
        created.add((id(self), account_id))

    return create_once


#: Let moto look up an account's backends without its global lock once they exist. Every
#: backend access (each request, and each DynamoDB stream record) went through
#: ``BackendDict._create_account_specific_backend``, which takes a lock shared by all of moto
#: and looks for the dict in a list of every service's dicts by equality, comparing their
#: contents. With the server's threads all doing it, writes queued on that lock. Once an
#: account's backends exist the answer cannot change, so it is remembered; an account
#: removed since (moto's reset) takes moto's own path again.
FIND_ACCOUNT_BACKENDS_ONCE = Patch(
    "moto.core.base_backend.BackendDict",
    "_create_account_specific_backend",
    ("self", "account_id"),
    _created_once,
)


def _queue_invocations(invoke: Any) -> Any:
    def queue_or_invoke(self: Any, *arguments: Any) -> Any:
        function_name, qualifier, body, headers, response_headers = arguments
        kind = headers.get("X-Amz-Invocation-Type") or REQUEST_RESPONSE
        if kind not in (EVENT, REQUEST_RESPONSE):  # DryRun: moto's
            return invoke(self, *arguments)
        function = self.get_function(function_name, qualifier)  # unknown: Lambda's 404
        payload = (body.decode() if isinstance(body, bytes) else body) or "{}"
        try:
            json.loads(payload)
        except ValueError as exc:  # Lambda refuses the request before running anything
            raise LambdaClientError(
                "InvalidRequestContentException", f"Could not parse request body into json: {exc}"
            ) from exc
        queues = sqs_backends[self.account_id][self.region_name]
        queues.create_queue(INVOCATIONS_QUEUE)  # moto returns the queue when it exists
        if kind == EVENT:
            queues.send_message(
                INVOCATIONS_QUEUE,
                json.dumps({"function": function.function_name, "payload": payload, "attempt": 1}),
            )
            response_headers["Content-Length"] = "0"
            return b""
        return _invoke_and_wait(queues, function, payload, response_headers)

    return queue_or_invoke


def _invoke_and_wait(queues: Any, function: Any, payload: str, response_headers: Any) -> bytes:
    """Queue a synchronous invocation with a reply queue of its own, and wait on that queue
    (in this request's thread) for the function's outcome, at most its ``Timeout``."""
    request_id = str(uuid.uuid4())
    reply_queue = f"{REPLY_QUEUE_PREFIX}{request_id}"
    timeout = float(function.timeout)
    started = time.monotonic()
    queue = queues.create_queue(reply_queue)
    try:
        queues.send_message(
            INVOCATIONS_QUEUE,
            json.dumps(
                {
                    "function": function.function_name,
                    "payload": payload,
                    "invocationType": REQUEST_RESPONSE,
                    "requestId": request_id,
                    "reply": reply_queue,
                    "deadline": time.time() + timeout,
                }
            ),
        )
        outcome = _wait_for_reply(queues, queue, reply_queue, started + timeout)
    finally:
        queues.delete_queue(reply_queue)
    if outcome is None:  # the error names the configured timeout, as Lambda's does
        outcome = {"payload": json.dumps(timeout_document(request_id, timeout)), "functionError": UNHANDLED}
    if outcome.get("throttled"):
        raise ThrottledError(str(outcome["throttled"]))
    response_headers["X-Amz-Executed-Version"] = function.version
    if outcome.get("functionError"):
        response_headers["X-Amz-Function-Error"] = outcome["functionError"]
    answer = str(outcome["payload"]).encode()
    response_headers["Content-Length"] = str(len(answer))
    return answer


#: The message of Lambda's throttle (below).
THROTTLE_MESSAGE = "Rate Exceeded."


class ThrottledError(LambdaClientError):
    """Lambda's answer to a synchronous invocation that finds no free concurrency: HTTP 429
    ``TooManyRequestsException`` (API_Invoke, Errors), with the ``Reason``, ``Type`` and
    ``message`` members of the API model's error shape. The message and ``Type`` are those
    Lambda's answers carry (``{"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
    "Type": "User", "message": "Rate Exceeded."}``); no reference page spells them out."""

    code = 429

    def __init__(self, reason: str) -> None:
        super().__init__("TooManyRequestsException", THROTTLE_MESSAGE)
        self.description = json.dumps({"Reason": reason, "Type": "User", "message": THROTTLE_MESSAGE})


def _wait_for_reply(queues: Any, queue: Any, name: str, deadline: float) -> dict[str, Any] | None:
    """The reply's body, or None when none came before ``deadline`` (monotonic seconds).
    moto's ``Queue.wait_for_messages`` wakes as soon as a message is added."""
    while True:
        messages = queues.receive_message(name, 1, 0, 30)
        if messages:
            reply: dict[str, Any] = json.loads(messages[0].body)
            return reply
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        queue.wait_for_messages(left)


#: Invocations go to the local Lambda service, through a queue of moto's SQS
#: (``INVOCATIONS_QUEUE``): moto would run the function in Docker.
#:
#: - ``InvocationType=Event``: Lambda queues the event, answers 202 and runs it later,
#:   retrying twice on an error (invocation-async, invocation-async-error-handling). The
#:   patch queues it and answers at once; the local service runs and retries it.
#: - ``RequestResponse`` (the default): Lambda runs the function and keeps the connection
#:   open until it returns or times out; the answer is 200 with the function's response as
#:   the payload, or its error document with ``X-Amz-Function-Error`` set (API_Invoke). The
#:   patch queues it with a reply queue of its own (made in moto's SQS, deleted after) and
#:   waits on that queue, in this request's thread, for at most the function's ``Timeout``;
#:   the local service runs it once and sends the outcome there. None by then: Lambda's
#:   ``Sandbox.Timedout`` error, ``Task timed out after N.NN seconds`` with the configured
#:   ``Timeout``. When the function's one container is busy the service does not run it
#:   but says so, and the answer is Lambda's throttle (:class:`ThrottledError`: 429
#:   ``TooManyRequestsException``, Reason ``ReservedFunctionConcurrentInvocationLimitExceeded``),
#:   which a caller retries; Lambda throttles at the reserved concurrency (2 for a schema
#:   function), local mode at one.
#: - ``DryRun`` is moto's. An unknown function is Lambda's 404 (moto's ``get_function``), a
#:   payload that is not JSON Lambda's ``InvalidRequestContentException``.
QUEUE_INVOCATIONS = Patch(
    "moto.awslambda.models.LambdaBackend",
    "invoke",
    ("self", "function_name", "qualifier", "body", "headers", "response_headers"),
    _queue_invocations,
)


def _unchanged(original: Any) -> Any:
    return original


_SQS = "moto.sqs.models.SQSBackend"

#: What :data:`QUEUE_INVOCATIONS` calls in moto, never replaced but checked as a patch's
#: target is (the server refuses to start when one changed).
QUEUE_INVOCATIONS_CALLS = (
    Patch(
        "moto.awslambda.models.LambdaBackend",
        "get_function",
        ("self", "function_name_or_arn", "qualifier"),
        _unchanged,
    ),
    Patch(_SQS, "create_queue", ("self", "name", "tags", "kwargs"), _unchanged),
    Patch(_SQS, "delete_queue", ("self", "queue_name"), _unchanged),
    Patch(
        _SQS,
        "send_message",
        (
            "self",
            "queue_name",
            "message_body",
            "message_attributes",
            "delay_seconds",
            "deduplication_id",
            "group_id",
            "system_attributes",
            "validate_group_id",
        ),
        _unchanged,
    ),
    Patch(
        _SQS,
        "receive_message",
        (
            "self",
            "queue_name",
            "count",
            "wait_seconds_timeout",
            "visibility_timeout",
            "message_attribute_names",
        ),
        _unchanged,
    ),
    Patch("moto.sqs.models.Queue", "wait_for_messages", ("self", "timeout"), _unchanged),
)


def _deliver_nothing(_original: Any) -> Any:
    def deliver_nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    return deliver_nothing


#: Leave event delivery to the local Lambda service. moto invokes a mapped function itself
#: on every stream write (in Docker) and, when that returns, drops the DynamoDB stream's
#: records. Here functions are metadata only and the local Lambda service polls the
#: streams, as Lambda does in AWS.
DETACH_MOTO_INVOCATIONS = (
    Patch(
        "moto.awslambda.models.LambdaBackend",
        "send_dynamodb_items",
        ("self", "function_arn", "items", "source"),
        _deliver_nothing,
    ),
    Patch(
        "moto.awslambda.models.LambdaBackend",
        "send_kinesis_message",
        (
            "self",
            "function_name",
            "kinesis_stream",
            "kinesis_partition_key",
            "kinesis_sequence_number",
            "kinesis_data",
            "kinesis_shard_id",
        ),
        _deliver_nothing,
    ),
)

#: Every patch the local moto server runs with, applied in its own process only.
PATCHES: tuple[Patch, ...] = (
    *DETACH_MOTO_INVOCATIONS,
    QUEUE_INVOCATIONS,
    ENCODE_STREAM_RECORDS,
    *INDEX_KINESIS_SHARDS,
    ENCODE_BATCH_WRITES,
    ENRICH_ONLY_XML_BODIES,
    *CACHE_REQUEST_ROUTING,
    FIND_ACCOUNT_BACKENDS_ONCE,
    START_STREAM_SEQUENCES_AT_THE_TIME,
)


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
    for used in QUEUE_INVOCATIONS_CALLS:
        check(used)
    for patch in PATCHES:
        apply(patch)
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
