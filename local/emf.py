"""CloudWatch's part of the embedded metric format (EMF), locally: the EMF documents a local
function writes to stdout become metrics on the moto server's CloudWatch, as CloudWatch Logs
extracts them from a Lambda's log in AWS
([CloudWatch_Embedded_Metric_Format_Specification](https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html)).

Each line of a function's stdout is one log event, as Lambda cuts it. A line that is an EMF
document gives, per MetricDirective, per DimensionSet and per MetricDefinition, one
``PutMetricData`` datum: the directive's ``Namespace``, the dimension set's keys with their
values on the root node, the metric's values (a number or an array of them), its ``Unit``
(``None`` when absent), its ``StorageResolution`` (60 when absent) and ``_aws.Timestamp``.
The line still goes to the function's log as it is. A line that is not EMF is log text only.
A document that breaks the specification's MUSTs (a missing member, a value of the wrong
type, more than 100 MetricDefinitions in a directive, 30 keys in a DimensionSet or 100
values in a metric array, a dimension value over 1024 characters, a unit CloudWatch does
not know) gives no metric at all: CloudWatch counts it as a validation error and the
specification does not say that part of it is kept, so none is here.

:class:`EmfMetrics` also keeps a running total per (namespace, metric, dimensions) of what
it extracted, for ``dmsbus up``'s status line, which runs in the same process.

What this stand-in does NOT do that CloudWatch does:
- no ``AWS/Logs`` ``EMFParsingErrors``/``EMFValidationErrors`` metrics: a rejected document
  is only logged here (at debug level);
- no log group: the lines are in ``logs/<function>.log``, not in CloudWatch Logs (no Logs
  Insights, no metric filters);
- no delivery delay and no duplicates: CloudWatch delivers EMF metrics at least once
  (occasionally a value twice) and some time after the log event; here each datum is put
  once, at once, from a background thread;
- Lambda's own metrics (``AWS/Lambda`` Invocations, Errors, IteratorAge) are not made;
- a metric name or dimension key that EMF allows but ``PutMetricData`` does not (over 255
  characters) is dropped by moto's or botocore's rejection of that datum, with a warning;
- only the functions local mode runs are read: a function that ``dmsbus redrive --local``
  or ``replay`` runs in their own process writes its EMF to that process's stdout only.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("dmsbus.local.emf")

#: The specification's limits (its MUSTs and its JSON schema).
MAX_METRICS_PER_DIRECTIVE = 100
MAX_DIMENSION_KEYS = 30
MAX_VALUES = 100
MAX_DIMENSION_VALUE = 1024
#: An EMF event's largest size (1 MB; counted in characters here): a longer line is not
#: read as EMF, nor kept in memory.
MAX_EVENT_CHARACTERS = 1024 * 1024
#: The units the specification's JSON schema allows (MetricDatum's).
UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)
#: PutMetricData takes at most 1,000 datums per request.
PUT_BATCH = 1000

Dimensions = tuple[tuple[str, str], ...]


class EmfError(ValueError):
    """The document claims EMF (an ``_aws`` member) but breaks the specification."""


@dataclass(frozen=True)
class Metric:
    """One metric of one EMF document: a PutMetricData datum."""

    namespace: str
    name: str
    dimensions: Dimensions
    values: tuple[float, ...]
    unit: str
    storage_resolution: int
    timestamp_ms: int

    def datum(self) -> dict[str, Any]:
        return {
            "MetricName": self.name,
            "Dimensions": [{"Name": name, "Value": value} for name, value in self.dimensions],
            "Values": list(self.values),
            "Unit": self.unit,
            "StorageResolution": self.storage_resolution,
            "Timestamp": datetime.fromtimestamp(self.timestamp_ms / 1000, UTC),
        }


def _reject_constant(name: str) -> Any:
    raise EmfError(f"{name} is not JSON (RFC 8259)")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse(line: str) -> list[Metric]:
    """The metrics of one log line: [] when it is not EMF; EmfError when it claims to be
    (a JSON object with ``_aws``) but breaks the specification."""
    text = line.strip()
    if not text.startswith("{") or '"_aws"' not in text:
        return []
    try:
        root = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return []  # not JSON: log text
    if not isinstance(root, dict) or "_aws" not in root:
        return []
    meta = root["_aws"]
    if not isinstance(meta, dict):
        raise EmfError("_aws is not an object")
    directives, timestamp = meta.get("CloudWatchMetrics"), meta.get("Timestamp")
    if not isinstance(directives, list):
        raise EmfError("_aws.CloudWatchMetrics is not an array")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise EmfError("_aws.Timestamp is not an integer (milliseconds since the epoch)")
    metrics: list[Metric] = []
    for directive in directives:
        metrics.extend(_directive(root, directive, timestamp))
    return metrics


def _directive(root: dict[str, Any], directive: Any, timestamp: int) -> list[Metric]:
    if not isinstance(directive, dict):
        raise EmfError("a MetricDirective is not an object")
    namespace, sets, definitions = (
        directive.get("Namespace"),
        directive.get("Dimensions"),
        directive.get("Metrics"),
    )
    if not isinstance(namespace, str) or not 1 <= len(namespace) <= 1024:
        raise EmfError(f"Namespace {namespace!r} is not a string of 1 to 1024 characters")
    if not isinstance(sets, list) or not sets:
        raise EmfError("Dimensions is not a non-empty array of DimensionSets")
    if not isinstance(definitions, list) or len(definitions) > MAX_METRICS_PER_DIRECTIVE:
        raise EmfError(f"Metrics is not an array of at most {MAX_METRICS_PER_DIRECTIVE} MetricDefinitions")
    dimension_sets = [_dimension_set(root, keys) for keys in sets]
    metrics: list[Metric] = []
    for definition in definitions:
        name, unit, resolution, values = _definition(root, definition)
        metrics.extend(
            Metric(namespace, name, dimensions, values, unit, resolution, timestamp)
            for dimensions in dimension_sets
            if values
        )
    return metrics


def _dimension_set(root: dict[str, Any], keys: Any) -> Dimensions:
    if not isinstance(keys, list) or len(keys) > MAX_DIMENSION_KEYS:
        raise EmfError(f"a DimensionSet is not an array of at most {MAX_DIMENSION_KEYS} keys")
    dimensions = []
    for key in keys:
        value = root.get(key) if isinstance(key, str) else None
        if not isinstance(value, str) or len(value) > MAX_DIMENSION_VALUE:
            raise EmfError(f"dimension {key!r}: its target is not a string of at most 1024 characters")
        dimensions.append((key, value))
    return tuple(dimensions)


def _definition(root: dict[str, Any], definition: Any) -> tuple[str, str, int, tuple[float, ...]]:
    if not isinstance(definition, dict) or not isinstance(definition.get("Name"), str):
        raise EmfError("a MetricDefinition has no Name")
    name: str = definition["Name"]
    unit = definition.get("Unit", "None")
    resolution = definition.get("StorageResolution", 60)
    if unit not in UNITS:
        raise EmfError(f"metric {name}: unit {unit!r} is not a CloudWatch unit")
    if type(resolution) is not int or resolution not in (1, 60):
        raise EmfError(f"metric {name}: StorageResolution {resolution!r} is neither 1 nor 60")
    target = root.get(name)
    values: list[Any] = target if isinstance(target, list) else [target]
    if len(values) > MAX_VALUES or not all(_number(value) for value in values):
        raise EmfError(f"metric {name}: its target is not a number or an array of at most 100 numbers")
    return name, unit, resolution, tuple(float(value) for value in values)


class EmfMetrics:
    """The EMF of local functions' stdout, put on ``cloudwatch`` (the moto server's; None:
    only counted) by a background thread, and running totals of it."""

    def __init__(self, cloudwatch: Any | None) -> None:
        self._cloudwatch = cloudwatch
        self._totals: dict[tuple[str, str, Dimensions], float] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def reader(self) -> Callable[[str], None]:
        """What one invocation's stdout writes are given to (see :class:`LogLines`)."""
        return LogLines(self).write

    def extract(self, line: str) -> None:
        """One complete log line: its metrics counted and queued for CloudWatch; never raises."""
        try:
            metrics = parse(line)
        except EmfError as exc:
            logger.debug("not extracted, as CloudWatch would not (EMFValidationErrors): %s", exc)
            return
        except Exception:  # the log path never raises
            logger.debug("EMF line not read", exc_info=True)
            return
        if not metrics:
            return
        with self._lock:
            for metric in metrics:
                key = (metric.namespace, metric.name, tuple(sorted(metric.dimensions)))
                self._totals[key] = self._totals.get(key, 0.0) + sum(metric.values)
            if self._cloudwatch is None:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dmsbus-local-emf", daemon=True)
                self._thread.start()
            for metric in metrics:
                self._queue.put((metric.namespace, metric.datum()))

    def total(self, namespace: str, metric: str, dimensions: Mapping[str, str]) -> float:
        """The sum of ``metric``'s values with exactly ``dimensions``, since this was made."""
        with self._lock:
            return self._totals.get((namespace, metric, tuple(sorted(dimensions.items()))), 0.0)

    def flush(self, timeout: float = 10.0) -> None:
        """Until what was extracted so far has been put (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Put what is queued, then end the background thread; safe to call twice."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._put([item for item in batch if item is not None])
            for _ in batch:
                self._queue.task_done()
            if None in batch:
                return

    def _put(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        cloudwatch: Any = self._cloudwatch
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for namespace, datum in items:
            by_namespace.setdefault(namespace, []).append(datum)
        for namespace, data in by_namespace.items():
            for start in range(0, len(data), PUT_BATCH):
                chunk = data[start : start + PUT_BATCH]
                try:
                    cloudwatch.put_metric_data(Namespace=namespace, MetricData=chunk)
                    continue
                except Exception:  # one bad datum must not cost the others theirs
                    if len(chunk) == 1:
                        logger.warning("local CloudWatch rejected %s %s", namespace, chunk[0], exc_info=True)
                        continue
                for datum in chunk:
                    try:
                        cloudwatch.put_metric_data(Namespace=namespace, MetricData=[datum])
                    except Exception:
                        logger.warning("local CloudWatch rejected %s %s", namespace, datum, exc_info=True)


class LogLines:
    """One invocation's stdout writes, cut into lines for :meth:`EmfMetrics.extract`.

    Writes arrive in pieces (``print`` writes the text, then the newline), so text is kept
    until its newline. What is left without one when the invocation ends is not read (a
    partial line is log text). Never raises: it sits on the function's log path."""

    def __init__(self, metrics: EmfMetrics) -> None:
        self._metrics = metrics
        self._pending: list[str] = []
        self._size = 0
        #: The current line grew past an EMF event's size: skipped until its newline.
        self._skipping = False

    def write(self, text: str) -> None:
        try:
            while text:
                head, newline, text = text.partition("\n")
                if not newline:
                    self._keep(head)
                    return
                self._keep(head)
                if not self._skipping:
                    self._metrics.extract("".join(self._pending))
                self._pending, self._size, self._skipping = [], 0, False
        except Exception:
            logger.debug("log text not read for EMF", exc_info=True)

    def _keep(self, piece: str) -> None:
        if self._skipping or not piece:
            return
        self._size += len(piece)
        if self._size > MAX_EVENT_CHARACTERS:
            self._pending, self._skipping = [], True
        else:
            self._pending.append(piece)
