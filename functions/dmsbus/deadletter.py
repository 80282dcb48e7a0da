"""Dead letters: records that cannot be processed, parked with the error so nothing is lost.

A poison record must not block its shard: it goes to an SQS queue with the raw record and
the reason, and processing goes on. When the queue cannot take it, the send raises and the
batch fails (and is retried) rather than dropping the record.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

#: SQS's default message size; a larger record is parked gzip-compressed and base64'd
#: (``record_gzip_base64``). dmsbus's queues take SQS's maximum, 1 MiB.
PLAIN_LIMIT_BYTES = 256 * 1024


class DeadLetterQueue:
    def __init__(self, client: SQSClient, queue_url: str, *, stage: str) -> None:
        self._client = client
        self.queue_url = queue_url
        self.stage = stage
        self.sent = 0

    def send(self, *, reason: str, record: Any, detail: Mapping[str, Any] | None = None) -> None:
        """Park ``record`` (as received, JSON-ready) with why it could not be processed.
        Raises when the queue refuses it: the caller must then fail, not drop it."""
        letter: dict[str, Any] = {
            "dmsbus": "dead-letter",
            "stage": self.stage,
            "reason": reason,
            "at_ms": int(time.time() * 1000),
            "detail": dict(detail or {}),
            "record": record,
        }
        body = json.dumps(letter, default=repr, ensure_ascii=True)
        if len(body) > PLAIN_LIMIT_BYTES:
            raw = json.dumps(letter.pop("record"), default=repr).encode("utf-8")
            letter["record_gzip_base64"] = base64.b64encode(gzip.compress(raw)).decode("ascii")
            body = json.dumps(letter, default=repr, ensure_ascii=True)
        self._client.send_message(QueueUrl=self.queue_url, MessageBody=body)
        self.sent += 1


def read_letter(body: str) -> dict[str, Any]:
    """A dead letter's body -> its fields, with ``record`` restored if it was compressed."""
    letter: dict[str, Any] = json.loads(body)
    packed = letter.pop("record_gzip_base64", None)
    if packed is not None:
        letter["record"] = json.loads(gzip.decompress(base64.b64decode(packed)))
    return letter
