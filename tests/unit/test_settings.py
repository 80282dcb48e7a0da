"""Typed settings (dmsbus.settings): each function's model, written by the deployment plan
and read by the function, with errors that name the variable and defaults defined once."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from config.functions import ConsumerError
from config.loader import load_config
from config.model import BusConfig, ConsumerConfig
from config.plan import Ref, consumer_plan, deployment_plan, settings_model
from consumers.pg_mirror.settings import PgMirrorSettings
from consumers.s3_archive.settings import S3ArchiveSettings
from discovery.settings import DiscoverySettings
from dmsbus.settings import ConsumerSettings, Settings, SettingsError, variable
from glue.settings import GlueSettings
from tests.infrastructure.conftest import REPO
from tests.plans import typed_bus

SAMPLE = load_config(REPO / "config").bus
MODELS: tuple[type[Settings], ...] = (
    GlueSettings,
    DiscoverySettings,
    ConsumerSettings,
    PgMirrorSettings,
    S3ArchiveSettings,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Example(Settings):
    WHO: ClassVar[str] = "example"

    name: str = variable("EXAMPLE_NAME")
    count: int = variable("EXAMPLE_COUNT", default=3)
    on: bool = variable("EXAMPLE_ON", default=False)
    tables: tuple[str, ...] | None = variable("EXAMPLE_TABLES", default=None)


def test_given_a_model_when_its_environment_is_read_back_then_it_is_the_same() -> None:
    # Given a model with every kind of field set off its default
    written = Example(name="n", count=7, on=True, tables=("public.a", "audit.*"))
    # When its environment is written and read back
    environment = written.environment()
    # Then the values round-trip through the variables
    assert environment == {
        "EXAMPLE_NAME": "n",
        "EXAMPLE_COUNT": "7",
        "EXAMPLE_ON": "true",
        "EXAMPLE_TABLES": "public.a,audit.*",
    }
    assert Example.from_environ(environment) == written


def test_a_value_at_its_default_or_unset_is_not_written() -> None:
    assert Example(name="n").environment() == {"EXAMPLE_NAME": "n"}


def test_every_bad_variable_is_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as raised:
        Example.from_environ({"EXAMPLE_COUNT": "lots", "EXAMPLE_ON": "maybe"})
    assert str(raised.value) == (
        "environment variable EXAMPLE_NAME is required by the example and is not set; "
        "environment variable EXAMPLE_COUNT must be an integer, not 'lots'; "
        "environment variable EXAMPLE_ON must be true or false, not 'maybe'"
    )


def test_a_reference_stays_one_when_written() -> None:
    # A plan's reference (a str) is written as it is, for the renderer to resolve
    reference = Ref("demo-glue-dlq", "url")
    written = GlueSettings(
        bus="demo", stream_name="demo-bus", aggregate=True, numbers="string", dlq_url=reference, typed=False
    ).environment()
    assert isinstance(written["BUS_DLQ_URL"], Ref)


def test_a_field_that_is_not_a_variable_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Loose(Settings):
        name: str = "x"

    with pytest.raises(TypeError, match=r"Loose.name is neither a variable\(\) nor a nested model"):
        Loose.from_environ({})


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_a_default_in_a_model_is_never_written_by_the_plan(model: type[Settings]) -> None:
    # Each default is defined once: a variable the plan writes has no default in the
    # model (config/model.py holds it), or it may be unset (None); one with a default in
    # the model is a tunable the deployment leaves alone.
    written: set[str] = set()
    # Flipped: a model default equal to config/model.py's would hide in the default bus
    flipped = BusConfig.model_validate(
        {
            "name": "flipped",
            "glue": {"aggregate": False, "numbers": "number", "typed": True},
            "discovery": {"keep_provisioned": True, "backfill": False},
        }
    )
    for bus in (SAMPLE, BusConfig(name="demo"), flipped):
        for function in deployment_plan(bus).functions:
            if isinstance(function.settings, model):
                written |= set(function.settings.environment())
    defaults = {
        item.metadata["dmsbus.variable"]: item.default
        for item in dataclasses.fields(model)
        if "dmsbus.variable" in item.metadata
    }
    assert {
        name for name in written if defaults.get(name, dataclasses.MISSING) not in (dataclasses.MISSING, None)
    } == set()


def test_the_sample_consumers_get_their_own_models() -> None:
    models = {function.name: type(function.settings) for function in deployment_plan(SAMPLE).consumers}
    assert models == {
        "demo-log-changes": ConsumerSettings,
        "demo-pg-mirror": PgMirrorSettings,
        "demo-archive": S3ArchiveSettings,
    }
    assert settings_model("consumers/log_changes") is ConsumerSettings


def test_a_consumers_own_variable_goes_through_its_model() -> None:
    # Given pg-mirror with its schema template in its config entry
    entry = ConsumerConfig(
        name="mirror",
        code="functions/consumers/pg_mirror",
        secret="dmsbus/mirror",
        environment={"MIRROR_SCHEMA": "{source}_{schema}", "LOG_LEVEL": "DEBUG"},
    )
    # When planned
    planned = consumer_plan(SAMPLE, entry)
    # Then the model holds its variable, and the rest is the consumer's own
    assert isinstance(planned.settings, PgMirrorSettings)
    assert planned.settings.mirror_schema == "{source}_{schema}"
    assert planned.own_environment == {"LOG_LEVEL": "DEBUG"}
    assert planned.environment["MIRROR_SCHEMA"] == "{source}_{schema}"


def test_a_consumer_its_model_cannot_run_is_refused_at_synth() -> None:
    # pg_mirror without a secret would fail at its cold start: the plan says so first
    entry = ConsumerConfig(name="mirror", code="functions/consumers/pg_mirror")
    with pytest.raises(
        ConsumerError, match=r"^consumer mirror: environment variable DMSBUS_SECRET is required"
    ):
        consumer_plan(SAMPLE, entry)


def test_a_consumer_may_not_set_what_dmsbus_sets() -> None:
    entry = ConsumerConfig(
        name="x", code="functions/consumers/log_changes", environment={"BUS_NAME": "other"}
    )
    with pytest.raises(ConsumerError, match=r"consumer x: environment \['BUS_NAME'\] is set by dmsbus"):
        consumer_plan(SAMPLE, entry)


def test_a_model_subclass_without_dataclass_is_refused() -> None:
    class Forgot(Example):
        extra: str = variable("EXAMPLE_EXTRA")

    with pytest.raises(TypeError, match=r"Forgot declares \['extra'\] but is not a @dataclass"):
        Forgot.from_environ({"EXAMPLE_NAME": "n"})


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("tuple[int, ...]", "is not a variable type"),
        ("int | str", "a variable is one type"),
        ("Example | None", "a nested model cannot be optional"),
    ],
)
def test_a_type_the_settings_cannot_read_is_refused(annotation: str, message: str) -> None:
    namespace: dict[str, object] = {"__annotations__": {"odd": annotation}, "odd": variable("EXAMPLE_ODD")}
    odd = dataclasses.dataclass(frozen=True, kw_only=True)(type("Odd", (Settings,), namespace))
    with pytest.raises(TypeError, match=message):
        odd.from_environ({})


def test_an_integer_is_digits_only() -> None:
    with pytest.raises(SettingsError, match="EXAMPLE_COUNT must be an integer, not '1_000'"):
        Example.from_environ({"EXAMPLE_NAME": "n", "EXAMPLE_COUNT": "1_000"})


def test_a_reference_survives_copy_and_pickle() -> None:
    import copy
    import pickle

    reference = Ref("demo-glue-dlq", "url")
    for again in (copy.copy(reference), copy.deepcopy(reference), pickle.loads(pickle.dumps(reference))):
        assert isinstance(again, Ref)
        assert (again.resource, again.attribute, str(again)) == (
            "demo-glue-dlq",
            "url",
            "${demo-glue-dlq.url}",
        )


def test_a_required_value_planned_empty_fails_the_plan() -> None:
    # An empty bus name would pass the config model only if it allowed it; the plan reads
    # every function's settings as its cold start will
    bus = BusConfig(name="demo").model_copy(update={"name": ""})
    with pytest.raises(ConsumerError, match="environment variable BUS_NAME is required by the glue"):
        deployment_plan(bus)


def test_a_consumer_model_may_not_give_what_dmsbus_sets_another_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Narrow(ConsumerSettings):
        tables: tuple[str, ...] | None = variable("DMSBUS_TABLES", default=("public.orders",))

    module = types.ModuleType("consumers.narrow.settings")
    module.MODEL = Narrow  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "consumers.narrow.settings", module)
    with pytest.raises(
        ConsumerError, match=r"Narrow.tables may be required, but its default is ConsumerSettings'"
    ):
        settings_model("consumers/narrow")


def test_a_schema_function_in_a_vpc_without_internet_uses_the_secrets_manager_endpoint_dms_uses() -> None:
    from config.model import Config

    sample = load_config(REPO / "config")
    typed = typed_bus(sample.bus)
    endpoint = "vpce-0123456789abcdef0-abcdefgh.secretsmanager.eu-west-1.vpce.amazonaws.com"
    source = sample.sources[0].model_copy(
        update={
            "network": sample.sources[0].network.model_validate(
                {
                    "vpc_id": "vpc-0123456789abcdef0",
                    "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
                    "secrets_manager_endpoint": endpoint,
                    "dynamodb_endpoint": "existing",
                }
            )
        }
    )
    config = Config(bus=typed, sources=[source])
    (schema,) = [f for f in deployment_plan(config.bus, config.sources).functions if f.kind == "schema"]
    assert schema.environment["AWS_ENDPOINT_URL_SECRETS_MANAGER"] == f"https://{endpoint}"
    assert schema.environment["DMSBUS_SOURCE_TABLES"].split(",")[-1] == "audit.event_%"


def test_a_consumer_that_does_not_take_typed_events_is_refused_on_a_typed_bus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    # Given a consumer whose model says it reads DMS's values only
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Untyped(ConsumerSettings):
        TYPED_EVENTS: ClassVar[bool] = False

    module = types.ModuleType("consumers.untyped.settings")
    module.MODEL = Untyped  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "consumers.untyped.settings", module)
    entry = SAMPLE.consumers[0].model_copy(update={"name": "untyped", "code": "functions/consumers/untyped"})
    typed = SAMPLE.model_copy(
        update={"glue": SAMPLE.glue.model_copy(update={"typed": True}), "consumers": [entry]}
    )
    # When a typed bus plans it, then it is refused, by name
    with pytest.raises(
        ConsumerError, match=r"^consumer untyped: consumers/untyped does not take typed events yet"
    ):
        deployment_plan(typed)


@pytest.mark.parametrize(
    ("engine", "reads"), [("mariadb", True), ("aurora-postgresql", True), ("oracle", False)]
)
def test_a_typed_bus_reads_postgres_and_mysql_catalogs_and_refuses_other_sources(
    engine: str, reads: bool
) -> None:
    from config.model import Config

    sample = load_config(REPO / "config")
    source = sample.sources[0].model_copy(update={"engine": engine})
    config = Config(bus=typed_bus(sample.bus), sources=[source])
    if not reads:
        with pytest.raises(ConsumerError, match=r"^source legacy: glue.typed reads PostgreSQL's and MySQL's"):
            deployment_plan(config.bus, config.sources)
        return
    (schema,) = [f for f in deployment_plan(config.bus, config.sources).functions if f.kind == "schema"]
    assert schema.environment["DMSBUS_SOURCE_ENGINE"] == engine
