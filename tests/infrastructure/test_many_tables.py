"""A source with 1,000 listed tables still synthesizes and deploys: its TableMappings travel
as an S3 object (an asset) named by key and SHA-256, never in the lifecycle resource's
properties, which an update request carries twice (ResourceProperties and
OldResourceProperties) through CloudFormation's asynchronous Lambda invocation and the
Provider framework's state machine (262,144 bytes a state: API_StateEnteredEventDetails);
the template stays far below CloudFormation's limit (1 MB from S3: cloudformation-limits).

One synth of the whole app (cdk-nag on) for the module."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from config import Config, TableConfig
from config.mappings import render_table_mappings, task_settings
from tests.infrastructure.conftest import Synthesized, synthesize
from tests.infrastructure.test_source_stack import staged_task_config

TABLES = 1_000
#: The budget for the lifecycle resource's properties; an update request carries them twice.
PROPERTIES_BUDGET = 64 * 1024
#: The template budget: a quarter of the 460,800 bytes CloudFormation took from S3 before
#: its limit became 1 MB (cloudformation-limits; cfn-using-console-create-stack-template).
TEMPLATE_BUDGET = 460_800 // 4


@dataclass(frozen=True)
class ManyTables:
    synthesized: Synthesized
    template: Template
    config: Config


def _many_tables(config: Config) -> Config:
    """The sample source listing 1,000 tables: every third with a key of its own (an object
    mapping), every fifth reloaded into version 2 (a rename)."""
    (legacy,) = config.sources
    tables = [
        TableConfig(
            schema="public",
            table=f"ledger_entry_{n:04d}",
            key=["entry_id"] if n % 3 == 0 else None,
            key_types=["number"] if n % 3 == 0 else None,
            version=2 if n % 5 == 0 else None,
        )
        for n in range(TABLES)
    ]
    return config.model_copy(update={"sources": [legacy.model_copy(update={"tables": tables})]})


@pytest.fixture(scope="module")
def many(sample: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> ManyTables:
    config = _many_tables(sample.config)
    synthesized = synthesize(config, tmp_path_factory.mktemp("many-tables"))
    return ManyTables(synthesized, synthesized.template(synthesized.stacks.sources["legacy"]), config)


def _size(value: Any) -> int:
    return len(json.dumps(value).encode())


def test_the_mappings_of_1000_tables_use_every_kind_of_rule(many: ManyTables) -> None:
    # Given the rendered mappings of the 1,000-table source
    (source,) = many.config.sources
    rules = render_table_mappings("demo", source)["rules"]
    kinds = {(rule["rule-type"], rule["rule-action"]) for rule in rules}
    # Then they select every table, map the keyed ones and rename the bumped ones
    assert {("selection", "include"), ("object-mapping", "map-record-to-record")} <= kinds
    assert ("transformation", "rename") in kinds
    assert sum(rule["rule-type"] == "selection" for rule in rules) >= TABLES


def test_the_lifecycle_properties_stay_small_with_1000_tables(many: ManyTables) -> None:
    # Given the 1,000-table source stack
    (source,) = many.config.sources
    inline = _size(
        {
            "TableMappings": json.dumps(render_table_mappings("demo", source)),
            "TaskSettings": json.dumps(task_settings()),
        }
    )
    # Then the lifecycle resource carries where the mappings are, not the mappings
    (lifecycle,) = many.template.find_resources("Custom::DmsTaskLifecycle").values()
    properties = lifecycle["Properties"]
    assert "TableMappings" not in properties and "TaskSettings" not in properties
    assert _size(properties) < PROPERTIES_BUDGET
    # And a small fraction of what the mappings themselves would have been (which an
    # update would carry twice, over the state machine's 262,144 bytes)
    assert 2 * inline > 262_144
    assert _size(properties) * 100 < inline


def test_the_staged_object_carries_the_1000_tables(many: ManyTables) -> None:
    # Given the object the lifecycle resource names
    key, sha256 = Capture(), Capture()
    many.template.has_resource_properties(
        "Custom::DmsTaskLifecycle", {"TaskConfigKey": key, "TaskConfigSha256": sha256}
    )
    stack = many.synthesized.stacks.sources["legacy"]
    body = staged_task_config(many.synthesized.outdir, stack, key.as_string())
    # Then it is the one the hash names, with every table's rules
    (source,) = many.config.sources
    assert hashlib.sha256(body).hexdigest() == sha256.as_string()
    assert json.loads(body)["TableMappings"] == render_table_mappings("demo", source)


def test_the_template_stays_well_under_cloudformations_limit(many: ManyTables) -> None:
    stack = many.synthesized.stacks.sources["legacy"]
    written = (many.synthesized.outdir / stack.template_file).read_bytes()
    assert len(written) < TEMPLATE_BUDGET


def test_the_lifecycle_functions_may_read_only_their_object(many: ManyTables) -> None:
    # Given the lifecycle functions' roles, and the object their resource names
    template = many.template
    key = Capture()
    template.has_resource_properties("Custom::DmsTaskLifecycle", {"TaskConfigKey": key})
    roles = {
        function["Properties"]["Role"]["Fn::GetAtt"][0]
        for function in template.find_resources("AWS::Lambda::Function").values()
        if function["Properties"].get("Handler", "").startswith("task_lifecycle.")
    }
    assert len(roles) == 2
    # Then each may s3:GetObject that one object, and do nothing else in S3
    for role in roles:
        policies = template.find_resources(
            "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role}])}}
        ).values()
        s3 = [
            statement
            for policy in policies
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if any(action.startswith("s3:") for action in _actions(statement))
        ]
        assert len(s3) == 1, role
        (statement,) = s3
        assert statement["Action"] == "s3:GetObject"
        parts = statement["Resource"]["Fn::Join"][1]
        assert parts[-2] == {"Fn::Sub": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"}
        assert parts[-1] == f"/{key.as_string()}"


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]
