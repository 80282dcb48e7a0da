"""The deployment plan: what a bus deploys, as data, from its config alone.

For each function: its code folder, name, handler, memory and timeout, its typed settings
(the model its handler reads, ``dmsbus.settings``), its event source mapping with every
Lambda setting, its dead-letter queue, bucket, secret, network and grants. ``stacks/``
renders the plan into CDK constructs and ``local/`` into the local Lambda service, so both
deploy the same topology (tests/test_plan_agreement.py builds both and compares them).
Adding a function is one entry here.

Values known only once deployed (a queue's URL, the stream's ARN) are :class:`Ref`\\ s:
each renderer resolves them, stacks to CloudFormation tokens and local mode to the moto
server's values (:func:`resolve`).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from config.functions import (
    RESERVED_PREFIXES,
    ConsumerError,
    bucket_name,
    consumer_name,
    dead_letter_name,
    discovery_name,
    glue_name,
    schema_function_name,
    schema_table_name,
    source_admin_function_name,
    stream_name,
)
from config.model import (
    BusConfig,
    ConsumerBucket,
    ConsumerConfig,
    ConsumerNetwork,
    SourceConfig,
    StreamMapping,
)
from discovery.settings import GLUE_STARTING_POSITION, DiscoverySettings, MappingSettings
from dmsbus import variables
from dmsbus.event_sources import mapping_request
from dmsbus.schemas import MYSQL_ENGINES, POSTGRES_ENGINES, TABLE_KEY
from dmsbus.settings import ConsumerSettings, Settings, SettingsError
from glue.settings import GlueSettings
from source_admin.core import Selection
from source_admin.settings import SourceAdminSettings
from source_schema.settings import SourceSchemaSettings

RefAttribute = Literal["name", "url", "arn"]
#: Discovery's function: a sweep waits for tables to become ACTIVE and backfills, so it gets
#: Lambda's longest timeout; one run at a time (overlapping runs are safe but scan twice).
DISCOVERY_MEMORY_MB = 512
DISCOVERY_TIMEOUT_SECONDS = 900
DISCOVERY_CONCURRENCY = 1
#: The key of the failure bucket among the plan's references.
FAILURES = "failures"


class Ref(str):
    """A value known once deployed: ``attribute`` of the plan's resource ``resource``.

    A str, so a settings model holds it where the deployed value goes, spelled
    ``${resource.attribute}`` in the plan's own rendering."""

    resource: str
    attribute: RefAttribute

    def __new__(cls, resource: str, attribute: RefAttribute) -> Ref:
        made = super().__new__(cls, f"${{{resource}.{attribute}}}")
        made.resource = resource
        made.attribute = attribute
        return made

    def __reduce__(self) -> tuple[type[Ref], tuple[str, RefAttribute]]:
        # copy, deepcopy and pickle make a Ref again, not a str
        return (Ref, (self.resource, self.attribute))


class UnresolvedError(KeyError):
    """A renderer was asked for a reference it has no value for."""


def resolve(environment: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """``environment`` with each reference replaced by its value in ``values``."""
    resolved: dict[str, str] = {}
    for name, value in environment.items():
        if isinstance(value, Ref):
            if value not in values:
                raise UnresolvedError(f"{name}: nothing deployed for {value}")
            resolved[name] = values[value]
        else:
            resolved[name] = value
    return resolved


@dataclass(frozen=True)
class StreamPlan:
    name: str

    @property
    def name_ref(self) -> Ref:
        return Ref(self.name, "name")

    @property
    def arn(self) -> Ref:
        return Ref(self.name, "arn")


@dataclass(frozen=True)
class QueuePlan:
    """A dead-letter queue (KMS, TLS-only, 14 days, 1 MiB messages in AWS)."""

    name: str

    @property
    def url(self) -> Ref:
        return Ref(self.name, "url")

    @property
    def arn(self) -> Ref:
        return Ref(self.name, "arn")


@dataclass(frozen=True)
class BucketPlan:
    """The failure bucket (named per account and region) or a consumer's archive bucket
    (``archive``: its settings; CloudFormation names it, local mode uses ``key``)."""

    key: str
    archive: ConsumerBucket | None = None

    @property
    def name(self) -> Ref:
        return Ref(self.key, "name")

    @property
    def arn(self) -> Ref:
        return Ref(self.key, "arn")


@dataclass(frozen=True)
class TablePlan:
    """A DynamoDB table of the bus (not one DMS makes): key, on-demand, point-in-time
    recovery, kept when the stack goes."""

    name: str
    key: Mapping[str, Any]

    @property
    def name_ref(self) -> Ref:
        return Ref(self.name, "name")


Access = Literal[
    # PutRecord(s) on the bus stream
    "stream:write",
    # SendMessage to a queue
    "queue:send",
    # PutObject under aws/lambda/ and ListBucket of the failure bucket (a mapping's
    # on-failure destination writes with the function's role)
    "failures:put",
    # PutObject of a consumer's bucket
    "bucket:put",
    # GetSecretValue of a secret
    "secret:read",
    # Describe, update, tag and scan the bus's tables (discovery)
    "tables:manage",
    # Read the streams of the bus's tables (the glue's mappings)
    "table-streams:read",
    # Create, update and delete the glue's event source mappings (discovery)
    "glue-mappings:manage",
    # Read the schema table (the glue)
    "schemas:read",
    # Read and write the schema table (the schema functions)
    "schemas:write",
    # Note a schema version announced on the bus (UpdateItem of its announced_ms only)
    "schemas:announce",
    # Invoke a source's schema function (the glue and discovery, asynchronously)
    "schema-function:invoke",
]


@dataclass(frozen=True)
class Grant:
    """What a function's role may do to one of the plan's resources (``resource``: a
    queue's or the stream's name, a bucket's key, a secret's name or ARN, the glue's
    function name). A mapping's own needs (reading the bus stream, writing its failure
    destination) come with the mapping and are not listed."""

    access: Access
    resource: str


@dataclass(frozen=True)
class MappingPlan:
    """An event source mapping with every Lambda setting: partial batch failures reported,
    bisect on error, bounded retries and record age, failed batches to ``on_failure``.
    ``source``: the bus stream (a consumer's, made by the stacks) or the bus's table
    streams (the glue's, one per table, made by discovery from its settings)."""

    source: Literal["bus-stream", "table-streams"]
    starting_position: Literal["TRIM_HORIZON", "LATEST"]
    batch_size: int
    batching_window_seconds: int
    parallelization_factor: int
    max_retries: int
    max_record_age_seconds: int
    on_failure: Ref
    bisect_batch_on_error: bool = True
    report_batch_item_failures: bool = True

    def request(self, *, function_name: str, stream_arn: str, on_failure: str | None) -> dict[str, Any]:
        """CreateEventSourceMapping's arguments, as discovery and local mode call it."""
        return mapping_request(
            self,
            function_name=function_name,
            stream_arn=stream_arn,
            starting_position=self.starting_position,
            on_failure=on_failure,
            bisect_batch_on_error=self.bisect_batch_on_error,
            report_batch_item_failures=self.report_batch_item_failures,
        )


FunctionKind = Literal["glue", "discovery", "consumer", "schema", "admin"]


@dataclass(frozen=True)
class FunctionPlan:
    kind: FunctionKind
    name: str
    #: Under ``functions/``: ``glue``, ``consumers/pg_mirror``.
    folder: str
    memory_mb: int
    timeout_seconds: int
    settings: Settings
    dead_letters: QueuePlan
    #: A consumer's own variables (its config entry's ``environment``).
    own_environment: Mapping[str, str] = field(default_factory=dict)
    #: The queue is also Lambda's dead-letter queue for asynchronous invokes (discovery).
    asynchronous_dead_letters: bool = False
    reserved_concurrency: int | None = None
    mapping: MappingPlan | None = None
    bucket: BucketPlan | None = None
    network: ConsumerNetwork | None = None
    grants: tuple[Grant, ...] = ()
    #: The function Lambda calls in ``<folder>/handler.py``.
    entry: str = "handler"
    #: The source whose stack deploys the function, in that source's network (None: the
    #: bus's or consumers' stack).
    source: str | None = None
    #: Invoked every so many minutes (an EventBridge schedule).
    schedule_minutes: int | None = None

    @property
    def name_ref(self) -> Ref:
        """The deployed function's name (a reference: it makes the glue's stack resource a
        dependency of discovery's)."""
        return Ref(self.name, "name")

    @property
    def handler(self) -> str:
        return self.folder.replace("/", ".") + f".handler.{self.entry}"

    @property
    def environment(self) -> dict[str, str]:
        """What Lambda's configuration holds: the settings' variables, the consumer's own,
        and Powertools' service name."""
        return {
            **self.own_environment,
            variables.POWERTOOLS_SERVICE: self.name,
            **self.settings.environment(),
        }


@dataclass(frozen=True)
class DeploymentPlan:
    bus: BusConfig
    stream: StreamPlan
    failures: BucketPlan
    functions: tuple[FunctionPlan, ...]
    #: The table of the sources' table schemas (a bus that types its events).
    schema_table: TablePlan | None = None

    def function(self, name: str) -> FunctionPlan:
        """The function deployed as ``name``."""
        for planned in self.functions:
            if planned.name == name:
                return planned
        raise KeyError(f"bus {self.bus.name} deploys no function {name}")

    @property
    def glue(self) -> FunctionPlan:
        return next(planned for planned in self.functions if planned.kind == "glue")

    @property
    def discovery(self) -> FunctionPlan:
        return next(planned for planned in self.functions if planned.kind == "discovery")

    @property
    def consumers(self) -> tuple[FunctionPlan, ...]:
        return tuple(planned for planned in self.functions if planned.kind == "consumer")


def deployment_plan(bus: BusConfig, sources: Sequence[SourceConfig] = ()) -> DeploymentPlan:
    """The bus's functions, and with ``sources`` their schema functions when the bus types
    its events."""
    stream = StreamPlan(stream_name(bus))
    failures = BucketPlan(FAILURES)
    schema_table = _schema_table(bus)
    # What the glue and discovery ask to read a table now: each source's schema function
    schema_functions = (
        {source.name: schema_function_name(bus, source) for source in sources}
        if schema_table is not None
        else {}
    )
    glue = _glue(bus, stream, failures, schema_table, schema_functions)
    functions = (
        glue,
        _discovery(bus, stream, failures, glue, schema_table, schema_functions=schema_functions),
        *(
            consumer_plan(bus, consumer, stream=stream, failures=failures, schema_table=schema_table)
            for consumer in bus.consumers
        ),
        *(_schema(bus, source, schema_table) for source in sources if schema_table is not None),
        *(_admin(bus, source) for source in sources),
    )
    for function in functions:
        # What each function reads at its cold start, read now: a required value written
        # empty fails the synth, naming the variable, not the first invocation.
        try:
            type(function.settings).from_environ(function.settings.environment())
        except SettingsError as exc:
            raise ConsumerError(f"function {function.name}: {exc}") from None
    return DeploymentPlan(
        bus=bus, stream=stream, failures=failures, functions=functions, schema_table=schema_table
    )


def _mapping(
    config: StreamMapping,
    *,
    source: Literal["bus-stream", "table-streams"],
    starting_position: Literal["TRIM_HORIZON", "LATEST"],
    failures: BucketPlan,
) -> MappingPlan:
    return MappingPlan(
        source=source,
        starting_position=starting_position,
        batch_size=config.batch_size,
        batching_window_seconds=config.batching_window_seconds,
        parallelization_factor=config.parallelization_factor,
        max_retries=config.max_retries,
        max_record_age_seconds=config.max_record_age_seconds,
        on_failure=failures.arn,
    )


def _schema_functions(functions: Mapping[str, str]) -> tuple[str, ...] | None:
    """``source=function`` pairs, as the settings hold them."""
    return tuple(f"{source}={name}" for source, name in sorted(functions.items())) or None


def _schema_table(bus: BusConfig) -> TablePlan | None:
    """The bus's schema table, when it types its events."""
    return TablePlan(schema_table_name(bus), TABLE_KEY) if bus.glue.typed else None


def _schema_grants(schema_table: TablePlan | None) -> tuple[Grant, ...]:
    """What the glue and discovery do with the schema table: read schemas, and note the
    versions whose schema-change events they put on every shard (dmsbus.schema_events)."""
    if schema_table is None:
        return ()
    return (Grant("schemas:read", schema_table.name), Grant("schemas:announce", schema_table.name))


def _invoke_grants(functions: Mapping[str, str]) -> tuple[Grant, ...]:
    return tuple(Grant("schema-function:invoke", name) for name in sorted(functions.values()))


def _glue(
    bus: BusConfig,
    stream: StreamPlan,
    failures: BucketPlan,
    schema_table: TablePlan | None,
    schema_functions: Mapping[str, str],
) -> FunctionPlan:
    config = bus.glue
    dead_letters = QueuePlan(dead_letter_name(glue_name(bus)))
    return FunctionPlan(
        kind="glue",
        name=glue_name(bus),
        folder="glue",
        memory_mb=config.memory_mb,
        timeout_seconds=config.timeout_seconds,
        settings=GlueSettings(
            bus=bus.name,
            stream_name=stream.name_ref,
            aggregate=config.aggregate,
            numbers=config.numbers,
            dlq_url=dead_letters.url,
            typed=config.typed,
            schema_table=schema_table.name_ref if schema_table is not None else None,
            schema_functions=_schema_functions(schema_functions),
            typed_wait_seconds=config.typed_wait_seconds if config.typed else None,
        ),
        dead_letters=dead_letters,
        mapping=_mapping(
            config, source="table-streams", starting_position=GLUE_STARTING_POSITION, failures=failures
        ),
        grants=(
            Grant("stream:write", stream.name),
            Grant("queue:send", dead_letters.name),
            Grant("failures:put", failures.key),
            Grant("table-streams:read", bus.name),
            *_schema_grants(schema_table),
            *_invoke_grants(schema_functions),
        ),
    )


#: boto3's endpoint of Secrets Manager alone: the SDKs' service-specific endpoint variable
#: (AWS SDKs and Tools Reference Guide, "Service-specific endpoints", feature-ss-endpoints).
SECRETS_MANAGER_ENDPOINT = "AWS_ENDPOINT_URL_SECRETS_MANAGER"
#: The schema function's memory and timeout: one catalog query per source, one small
#: write per changed table.
SCHEMA_MEMORY_MB = 256
SCHEMA_TIMEOUT_SECONDS = 120
#: At most this many schema functions of a source at once: each connects to the source
#: with DMS's credentials. Requests beyond wait in Lambda's queue (throttled asynchronous
#: invocations are retried for up to six hours: invocation-async-error-handling).
SCHEMA_CONCURRENCY = 2


def source_patterns(source: SourceConfig) -> list[str]:
    """The source's tables as ``schema.table`` patterns (``%`` the one wildcard): listed
    tables, then wildcard selections."""
    patterns = [f"{table.schema_}.{table.table}" for table in source.tables]
    return patterns + [f"{selection.schema_}.{selection.table}" for selection in source.selections]


def _secrets_manager_environment(source: SourceConfig) -> dict[str, str]:
    """In a VPC without a route to Secrets Manager's public endpoint, the one DMS is told to
    use (network.secrets_manager_endpoint), by boto3's per-service variable."""
    endpoint = source.network.secrets_manager_endpoint
    return {SECRETS_MANAGER_ENDPOINT: f"https://{endpoint}"} if endpoint else {}


def selection_of(source: SourceConfig) -> Selection:
    """Config's table selection as the admin function's settings carry it (the schema
    function's ``schema.table`` patterns, and each listed table's ``key`` with its
    ``key_types``: ``schema.table=order_id:number+line_no:number``)."""
    keys: list[str] = []
    for table in source.tables:
        if table.key:
            kinds: list[str | None] = [*table.key_types] if table.key_types else [None] * len(table.key)
            columns = (c if k is None else f"{c}:{k}" for c, k in zip(table.key, kinds, strict=True))
            keys.append(f"{table.schema_}.{table.table}={'+'.join(columns)}")
    return Selection.from_settings(source_patterns(source), keys)


#: The admin function runs one check or one slot query at a time, beside DMS's own
#: connection to the source: two at once, so that its schedule or a `dmsbus doctor` never
#: throttles the lifecycle's call (which waits and asks again when it is).
ADMIN_MEMORY_MB = 256
ADMIN_TIMEOUT_SECONDS = 120
ADMIN_CONCURRENCY = 2


def _admin(bus: BusConfig, source: SourceConfig) -> FunctionPlan:
    """A source's admin function: in its network, with the credentials DMS reads. It checks
    the source for DMS (``dmsbus doctor``, the lifecycle before the first start), tells and
    drops DMS's replication slot, and on the sweep's schedule measures the WAL that slots
    no process reads keep (the source stack alarms on it)."""
    name = source_admin_function_name(bus, source)
    selection = selection_of(source)
    return FunctionPlan(
        kind="admin",
        name=name,
        folder="source_admin",
        memory_mb=ADMIN_MEMORY_MB,
        timeout_seconds=ADMIN_TIMEOUT_SECONDS,
        reserved_concurrency=ADMIN_CONCURRENCY,
        settings=SourceAdminSettings(
            bus=bus.name,
            source=source.name,
            engine=source.engine,
            database=source.database,
            secret=source.credentials.secret,
            tables=selection.patterns(),
            keys=selection.keys() or None,
        ),
        own_environment=_secrets_manager_environment(source),
        dead_letters=QueuePlan(dead_letter_name(name)),
        asynchronous_dead_letters=True,
        source=source.name,
        schedule_minutes=bus.discovery.sweep_minutes,
        grants=(Grant("secret:read", source.credentials.secret),),
    )


def _schema(bus: BusConfig, source: SourceConfig, schema_table: TablePlan) -> FunctionPlan:
    """A source's schema function: in its network, with the credentials DMS reads, every
    sweep period."""
    if source.engine not in POSTGRES_ENGINES | MYSQL_ENGINES:
        raise ConsumerError(
            f"source {source.name}: glue.typed reads PostgreSQL's and MySQL's catalogs; "
            f"a {source.engine} source's events cannot be typed (turn glue.typed off)"
        )
    name = schema_function_name(bus, source)
    patterns = source_patterns(source)
    exclude = [
        f"{table.schema_}.{table.table}.{column}" for table in source.tables for column in table.exclude
    ]
    return FunctionPlan(
        kind="schema",
        name=name,
        folder="source_schema",
        memory_mb=SCHEMA_MEMORY_MB,
        timeout_seconds=SCHEMA_TIMEOUT_SECONDS,
        reserved_concurrency=SCHEMA_CONCURRENCY,
        settings=SourceSchemaSettings(
            bus=bus.name,
            source=source.name,
            engine=source.engine,
            database=source.database,
            secret=source.credentials.secret,
            schema_table=schema_table.name_ref,
            tables=tuple(patterns),
            exclude=tuple(exclude) or None,
        ),
        own_environment=_secrets_manager_environment(source),
        dead_letters=QueuePlan(dead_letter_name(name)),
        asynchronous_dead_letters=True,
        source=source.name,
        schedule_minutes=bus.discovery.sweep_minutes,
        grants=(
            Grant("schemas:write", schema_table.name),
            Grant("secret:read", source.credentials.secret),
        ),
    )


def _discovery(
    bus: BusConfig,
    stream: StreamPlan,
    failures: BucketPlan,
    glue: FunctionPlan,
    schema_table: TablePlan | None,
    *,
    schema_functions: Mapping[str, str],
) -> FunctionPlan:
    mapping = glue.mapping
    assert mapping is not None
    return FunctionPlan(
        kind="discovery",
        name=discovery_name(bus),
        folder="discovery",
        memory_mb=DISCOVERY_MEMORY_MB,
        timeout_seconds=DISCOVERY_TIMEOUT_SECONDS,
        reserved_concurrency=DISCOVERY_CONCURRENCY,
        settings=DiscoverySettings(
            bus=bus.name,
            stream_name=stream.name_ref,
            aggregate=bus.glue.aggregate,
            numbers=bus.glue.numbers,
            glue_function_name=glue.name_ref,
            glue_on_failure_arn=mapping.on_failure,
            mapping=MappingSettings(
                batch_size=mapping.batch_size,
                batching_window_seconds=mapping.batching_window_seconds,
                parallelization_factor=mapping.parallelization_factor,
                max_retries=mapping.max_retries,
                max_record_age_seconds=mapping.max_record_age_seconds,
            ),
            typed=bus.glue.typed,
            schema_table=schema_table.name_ref if schema_table is not None else None,
            schema_functions=_schema_functions(schema_functions),
            typed_wait_seconds=bus.glue.typed_wait_seconds if bus.glue.typed else None,
            keep_provisioned=bus.discovery.keep_provisioned,
            backfill=bus.discovery.backfill,
            sweep_minutes=bus.discovery.sweep_minutes,
        ),
        dead_letters=QueuePlan(dead_letter_name(discovery_name(bus))),
        asynchronous_dead_letters=True,
        grants=(
            Grant("tables:manage", bus.name),
            Grant("glue-mappings:manage", glue.name),
            Grant("stream:write", stream.name),  # the backfill publishes op "r" events
            # and types them, as the glue does
            *_schema_grants(schema_table),
            *_invoke_grants(schema_functions),
        ),
    )


def consumer_plan(
    bus: BusConfig,
    consumer: ConsumerConfig,
    *,
    stream: StreamPlan | None = None,
    failures: BucketPlan | None = None,
    schema_table: TablePlan | None = None,
) -> FunctionPlan:
    """A consumer entry's function: its settings model (:func:`settings_model`) holds what
    dmsbus sets and the variables of its ``environment`` it declares; the rest of its
    ``environment`` goes beside."""
    stream = stream or StreamPlan(stream_name(bus))
    failures = failures or BucketPlan(FAILURES)
    if schema_table is None:
        schema_table = _schema_table(bus)
    name = consumer_name(bus.name, consumer)
    reserved = sorted(key for key in consumer.environment if key.startswith(RESERVED_PREFIXES))
    if reserved:
        raise ConsumerError(f"consumer {consumer.name}: environment {reserved} is set by dmsbus")
    folder = consumer.code.removeprefix("functions/")
    dead_letters = QueuePlan(dead_letter_name(name))
    bucket = BucketPlan(bucket_name(name), archive=consumer.bucket) if consumer.bucket is not None else None
    given = ConsumerSettings(
        bus=bus.name,
        dlq_url=dead_letters.url,
        tables=tuple(consumer.tables) if consumer.tables is not None else None,
        ops=tuple(consumer.ops) if consumer.ops is not None else None,
        secret=consumer.secret,
        bucket=bucket.name if bucket is not None else None,
        schema_table=schema_table.name_ref if schema_table is not None else None,
    )
    model = settings_model(folder)
    if schema_table is not None and not model.TYPED_EVENTS:
        raise ConsumerError(
            f"consumer {consumer.name}: {folder} does not take typed events yet; "
            "turn glue.typed off, or leave this consumer out (docs/envelope.md, 'Typed values')"
        )
    try:
        # The consumer's own model reads its variables now, at synth, as at its cold start.
        parsed = model.from_environ({**consumer.environment, **given.environment()})
    except SettingsError as exc:
        raise ConsumerError(f"consumer {consumer.name}: {exc}") from None
    # What dmsbus sets keeps its references (parsing made them plain strings).
    settings = dataclasses.replace(
        parsed, **{item.name: getattr(given, item.name) for item in dataclasses.fields(given)}
    )
    own = {key: value for key, value in consumer.environment.items() if key not in model.variables()}
    grants = [Grant("queue:send", dead_letters.name)]
    if bucket is not None:
        grants.append(Grant("bucket:put", bucket.key))
    if consumer.secret is not None:
        grants.append(Grant("secret:read", consumer.secret))
    if schema_table is not None:
        grants.append(Grant("schemas:read", schema_table.name))  # event.schema
    return FunctionPlan(
        kind="consumer",
        name=name,
        folder=folder,
        memory_mb=consumer.memory_mb,
        timeout_seconds=consumer.timeout_seconds,
        settings=settings,
        own_environment=own,
        dead_letters=dead_letters,
        mapping=_mapping(
            consumer, source="bus-stream", starting_position=consumer.starting_position, failures=failures
        ),
        bucket=bucket,
        network=consumer.network,
        grants=tuple(grants),
    )


def settings_model(folder: str) -> type[ConsumerSettings]:
    """The settings model of the consumer in ``functions/<folder>``: ``MODEL`` in its
    ``settings.py`` (pg_mirror's, s3_archive's), else the one every consumer has."""
    module_name = folder.replace("/", ".") + ".settings"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return ConsumerSettings
        raise
    model = getattr(module, "MODEL", None)
    if model is None:
        return ConsumerSettings
    if not (isinstance(model, type) and issubclass(model, ConsumerSettings)):
        raise ConsumerError(f"functions/{folder}/settings.py: MODEL must be a ConsumerSettings subclass")
    # What dmsbus sets is read by the consumer SDK through ConsumerSettings: a model may
    # make such a variable required, never give it another default.
    base = {item.name: item.default for item in dataclasses.fields(ConsumerSettings)}
    for item in dataclasses.fields(model):
        if item.name in base and item.default not in (base[item.name], dataclasses.MISSING):
            raise ConsumerError(
                f"functions/{folder}/settings.py: {model.__name__}.{item.name} may be required, "
                "but its default is ConsumerSettings' (the consumer SDK reads it from there)"
            )
    return model
