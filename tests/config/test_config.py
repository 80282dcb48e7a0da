"""The config model and loader: the sample loads, and every bad file gets an error that
names the file and the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import ConfigError, load_config, render_table_mappings, resolve
from config.model import DEFAULT_PORTS, GlueConfig

REPO = Path(__file__).resolve().parents[2]

BUS: dict[str, Any] = {
    "name": "demo",
    "consumers": [{"name": "log-changes", "code": "functions/consumers/log_changes", "tables": ["public.*"]}],
}
SOURCE: dict[str, Any] = {
    "name": "legacy",
    "engine": "postgres",
    "server": "db.internal",
    "database": "shop",
    "credentials": {"secret": "dmsbus/legacy"},
    "network": {"create_vpc": True, "egress": "nat"},
    "tables": [
        {"schema": "public", "table": "orders"},
        {
            "schema": "public",
            "table": "order_lines",
            "key": ["order_id", "line_no"],
            "key_types": ["number", "number"],
        },
    ],
}


def write(root: Path, bus: dict[str, Any] | str, sources: dict[str, dict[str, Any] | str]) -> Path:
    (root / "sources").mkdir(parents=True, exist_ok=True)
    (root / "bus.yaml").write_text(bus if isinstance(bus, str) else yaml.safe_dump(bus), encoding="utf-8")
    for name, source in sources.items():
        text = source if isinstance(source, str) else yaml.safe_dump(source)
        (root / "sources" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return root


def test_the_sample_config_loads_with_defaults_from_the_model() -> None:
    # Given the repository's config/, When it is loaded
    config = load_config(REPO / "config")
    # Then the bus, its consumer and the source are there, unset settings at their defaults
    assert config.bus.name == "demo"
    assert config.bus.glue.batch_size == GlueConfig().batch_size == 5_000
    assert config.bus.kinesis.mode == "on_demand"
    assert [c.handler for c in config.bus.consumers] == [
        "consumers.log_changes.handler.handler",
        "consumers.pg_mirror.handler.handler",
        "consumers.s3_archive.handler.handler",
    ]
    (legacy,) = config.sources
    assert legacy.effective_port == DEFAULT_PORTS["postgres"] == 5432
    assert [(t.schema_, t.table, t.version) for t in legacy.tables][-1] == ("public", "products", 2)


def test_a_minimal_config_loads(tmp_path: Path) -> None:
    root = write(tmp_path / "config", BUS, {"legacy": SOURCE})
    config = load_config(root, repo=REPO)
    assert config.sources[0].tables[1].key == ["order_id", "line_no"]


Mutation = Callable[[dict[str, Any], dict[str, Any]], None]


def _set(path: str, value: Any, *, on: str = "source") -> Mutation:
    def mutate(bus: dict[str, Any], source: dict[str, Any]) -> None:
        target: Any = source if on == "source" else bus
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _append_table(table: dict[str, Any]) -> Mutation:
    return lambda bus, source: source["tables"].append(table)


BAD: list[tuple[str, Mutation, str, str]] = [
    # (case, mutation, file, expected "field: message" fragment)
    ("unknown key in a source", _set("replicaton", {}), "legacy.yaml", "replicaton: unknown key"),
    ("unknown key in the bus", _set("kinesis.shard", 4, on="bus"), "bus.yaml", "kinesis.shard: unknown key"),
    (
        "bad table identifier",
        _set("tables.0.table", "or ders"),
        "legacy.yaml",
        "tables[0].table: 'or ders' is not an identifier",
    ),
    (
        "dot in a schema",
        _set("tables.0.schema", "pub.lic"),
        "legacy.yaml",
        "tables[0].schema: 'pub.lic' is not an identifier",
    ),
    (
        "bad bus name",
        _set("name", "my bus", on="bus"),
        "bus.yaml",
        "name: 'my bus' cannot name DMS resources",
    ),
    # DMS identifiers: letters, digits, hyphens; a letter first; no '--', no '-' last; 1-63
    (
        "underscore in a bus name",
        _set("name", "my_bus", on="bus"),
        "bus.yaml",
        "name: 'my_bus' cannot name DMS",
    ),
    ("bus name starting with a digit", _set("name", "9shop", on="bus"), "bus.yaml", "name: '9shop' cannot"),
    ("two hyphens in a bus name", _set("name", "a--b", on="bus"), "bus.yaml", "name: 'a--b' cannot name DMS"),
    ("bus name ending in a hyphen", _set("name", "shop-", on="bus"), "bus.yaml", "name: 'shop-' cannot name"),
    (
        "64-character bus name",
        _set("name", "b" * 64, on="bus"),
        "bus.yaml",
        f"name: '{'b' * 64}' cannot name",
    ),
    (
        "underscore in a source name",
        _set("name", "leg_acy"),
        "legacy.yaml",
        "name: 'leg_acy' cannot name DMS",
    ),
    (
        "bus and source name over DMS's 63 characters",
        lambda bus, source: bus.update(name="b" * 57, consumers=[]),
        "legacy.yaml",
        f"name: the DMS replication instance identifier '{'b' * 57}-legacy' (bus name, '-', source name) is over",
    ),
    (
        "a source function name over Lambda's 64 characters",
        lambda bus, source: bus.update(name="b" * 40, consumers=[]),
        "legacy.yaml",
        f"name: the function name '{'b' * 40}-legacy-task-lifecycle-wait' is over 64 characters",
    ),
    (
        "duplicate table",
        _append_table({"schema": "public", "table": "orders"}),
        "legacy.yaml",
        "tables[2] public.orders is already tables[0]",
    ),
    (
        "password literal",
        _set("credentials.password", "hunter22"),
        "legacy.yaml",
        "credentials.password: a credential literal is not allowed",
    ),
    (
        "password anywhere",
        _set("extra_password", "x1"),
        "legacy.yaml",
        "extra_password: a credential literal is not allowed",
    ),
    (
        "bad secret name",
        _set("credentials.secret", "my secret!"),
        "legacy.yaml",
        "credentials.secret: secret 'my secret!' is not a Secrets Manager secret name",
    ),
    (
        "bad secret arn",
        _set("credentials.secret", "arn:aws:s3:::bucket"),
        "legacy.yaml",
        "is not a Secrets Manager secret ARN",
    ),
    (
        "missing credentials",
        lambda bus, source: source.pop("credentials"),
        "legacy.yaml",
        "credentials: required and missing",
    ),
    ("unknown engine", _set("engine", "db2"), "legacy.yaml", "engine: Input should be 'postgres'"),
    (
        "an oracle source",
        _set("engine", "oracle"),
        "legacy.yaml",
        "engine: 'oracle' sources are not supported yet: DMS does not support SslMode require",
    ),
    (
        "a sql server source",
        _set("engine", "sqlserver"),
        "legacy.yaml",
        "engine: 'sqlserver' sources are not supported yet",
    ),
    (
        "port out of range",
        _set("port", 70000),
        "legacy.yaml",
        "port: Input should be less than or equal to 65535",
    ),
    (
        "vpc and create_vpc",
        _set("network", {"create_vpc": True, "vpc_id": "vpc-0123456789abcdef0"}),
        "legacy.yaml",
        "network: create_vpc: true takes no vpc_id",
    ),
    (
        "created vpc without a route to the source",
        _set("network", {"create_vpc": True}),
        "legacy.yaml",
        "network: create_vpc: true builds a VPC with no route to your source database: set egress: nat",
    ),
    (
        "egress in an existing vpc",
        _set(
            "network",
            {
                "vpc_id": "vpc-0123456789abcdef0",
                "subnet_ids": ["subnet-01234567", "subnet-89abcdef"],
                "egress": "nat",
            },
        ),
        "legacy.yaml",
        "network: egress applies to create_vpc: true",
    ),
    (
        "overlapping selections",
        _set(
            "selections",
            [{"schema": "audit", "table": "event_%"}, {"schema": "audit", "table": "event_log%"}],
        ),
        "legacy.yaml",
        "selections[1] audit.event_log% overlaps selections[0] audit.event_%",
    ),
    (
        "a versioned table a selection also matches",
        _set("selections", [{"schema": "public", "table": "order%"}]),
        "legacy.yaml",
        "tables[1] public.order_lines has a key, exclude or version and is also matched by selections[0]",
    ),
    (
        "an existing vpc without a route to dynamodb",
        _set(
            "network",
            {"vpc_id": "vpc-0123456789abcdef0", "subnet_ids": ["subnet-01234567", "subnet-89abcdef"]},
        ),
        "legacy.yaml",
        "network: an existing VPC needs a VPC endpoint for DynamoDB, DMS's target (required since DMS 3.4.7",
    ),
    (
        "a dynamodb endpoint to create without route tables",
        _set(
            "network",
            {
                "vpc_id": "vpc-0123456789abcdef0",
                "subnet_ids": ["subnet-01234567", "subnet-89abcdef"],
                "dynamodb_endpoint": "create",
            },
        ),
        "legacy.yaml",
        "network: dynamodb_endpoint: create needs route_table_ids",
    ),
    (
        "a dynamodb endpoint in a created vpc",
        _set("network", {"create_vpc": True, "egress": "nat", "dynamodb_endpoint": "existing"}),
        "legacy.yaml",
        "network: create_vpc: true creates its own DynamoDB gateway endpoint",
    ),
    (
        "bad route table id",
        _set(
            "network",
            {
                "vpc_id": "vpc-0123456789abcdef0",
                "subnet_ids": ["subnet-01234567", "subnet-89abcdef"],
                "dynamodb_endpoint": "create",
                "route_table_ids": ["rtb-1"],
            },
        ),
        "legacy.yaml",
        "network.route_table_ids[0]: 'rtb-1' is not a route table id",
    ),
    (
        "one subnet",
        _set("network", {"vpc_id": "vpc-0123456789abcdef0", "subnet_ids": ["subnet-01234567"]}),
        "legacy.yaml",
        "network: give vpc_id and at least two subnet_ids",
    ),
    (
        "bad subnet id",
        _set(
            "network",
            {"vpc_id": "vpc-0123456789abcdef0", "subnet_ids": ["subnet-1", "subnet-0123456789abcdef0"]},
        ),
        "legacy.yaml",
        "network.subnet_ids[0]: 'subnet-1' is not a subnet id",
    ),
    (
        "bad instance class",
        _set("replication", {"instance_class": "t3.medium"}),
        "legacy.yaml",
        "replication.instance_class: 't3.medium' is not a DMS instance class",
    ),
    (
        "three key columns",
        lambda bus, source: source["tables"][1].update(key=["a", "b", "c"], key_types=["string"] * 3),
        "legacy.yaml",
        "tables[1]: key has 3 columns",
    ),
    (
        "excluding a key column",
        _set("tables.1.exclude", ["line_no"]),
        "legacy.yaml",
        "tables[1]: exclude ['line_no'] removes key columns",
    ),
    (
        "a key without key types",
        lambda bus, source: source["tables"][1].pop("key_types"),
        "legacy.yaml",
        "tables[1]: key ['order_id', 'line_no'] needs key_types: the DynamoDB type (string or number)",
    ),
    (
        "key types of another length",
        _set("tables.1.key_types", ["number"]),
        "legacy.yaml",
        "tables[1]: key_types ['number'] must give one type for each key column",
    ),
    (
        "a key type dynamodb keys do not take",
        _set("tables.1.key_types", ["number", "boolean"]),
        "legacy.yaml",
        "tables[1].key_types[1]: Input should be 'string' or 'number'",
    ),
    (
        "key types without a key",
        _set("tables.0.key_types", ["string"]),
        "legacy.yaml",
        "tables[0]: key_types goes with key",
    ),
    (
        "exclude without key",
        _set("tables.0.exclude", ["email"]),
        "legacy.yaml",
        "tables[0]: exclude needs key",
    ),
    (
        "version zero",
        _set("tables.0.version", 0),
        "legacy.yaml",
        "tables[0].version: Input should be greater than or equal to 1",
    ),
    ("nothing to replicate", _set("tables", []), "legacy.yaml", "a source needs tables or selections"),
    (
        "wildcard schema",
        _set("selections", [{"schema": "%", "table": "%"}]),
        "legacy.yaml",
        "selections[0].schema: '%' is not an identifier",
    ),
    (
        "bad wildcard",
        _set("selections", [{"schema": "audit", "table": "event_*"}]),
        "legacy.yaml",
        "selections[0].table: 'event_*' is not a table pattern",
    ),
    (
        "name not the file",
        _set("name", "other"),
        "legacy.yaml",
        "name: 'other' must match the file name 'legacy'",
    ),
    (
        "shards on on_demand",
        _set("kinesis", {"shards": 4}, on="bus"),
        "bus.yaml",
        "kinesis: shards applies to mode provisioned only",
    ),
    (
        "provisioned without shards",
        _set("kinesis", {"mode": "provisioned"}, on="bus"),
        "bus.yaml",
        "kinesis: shards is required when mode is provisioned",
    ),
    (
        "retention too short",
        _set("kinesis", {"retention_hours": 12}, on="bus"),
        "bus.yaml",
        "kinesis.retention_hours: Input should be greater than or equal to 24",
    ),
    (
        "consumer folder missing",
        _set("consumers.0.code", "functions/consumers/nope", on="bus"),
        "bus.yaml",
        "consumers[0].code: ",
    ),
    (
        "consumer outside functions/consumers",
        _set("consumers.0.code", "functions/glue", on="bus"),
        "bus.yaml",
        "consumers[0].code: 'functions/glue' must be functions/consumers/<folder>",
    ),
    (
        "duplicate consumer",
        lambda bus, source: bus["consumers"].append(dict(bus["consumers"][0])),
        "bus.yaml",
        "consumers[1].name 'log-changes' is used twice",
    ),
    (
        "bad consumer op",
        _set("consumers.0.ops", ["c", "insert"], on="bus"),
        "bus.yaml",
        "consumers[0].ops[1]: Input should be 'c', 'u', 'd', 'r' or 's'",
    ),
    (
        "bad consumer table filter",
        _set("consumers.0.tables", ["orders"], on="bus"),
        "bus.yaml",
        "consumers[0].tables[0]: 'orders' is not a schema.table pattern",
    ),
    (
        "unbounded retries",
        _set("consumers.0.max_retries", -1, on="bus"),
        "bus.yaml",
        "consumers[0].max_retries: Input should be greater than or equal to 0",
    ),
    (
        "batch size too big",
        _set("glue", {"batch_size": 20_000}, on="bus"),
        "bus.yaml",
        "glue.batch_size: Input should be less than or equal to 10000",
    ),
    (
        "bad kms key",
        _set("kinesis", {"kms_key_arn": "alias/mine"}, on="bus"),
        "bus.yaml",
        "kinesis.kms_key_arn: 'alias/mine' is not a KMS key or alias ARN",
    ),
    (
        "consumer secret with a password in it",
        _set("consumers.0.secret", "user:pa ss", on="bus"),
        "bus.yaml",
        "consumers[0].secret: secret 'user:pa ss' is not a Secrets Manager secret name",
    ),
    (
        "consumer network without subnets",
        _set("consumers.0.network", {"vpc_id": "vpc-0a1b2c3d4e5f60718", "subnet_ids": []}, on="bus"),
        "bus.yaml",
        "consumers[0].network.subnet_ids: List should have at least 1 item",
    ),
    (
        "consumer security group not an id",
        _set(
            "consumers.0.network",
            {
                "vpc_id": "vpc-0a1b2c3d4e5f60718",
                "subnet_ids": ["subnet-0a1b2c3d"],
                "security_group_ids": ["web"],
            },
            on="bus",
        ),
        "bus.yaml",
        "consumers[0].network.security_group_ids[0]: 'web' is not a security group id",
    ),
    (
        "archive to glacier before S3 allows",
        _set("consumers.0.bucket", {"infrequent_access_days": 30, "glacier_days": 40}, on="bus"),
        "bus.yaml",
        "consumers[0].bucket: glacier_days must be at least infrequent_access_days + 30",
    ),
    (
        "archive expiring before its last transition",
        _set("consumers.0.bucket", {"glacier_days": 180, "expire_days": 90}, on="bus"),
        "bus.yaml",
        "consumers[0].bucket: expire_days must come after the last transition (day 180)",
    ),
    (
        "function name too long",
        _set("consumers.0.name", "c" * 70, on="bus"),
        "bus.yaml",
        "consumers[0].name: the function name",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "file", "expected"), BAD, ids=[case for case, *_ in BAD])
def test_bad_config_gets_one_error_naming_file_and_field(
    tmp_path: Path, case: str, mutate: Mutation, file: str, expected: str
) -> None:
    # Given a valid config with one mistake
    bus, source = copy.deepcopy(BUS), copy.deepcopy(SOURCE)
    mutate(bus, source)
    root = write(tmp_path / "config", bus, {"legacy": source})
    # When it is loaded
    with pytest.raises(ConfigError) as raised:
        load_config(root, repo=REPO)
    # Then one problem is reported, naming the file and the field
    problems = raised.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{root}/") and file in problems[0].split(":")[0]
    assert expected in problems[0]


def test_duplicate_yaml_keys_are_an_error_not_the_last_one_wins(tmp_path: Path) -> None:
    text = yaml.safe_dump(SOURCE) + "engine: mysql\n"
    root = write(tmp_path / "config", BUS, {"legacy": text})
    with pytest.raises(ConfigError, match=r"legacy.yaml: not valid YAML: line \d+: duplicate key 'engine'"):
        load_config(root, repo=REPO)


def test_a_file_that_is_not_a_mapping_says_so(tmp_path: Path) -> None:
    root = write(tmp_path / "config", BUS, {"legacy": "- just\n- a list\n"})
    with pytest.raises(ConfigError, match=r"legacy.yaml: must be a mapping of settings, not list"):
        load_config(root, repo=REPO)


def test_no_sources_is_an_error(tmp_path: Path) -> None:
    root = write(tmp_path / "config", BUS, {})
    with pytest.raises(ConfigError, match=r"sources: no source files"):
        load_config(root, repo=REPO)


def test_problems_in_several_files_are_all_reported(tmp_path: Path) -> None:
    # Given two bad source files and a bad bus file
    broken = {**SOURCE, "engine": "db2"}
    root = write(
        tmp_path / "config", {**BUS, "name": "a b"}, {"legacy": broken, "other": {**broken, "name": "other"}}
    )
    # When loaded, Then each file's problem is one line
    with pytest.raises(ConfigError) as raised:
        load_config(root, repo=REPO)
    assert [problem.split(":")[0].rsplit("/", 1)[-1] for problem in raised.value.problems] == [
        "bus.yaml",
        "legacy.yaml",
        "other.yaml",
    ]


def _versioned(version: int | None, key: list[str] | None = None) -> dict[str, Any]:
    source = copy.deepcopy(SOURCE)
    source["tables"][0]["version"] = version
    if key is not None:
        source["tables"][0]["key"] = key
        source["tables"][0]["key_types"] = ["string"] * len(key)
    return source


def test_version_going_backwards_against_the_previous_config_is_an_error(tmp_path: Path) -> None:
    previous = write(tmp_path / "deployed", BUS, {"legacy": _versioned(3)})
    root = write(tmp_path / "config", BUS, {"legacy": _versioned(2)})
    with pytest.raises(ConfigError, match=r"legacy.yaml: tables\[0\].version: 2 goes backwards from 3"):
        load_config(root, previous=previous, repo=REPO)


def test_removing_a_version_goes_backwards_too(tmp_path: Path) -> None:
    previous = write(tmp_path / "deployed", BUS, {"legacy": _versioned(1)})
    root = write(tmp_path / "config", BUS, {"legacy": _versioned(None)})
    with pytest.raises(ConfigError, match=r"tables\[0\].version: None goes backwards from 1"):
        load_config(root, previous=previous, repo=REPO)


def test_changing_a_key_needs_a_version_bump(tmp_path: Path) -> None:
    previous = write(tmp_path / "deployed", BUS, {"legacy": _versioned(1)})
    root = write(tmp_path / "config", BUS, {"legacy": _versioned(1, key=["order_no"])})
    with pytest.raises(
        ConfigError,
        match=r"tables\[0\].key: changing the key \(None None -> \['order_no'\] \['string'\]\) needs a reload",
    ):
        load_config(root, previous=previous, repo=REPO)


def test_changing_a_key_type_needs_a_version_bump(tmp_path: Path) -> None:
    # Given a deployed table keyed by a string attribute
    previous = write(tmp_path / "deployed", BUS, {"legacy": _versioned(1, key=["order_no"])})
    # When the same key becomes a number (DMS keys a new table so; the old one stays string)
    changed = _versioned(1, key=["order_no"])
    changed["tables"][0]["key_types"] = ["number"]
    root = write(tmp_path / "config", BUS, {"legacy": changed})
    # Then it needs a reload into a new table
    with pytest.raises(
        ConfigError, match=r"tables\[0\].key: changing the key .* needs a reload: bump version"
    ):
        load_config(root, previous=previous, repo=REPO)


def test_a_version_bump_with_a_new_key_is_accepted(tmp_path: Path) -> None:
    previous = write(tmp_path / "deployed", BUS, {"legacy": _versioned(1)})
    root = write(tmp_path / "config", BUS, {"legacy": _versioned(2, key=["order_no"])})
    config = load_config(root, previous=previous, repo=REPO)
    assert config.sources[0].tables[0].version_suffix == "v2"


def test_a_plain_table_a_selection_also_matches_is_named_by_the_selection_alone(tmp_path: Path) -> None:
    # Given a listed plain table that a wildcard selection of its schema also matches
    source = {**copy.deepcopy(SOURCE), "selections": [{"schema": "public", "table": "ord%"}]}
    source["tables"] = [{"schema": "public", "table": "orders"}]
    root = write(tmp_path / "config", BUS, {"legacy": source})
    # When it is loaded and its mappings rendered
    (legacy,) = load_config(root, repo=REPO).sources
    rules = render_table_mappings("demo", legacy)["rules"]
    # Then only the selection's add-prefix names it, and DMS's name for it is defined
    transformations = [r["rule-name"] for r in rules if r["rule-type"] == "transformation"]
    assert transformations == ["3-prefix-public.ordany"]
    target = resolve(render_table_mappings("demo", legacy), "public", "orders")
    assert target is not None and target.name == "demo.legacy.public.orders"


def test_selections_with_disjoint_patterns_in_one_schema_are_accepted(tmp_path: Path) -> None:
    # Given two patterns no table name can match both of
    source = {
        **copy.deepcopy(SOURCE),
        "selections": [{"schema": "audit", "table": "login_%"}, {"schema": "audit", "table": "payment_%"}],
    }
    root = write(tmp_path / "config", BUS, {"legacy": source})
    # When it is loaded, Then it is accepted
    (legacy,) = load_config(root, repo=REPO).sources
    assert [s.table for s in legacy.selections] == ["login_%", "payment_%"]


def test_the_old_single_kinesis_throttle_threshold_still_loads_as_both() -> None:
    from config.model import AlarmConfig

    alarms = AlarmConfig.model_validate({"kinesis_throttled": 5})
    assert (alarms.kinesis_write_throttled, alarms.kinesis_read_throttled) == (5, 5)


def test_every_variable_the_deployment_sets_is_one_dmsbus_variables_names() -> None:
    # The names are written once (dmsbus.variables), for config and the functions alike
    from config.loader import load_config
    from config.plan import deployment_plan
    from dmsbus import variables
    from dmsbus.settings import ConsumerSettings

    known = {value for name, value in vars(variables).items() if name.isupper()}
    plan = deployment_plan(load_config(Path(__file__).resolve().parents[2] / "config").bus)
    written: set[str] = set()
    for function in plan.functions:
        # A consumer's own variables (MIRROR_SCHEMA, say) are its model's to name
        dmsbus_sets = set(ConsumerSettings.variables()) if function.kind == "consumer" else None
        written |= {
            name for name in function.settings.environment() if dmsbus_sets is None or name in dmsbus_sets
        }
    assert written - known == set()
    assert {"BUS_STREAM_NAME", "GLUE_BATCH_SIZE", "DMSBUS_SECRET", "DMSBUS_BUCKET"} <= written


def test_two_sources_whose_names_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    # Given sources Legacy and legacy (DMS stores both identifiers as demo-legacy)
    root = write(
        tmp_path / "config", BUS, {"Legacy": {**SOURCE, "name": "Legacy"}, "legacy": copy.deepcopy(SOURCE)}
    )
    # When the config loads, Then the second is refused, naming both
    with pytest.raises(ConfigError) as raised:
        load_config(root, repo=REPO)
    assert raised.value.problems == [
        f"{root}/sources/legacy.yaml: name: 'legacy' and source 'Legacy' name the same DMS resources "
        "(DMS stores identifiers in lowercase: API_CreateReplicationInstance); rename one"
    ]
