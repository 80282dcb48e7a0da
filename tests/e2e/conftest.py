"""The whole local data path per test: the test's own PostgreSQL database, a moto server,
the DMS stand-in, the local Lambda service running the deployed discovery, glue and the
configured consumers (the pg_mirror writes its own mirror database), and a consumer (the
SDK's decorator) that rebuilds every table from the events it receives."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_config
from config.model import ConsumerConfig
from dmsbus import variables
from dmsbus.consumer import ChangeEvent, consumer
from local.demo import Rebuilt, Verification, create_schema, mirror_schema_template, verify, verify_mirror
from local.runtime import LocalRuntime, local_bus
from local.streams import DynamoDBStreamSource
from local.verify import check_mirror

REPOSITORY = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPOSITORY / "config")
BUS = local_bus(CONFIG.bus)
SOURCE = CONFIG.sources[0]
MIRROR_TEMPLATE = mirror_schema_template(BUS)

#: Called with each event before the rebuilding consumer applies it; raising fails it.
Fault = Callable[[ChangeEvent], None]


def corrupt_poison_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream records of the customer named "poison" reach the glue with an attribute of an
    unknown type: a record it cannot turn into an event."""
    shape = DynamoDBStreamSource._lambda_record

    def corrupt(self: DynamoDBStreamSource, record: dict[str, Any]) -> dict[str, Any]:
        shaped: dict[str, Any] = shape(self, record)
        if shaped["dynamodb"].get("NewImage", {}).get("name") == {"S": "poison"}:
            shaped["dynamodb"]["NewImage"]["name"] = {"Q": "?"}
        return shaped

    monkeypatch.setattr(DynamoDBStreamSource, "_lambda_record", corrupt)


def failing_on_customer(customer_id: int, fixed: list[bool] | None = None) -> Fault:
    """A fault: the consumer cannot take that customer's changes (until ``fixed`` holds
    something)."""

    def fault(event: ChangeEvent) -> None:
        if event.source.table == "customers" and event.key.get("id") == customer_id and not fixed:
            raise RuntimeError(f"injected: the consumer cannot take customer {customer_id}")

    return fault


@dataclass
class Pipeline:
    runtime: LocalRuntime
    rebuilt: Rebuilt
    url: str
    faults: list[Fault]

    def converge(self, timeout: float = 60.0) -> Verification:
        """Waits until the rebuilt state and the pg_mirror's database both equal the source
        (or the time is up); returns both checks' problems."""
        deadline = time.monotonic() + timeout
        while True:
            stand_in = self.runtime.stand_in
            assert stand_in is not None
            result = verify(
                stand_in.dms, self.rebuilt, numbers=BUS.glue.numbers, schemas=self.runtime.schema_store()
            )
            if result.lost == 0:
                result = result.plus(self.mirror())
            if result.lost == 0 or time.monotonic() > deadline:
                return result
            time.sleep(0.3)

    def mirror(self, url: str | None = None) -> Verification:
        """The pg_mirror consumer's database (or ``url``'s) against the source."""
        assert self.runtime.stand_in is not None and MIRROR_TEMPLATE is not None
        return verify_mirror(
            self.runtime.stand_in.dms,
            url or self.runtime.mirror_url,
            numbers=BUS.glue.numbers,
            schema_template=MIRROR_TEMPLATE,
        )

    def verify(self, sample: int | None = 50) -> dict[str, tuple[int, int, int]]:
        """``dmsbus verify``'s check: per table, (rows compared, lost, stale after DDL)."""
        assert self.runtime.stand_in is not None and MIRROR_TEMPLATE is not None
        checks = check_mirror(
            self.runtime.stand_in.dms,
            self.runtime.mirror_url,
            numbers=BUS.glue.numbers,
            schema_template=MIRROR_TEMPLATE,
            sample=sample,
        )
        return {c.table: (c.compared, len(c.lost), len(c.stale)) for c in checks}

    def wait_attached(self, tables: int = 5, timeout: float = 30.0) -> None:
        """Until discovery has attached the glue to that many tables' streams."""
        service = self.runtime.service
        assert service is not None
        deadline = time.monotonic() + timeout
        while len(service.mappings()) < tables + 1:  # and the consumer's own mapping
            assert time.monotonic() < deadline, f"discovery did not attach {tables} tables in {timeout} s"
            time.sleep(0.1)

    def queue_messages(self, queue: str) -> list[dict[str, Any]]:
        sqs = self.runtime.aws.client("sqs")
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        messages: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            if not batch:
                return messages
            messages.extend(batch)


@pytest.fixture
def pipeline(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    """The sample bus (a test may give another: ``parametrize("pipeline", [bus], indirect=True)``,
    or ``[(bus, sweep_seconds)]`` for sweeps and schedules other than every 20 seconds)."""
    create_schema(database, seed_rows=5)
    given = getattr(request, "param", BUS)
    bus, sweep_seconds = given if isinstance(given, tuple) else (given, 20)
    runtime = LocalRuntime(
        bus=bus,
        source=SOURCE,
        state_dir=tmp_path / "state",
        source_url=database,
        # Sweeps retry what a discovery run left undone; new tables come through the
        # CreateTable rule long before the next sweep.
        sweep_seconds=sweep_seconds,
        # Typed buses: the glue reads a table's schema again after 5 s, not 5 minutes
        function_environment={variables.SCHEMA_TTL_SECONDS: "5"},
    )
    rebuilt = Rebuilt()
    faults: list[Fault] = []

    @consumer()
    def rebuild(event: ChangeEvent) -> None:
        for fault in list(faults):
            fault(event)
        rebuilt.apply(event)

    try:
        runtime.start_database()
        runtime.start_aws()
        assert runtime.local_bus is not None
        runtime.local_bus.add_consumer(
            ConsumerConfig(name="rebuild", code="tests", batch_size=50, max_retries=5), handler=rebuild
        )
        stand_in = runtime.start_dms()
        runtime.start_lambda()
        # The tests' workloads start on loaded tables, as the demo's does.
        stand_in.wait_loaded()
        yield Pipeline(runtime, rebuilt, database, faults)
    finally:
        runtime.stop()
        runtime.drop_mirror()
