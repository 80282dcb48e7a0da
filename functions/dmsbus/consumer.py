"""The consumer SDK: a decorated function becomes a Lambda handler for the bus's stream.

```python
from dmsbus.consumer import consumer, ChangeEvent

@consumer(tables=["public.orders"], ops=["c", "u"])
def handler(event: ChangeEvent) -> None: ...
```

The handler takes the Kinesis event as Lambda hands it (aggregated or plain records),
parses every change, keeps those that match ``tables``/``ops`` and calls the function in
stream order. On the first failure it stops and reports that Kinesis record and every
later one in ``batchItemFailures``: an ordered stream must not skip ahead, so Lambda
retries from there (the event source mapping needs ``ReportBatchItemFailures``). Events
already handled in a retried record are handed again: dedup on ``event.id``.

A record whose data is not a change event goes to the dead-letter queue (``BUS_DLQ_URL``)
and is skipped; without a queue it stops the batch like a failure.

With ``records=True`` the function gets ``Received`` values instead: the parsed event with
the exact bytes it came in and its Kinesis position (sinks that store events unmodified).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, overload

from dmsbus import variables
from dmsbus.deadletter import DeadLetterQueue
from dmsbus.envelope import OPS, ROW_OPS, ChangeEvent, EnvelopeError
from dmsbus.kpl import unpack
from dmsbus.schemas import SchemaStore
from dmsbus.settings import ConsumerSettings, SettingsError
from dmsbus.typed import SchemaVersions

__all__ = ["ChangeEvent", "ConsumerHandler", "Received", "Selection", "consumer", "dedup_key"]

#: The deployment's own filter, set by the consumers stack from the consumer's config entry
#: (comma-separated): an event reaches the function when it matches both the decorator's
#: selection and this one.

logger = logging.getLogger("dmsbus.consumer")

LambdaResponse = dict[str, list[dict[str, str]]]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which events a consumer wants: ``schema.table`` patterns (``*`` wildcards) and ops."""

    tables: tuple[str, ...] | None = None
    ops: frozenset[str] | None = None
    #: This deployment's function: a resync read meant for another consumer is not for it.
    function: str | None = None

    @classmethod
    def of(cls, tables: Iterable[str] | None, ops: Iterable[str] | None) -> Selection:
        if isinstance(tables, str) or isinstance(ops, str):
            raise TypeError("tables and ops are lists: tables=['public.orders'], ops=['c', 'u']")
        table_patterns = None if tables is None else tuple(tables)
        for pattern in table_patterns or ():
            if pattern.count(".") != 1:
                raise ValueError(f"table {pattern!r} must be 'schema.table' (wildcards allowed: 'public.*')")
        op_set = None if ops is None else frozenset(ops)
        unknown = sorted((op_set or frozenset()) - OPS)
        if unknown:
            raise ValueError(
                f"ops {unknown} are not change ops; use c (insert), u (update), d (delete), r (backfill), "
                "s (schema change)"
            )
        return cls(table_patterns, op_set)

    def matches(self, event: ChangeEvent) -> bool:
        if self.ops is not None and event.op not in self.ops:
            return False
        target = event.source.resync_for
        if target is not None and self.function is not None and target != self.function:
            return False
        if self.tables is None:
            return True
        name = event.qualified_table
        return any(fnmatchcase(name, pattern) for pattern in self.tables)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Selection:
        """The deployment's selection: ``ConsumerSettings``' tables and ops (unset: all)."""
        deployed = ConsumerSettings.from_environ(environ)
        try:
            selection = cls.of(deployed.tables, deployed.ops)
        except ValueError as exc:
            raise SettingsError(f"{variables.TABLES}/{variables.OPS}: {exc}") from None
        # Lambda's own variable: the function this deployment is.
        function = environ.get("AWS_LAMBDA_FUNCTION_NAME") or None
        return cls(selection.tables, selection.ops, function)


@dataclass(frozen=True, slots=True)
class Received:
    """A change as it came off the stream: ``data`` is the event's JSON, byte for byte."""

    event: ChangeEvent
    data: bytes
    sequence_number: str
    sub_sequence_number: int


DeadLettersSource = DeadLetterQueue | Callable[[], DeadLetterQueue | None] | None


class ConsumerHandler:
    """The Lambda entry point made by ``@consumer``; ``function`` is the decorated one."""

    def __init__(
        self,
        function: Callable[..., Any],
        selection: Selection,
        *,
        batch: bool,
        dead_letters: DeadLettersSource,
        records: bool = False,
    ) -> None:
        self.function = function
        self.selection = selection
        self.batch = batch
        self.records = records
        self._dead_letters_source = dead_letters
        self._dead_letters_resolved = False
        self._dead_letters: DeadLetterQueue | None = None
        self._deployment: Selection | None = None
        self.__name__ = getattr(function, "__name__", "handler")
        self.__doc__ = function.__doc__

    @property
    def dead_letters(self) -> DeadLetterQueue | None:
        if not self._dead_letters_resolved:
            source = self._dead_letters_source
            self._dead_letters = source() if callable(source) else source
            self._dead_letters_resolved = True
        return self._dead_letters

    @property
    def deployment(self) -> Selection:
        """The deployment's filter, read from the environment at the first invocation."""
        if self._deployment is None:
            self._deployment = Selection.from_env(os.environ)
        return self._deployment

    @functools.cached_property
    def schemas(self) -> SchemaVersions | None:
        """The schema table's versions, on a bus that types its events (read at first use)."""
        table = ConsumerSettings.from_environ(os.environ).schema_table
        if table is None:
            return None
        import boto3

        return SchemaVersions(SchemaStore(boto3.client("dynamodb"), table))

    def __call__(self, event: Mapping[str, Any], context: Any = None) -> LambdaResponse:
        records: Sequence[Mapping[str, Any]] = event.get("Records") or []
        self.deployment  # noqa: B018 - a bad deployment filter fails every invocation, loudly
        failed_from = self._run_batch(records) if self.batch else self._run_each(records)
        if failed_from is None:
            return {"batchItemFailures": []}
        return {
            "batchItemFailures": [
                {"itemIdentifier": record["kinesis"]["sequenceNumber"]} for record in records[failed_from:]
            ]
        }

    def _run_each(self, records: Sequence[Mapping[str, Any]]) -> int | None:
        for index, record in enumerate(records):
            events = self._events(record)
            if events is None:
                return index
            for change in events:
                try:
                    self.function(change)
                except Exception:
                    logger.exception(
                        "consumer %s failed on change %s; stopping at Kinesis record %s",
                        self.__name__,
                        _event(change).id,
                        record["kinesis"]["sequenceNumber"],
                    )
                    return index
        return None

    def _run_batch(self, records: Sequence[Mapping[str, Any]]) -> int | None:
        collected: list[ChangeEvent | Received] = []
        stop: int | None = None
        for index, record in enumerate(records):
            events = self._events(record)
            if events is None:
                stop = index
                break
            collected.extend(events)
        if collected:
            try:
                self.function(collected)
            except Exception:
                logger.exception(
                    "consumer %s failed on a batch of %d changes (%s .. %s)",
                    self.__name__,
                    len(collected),
                    _event(collected[0]).id,
                    _event(collected[-1]).id,
                )
                return 0
        return stop

    def _events(self, record: Mapping[str, Any]) -> list[ChangeEvent | Received] | None:
        """The matching events of one Kinesis record, or None if it must stop the batch."""
        events: list[ChangeEvent | Received] = []
        wanted, deployed = self.selection.matches, self.deployment.matches
        for kinesis, data in unpack([record]):
            try:
                change = ChangeEvent.from_json(data)
            except (EnvelopeError, ValueError) as exc:
                if not self._park(record, kinesis, exc):
                    return None
                continue
            if wanted(change) and deployed(change):
                version = change.source.schema_version
                if change.source.typed and version is not None and (schemas := self.schemas) is not None:
                    source = change.source
                    change.schema = schemas.of(source.source, source.schema, source.table, version)
                if self.records:
                    events.append(
                        Received(
                            change,
                            data,
                            record["kinesis"]["sequenceNumber"],
                            int(kinesis.get("subSequenceNumber") or 0),
                        )
                    )
                else:
                    events.append(change)
        return events

    def _park(self, record: Mapping[str, Any], user: Mapping[str, Any], error: Exception) -> bool:
        where = (
            f"Kinesis record {record['kinesis']['sequenceNumber']}"
            f" (sub-sequence {user.get('subSequenceNumber', 0)}, partition key {user.get('partitionKey')!r})"
        )
        dead_letters = self.dead_letters
        if dead_letters is None:
            logger.error(
                "%s is not a change event: %s; no BUS_DLQ_URL, so the batch stops here", where, error
            )
            return False
        data = user["data"]
        dead_letters.send(
            reason=f"{where} is not a change event: {error}",
            record={
                "eventSourceARN": record.get("eventSourceARN"),
                "sequenceNumber": record["kinesis"]["sequenceNumber"],
                "subSequenceNumber": user.get("subSequenceNumber"),
                "partitionKey": user.get("partitionKey"),
                "data": data.decode("ascii") if isinstance(data, bytes) else data,
            },
            detail={"consumer": self.__name__},
        )
        logger.warning("%s is not a change event (%s); sent to the dead-letter queue", where, error)
        return True


# What the decorated function takes, per mode: mypy checks a user's handler against it.
@overload
def consumer(
    *,
    tables: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    batch: Literal[False] = False,
    records: Literal[False] = False,
    dead_letters: DeadLettersSource = None,
) -> Callable[[Callable[[ChangeEvent], object]], ConsumerHandler]: ...
@overload
def consumer(
    *,
    tables: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    batch: Literal[True],
    records: Literal[False] = False,
    dead_letters: DeadLettersSource = None,
) -> Callable[[Callable[[list[ChangeEvent]], object]], ConsumerHandler]: ...
@overload
def consumer(
    *,
    tables: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    batch: Literal[False] = False,
    records: Literal[True],
    dead_letters: DeadLettersSource = None,
) -> Callable[[Callable[[Received], object]], ConsumerHandler]: ...
@overload
def consumer(
    *,
    tables: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    batch: Literal[True],
    records: Literal[True],
    dead_letters: DeadLettersSource = None,
) -> Callable[[Callable[[list[Received]], object]], ConsumerHandler]: ...
@overload
def consumer(
    *,
    tables: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    batch: bool = False,
    records: bool = False,
    dead_letters: DeadLettersSource = None,
) -> Callable[[Callable[..., object]], ConsumerHandler]: ...
def consumer(
    *,
    tables: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    batch: bool = False,
    records: bool = False,
    dead_letters: DeadLettersSource = None,
) -> Callable[[Callable[..., object]], ConsumerHandler]:
    """Make a Lambda handler for the bus stream from a function of one ``ChangeEvent``
    (or, with ``batch=True``, of a list of them: one call per Lambda batch; with
    ``records=True``, of ``Received`` values instead of events).

    ``dead_letters`` defaults to the queue named by ``BUS_DLQ_URL``. Without ``ops`` it
    takes the row changes (``ROW_OPS``): schema changes (``s``) come to a consumer that
    names them; a deployment's config leaves the choice to the code.
    """
    selection = Selection.of(tables, ROW_OPS if ops is None else ops)
    source: DeadLettersSource = dead_letters if dead_letters is not None else _env_dead_letters

    def decorate(function: Callable[..., object]) -> ConsumerHandler:
        return ConsumerHandler(function, selection, batch=batch, dead_letters=source, records=records)

    return decorate


def _event(item: ChangeEvent | Received) -> ChangeEvent:
    return item.event if isinstance(item, Received) else item


def _env_dead_letters() -> DeadLetterQueue | None:
    url = ConsumerSettings.from_environ(os.environ).dlq_url
    if url is None:
        return None
    import boto3

    return DeadLetterQueue(boto3.client("sqs"), url, stage="consumer")


def dedup_key(event: ChangeEvent) -> str:
    """Deprecated: ``event.id`` is the dedup key."""
    warnings.warn("dedup_key(event) is deprecated: use event.id", DeprecationWarning, stacklevel=2)
    return event.id
