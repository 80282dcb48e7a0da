"""Where the operations commands reach a bus: AWS through the standard credential chain
(``--profile``, ``--region``), or a running ``dmsbus up`` through its moto endpoint
(``--local [STATE]``, which reads the endpoint ``up`` notes in its state folder, or
``--endpoint-url``).

Functions are invoked as the bus would: in AWS with Lambda's Invoke; against ``dmsbus up``
here, from their code folder with the environment the local bus gives them, since the
functions of local mode run in ``up``'s process, not behind moto's Lambda API.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from config.loader import ConfigError, load_config
from config.model import BusConfig, Config, ConsumerConfig
from config.plan import consumer_plan, deployment_plan
from local.bus import local_function
from local.functions import ACCOUNT, REGION, LocalFunction

#: What a running ``dmsbus up`` notes in its state folder (its database, mirror, endpoint).
UP_FILE = "up.json"


def local_session(region: str | None = None) -> boto3.session.Session:
    """A session for moto: local mode has no real credentials and must not use the caller's."""
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region or REGION
    )


Invoke = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]

#: Lambda's longest run is 900 s.
INVOKE_CONFIG = BotoConfig(read_timeout=960, connect_timeout=10, retries={"total_max_attempts": 1})


class InvokeError(RuntimeError):
    """A function that raised, or that Lambda could not run; the message names it."""


def add_arguments(command: argparse.ArgumentParser, repository: Path) -> None:
    """``--config`` and where the bus runs, for a command that reaches a bus."""
    command.add_argument("--config", type=Path, default=repository / "config", help="config folder")
    where = command.add_mutually_exclusive_group()
    where.add_argument("--profile", help="AWS profile (default: the standard credential chain)")
    where.add_argument(
        "--local",
        nargs="?",
        const=Path(".dmsbus"),
        type=Path,
        metavar="STATE",
        help="the bus of a running `dmsbus up` (its state folder, default .dmsbus)",
    )
    where.add_argument("--endpoint-url", help="an AWS endpoint (a moto server)")
    command.add_argument("--region", help="AWS region (default: the profile's or AWS_REGION)")


def noted(state: Path) -> dict[str, str]:
    """What ``dmsbus up`` noted in ``state``, or nothing."""
    path = state / UP_FILE
    if not path.is_file():
        return {}
    values: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return values


@dataclass
class Bus:
    """A bus's config and clients for the account (or moto server) it runs in."""

    config: Config
    session: boto3.session.Session
    endpoint_url: str | None = None
    #: Given to functions run here (``dmsbus up``'s mirror database, say).
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def bus(self) -> BusConfig:
        return self.config.bus

    @property
    def local(self) -> bool:
        return self.endpoint_url is not None

    def client(self, service: str) -> Any:
        session: Any = self.session  # a service named at run time: boto3's stubs type each by name
        return session.client(service, endpoint_url=self.endpoint_url)

    def account_and_region(self) -> tuple[str, str]:
        if self.local:
            return ACCOUNT, REGION
        identity = self.client("sts").get_caller_identity()
        return str(identity["Account"]), str(self.session.region_name)

    def invoker(self) -> Invoke:
        """Calls a bus function (by name) with an event and returns its response."""
        if not self.local:
            # One attempt, waiting as long as a function may run: a retried synchronous
            # invoke would run the batch twice at once.
            session: Any = self.session
            client = session.client("lambda", config=INVOKE_CONFIG)
            return lambda_invoker(client)
        functions: dict[str, LocalFunction] = {}

        def invoke(name: str, event: Mapping[str, Any]) -> Mapping[str, Any]:
            if name not in functions:
                functions[name] = self._local_function(name, self.environment)
            response = functions[name].invoke(dict(event))
            return response if isinstance(response, Mapping) else {}

        return invoke

    def _local_function(self, name: str, environment: Mapping[str, str]) -> LocalFunction:
        """A bus function as ``dmsbus up`` runs it: its code, the local bus's environment."""
        plan = deployment_plan(self.bus)
        planned = next((f for f in plan.functions if f.name == name and f.kind in ("glue", "consumer")), None)
        if planned is None:
            raise InvokeError(f"{name} is neither the glue nor a consumer of bus {self.bus.name}")
        dlq = self.client("sqs").get_queue_url(QueueName=planned.dead_letters.name)["QueueUrl"]
        on_top = {"AWS_ENDPOINT_URL": str(self.endpoint_url), **environment}
        return local_function(plan, planned, dlq_url=dlq, environment=on_top)


def consumer_function(
    bus: BusConfig, consumer: ConsumerConfig, environment: Mapping[str, str], *, dlq_url: str = ""
) -> LocalFunction:
    """A consumer's handler, loaded here with its deployed environment and ``environment``
    on top (without ``dlq_url``, a record that is not a change event stops it)."""
    return local_function(
        deployment_plan(bus), consumer_plan(bus, consumer), dlq_url=dlq_url, environment=environment
    )


def lambda_invoker(lambda_client: Any) -> Invoke:
    def invoke(name: str, event: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            response = lambda_client.invoke(
                FunctionName=name, Payload=json.dumps(event, separators=(",", ":")).encode()
            )
        except (ClientError, BotoCoreError) as exc:
            raise InvokeError(f"{name} could not be invoked: {exc}") from exc
        payload = response["Payload"].read()
        if response.get("FunctionError"):
            raise InvokeError(f"{name} failed: {payload.decode(errors='replace')[:500]}")
        result = json.loads(payload) if payload else {}
        return result if isinstance(result, Mapping) else {}

    return invoke


def connect(arguments: argparse.Namespace, command: str) -> Bus | None:
    """The bus the arguments name, or None after saying why on stderr."""
    try:
        config = load_config(arguments.config)
    except ConfigError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None
    region = arguments.region
    if arguments.local is not None:
        values = noted(arguments.local)
        endpoint = values.get("aws_endpoint")
        if not endpoint:
            print(
                f"{command}: no running `dmsbus up` noted in {arguments.local / UP_FILE}; start one, "
                "or pass --endpoint-url",
                file=sys.stderr,
            )
            return None
        # Functions run here read their secrets (the mirror's) from moto, as `up` made them.
        return Bus(config, local_session(), endpoint)
    if arguments.endpoint_url:
        return Bus(config, local_session(region), arguments.endpoint_url)
    session = boto3.session.Session(profile_name=arguments.profile, region_name=region)
    if session.region_name is None:
        print(
            f"{command}: no AWS region: pass --region, or set one in the profile or AWS_REGION",
            file=sys.stderr,
        )
        return None
    return Bus(config, session)


def describe_task(dms: Any, identifier: str, *, settings: bool = True) -> list[dict[str, Any]]:
    """DescribeReplicationTasks for one task identifier: [] when there is none (DMS raises
    ResourceNotFoundFault for a filter that matches nothing)."""
    try:
        tasks: list[dict[str, Any]] = dms.describe_replication_tasks(
            Filters=[{"Name": "replication-task-id", "Values": [identifier]}], WithoutSettings=not settings
        ).get("ReplicationTasks", [])
    except dms.exceptions.ResourceNotFoundFault:
        return []
    return tasks
