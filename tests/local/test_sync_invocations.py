"""Lambda ``Invoke`` in local mode: the local moto server (its own process, patched as local
mode runs it) queues each invocation for the local Lambda service. A synchronous one
(``RequestResponse``) is answered as Lambda answers it (API_Invoke): the function's return
value, or its error with ``X-Amz-Function-Error``, or the timeout error, or, when the
function's one local container is busy, Lambda's throttle (429 TooManyRequestsException); an
asynchronous one (``Event``) is answered 202 and run, and retried on an error, later."""

from __future__ import annotations

import io
import json
import logging
import re
import statistics
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dmsbus.names import TableName
from dmsbus.typed import SchemaRefresher
from local.aws import LOCAL_CREDENTIALS, REGION, LocalAws
from local.functions import Handler, LocalFunction
from local.lambda_service import LocalLambdaService

SCHEMA_FUNCTION = "demo-legacy-schema"
REQUEST = {"tables": ["public.orders"], "reason": "columns ['coupon'] not in schema"}
ORDERS = TableName("demo", "legacy", "public", "orders")


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    served = LocalAws()
    served.start()
    yield served
    served.stop()


class Functions:
    """Functions deployed to the moto server's Lambda and run by a local Lambda service."""

    def __init__(self, aws: LocalAws, state_dir: Path) -> None:
        self.aws = aws
        self.state_dir = state_dir
        self.lambda_client = aws.client("lambda")
        self.registered: dict[str, LocalFunction] = {}
        self.service: LocalLambdaService | None = None

    def deploy(self, name: str, handler: Handler, *, timeout_seconds: int = 3) -> str:
        """``name`` in Lambda's API with its ``Timeout``, run locally by ``handler``."""
        iam = self.aws.client("iam")
        try:
            role = iam.get_role(RoleName="local-function")["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            role = iam.create_role(RoleName="local-function", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "# run by the local Lambda service\n")
        self.lambda_client.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": code.getvalue()},
            Timeout=timeout_seconds,
        )
        self.registered[name] = LocalFunction(
            name=name, environment={}, handler=handler, timeout_seconds=timeout_seconds
        )
        return name

    def caller(self, read_timeout: float = 60) -> Any:
        """A Lambda client that does not retry, as the glue's synchronous one
        (``dmsbus.typed.sync_lambda_client``): its caller sees each throttle."""
        return boto3.client(
            "lambda",
            region_name=REGION,
            endpoint_url=self.aws.endpoint_url,
            config=Config(read_timeout=read_timeout, retries={"mode": "standard", "total_max_attempts": 1}),
            aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
        )

    def start(self) -> LocalLambdaService:
        self.service = LocalLambdaService(
            functions=self.registered,
            lambda_client=self.lambda_client,
            dynamodbstreams=self.aws.client("dynamodbstreams"),
            kinesis=self.aws.client("kinesis"),
            sqs=self.aws.client("sqs"),
            state_dir=self.state_dir,
            # Retries at once: a retried synchronous invocation would show within the test.
            async_retry_delays=(0, 0),
        )
        self.service.start()
        return self.service

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


@pytest.fixture
def functions(aws: LocalAws, tmp_path: Path) -> Iterator[Functions]:
    deployed = Functions(aws, tmp_path)
    yield deployed
    deployed.stop()
    for name in deployed.registered:  # the moto server is the module's: its next test starts clean
        deployed.lambda_client.delete_function(FunctionName=name)


def _invoke(functions: Functions, name: str, payload: Any, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    response = functions.lambda_client.invoke(FunctionName=name, Payload=json.dumps(payload), **kwargs)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_synchronous_invoke_returns_the_functions_result(functions: Functions) -> None:
    # Given the schema function, which answers with the tables it stored
    received: list[dict[str, Any]] = []

    def read_tables(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        received.append(event)
        return {"stored": {"public.orders": 2}}

    functions.deploy(SCHEMA_FUNCTION, read_tables)
    functions.start()

    # When the glue invokes it synchronously (RequestResponse, the default) with a request
    response, payload = _invoke(functions, SCHEMA_FUNCTION, REQUEST)

    # Then the function ran once with the request, and Lambda's answer carries its result
    assert received == [REQUEST]
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert payload == {"stored": {"public.orders": 2}}


def test_a_raising_function_gives_an_unhandled_function_error_and_is_not_retried(
    functions: Functions,
) -> None:
    # Given a schema function that cannot reach its source
    calls: list[dict[str, Any]] = []

    def unreachable(event: dict[str, Any], _context: Any) -> None:
        calls.append(event)
        raise ConnectionRefusedError("connection to 10.0.3.7:5432 refused")

    functions.deploy(SCHEMA_FUNCTION, unreachable)
    service = functions.start()

    # When it is invoked synchronously
    response, payload = _invoke(functions, SCHEMA_FUNCTION, REQUEST)

    # Then Lambda's answer is 200 with FunctionError Unhandled and the runtime's error document
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ConnectionRefusedError"
    assert payload["errorMessage"] == "connection to 10.0.3.7:5432 refused"
    assert "in unreachable" in payload["stackTrace"][-1]
    # And it ran once: a synchronous invocation is retried by its caller, not by Lambda (the
    # service retries asynchronous ones at once here), nor kept with the service's errors
    time.sleep(0.5)
    assert len(calls) == 1
    assert service.scheduled_errors == []


def test_a_function_slower_than_its_timeout_gives_the_timeout_error_after_the_timeout(
    functions: Functions,
) -> None:
    # Given a function with Lambda's shortest timeout that does not return within it
    released = threading.Event()
    functions.deploy(SCHEMA_FUNCTION, lambda _event, _context: released.wait(10), timeout_seconds=1)
    functions.start()
    try:
        # When it is invoked synchronously
        started = time.monotonic()
        response, payload = _invoke(functions, SCHEMA_FUNCTION, REQUEST)
        waited = time.monotonic() - started
    finally:
        released.set()

    # Then the caller has Lambda's timeout error once the timeout is over, not at the end of
    # the 10 s the function would take (a few seconds' margin: a shared 2-CPU machine)
    assert 1.0 <= waited < 4.0
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Sandbox.Timedout"


def test_the_timeout_error_names_the_configured_timeout_not_the_time_waited(functions: Functions) -> None:
    # Given a function with a 2-second timeout that does not return within it
    released = threading.Event()
    functions.deploy(SCHEMA_FUNCTION, lambda _event, _context: released.wait(10), timeout_seconds=2)
    functions.start()
    try:
        # When it is invoked synchronously (and the caller waits a little past the 2 s)
        _response, payload = _invoke(functions, SCHEMA_FUNCTION, REQUEST)
    finally:
        released.set()

    # Then the message names the function's Timeout, as Lambda's does
    assert re.fullmatch(
        r"RequestId: [0-9a-f-]{36} Error: Task timed out after 2\.00 seconds", payload["errorMessage"]
    )


def test_a_synchronous_invocation_nobody_ran_within_its_timeout_is_not_run_later(
    functions: Functions,
) -> None:
    # Given a function, and no local Lambda service running yet
    calls: list[dict[str, Any]] = []
    functions.deploy(SCHEMA_FUNCTION, lambda event, _context: calls.append(event), timeout_seconds=1)
    _response, payload = _invoke(functions, SCHEMA_FUNCTION, REQUEST)
    assert payload["errorType"] == "Sandbox.Timedout"

    # When the service starts after the caller had its timeout error
    functions.start()
    _response, _payload = _invoke(functions, SCHEMA_FUNCTION, {"tables": ["public.lines"]})

    # Then only the invocation made while it ran was run
    assert calls == [{"tables": ["public.lines"]}]


def test_a_synchronous_invoke_of_a_busy_function_is_throttled_at_once(functions: Functions) -> None:
    # Given the schema function busy with a slow synchronous invocation in its one container
    entered, released = threading.Event(), threading.Event()

    def slow(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        entered.set()
        released.wait(10)
        return {"stored": {"public.orders": 2}}

    functions.deploy(SCHEMA_FUNCTION, slow, timeout_seconds=15)
    functions.start()
    first: list[Any] = []
    caller = threading.Thread(target=lambda: first.append(_invoke(functions, SCHEMA_FUNCTION, REQUEST)[1]))
    caller.start()
    try:
        assert entered.wait(10), "the first invocation started"
        # When a second caller (not retrying, as the glue's client) invokes it synchronously
        started = time.monotonic()
        with pytest.raises(ClientError) as throttled:
            functions.caller().invoke(FunctionName=SCHEMA_FUNCTION, Payload=json.dumps(REQUEST))
        waited = time.monotonic() - started
        first_still_running = not first
    finally:
        released.set()
        caller.join(10)

    # Then it has Lambda's throttle: 429 TooManyRequestsException with its Reason and message,
    # at once, while the first invocation still ran (it is not queued behind it)
    error: dict[str, Any] = dict(throttled.value.response)  # with the members of Lambda's error shape
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Error"] == {"Code": "TooManyRequestsException", "Message": "Rate Exceeded."}
    assert (error["Reason"], error["Type"]) == ("ReservedFunctionConcurrentInvocationLimitExceeded", "User")
    assert first_still_running
    assert waited < 3.0
    # And the first caller got its result
    assert first == [{"stored": {"public.orders": 2}}]


def test_an_asynchronous_invoke_of_a_busy_function_waits_for_it_and_runs(functions: Functions) -> None:
    # Given the schema function busy with a slow synchronous invocation
    entered, released = threading.Event(), threading.Event()
    received: list[dict[str, Any]] = []

    def slow_first(event: dict[str, Any], _context: Any) -> None:
        received.append(event)
        entered.set()
        released.wait(10)

    functions.deploy(SCHEMA_FUNCTION, slow_first, timeout_seconds=15)
    service = functions.start()
    caller = threading.Thread(target=lambda: _invoke(functions, SCHEMA_FUNCTION, REQUEST))
    caller.start()
    try:
        assert entered.wait(10), "the first invocation started"
        # When it is invoked asynchronously meanwhile
        response, _payload = _invoke(
            functions, SCHEMA_FUNCTION, {"tables": ["public.lines"]}, InvocationType="Event"
        )
        time.sleep(0.3)
        ran_while_busy = len(received) > 1
    finally:
        released.set()
        caller.join(10)

    # Then Lambda keeps the event (202) and it runs once the container is free, not throttled
    assert response["StatusCode"] == 202
    assert not ran_while_busy
    _wait(lambda: received == [REQUEST, {"tables": ["public.lines"]}], "the asynchronous invocation ran")
    assert service.scheduled_errors == []


def test_the_glues_read_of_a_busy_schema_function_asks_again_within_its_wait(
    functions: Functions, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the schema function busy for about a second with another invocation
    entered, released = threading.Event(), threading.Event()
    calls: list[dict[str, Any]] = []

    def schema_function(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        calls.append(event)
        if len(calls) == 1:
            entered.set()
            released.wait(10)
        return {"stored": {"public.orders": 2}}

    functions.deploy(SCHEMA_FUNCTION, schema_function, timeout_seconds=15)
    functions.start()
    busy = threading.Thread(target=lambda: _invoke(functions, SCHEMA_FUNCTION, {"tables": []}))
    busy.start()
    assert entered.wait(10), "the first invocation started"
    threading.Timer(1.0, released.set).start()

    # When the glue reads the orders' schema now, with 10 s to wait (its clients do not retry)
    refresher = SchemaRefresher(
        functions.lambda_client,
        {"legacy": SCHEMA_FUNCTION},
        sync_clients=lambda seconds: functions.caller(read_timeout=seconds),
    )
    with caplog.at_level(logging.INFO, logger="dmsbus.local.lambda"):
        read = refresher.read_now(ORDERS, "columns ['coupon'] not in schema", time.monotonic() + 10)
    busy.join(10)

    # Then it was throttled while the function was busy, asked again, and read the table once
    assert read is True
    assert "throttled" in caplog.text
    assert calls == [
        {"tables": []},
        {"tables": ["public.orders"], "reason": "columns ['coupon'] not in schema"},
    ]


def test_an_asynchronous_invoke_is_answered_202_and_run_with_its_payload(functions: Functions) -> None:
    # Given the schema function and the local Lambda service
    received: list[dict[str, Any]] = []
    functions.deploy(SCHEMA_FUNCTION, lambda event, _context: received.append(event))
    functions.start()

    # When it is invoked asynchronously (as the glue asks for a table in the background)
    response, payload = _invoke(functions, SCHEMA_FUNCTION, REQUEST, InvocationType="Event")

    # Then Lambda answers 202 with no payload, and the function runs with the request
    assert (response["StatusCode"], payload) == (202, None)
    _wait(lambda: received == [REQUEST], "the asynchronous invocation ran")


def test_a_failing_asynchronous_invocation_is_retried_twice_then_kept_with_the_errors(
    functions: Functions,
) -> None:
    # Given a schema function that always fails
    calls: list[dict[str, Any]] = []

    def unreachable(event: dict[str, Any], _context: Any) -> None:
        calls.append(event)
        raise ConnectionRefusedError("source down")

    functions.deploy(SCHEMA_FUNCTION, unreachable)
    service = functions.start()

    # When it is invoked asynchronously
    response, _payload = _invoke(functions, SCHEMA_FUNCTION, REQUEST, InvocationType="Event")

    # Then the caller had 202, and the function ran three times before the failure was kept
    assert response["StatusCode"] == 202
    _wait(lambda: len(service.scheduled_errors) == 1, "the third failure kept")
    assert len(calls) == 3
    assert "ConnectionRefusedError: source down" in service.scheduled_errors[0]


def test_an_unknown_function_is_lambdas_404_and_a_payload_that_is_not_json_is_refused(
    functions: Functions,
) -> None:
    # Given the local Lambda service with one function
    functions.deploy(SCHEMA_FUNCTION, lambda _event, _context: None)
    functions.start()

    # When a function Lambda does not know is invoked, then the answer is Lambda's 404
    with pytest.raises(ClientError) as unknown:
        _invoke(functions, "demo-other-schema", REQUEST)
    assert unknown.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert unknown.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # And a payload that is not JSON is refused before anything runs
    with pytest.raises(ClientError) as invalid:
        functions.lambda_client.invoke(FunctionName=SCHEMA_FUNCTION, Payload=b"{tables: orders}")
    assert invalid.value.response["Error"]["Code"] == "InvalidRequestContentException"


def test_a_synchronous_round_trip_of_a_trivial_function_takes_milliseconds(functions: Functions) -> None:
    # Given a function that returns at once, invoked once (its first run loads nothing here)
    functions.deploy(SCHEMA_FUNCTION, lambda event, _context: event)
    functions.start()
    _invoke(functions, SCHEMA_FUNCTION, REQUEST)

    # When it is invoked synchronously 40 times over
    durations = []
    for _ in range(40):
        started = time.perf_counter()
        _response, payload = _invoke(functions, SCHEMA_FUNCTION, REQUEST)
        durations.append(time.perf_counter() - started)
        assert payload == REQUEST

    # Then a round trip takes milliseconds (about 15 ms on a 2-vCPU machine; the bound leaves
    # room for a shared one): the service runs an invocation as it is queued, without waiting
    # for its next poll (1 s)
    assert statistics.median(durations) < 0.5
