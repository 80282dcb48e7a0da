"""The local Lambda service: Lambda's stream pollers, on one machine.

It reads the event source mappings registered through the Lambda API on the moto server
(so discovery's own CreateEventSourceMapping calls drive it, as in AWS), polls every shard
of each mapped DynamoDB stream or Kinesis stream, and invokes the registered function
in-process with Lambda's events. Per mapping it honours what the deployed mappings set:

- ``BatchSize`` and ``MaximumBatchingWindowInSeconds`` (wait for a full batch or the window);
- ``StartingPosition`` for shards it has no checkpoint of;
- ``ReportBatchItemFailures``: the checkpoint moves to just before the lowest reported
  sequence number and the batch is handed again from there;
- ``BisectBatchOnFunctionError``: a batch whose invocation raised is split in two;
- ``MaximumRetryAttempts`` and ``MaximumRecordAgeInSeconds`` (-1: unbounded): then the
  batch's invocation record goes to the ``DestinationConfig.OnFailure`` destination in
  Lambda's format (an S3 bucket: the record with the whole invocation in ``payload``, under
  Lambda's key; an SQS queue: the record without it), and the shard moves on;
- parent shards are read to their end before their children.

Checkpoints are saved to a file after every batch, so a restarted service repeats at most
the batch in flight (at-least-once, like Lambda). ``schedules`` invoke a function every so
many seconds (discovery's sweep); ``table_rules`` stand for the EventBridge rule on CloudTrail
``CreateTable`` calls: the service lists the tables every so often and invokes the rule's
function with the event that rule delivers for each table that appeared.

Invocations through the Lambda API (``Invoke``: the glue and discovery asking a schema
function for a table) are queued by the local moto server (``local.moto_server.
QUEUE_INVOCATIONS``) and run here, each in a thread of its own:
- asynchronous ones (``InvocationType=Event``): on an error the service runs it again after
  one minute and after two more, as Lambda does (invocation-async-error-handling); a third
  failure is kept in ``scheduled_errors``;
- synchronous ones (``RequestResponse``): run once, never retried (Lambda leaves retrying a
  synchronous invocation to its caller: invocation-retries), and the outcome goes to the
  invocation's reply queue, where the moto server waits for it: the function's return value
  as JSON, or its error document (python-exceptions: ``errorMessage``, ``errorType``,
  ``stackTrace``), which moto answers with ``X-Amz-Function-Error: Unhandled`` (API_Invoke).
  Their failures are the caller's to see, not ``scheduled_errors``. One that finds its
  function's container busy is not run but throttled, as Lambda throttles a synchronous
  invocation that finds no free concurrency (API_Invoke: ``TooManyRequestsException``,
  HTTP 429, ``Reason`` ``ReservedFunctionConcurrentInvocationLimitExceeded`` at the
  function's reserved concurrency; lambda-concurrency, configuration-concurrency): the moto
  server answers it 429 and the caller retries. Local concurrency is one per function (its
  one container, ``LocalFunction``), not the function's reserved concurrency (2 for a
  schema function in AWS). Asynchronous invocations and stream batches wait for the
  container instead, as Lambda keeps their events and retries them itself.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import dropwhile
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from local.functions import (
    ACCOUNT,
    INVOCATIONS_QUEUE,
    REGION,
    FunctionError,
    LocalFunction,
    function_arn,
)
from local.streams import (
    Shard,
    SharedKinesisSource,
    StreamSource,
    arrival_of,
    sequence_of,
    source_for,
)

logger = logging.getLogger("dmsbus.local.lambda")

#: Lambda's own limit on one invocation's payload.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


#: Lambda retries an asynchronous invocation that failed after one minute, then after two
#: more (invocation-async-error-handling).
ASYNC_RETRY_DELAYS = (60, 120)

#: ``Invoke``'s ``InvocationType`` values the local moto server queues (API_Invoke).
EVENT = "Event"
REQUEST_RESPONSE = "RequestResponse"
#: ``X-Amz-Function-Error`` of an error Lambda reports for the function: an exception it
#: raised, a timeout (API_Invoke).
UNHANDLED = "Unhandled"
#: What a synchronous invocation's reply queue is named: this, then the request id.
REPLY_QUEUE_PREFIX = "dmsbus-local-lambda-reply-"
#: The largest reply the queue carries: moto's SQS message limit, 1 MiB (Lambda allows a
#: 6 MB response; the schema functions' are a few hundred bytes).
MAX_REPLY_BYTES = 1_048_576
#: Why Lambda throttles a synchronous invocation that would exceed the function's reserved
#: concurrency (API_Invoke; the ``Reason`` of ``TooManyRequestsException``, whose values
#: the Lambda API model lists). Locally the function's one container is its concurrency.
THROTTLE_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"


def error_document(error: FunctionError, request_id: str) -> dict[str, Any]:
    """What the Python runtime returns for an exception the handler raised: its message,
    its type and the stack from the handler down (python-exceptions; the runtime adds the
    ``requestId``)."""
    cause = error.__cause__ if error.__cause__ is not None else error
    runtime = str(Path(__file__).with_name("functions.py"))  # the runtime leaves its own frames out
    frames = list(
        dropwhile(lambda frame: frame.filename == runtime, traceback.extract_tb(cause.__traceback__))
    )
    return {
        "errorMessage": str(cause),
        "errorType": type(cause).__name__,
        "requestId": request_id,
        # As the runtime formats them: file, line, function and source line, no column marks.
        "stackTrace": traceback.format_list([(f.filename, f.lineno or 0, f.name, f.line) for f in frames]),
    }


def timeout_document(request_id: str, timeout_seconds: float) -> dict[str, str]:
    """What Lambda returns when the function outlived its timeout: an Unhandled error
    (API_Invoke: "Unhandled errors include ... function timeouts") naming the function's
    configured ``Timeout``, not the time measured, in the form Lambda's answers take today;
    no reference page spells that form out (older answers held only ``errorMessage``:
    "<time> <request id> Task timed out after 3.00 seconds" for a 3-second timeout)."""
    return {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after {timeout_seconds:.2f} seconds",
    }


def reply(payload: str, function_error: str | None = None) -> str:
    """A synchronous invocation's outcome as the reply queue carries it."""
    return json.dumps({"payload": payload, "functionError": function_error})


def throttled_reply(reason: str = THROTTLE_REASON) -> str:
    """The reply of a synchronous invocation Lambda throttled instead of running: the moto
    server answers it with ``TooManyRequestsException`` (HTTP 429) and this ``Reason``."""
    return json.dumps({"throttled": reason})


class Checkpoints:
    """The last sequence number handled per mapping and shard, kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._positions: dict[str, str] = {}
        if path.exists():
            try:
                self._positions = dict(json.loads(path.read_text()))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}: not a checkpoint file ({exc}); delete it to start over") from exc

    def get(self, mapping: str, shard: str) -> str | None:
        with self._lock:
            return self._positions.get(f"{mapping}/{shard}")

    def done(self, mapping: str, shard: str) -> bool:
        return self.get(mapping, f"{shard}#done") is not None

    def set(self, mapping: str, shard: str, sequence: str) -> None:
        with self._lock:
            self._positions[f"{mapping}/{shard}"] = sequence
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self._positions, indent=0, sort_keys=True))
            os.replace(temporary, self.path)

    def finish(self, mapping: str, shard: str) -> None:
        self.set(mapping, f"{shard}#done", "done")


@dataclass
class MappingStats:
    """What one event source mapping did; read by the demo's progress line."""

    function: str = ""
    invocations: int = 0
    records: int = 0
    errors: int = 0
    retried_records: int = 0
    to_destination: int = 0
    #: Seconds between a record's arrival in the stream and its successful handling.
    last_lag: float = 0.0


@dataclass(frozen=True)
class Schedule:
    function: str
    every_seconds: float
    #: None: EventBridge's scheduled event, made anew for each invocation.
    event: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TableRule:
    """A function invoked with CloudTrail's ``CreateTable`` event for each new table."""

    function: str
    every_seconds: float = 0.5


def scheduled_event(rule: str) -> dict[str, Any]:
    """What EventBridge delivers to a schedule rule's target ("Scheduled Event")."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def create_table_event(table: str) -> dict[str, Any]:
    """What EventBridge delivers for a CloudTrail-recorded DynamoDB ``CreateTable`` call."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.dynamodb",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "eventSource": "dynamodb.amazonaws.com",
            "eventName": "CreateTable",
            "awsRegion": REGION,
            "requestParameters": {"tableName": table},
            "responseElements": {"tableDescription": {"tableName": table, "tableStatus": "CREATING"}},
        },
    }


class LocalLambdaService:
    def __init__(
        self,
        *,
        functions: Mapping[str, LocalFunction],
        lambda_client: Any,
        dynamodbstreams: Any,
        kinesis: Any,
        sqs: Any,
        state_dir: Path,
        s3: Any = None,
        schedules: Sequence[Schedule] = (),
        dynamodb: Any = None,
        table_rules: Sequence[TableRule] = (),
        poll_seconds: float = 0.02,
        max_poll_seconds: float = 0.25,
        shared_poll_seconds: float = 0.05,
        refresh_seconds: float = 1.0,
        retry_backoff_seconds: float = 0.05,
        async_retry_delays: Sequence[int] = ASYNC_RETRY_DELAYS,
    ) -> None:
        self.functions = dict(functions)
        self.lambda_client = lambda_client
        self.dynamodbstreams = dynamodbstreams
        self.kinesis = kinesis
        self.sqs = sqs
        self.s3 = s3
        self.checkpoints = Checkpoints(state_dir / "checkpoints.json")
        self.schedules = list(schedules)
        self.dynamodb = dynamodb
        self.table_rules = list(table_rules)
        if self.table_rules and dynamodb is None:
            raise ValueError("table_rules need a dynamodb client to list the tables")
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        #: The longest pause of a shared Kinesis shard reader between empty reads: it serves
        #: every mapping of the shard, whose reads wait on it rather than poll.
        self.shared_poll_seconds = shared_poll_seconds
        self.refresh_seconds = refresh_seconds
        self.retry_backoff_seconds = retry_backoff_seconds
        #: Seconds before each retry of a failed asynchronous invocation.
        self.async_retry_delays = tuple(async_retry_delays)
        self._async_queue = ""  # made at start()
        self.stats: dict[str, MappingStats] = {}
        self.scheduled_errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pollers: dict[tuple[str, str], ShardPoller] = {}
        self._shared: dict[str, SharedKinesisSource] = {}
        self._warned: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._spawn(self._watch_mappings, "esm-watcher")
        self._async_queue = self.sqs.create_queue(QueueName=INVOCATIONS_QUEUE)["QueueUrl"]
        self._spawn(self._run_async_invocations, "async-invocations")
        for schedule in self.schedules:
            self._spawn(functools.partial(self._run_schedule, schedule), f"schedule-{schedule.function}")
        for rule in self.table_rules:
            self._spawn(functools.partial(self._run_table_rule, rule), f"rule-{rule.function}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for poller in list(self._pollers.values()):
            poller.join(timeout=30)
        self._threads.clear()
        self._pollers.clear()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"local-lambda-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def handled(self, function: str) -> int:
        """Records the function has handled, over all its mappings."""
        return sum(stats.records for stats in list(self.stats.values()) if stats.function == function)

    def lag_seconds(self, function: str) -> float:
        return max((s.last_lag for s in list(self.stats.values()) if s.function == function), default=0.0)

    def invoke(self, name: str, event: Mapping[str, Any]) -> Any:
        """A direct (RequestResponse) invocation of a registered function."""
        return self.functions[name].invoke(dict(event))

    # -- schedules -----------------------------------------------------------------------

    def _invoke_async(self, function: str, event: Mapping[str, Any], why: str) -> None:
        """An asynchronous invocation (a schedule, a rule): Lambda would retry it; here the
        next tick or sweep does, and the failure is kept for the caller to see."""
        try:
            self.invoke(function, event)
        except FunctionError as exc:
            self.scheduled_errors.append(str(exc))
            logger.warning("%s (%s) failed: %s", function, why, exc)

    def _run_schedule(self, schedule: Schedule) -> None:
        while not self._stop.is_set():
            event = (
                scheduled_event(f"{schedule.function}-schedule") if schedule.event is None else schedule.event
            )
            self._invoke_async(schedule.function, event, "schedule")
            self._stop.wait(schedule.every_seconds)

    def _run_table_rule(self, rule: TableRule) -> None:
        known: set[str] | None = None  # tables there at the start are the sweep's
        while not self._stop.is_set():
            try:
                tables = self._tables()
            except Exception:  # e.g. moto going away on stop; the next round tries again
                logger.exception("listing tables for %s failed", rule.function)
            else:
                for table in sorted(tables - known) if known is not None else ():
                    self._invoke_async(rule.function, create_table_event(table), f"new table {table}")
                known = tables
            self._stop.wait(rule.every_seconds)

    def _tables(self) -> set[str]:
        tables: set[str] = set()
        for page in self.dynamodb.get_paginator("list_tables").paginate():
            tables.update(page.get("TableNames", []))
        return tables

    def _run_async_invocations(self) -> None:
        """Lambda's event queue: each queued invocation run in a thread of its own."""
        while not self._stop.is_set():
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=self._async_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
                ).get("Messages", [])
            except Exception:  # e.g. moto going away on stop; the next round tries again
                logger.exception("reading the asynchronous invocations failed")
                self._stop.wait(1)
                continue
            for message in messages:
                invocation = json.loads(message["Body"])
                synchronous = invocation.get("invocationType") == REQUEST_RESPONSE
                thread = threading.Thread(
                    target=self._run_sync_invocation if synchronous else self._run_async_invocation,
                    args=(invocation,),
                    name=f"local-lambda-{'sync' if synchronous else 'async'}-{invocation['function']}",
                    daemon=True,
                )
                # Moto answers the long poll as a message arrives; a synchronous caller waits
                # only for the thread to start, not for the delete's round trip.
                thread.start()
                self.sqs.delete_message(QueueUrl=self._async_queue, ReceiptHandle=message["ReceiptHandle"])

    def _run_async_invocation(self, invocation: Mapping[str, Any]) -> None:
        try:
            self._try_async_invocation(invocation)
        except Exception:  # a thread of its own: say what went wrong, never die silently
            logger.exception("asynchronous invocation %s failed", invocation)

    def _try_async_invocation(self, invocation: Mapping[str, Any]) -> None:
        function, attempt = invocation["function"], int(invocation["attempt"])
        try:
            self.invoke(function, json.loads(invocation["payload"]))
        except FunctionError as exc:
            if attempt > len(self.async_retry_delays):
                self.scheduled_errors.append(str(exc))
                logger.warning("%s (asynchronous invocation) failed %d times: %s", function, attempt, exc)
                return
            logger.warning("%s (asynchronous invocation) failed, retried later: %s", function, exc)
            self.sqs.send_message(
                QueueUrl=self._async_queue,
                MessageBody=json.dumps({**invocation, "attempt": attempt + 1}),
                DelaySeconds=self.async_retry_delays[attempt - 1],
            )
        except KeyError:
            logger.warning("asynchronous invocation of %s: no such local function", function)

    def _run_sync_invocation(self, invocation: Mapping[str, Any]) -> None:
        try:
            self._try_sync_invocation(invocation)
        except Exception:  # a thread of its own: say what went wrong, never die silently
            logger.exception("synchronous invocation %s failed", invocation)

    def _try_sync_invocation(self, invocation: Mapping[str, Any]) -> None:
        """Run the function once, or throttle it when its container is busy, and send the
        outcome to the invocation's reply queue."""
        function = str(invocation["function"])
        if time.time() > float(invocation["deadline"]):
            # The service was not reading when it was queued: its caller has had its answer.
            logger.warning("synchronous invocation of %s: its caller stopped waiting before it ran", function)
            return
        outcome = self._sync_outcome(function, invocation)
        if outcome is None:
            logger.info("synchronous invocation of %s throttled: its one local container is busy", function)
            self._reply(invocation, throttled_reply())
            return
        payload, function_error = outcome
        answer = reply(payload, function_error)
        if len(answer.encode()) > MAX_REPLY_BYTES:
            too_large = {
                "errorMessage": f"Response payload size ({len(payload.encode())} bytes) exceeded what "
                f"local mode carries ({MAX_REPLY_BYTES} bytes)",
                "errorType": "Function.ResponseSizeTooLarge",
            }
            answer = reply(json.dumps(too_large), UNHANDLED)
        self._reply(invocation, answer)

    def _sync_outcome(self, function: str, invocation: Mapping[str, Any]) -> tuple[str, str | None] | None:
        """The payload Lambda answers with, and its ``X-Amz-Function-Error`` (None: none);
        None when the function's container is busy: Lambda throttles the invocation (its
        caller gets 429 and may retry), where waiting for the container would be nicer."""
        request_id = str(invocation["requestId"])
        error: dict[str, Any]
        if function not in self.functions:
            logger.warning("synchronous invocation of %s: no such local function", function)
            error = {
                "errorMessage": f"{function} is in Lambda's API but not registered with local mode",
                "errorType": "LocalFunctionNotRegistered",
            }
            return json.dumps(error), UNHANDLED
        try:
            ran, result = self.functions[function].try_invoke(json.loads(invocation["payload"]))
        except FunctionError as exc:
            logger.warning("%s (synchronous invocation) failed: %s", function, exc)
            return json.dumps(error_document(exc, request_id)), UNHANDLED
        if not ran:
            return None
        try:
            return json.dumps(result), None
        except (TypeError, ValueError) as exc:  # the runtime's answer to a result JSON cannot hold
            error = {
                "errorMessage": f"Unable to marshal response: {exc}",
                "errorType": "Runtime.MarshalError",
                "requestId": request_id,
                "stackTrace": [],
            }
            return json.dumps(error), UNHANDLED

    def _reply(self, invocation: Mapping[str, Any], body: str) -> None:
        # The reply queue is on the same server as the invocations' queue.
        url = f"{self._async_queue.rsplit('/', 1)[0]}/{invocation['reply']}"
        try:
            self.sqs.send_message(QueueUrl=url, MessageBody=body)
        except self.sqs.exceptions.QueueDoesNotExist:
            # Moto deletes the queue when the function's timeout is over.
            logger.warning(
                "synchronous invocation of %s outlived its timeout: its caller had a timeout error",
                invocation["function"],
            )

    # -- mappings ------------------------------------------------------------------------

    def _watch_mappings(self) -> None:
        while not self._stop.is_set():
            try:
                self._refresh()
            except Exception:  # keep polling what runs; the next refresh tries again
                logger.exception("reading event source mappings failed")
            self._stop.wait(self.refresh_seconds)

    def mappings(self) -> list[dict[str, Any]]:
        mappings: list[dict[str, Any]] = []
        for page in self.lambda_client.get_paginator("list_event_source_mappings").paginate():
            mappings.extend(page.get("EventSourceMappings", []))
        return mappings

    def _refresh(self) -> None:
        live: set[str] = set()
        for mapping in self.mappings():
            if mapping.get("State", "Enabled") not in ("Enabled", "Creating", "Enabling"):
                continue
            name = mapping["FunctionArn"].rsplit(":", 1)[1]
            function = self.functions.get(name)
            if function is None:
                if name not in self._warned:
                    self._warned.add(name)
                    logger.warning("mapping %s: function %s is not registered locally", mapping["UUID"], name)
                continue
            live.add(mapping["UUID"])
            self.stats.setdefault(mapping["UUID"], MappingStats(function=name))
            source = self._source(mapping["EventSourceArn"])
            try:
                shards = source.shards()
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                    continue  # the table or stream is gone; discovery deletes its mapping
                raise
            self._start_ready(mapping, function, source, shards)
        for key, poller in list(self._pollers.items()):
            if key[0] not in live:
                poller.stop()
            if not poller.is_alive():
                del self._pollers[key]

    def _source(self, arn: str) -> StreamSource:
        """A Kinesis stream is read once per shard for all its mappings (SharedKinesisSource);
        a DynamoDB stream has one mapping, the glue's, which reads it itself."""
        if arn.split(":")[2] != "kinesis":
            return source_for(arn, dynamodbstreams=self.dynamodbstreams, kinesis=self.kinesis)
        shared = self._shared.get(arn)
        if shared is None:
            shared = self._shared[arn] = SharedKinesisSource(
                arn,
                self.kinesis,
                self._stop,
                poll_seconds=self.poll_seconds,
                max_poll_seconds=self.shared_poll_seconds,
            )
        return shared

    def _start_ready(
        self, mapping: Mapping[str, Any], function: LocalFunction, source: StreamSource, shards: list[Shard]
    ) -> None:
        uuid_ = str(mapping["UUID"])
        known = {shard.shard_id for shard in shards}
        for shard in shards:
            key = (uuid_, shard.shard_id)
            if key in self._pollers or self.checkpoints.done(uuid_, shard.shard_id):
                continue
            parent = shard.parent_id
            if parent and parent in known and not self.checkpoints.done(uuid_, parent):
                continue  # Lambda reads a parent to its end before its children
            poller = ShardPoller(
                mapping=mapping,
                shard=shard,
                source=source,
                function=function,
                service=self,
                parent_started=bool(parent and parent in known),
            )
            self._pollers[key] = poller
            poller.start()

    # -- on-failure destination ----------------------------------------------------------

    def send_to_destination(
        self,
        mapping: Mapping[str, Any],
        source: StreamSource,
        shard_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        condition: str,
        attempts: int,
    ) -> None:
        """Lambda's on-failure record: where the batch is in the stream, and for an S3
        destination the invocation itself (kinesis-on-failure-destination,
        services-dynamodb-errors: "Example Amazon S3 invocation record")."""
        destination = ((mapping.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        now = datetime.now(UTC)
        message: dict[str, Any] = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": function_arn(mapping["FunctionArn"].rsplit(":", 1)[1]),
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": now.isoformat(),
            source.batch_info_key: {
                "shardId": shard_id,
                "startSequenceNumber": sequence_of(records[0]),
                "endSequenceNumber": sequence_of(records[-1]),
                "approximateArrivalOfFirstRecord": _iso(arrival_of(records[0])),
                "approximateArrivalOfLastRecord": _iso(arrival_of(records[-1])),
                "batchSize": len(records),
                "streamArn": source.arn,
            },
        }
        if not destination:
            logger.error(
                "mapping %s dropped %d records (no on-failure destination)", mapping["UUID"], len(records)
            )
            return
        if destination.startswith("arn:aws:s3:::"):
            message["payload"] = json.dumps({"Records": list(records)})
            self.s3.put_object(
                Bucket=destination.removeprefix("arn:aws:s3:::"),
                Key=failure_key(mapping["UUID"], shard_id, now),
                Body=json.dumps(message).encode(),
            )
            return
        queue = destination.rsplit(":", 1)[1]
        url = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))


def failure_key(mapping_uuid: str, shard_id: str, now: datetime) -> str:
    """Where Lambda puts a failed batch in an S3 destination:
    ``aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID>``."""
    return f"aws/lambda/{mapping_uuid}/{shard_id}/{now:%Y/%m/%d}/{now:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class ShardPoller(threading.Thread):
    """One shard of one mapping: read, batch, invoke, checkpoint, in order."""

    def __init__(
        self,
        *,
        mapping: Mapping[str, Any],
        shard: Shard,
        source: StreamSource,
        function: LocalFunction,
        service: LocalLambdaService,
        parent_started: bool,
    ) -> None:
        super().__init__(name=f"local-lambda-{function.name}-{shard.shard_id}", daemon=True)
        self.mapping = mapping
        self.uuid = str(mapping["UUID"])
        self.shard = shard
        self.source = source
        self.function = function
        self.service = service
        # A child shard starts at its beginning, whatever the mapping's starting position.
        self.position = (
            "TRIM_HORIZON" if parent_started else str(mapping.get("StartingPosition") or "TRIM_HORIZON")
        )
        self.batch_size = int(mapping.get("BatchSize") or 100)
        self.window = float(mapping.get("MaximumBatchingWindowInSeconds") or 0)
        self.report_failures = "ReportBatchItemFailures" in (mapping.get("FunctionResponseTypes") or [])
        self.bisect = bool(mapping.get("BisectBatchOnFunctionError"))
        self.max_retries = _bound(mapping.get("MaximumRetryAttempts"))
        self.max_age = _bound(mapping.get("MaximumRecordAgeInSeconds"))
        self.stats = service.stats.setdefault(self.uuid, MappingStats(function=function.name))
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def _stopping(self) -> bool:
        return self._halt.is_set() or self.service._stop.is_set()

    def run(self) -> None:
        try:
            self._poll()
        except Exception:
            logger.exception("poller %s of mapping %s stopped", self.shard.shard_id, self.uuid)

    def _poll(self) -> None:
        checkpoints = self.service.checkpoints
        iterator = self.source.iterator(
            self.shard.shard_id, self.position, checkpoints.get(self.uuid, self.shard.shard_id)
        )
        buffer: list[dict[str, Any]] = []
        first_at = 0.0
        idle = 0
        while not self._stopping():
            fetched = 0
            if iterator is not None and len(buffer) < self.batch_size:
                # A source that waits for records is read until the batching window closes.
                wait = self.service.max_poll_seconds
                if buffer:
                    wait = max(0.0, first_at + self.window - time.monotonic())
                records, iterator = self.source.read(
                    self.shard.shard_id, iterator, self.batch_size - len(buffer), wait=wait
                )
                fetched = len(records)
                if records and not buffer:
                    first_at = time.monotonic()
                buffer.extend(records)
            full = len(buffer) >= self.batch_size
            waited = bool(buffer) and time.monotonic() - first_at >= self.window
            if buffer and (full or waited or iterator is None):
                batch, buffer = _cut(buffer, self.batch_size)
                self._deliver(batch)
                first_at = time.monotonic()
                continue
            if iterator is None and not buffer:
                checkpoints.finish(self.uuid, self.shard.shard_id)
                return
            if fetched or self.source.waits:
                idle = 0
            else:
                # An empty shard is polled less often, down to max_poll_seconds.
                idle += 1
                self._halt.wait(min(self.service.max_poll_seconds, self.service.poll_seconds * idle))

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        pending: deque[list[dict[str, Any]]] = deque([batch])
        attempts = 0
        while pending and not self._stopping():
            records = pending[0]
            if self.max_age >= 0:
                fresh = time.time() - self.max_age
                expired = [record for record in records if arrival_of(record) < fresh]
                if expired:
                    self._give_up(expired, "RecordAgeExceeded", attempts)
                    records = records[len(expired) :]
                    pending[0] = records
                    if not records:
                        pending.popleft()
                        continue
            failed_from, error = self._invoke(records)
            attempts += 1
            if failed_from is None:
                self._checkpoint(records)
                pending.popleft()
                attempts = 0
                continue
            self.stats.retried_records += len(records) - failed_from
            if failed_from > 0:
                self._checkpoint(records[:failed_from])
                records = records[failed_from:]
                pending[0] = records
            if error and self.bisect and len(records) > 1:
                # Splitting does not count as a retry: halves are tried in order.
                half = len(records) // 2
                pending.popleft()
                pending.appendleft(records[half:])
                pending.appendleft(records[:half])
                attempts -= 1
                continue
            if 0 <= self.max_retries < attempts:
                self._give_up(records, "RetryAttemptsExhausted", attempts)
                pending.popleft()
                attempts = 0
                continue
            self._halt.wait(min(2.0, self.service.retry_backoff_seconds * 2 ** min(attempts, 6)))

    def _invoke(self, records: list[dict[str, Any]]) -> tuple[int | None, bool]:
        """Where the batch failed (None: it did not) and whether the function raised."""
        self.stats.invocations += 1
        try:
            response = self.function.invoke({"Records": records})
        except FunctionError as exc:
            self.stats.errors += 1
            logger.warning("%s failed on %d records: %s", self.function.name, len(records), exc)
            return 0, True
        if not self.report_failures:
            return None, False
        failed_from = _first_reported(records, response)
        if failed_from is not None:
            self.stats.errors += 1
        return failed_from, False

    def _checkpoint(self, records: list[dict[str, Any]]) -> None:
        self.service.checkpoints.set(self.uuid, self.shard.shard_id, sequence_of(records[-1]))
        self.stats.records += len(records)
        self.stats.last_lag = max(0.0, time.time() - arrival_of(records[-1]))

    def _give_up(self, records: list[dict[str, Any]], condition: str, attempts: int) -> None:
        self.service.send_to_destination(
            self.mapping, self.source, self.shard.shard_id, records, condition=condition, attempts=attempts
        )
        self.stats.to_destination += len(records)
        self.service.checkpoints.set(self.uuid, self.shard.shard_id, sequence_of(records[-1]))


def _bound(value: Any) -> int:
    """A mapping's retry or age limit; unset and -1 mean unbounded."""
    return -1 if value is None else int(value)


def _cut(buffer: list[dict[str, Any]], size: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """At most ``size`` records and at most Lambda's payload limit."""
    total = 0
    for index, record in enumerate(buffer[:size]):
        total += len(json.dumps(record)) + 1
        if total > MAX_PAYLOAD_BYTES and index > 0:
            return buffer[:index], buffer[index:]
    return buffer[:size], buffer[size:]


def _first_reported(records: Sequence[Mapping[str, Any]], response: Any) -> int | None:
    """Lambda's reading of a ReportBatchItemFailures response: the index of the lowest
    reported sequence number; an unknown identifier or a malformed response fails all."""
    if response is None:
        return None
    if not isinstance(response, Mapping) or not isinstance(response.get("batchItemFailures", []), list):
        return 0
    failures = response.get("batchItemFailures") or []
    if not failures:
        return None
    index = {sequence_of(record): position for position, record in enumerate(records)}
    positions = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if identifier not in index:
            return 0
        positions.append(index[identifier])
    return min(positions)
