"""``dmsbus redrive [--from glue|CONSUMER] [--dry-run] [--keep]``: hand again what the
failure bucket and the glue's dead-letter queue hold, once the cause is fixed.

- A failed batch (the failure bucket: an event source mapping gave up on it) is invoked
  again, whole, on the function that failed it, as Lambda invoked it: the glue's with its
  DynamoDB stream records, a consumer's with its Kinesis records. Batches are taken per
  function and shard in the order they failed. The events keep their ids (the glue's come
  from the stream records' sequence numbers), so consumers dedup what they already have.
- A dead letter of the glue (a stream record it could not turn into an event) is invoked
  again on the glue, alone. A consumer's dead letters are Kinesis records that are not
  change events: no code change of the consumer makes them one, so they are counted and
  left in the queue.

What succeeded is deleted (``--keep`` keeps the objects); the first failure stops the
redrive, naming the object or message, and leaves it and everything after it in place.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    #: Dead letters left in place (consumers'), per queue.
    left: dict[str, int] = field(default_factory=dict)


@dataclass
class Redrive:
    """The redrive of one bus; ``functions``: the functions whose failures are taken."""

    s3: Any
    sqs: Any
    bucket: str
    invoke: Invoke
    glue: str
    functions: set[str]
    dry_run: bool = False
    keep: bool = False

    def failed_batches(self) -> list[FailedBatch]:
        """The bucket's failed batches of ``functions``, per function and shard in the
        order they failed."""
        batches = []
        for key in self._keys():
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            batch = FailedBatch.parse(key, body)
            if batch.function_name in self.functions:
                batches.append(batch)
        return sorted(batches, key=lambda b: (b.function_name, b.shard_id, b.timestamp, b.key))

    def run(self, say: Any = print) -> Report:
        report = Report()
        for batch in self.failed_batches():
            say(
                f"redrive: {batch.function_name} {batch.kind} batch of {len(batch.records)} records "
                f"({batch.condition}, {batch.timestamp}) s3://{self.bucket}/{batch.key}"
            )
            if not self.dry_run:
                self._invoke(batch.function_name, batch.invocation(), f"s3://{self.bucket}/{batch.key}")
                if not self.keep:
                    self.s3.delete_object(Bucket=self.bucket, Key=batch.key)
            report.batches += 1
            report.records += len(batch.records)
        for name in sorted(self.functions):
            queue = dead_letter_name(name)
            url = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            if name != self.glue:
                count = int(
                    self.sqs.get_queue_attributes(
                        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
                    )["Attributes"]["ApproximateNumberOfMessages"]
                )
                if count:
                    report.left[queue] = count
                continue
            for message, letter in self._letters(url):
                say(f"redrive: {name} dead letter ({letter.get('reason', '?')})")
                if not self.dry_run:
                    where = f"{queue} message {message['MessageId']}"
                    self._invoke(name, {"Records": [letter["record"]]}, where)
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                report.letters += 1
        return report

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

    def _letters(self, url: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """The queue's messages, oldest first; a dry run only peeks (they stay visible)."""
        seen: set[str] = set()
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=0 if self.dry_run else 300,
            ).get("Messages", [])
            fresh = [message for message in messages if message["MessageId"] not in seen]
            if not fresh:
                return
            letters = []
            for message in fresh:
                seen.add(message["MessageId"])
                try:
                    letters.append((message, read_letter(message["Body"])))
                except (ValueError, KeyError) as exc:
                    raise RedriveError(f"message {message['MessageId']} is not a dead letter: {exc}") from exc
            yield from sorted(letters, key=lambda pair: int(pair[1].get("at_ms", 0)))


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
    for queue, count in sorted(report.left.items()):
        print(
            f"redrive: {queue} holds {count} records that are not change events; they stay there "
            "(read them with `aws sqs receive-message`)"
        )
    return 0
