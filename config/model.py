"""The typed config model: what to replicate and how the bus runs. Defaults live here only.

Plain Python (pydantic), no ``aws_cdk``: ``stacks/`` and ``local/`` both read it.
Every model forbids unknown keys, so a typo is an error that names the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from dmsbus.names import IDENTIFIER
from dmsbus.table_mappings import like, pattern

# A table pattern: identifier characters, literal (an `_` too), and `%` for any run.
_PATTERN = re.compile(r"[A-Za-z0-9_%-]+")
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+")
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]+")
_SQS_OR_SNS_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+")
_INSTANCE_CLASS = re.compile(r"dms\.[a-z0-9]+\.[a-z0-9]+")
_SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}")
_VPC = re.compile(r"vpc-[0-9a-f]{8,17}")
_TABLE_FILTER = re.compile(r"[A-Za-z0-9_*?-]+\.[A-Za-z0-9_*?-]+")
_SECURITY_GROUP = re.compile(r"sg-[0-9a-f]{8,17}")
_ROUTE_TABLE = re.compile(r"rtb-[0-9a-f]{8,17}")
_VPCE_DNS = re.compile(r"vpce-[0-9a-z-]+\.secretsmanager\.[a-z0-9-]+\.vpce\.amazonaws\.com(\.cn)?")


def _identifier(value: str) -> str:
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(f"{value!r} is not an identifier (letters, digits, '_' and '-' only)")
    return value


#: DMS's identifiers (replication instance, task, endpoints): "1-63 alphanumeric characters
#: or hyphens. First character must be a letter. Can't end with a hyphen or contain two
#: consecutive hyphens", "stored as a lowercase string" (API_CreateReplicationInstance;
#: API_CreateEndpoint and API_CreateReplicationTask say the same). The bus and source names
#: become them (``config.functions.replication_identifier``).
_DMS_NAME = re.compile(r"[A-Za-z](?:-?[A-Za-z0-9])*")
DMS_NAME_LENGTH = 63


def _dms_name(value: str) -> str:
    if not _DMS_NAME.fullmatch(value) or len(value) > DMS_NAME_LENGTH:
        raise ValueError(
            f"{value!r} cannot name DMS resources: use 1-{DMS_NAME_LENGTH} letters, digits and "
            "hyphens, starting with a letter, without '--' or a hyphen at the end "
            "(API_CreateReplicationInstance)"
        )
    return value


def _pattern(value: str) -> str:
    if not _PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a table pattern (identifier characters and '%' only)")
    return value


def _matching(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


Identifier = Annotated[str, AfterValidator(_identifier)]
#: A bus or source name: part of DMS's identifiers, so DMS's rules hold for it.
DmsName = Annotated[str, AfterValidator(_dms_name)]
Pattern = Annotated[str, AfterValidator(_pattern)]
#: Change ops a consumer may select; ``s`` (schema changes, typed buses) only when named.
Op = Literal["c", "u", "d", "r", "s"]
#: A DynamoDB key attribute's type, as an object mapping's ``attribute-sub-type`` names it.
KeyType = Literal["string", "number"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --- the bus ---------------------------------------------------------------------------


class KinesisConfig(Model):
    #: on_demand scales itself; provisioned needs ``shards``.
    mode: Literal["on_demand", "provisioned"] = "on_demand"
    shards: Annotated[int, Field(ge=1, le=10_000)] | None = None
    retention_hours: Annotated[int, Field(ge=24, le=8760)] = 24
    #: None: the bus stack creates a customer-managed key with rotation.
    kms_key_arn: Annotated[str, _matching(_KMS_KEY_ARN, "a KMS key or alias ARN")] | None = None

    @model_validator(mode="after")
    def _shards_with_mode(self) -> KinesisConfig:
        if self.mode == "provisioned" and self.shards is None:
            raise ValueError("shards is required when mode is provisioned")
        if self.mode == "on_demand" and self.shards is not None:
            raise ValueError("shards applies to mode provisioned only; on_demand scales itself")
        return self


class StreamMapping(Model):
    """Event source mapping settings shared by the glue and the consumers."""

    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    batching_window_seconds: Annotated[int, Field(ge=0, le=300)] = 0
    parallelization_factor: Annotated[int, Field(ge=1, le=10)] = 1
    #: Bounded: an ordered stream must not retry a failing record forever.
    max_retries: Annotated[int, Field(ge=0, le=10_000)] = 10
    max_record_age_seconds: Annotated[int, Field(ge=60, le=604_800)] = 86_400
    memory_mb: Annotated[int, Field(ge=128, le=10_240)] = 256
    timeout_seconds: Annotated[int, Field(ge=3, le=900)] = 60


class GlueConfig(StreamMapping):
    # Large batches fill aggregates: 1.04 x the ideal PUT payload units at 5,000 against
    # 1.12 x at 1,000 on four shards (bench/glue_bench.py).
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 5_000
    batching_window_seconds: Annotated[int, Field(ge=0, le=300)] = 1
    memory_mb: Annotated[int, Field(ge=128, le=10_240)] = 1_024
    timeout_seconds: Annotated[int, Field(ge=3, le=900)] = 120
    aggregate: bool = True
    numbers: Literal["string", "number"] = "string"
    #: Give events the source's types (docs/envelope.md, "Typed values"): a schema
    #: function per source reads the tables' columns into the bus's schema table.
    typed: bool = False
    #: At a DDL moment (a row whose columns or values the table's schema does not explain)
    #: the glue reads the source's catalog before it publishes the row: it waits this long
    #: at most, then publishes untyped (counted and alarmed). Below ``timeout_seconds``.
    typed_wait_seconds: Annotated[int, Field(ge=1, le=60)] = 10

    @model_validator(mode="after")
    def _wait_within_timeout(self) -> GlueConfig:
        if self.typed_wait_seconds >= self.timeout_seconds:
            raise ValueError(
                f"typed_wait_seconds ({self.typed_wait_seconds}) must be below timeout_seconds "
                f"({self.timeout_seconds}): the glue waits within its invocation"
            )
        return self


class DiscoveryConfig(Model):
    sweep_minutes: Annotated[int, Field(ge=1, le=1_440)] = 15
    #: Keep DMS's provisioned 200/200 capacity instead of switching to on-demand.
    keep_provisioned: bool = False
    #: Scan tables DMS loaded before their stream existed and publish ``r`` events.
    backfill: bool = True


class AlarmConfig(Model):
    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values: object) -> object:
        """``kinesis_throttled`` (one threshold for reads and writes) was split in two."""
        if isinstance(values, dict) and "kinesis_throttled" in values:
            values = dict(values)
            old = values.pop("kinesis_throttled")
            values.setdefault("kinesis_write_throttled", old)
            values.setdefault("kinesis_read_throttled", old)
        return values

    iterator_age_ms: Annotated[int, Field(ge=1_000)] = 60_000
    function_errors: Annotated[int, Field(ge=1)] = 1
    dlq_messages: Annotated[int, Field(ge=1)] = 1
    #: Failed batches written to the failure bucket in 5 minutes.
    failed_batches: Annotated[int, Field(ge=1)] = 1
    cdc_latency_seconds: Annotated[int, Field(ge=1)] = 300
    #: The replication instance: free storage below this share of its allocated storage,
    #: CPU above this percent, freeable memory below these MiB (each over 5 minutes).
    dms_free_storage_percent: Annotated[int, Field(ge=1, le=99)] = 10
    dms_cpu_percent: Annotated[int, Field(ge=1, le=100)] = 90
    dms_freeable_memory_mib: Annotated[int, Field(ge=1)] = 256
    #: Kinesis records throttled on write, and GetRecords calls throttled, in 5 minutes.
    #: A shard serves 5 reads a second, shared by the mappings reading it: a bus with many
    #: consumers may raise the read threshold.
    kinesis_write_throttled: Annotated[int, Field(ge=1)] = 1
    kinesis_read_throttled: Annotated[int, Field(ge=1)] = 1
    #: WAL a source's logical replication slot keeps while no process reads it (DMS's while
    #: its task is stopped): MiB, measured each discovery sweep (PostgreSQL sources).
    replication_slot_retained_mib: Annotated[int, Field(ge=1)] = 1_024
    #: Read and write throttle events of the bus tables over a discovery sweep's period.
    dynamodb_throttle_events: Annotated[int, Field(ge=1)] = 1
    #: Events a typed bus put on the stream untyped in 5 minutes (glue.typed only).
    untyped_events: Annotated[int, Field(ge=1)] = 1
    #: An existing SNS topic the alarms notify; none: the alarms only show in CloudWatch.
    topic_arn: Annotated[str, _matching(_SQS_OR_SNS_ARN, "an SNS topic ARN")] | None = None


def _secret_reference(value: str) -> str:
    if value.startswith("arn:"):
        if not _SECRET_ARN.fullmatch(value):
            raise ValueError(f"secret {value!r} is not a Secrets Manager secret ARN")
    elif not _SECRET_NAME.fullmatch(value):
        raise ValueError(f"secret {value!r} is not a Secrets Manager secret name")
    return value


SecretReference = Annotated[str, AfterValidator(_secret_reference)]


class ConsumerNetwork(Model):
    """Runs the consumer in a VPC (to reach a database there)."""

    vpc_id: Annotated[str, _matching(_VPC, "a VPC id")]
    subnet_ids: Annotated[list[Annotated[str, _matching(_SUBNET, "a subnet id")]], Field(min_length=1)]
    #: Existing security groups; none: the stack creates one allowing ``egress_ports`` out.
    security_group_ids: list[Annotated[str, _matching(_SECURITY_GROUP, "a security group id")]] = Field(
        default_factory=list
    )
    egress_ports: list[Annotated[int, Field(ge=1, le=65_535)]] = Field(default_factory=lambda: [443])


class ConsumerBucket(Model):
    """A bucket the consumer writes to (KMS with the bus key, versioned, no deletes
    granted), moving objects to cheaper storage classes as they age."""

    infrequent_access_days: Annotated[int, Field(ge=30)] = 30
    glacier_days: Annotated[int, Field(ge=1)] | None = 180
    #: None: objects are kept for ever.
    expire_days: Annotated[int, Field(ge=1)] | None = None
    #: Overwritten copies (a retried batch) are kept this long.
    noncurrent_expire_days: Annotated[int, Field(ge=1)] = 30

    @model_validator(mode="after")
    def _in_order(self) -> ConsumerBucket:
        # S3 keeps an object 30 days in Standard-IA before the next transition.
        if self.glacier_days is not None and self.glacier_days < self.infrequent_access_days + 30:
            raise ValueError("glacier_days must be at least infrequent_access_days + 30 (S3's minimum in IA)")
        last = self.glacier_days or self.infrequent_access_days
        if self.expire_days is not None and self.expire_days <= last:
            raise ValueError(f"expire_days must come after the last transition (day {last})")
        return self


class ConsumerConfig(StreamMapping):
    name: Identifier
    #: The function's folder, relative to the repository: ``functions/consumers/<name>``.
    code: str
    #: ``schema.table`` patterns (``*`` wildcards) and ops this deployment receives; the
    #: function's own ``@consumer(tables=..., ops=...)`` narrows further.
    tables: list[Annotated[str, _matching(_TABLE_FILTER, "a schema.table pattern")]] | None = None
    ops: list[Op] | None = None
    starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON"
    environment: dict[Identifier, str] = Field(default_factory=dict)
    #: A Secrets Manager secret (name or ARN) the function may read: ``DMSBUS_SECRET``.
    secret: SecretReference | None = None
    network: ConsumerNetwork | None = None
    #: A bucket created for the consumer: ``DMSBUS_BUCKET``.
    bucket: ConsumerBucket | None = None

    @property
    def handler(self) -> str:
        """The Lambda handler string: the folder under ``functions/`` as a module path."""
        return ".".join(self.code.split("/")[1:]) + ".handler.handler"


class FailuresConfig(Model):
    """The failure bucket: where event source mappings put a batch they gave up on."""

    #: Days a failed batch is kept (its records are gone from the streams by then).
    expire_days: Annotated[int, Field(ge=1)] = 90


class BusConfig(Model):
    name: DmsName
    #: ``create``: the bus stack creates the account's ``dms-vpc-role``; ``existing``: the
    #: account has it already (it is one per account, named by DMS).
    dms_vpc_role: Literal["create", "existing"] = "create"
    #: Likewise ``dms-cloudwatch-logs-role``, which DMS needs to write task logs (dmsbus's
    #: task settings turn logging on).
    dms_cloudwatch_logs_role: Literal["create", "existing"] = "create"
    kinesis: KinesisConfig = Field(default_factory=KinesisConfig)
    glue: GlueConfig = Field(default_factory=GlueConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    alarms: AlarmConfig = Field(default_factory=AlarmConfig)
    failures: FailuresConfig = Field(default_factory=FailuresConfig)
    consumers: list[ConsumerConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_consumers(self) -> BusConfig:
        seen: set[str] = set()
        for index, consumer in enumerate(self.consumers):
            if consumer.name in seen:
                raise ValueError(f"consumers[{index}].name {consumer.name!r} is used twice")
            seen.add(consumer.name)
        return self


# --- sources ---------------------------------------------------------------------------

Engine = Literal["postgres", "aurora-postgresql", "mysql", "aurora", "mariadb"]
#: Engines DMS reads that dmsbus does not deploy yet, with why (refused at config load).
UNSUPPORTED_ENGINES = {
    "oracle": (
        "DMS does not support SslMode require, which every dmsbus source endpoint sets, on Oracle (CHAP_Security.SSL), "
        "and its CDC prerequisites (supplemental logging, LogMiner or Binary Reader: CHAP_Source.Oracle) "
        "are not checked or set by dmsbus"
    ),
    "sqlserver": (
        "its CDC prerequisites (MS-CDC or MS-Replication on every table, the distributor: "
        "CHAP_Source.SQLServer) are not checked or set by dmsbus"
    ),
}

DEFAULT_PORTS: dict[str, int] = {
    "postgres": 5432,
    "aurora-postgresql": 5432,
    "mysql": 3306,
    "aurora": 3306,
    "mariadb": 3306,
}


class Credentials(Model):
    """A Secrets Manager secret (name or ARN) holding username and password."""

    secret: SecretReference
    #: The customer-managed KMS key the secret is encrypted with, if not ``aws/secretsmanager``:
    #: DMS's secret access role then gets ``kms:Decrypt`` on it (through Secrets Manager only).
    kms_key_arn: Annotated[str, _matching(_KMS_KEY_ARN, "a KMS key ARN")] | None = None

    @property
    def is_arn(self) -> bool:
        return self.secret.startswith("arn:")


class Network(Model):
    #: Create a VPC for the replication instance instead of using an existing one. It can
    #: only reach a source with a public address, through NAT gateways: ``egress: nat``.
    create_vpc: bool = False
    #: With ``create_vpc``: ``nat`` gives the private subnets NAT gateways (one per AZ) so
    #: the instance reaches the source at its public address.
    egress: Literal["nat"] | None = None
    vpc_id: Annotated[str, _matching(_VPC, "a VPC id")] | None = None
    subnet_ids: list[Annotated[str, _matching(_SUBNET, "a subnet id")]] = Field(default_factory=list)
    #: In an existing VPC whose subnets have no route to the internet: the DNS name of its
    #: Secrets Manager interface endpoint (``vpce-....secretsmanager.<region>.vpce.amazonaws.com``),
    #: passed to DMS as ``secretsManagerEndpointOverride``.
    secrets_manager_endpoint: Annotated[str, _matching(_VPCE_DNS, "a VPC endpoint DNS name")] | None = None
    #: In an existing VPC: how the replication instance reaches DynamoDB. Since DMS 3.4.7 a
    #: private network needs a VPC endpoint for it (CHAP_VPC_Endpoints). ``existing``: the
    #: VPC has a DynamoDB gateway endpoint on the replication subnets' route tables;
    #: ``create``: the source stack creates one on ``route_table_ids``.
    dynamodb_endpoint: Literal["existing", "create"] | None = None
    route_table_ids: list[Annotated[str, _matching(_ROUTE_TABLE, "a route table id")]] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _one_network(self) -> Network:
        if self.create_vpc:
            if self.vpc_id or self.subnet_ids:
                raise ValueError("create_vpc: true takes no vpc_id or subnet_ids")
            if self.egress is None:
                raise ValueError(
                    "create_vpc: true builds a VPC with no route to your source database: set "
                    "egress: nat when the source has a public address (it must admit the NAT "
                    "gateways' addresses), or give vpc_id and subnet_ids of a VPC that reaches it "
                    "(the source's own VPC, or one peered or attached to a transit gateway)"
                )
            if self.secrets_manager_endpoint is not None:
                raise ValueError(
                    "create_vpc: true creates its own Secrets Manager endpoint; "
                    "secrets_manager_endpoint is for an existing VPC"
                )
            if self.dynamodb_endpoint is not None or self.route_table_ids:
                raise ValueError(
                    "create_vpc: true creates its own DynamoDB gateway endpoint; "
                    "dynamodb_endpoint and route_table_ids are for an existing VPC"
                )
        else:
            if not self.vpc_id or len(self.subnet_ids) < 2:
                raise ValueError(
                    "give vpc_id and at least two subnet_ids (DMS needs subnets in two AZs), or create_vpc: true"
                )
            if self.egress is not None:
                raise ValueError("egress applies to create_vpc: true; an existing VPC routes as it is")
            self._reaches_dynamodb()
        return self

    def _reaches_dynamodb(self) -> None:
        if self.dynamodb_endpoint is None:
            raise ValueError(
                "an existing VPC needs a VPC endpoint for DynamoDB, DMS's target (required since DMS "
                "3.4.7 on a private network: CHAP_VPC_Endpoints): set dynamodb_endpoint: existing when "
                "the replication subnets' route tables have a DynamoDB gateway endpoint, or "
                "dynamodb_endpoint: create with route_table_ids (those route tables)"
            )
        if self.dynamodb_endpoint == "create" and not self.route_table_ids:
            raise ValueError(
                "dynamodb_endpoint: create needs route_table_ids: the route tables of the replication subnets"
            )
        if self.dynamodb_endpoint == "existing" and self.route_table_ids:
            raise ValueError(
                "route_table_ids is for dynamodb_endpoint: create; the existing endpoint routes as it is"
            )


class Replication(Model):
    instance_class: Annotated[str, _matching(_INSTANCE_CLASS, "a DMS instance class like dms.t3.medium")] = (
        "dms.t3.medium"
    )
    multi_az: bool = False
    allocated_storage_gb: Annotated[int, Field(ge=5, le=6_144)] = 50
    engine_version: str | None = None


class TableConfig(Model):
    schema_: Identifier = Field(alias="schema")
    table: Identifier
    #: Key columns when the DynamoDB key is not the table's primary key or is composite:
    #: [partition] or [partition, sort].
    key: list[Identifier] | None = None
    #: With ``key``: each key attribute's DynamoDB type, ``string`` or ``number``, which the
    #: object mapping declares (``attribute-sub-type``, CHAP_Target.DynamoDB).
    key_types: list[KeyType] | None = None
    #: Columns DMS must not copy (PII): they never reach DynamoDB, the bus or consumers.
    exclude: list[Identifier] = Field(default_factory=list)
    #: Bump to reload the table into a new DynamoDB table ``....{table}.v{version}``.
    version: Annotated[int, Field(ge=1)] | None = None

    @property
    def plain(self) -> bool:
        """Named by its schema's prefix alone: no key, exclusion or version of its own."""
        return self.key is None and not self.exclude and self.version is None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _key_and_exclude(self) -> TableConfig:
        if self.key is not None:
            if not 1 <= len(self.key) <= 2:
                raise ValueError(
                    f"key has {len(self.key)} columns; DynamoDB keys are [partition] or [partition, sort]"
                )
            if len(set(self.key)) != len(self.key):
                raise ValueError(f"key {self.key} names a column twice")
            overlap = sorted(set(self.key) & set(self.exclude))
            if overlap:
                raise ValueError(f"exclude {overlap} removes key columns")
            if self.key_types is None:
                raise ValueError(
                    f"key {self.key} needs key_types: the DynamoDB type (string or number) of each key "
                    "attribute, which DMS's object mapping declares (attribute-sub-type, CHAP_Target.DynamoDB); "
                    "`dmsbus doctor` checks them against the source's column types"
                )
            if len(self.key_types) != len(self.key):
                raise ValueError(
                    f"key_types {self.key_types} must give one type for each key column {self.key}"
                )
        elif self.key_types is not None:
            raise ValueError("key_types goes with key")
        if self.exclude and self.key is None:
            raise ValueError(
                "exclude needs key: the object mapping that drops columns names the DynamoDB key"
            )
        if len(set(self.exclude)) != len(self.exclude):
            raise ValueError(f"exclude {self.exclude} names a column twice")
        return self

    @property
    def version_suffix(self) -> str | None:
        return None if self.version is None else f"v{self.version}"


class SelectionConfig(Model):
    """A wildcard selection: every source table matching it, now and created later."""

    #: The schema is named exactly: DMS's table-name prefix embeds it.
    schema_: Identifier = Field(alias="schema")
    table: Pattern = "%"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SourceConfig(Model):
    name: DmsName
    engine: Engine
    server: Annotated[str, Field(min_length=1, max_length=255)]
    port: Annotated[int, Field(ge=1, le=65_535)] | None = None
    database: Annotated[str, Field(min_length=1, max_length=128)]
    credentials: Credentials
    network: Network
    replication: Replication = Field(default_factory=Replication)
    #: The task lifecycle starts the task after the first deploy and resumes it after every
    #: deploy that changes it; false: it is started and stopped by hand (docs/dms.md).
    start: bool = True
    tables: list[TableConfig] = Field(default_factory=list)
    selections: list[SelectionConfig] = Field(default_factory=list)

    @field_validator("engine", mode="before")
    @classmethod
    def _supported(cls, value: object) -> object:
        if isinstance(value, str) and value in UNSUPPORTED_ENGINES:
            raise ValueError(
                f"{value!r} sources are not supported yet: {UNSUPPORTED_ENGINES[value]}; "
                f"supported: {', '.join(DEFAULT_PORTS)}"
            )
        return value

    @model_validator(mode="after")
    def _tables(self) -> SourceConfig:
        if not self.tables and not self.selections:
            raise ValueError("a source needs tables or selections: nothing would be replicated")
        seen: dict[tuple[str, str], int] = {}
        for index, table in enumerate(self.tables):
            where = (table.schema_, table.table)
            if where in seen:
                raise ValueError(
                    f"tables[{index}] {table.schema_}.{table.table} is already tables[{seen[where]}]"
                )
            seen[where] = index
        self._one_rule_per_table()
        return self

    def _one_rule_per_table(self) -> None:
        """DMS applies at most one transformation to a table, so no table may be named by
        two rules (docs/config.md, "TableMappings")."""
        for index, selection in enumerate(self.selections):
            for earlier in range(index):
                other = self.selections[earlier]
                if other.schema_ == selection.schema_ and _overlap(other.table, selection.table):
                    raise ValueError(
                        f"selections[{index}] {selection.schema_}.{selection.table} overlaps "
                        f"selections[{earlier}] {other.schema_}.{other.table}: a table both match would "
                        "get two transformation rules, which DMS does not apply; keep one pattern"
                    )
        for index, table in enumerate(self.tables):
            for number, selection in enumerate(self.selections):
                if selection.schema_ != table.schema_ or not like(pattern(selection.table), table.table):
                    continue
                if not table.plain:
                    raise ValueError(
                        f"tables[{index}] {table.schema_}.{table.table} has a key, exclude or version and "
                        f"is also matched by selections[{number}] {selection.schema_}.{selection.table}: "
                        "DMS would name it by two rules; narrow the selection's pattern so that it "
                        "does not match the table"
                    )

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.engine]


def _overlap(first: str, second: str) -> bool:
    """Whether two table patterns (``%`` any run, everything else literal) match a common name."""
    if "%" not in first:
        return like(pattern(second), first)
    if "%" not in second:
        return like(pattern(first), second)
    head1, *_, tail1 = first.split("%")
    head2, *_, tail2 = second.split("%")
    heads = head1.startswith(head2) or head2.startswith(head1)
    tails = tail1.endswith(tail2) or tail2.endswith(tail1)
    # With a `%` on each side, a common name exists exactly when neither the literal
    # beginnings nor the literal ends contradict: the longer of each with every middle
    # part in between matches both.
    return heads and tails


class Config(Model):
    """The whole config: one bus and its sources (one file each)."""

    bus: BusConfig
    sources: list[SourceConfig]
