"""``dmsbus redrive [--from glue|CONSUMER] [--dry-run] [--keep]``: hand again what the
failure bucket and the glue's dead-letter queue hold, once the cause is fixed.

- A failed batch (the failure bucket: an event source mapping gave up on it) is invoked
  again, whole, on the function that failed it, as Lambda invoked it: the glue's with its
  DynamoDB stream records, a consumer's with its Kinesis records. Only batches under the
  chosen functions' current mappings are read, and each must name its mapping's function
  and stream. Batches are taken per function and shard in stream order. The events keep
  their ids (the glue's come from the stream records' sequence numbers), so consumers
  dedup what they already have.
- A dead letter of the glue (a stream record it could not turn into an event) is invoked
  again on the glue, alone; one the glue parks again is left. A consumer's dead letters
  are Kinesis records that are not change events: no code change of the consumer makes
  them one, so they are counted and left in the queue.

A redriven change is older than what its row's stream carried since the batch failed:
consumers that apply "newer sequence wins" (the pg_mirror) ignore it where it is stale;
others should resync the rows afterwards (``dmsbus resync``). What succeeded is deleted
(``--keep`` keeps the objects); the first failure stops the redrive, naming the object or
message, and leaves it and everything after it in place.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from config.functions import consumer_name, dead_letter_name, failures_bucket_name, glue_name
from dmsbus.deadletter import read_letter
from dmsbus.failures import PREFIX, FailedBatch, FailedBatchError
from dmsbus_cli.connect import Bus, Invoke, InvokeError, add_arguments, connect
from local.functions import FunctionError


class RedriveError(RuntimeError):
    """What could not be redriven; the message names it."""


def add_command(commands: Any, repository: Path) -> None:
    command = commands.add_parser(
        "redrive",
        help="re-process the failure bucket's batches and the glue's dead letters",
        description=__doc__.split("\n\n")[1],
    )
    add_arguments(command, repository)
    command.add_argument(
        "--from", dest="origin", metavar="glue|CONSUMER", help="only the glue's, or this consumer's"
    )
    command.add_argument("--dry-run", action="store_true", help="list what would be redriven, change nothing")
    command.add_argument("--keep", action="store_true", help="keep redriven batches in the bucket")
    command.set_defaults(run=run)


@dataclass
class Report:
    batches: int = 0
    records: int = 0
    letters: int = 0
    #: Messages left in place: (queue, how many, what they are).
    left: list[tuple[str, int, str]] = field(default_factory=list)
    #: Failed batches of mappings that are not the chosen functions' current ones.
    other_batches: int = 0


def _record_identity(record: Mapping[str, Any]) -> str:
    """A DynamoDB stream record's place: its stream and sequence number."""
    return f"{record.get('eventSourceARN')}#{(record.get('dynamodb') or {}).get('SequenceNumber')}"


@dataclass
class Redrive:
    """The redrive of one bus; ``functions``: the functions whose failures are taken."""

    s3: Any
    sqs: Any
    lambda_client: Any
    bucket: str
    invoke: Invoke
    glue: str
    functions: set[str]
    dry_run: bool = False
    keep: bool = False

    def mappings(self) -> dict[str, tuple[str, str]]:
        """The chosen functions' event source mappings: UUID -> (function, source ARN)."""
        found: dict[str, tuple[str, str]] = {}
        paginator = self.lambda_client.get_paginator("list_event_source_mappings")
        for function in sorted(self.functions):
            for page in paginator.paginate(FunctionName=function):
                for mapping in page.get("EventSourceMappings", []):
                    found[mapping["UUID"]] = (function, mapping["EventSourceArn"])
        return found

    def failed_batches(self, report: Report | None = None) -> list[FailedBatch]:
        """The chosen functions' failed batches, per function and shard in stream order.
        Only objects under their mappings' prefixes are read, and each must say it is of
        that mapping's function and stream: the bucket is writable by every bus function,
        and a redrive invokes what an object names."""
        mappings = self.mappings()
        batches = []
        for key in self._keys():
            uuid = key.removeprefix(PREFIX).split("/", 1)[0]
            if uuid not in mappings:
                if report is not None:
                    report.other_batches += 1
                continue
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            batch = FailedBatch.parse(key, body)
            function, source = mappings[uuid]
            if (batch.function_name, batch.stream_arn) != (function, source):
                raise RedriveError(
                    f"s3://{self.bucket}/{key} says it is a batch of {batch.function_name} from "
                    f"{batch.stream_arn}, but its mapping {uuid} is {function}'s from {source}: not redriven"
                )
            batches.append(batch)
        return sorted(batches, key=lambda b: (b.function_name, b.shard_id, int(b.start_sequence), b.key))

    def run(self, say: Any = print) -> Report:
        report = Report()
        invoked: set[str] = set()  # the glue's stream records handed again in this run
        for batch in self.failed_batches(report):
            say(
                f"redrive: {batch.function_name} {batch.kind} batch of {len(batch.records)} records "
                f"({batch.condition}, {batch.timestamp}) s3://{self.bucket}/{batch.key}"
            )
            if not self.dry_run:
                self._invoke(batch.function_name, batch.invocation(), f"s3://{self.bucket}/{batch.key}")
                if batch.function_name == self.glue:
                    invoked.update(_record_identity(record) for record in batch.records)
                if not self.keep:
                    self.s3.delete_object(Bucket=self.bucket, Key=batch.key)
            report.batches += 1
            report.records += len(batch.records)
        for name in sorted(self.functions):
            queue = dead_letter_name(name)
            url = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            if name != self.glue or self.dry_run:
                count = self._depth(url)
                if count and name != self.glue:
                    report.left.append((queue, count, "Kinesis records that are not change events"))
                elif count:
                    say(f"redrive: {queue} holds {count} dead letters")
                    report.letters += count
                continue
            self._redrive_letters(name, queue, url, invoked=invoked, report=report, say=say)
        return report

    def _redrive_letters(
        self, name: str, queue: str, url: str, *, invoked: set[str], report: Report, say: Any
    ) -> None:
        """The glue's dead letters, each handed to the glue alone. One the glue parks again
        (still poison) is left, as are messages that are not dmsbus dead letters (an SQS
        on-failure record of a bus deployed before the failure bucket: a range only)."""
        still_poison = not_letters = 0
        hidden: dict[str, str] = {}  # received and not deleted: shown again at the end
        try:
            for message in self._messages(url):
                hidden[message["MessageId"]] = message["ReceiptHandle"]
                outcome = self._redrive_letter(
                    name, queue, url, message, invoked=invoked, report=report, say=say
                )
                if outcome == "redriven":
                    del hidden[message["MessageId"]]
                elif outcome == "still poison":
                    still_poison += 1
                else:
                    not_letters += 1
        finally:
            for receipt in hidden.values():
                self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)
        if still_poison:
            report.left.append((queue, still_poison, "records the glue parked again: still poison"))
        if not_letters:
            report.left.append((queue, not_letters, "messages with a batch's range only (no records)"))

    def _redrive_letter(
        self,
        name: str,
        queue: str,
        url: str,
        message: dict[str, Any],
        *,
        invoked: set[str],
        report: Report,
        say: Any,
    ) -> Literal["redriven", "still poison", "not a letter"]:
        """Hand one dead letter to the glue, unless it is not a dmsbus dead letter, or a
        record this run handed already (still poison): those are left."""
        where = f"{queue} message {message['MessageId']}"
        try:
            body = json.loads(message["Body"])
        except ValueError as exc:
            raise RedriveError(f"{where} is not JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("dmsbus") != "dead-letter":
            return "not a letter"
        letter = read_letter(message["Body"])
        if not isinstance(letter.get("record"), Mapping):
            return "not a letter"
        identity = _record_identity(letter["record"])
        if identity in invoked:
            return "still poison"
        say(f"redrive: {name} dead letter ({letter.get('reason', '?')})")
        self._invoke(name, {"Records": [letter["record"]]}, where)
        invoked.add(identity)
        self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        report.letters += 1
        return "redriven"

    def _invoke(self, function: str, event: Mapping[str, Any], where: str) -> None:
        try:
            response = self.invoke(function, event)
        except (InvokeError, FunctionError) as exc:
            raise RedriveError(f"{where}: {exc}; it and what follows are left in place") from exc
        failures = response.get("batchItemFailures") or []
        if failures:
            raise RedriveError(
                f"{where}: {function} failed again from record {failures[0].get('itemIdentifier')}; "
                "it and what follows are left in place"
            )

    def _keys(self) -> Iterator[str]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=PREFIX):
            for item in page.get("Contents", []):
                yield str(item["Key"])

    def _depth(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def _messages(self, url: str) -> Iterator[dict[str, Any]]:
        """The queue's messages, each once: taken out of sight while handled (a message
        handled or left stays invisible for the run), until two receives in a row, each
        waiting a second, come back empty."""
        empty = 0
        while empty < 2:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=900
            ).get("Messages", [])
            empty = 0 if messages else empty + 1
            yield from messages


def failure_bucket(bus: Bus) -> str:
    """The failure bucket, as the glue's mappings name it (the stacks name it from the
    account and region; the mappings say so in AWS and locally alike)."""
    account, region = bus.account_and_region()
    return failures_bucket_name(bus.bus, account=account, region=region)


def run(arguments: argparse.Namespace) -> int:
    bus = connect(arguments, "redrive")
    if bus is None:
        return 2
    config = bus.bus
    glue = glue_name(config)
    consumers = {entry.name: consumer_name(config.name, entry) for entry in config.consumers}
    if arguments.origin is None:
        functions = {glue, *consumers.values()}
    elif arguments.origin == "glue":
        functions = {glue}
    elif arguments.origin in consumers:
        functions = {consumers[arguments.origin]}
    else:
        print(
            f"redrive: --from {arguments.origin!r} is neither glue nor a consumer in {arguments.config}/bus.yaml "
            f"({', '.join(sorted(consumers))})",
            file=sys.stderr,
        )
        return 2
    redrive = Redrive(
        s3=bus.client("s3"),
        sqs=bus.client("sqs"),
        lambda_client=bus.client("lambda"),
        bucket=failure_bucket(bus),
        invoke=bus.invoker(),
        glue=glue,
        functions=functions,
        dry_run=arguments.dry_run,
        keep=arguments.keep,
    )
    try:
        report = redrive.run()
    except (RedriveError, FailedBatchError) as exc:
        print(f"redrive: {exc}", file=sys.stderr)
        return 1
    verb = "would redrive" if arguments.dry_run else "redrove"
    print(
        f"redrive: {verb} {report.batches} failed batches ({report.records} records) "
        f"and {report.letters} dead letters"
    )
    if report.other_batches:
        print(
            f"redrive: {report.other_batches} failed batches of other mappings (other functions, or "
            "mappings since deleted) were left in the bucket"
        )
    for queue, count, what in report.left:
        print(f"redrive: {count} {what} stay in {queue} (read them with `aws sqs receive-message`)")
    return 0
