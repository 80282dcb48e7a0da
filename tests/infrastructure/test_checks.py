"""cdk-nag, cfn-lint and template snapshots over every synthesized stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_sqs as sqs
from cfnlint.api import ManualArgs, lint
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from stacks.app import build
from tests.infrastructure.conftest import Synthesized

PACKS = ("AwsSolutions::", "Serverless::")
#: Regions where dmsbus is expected to run (every service it uses exists there).
LINT_REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1"]
_ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def _acknowledgments(outdir: Path) -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(outdir.glob("*.metadata.json")):
        for construct, entries in json.loads(path.read_text(encoding="utf-8")).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    found.extend((construct, rule, reason) for rule, reason in entry["data"].items())
    return [ack for ack in found if ack[1].startswith(PACKS)]


def test_cdk_nag_runs_both_packs_and_fails_an_unacknowledged_finding(sample: Synthesized) -> None:
    # Given the sample app with one extra queue that has no DLQ and no TLS enforcement
    app = App(outdir=str(sample.outdir.parent / "nag-probe"))
    stacks = build(app, sample.config)
    sqs.Queue(stacks.consumers, "Unchecked")
    # When it is synthesized, Then cdk-nag fails the synth, naming each rule of both packs
    with pytest.raises(RuntimeError, match="ValidationFailed") as raised:
        app.synth()
    for rule in (
        "AwsSolutions::AwsSolutions-SQS3",
        "AwsSolutions::AwsSolutions-SQS4",
        "Serverless::Serverless-SQSRedrivePolicy",
    ):
        assert f"Unchecked/Resource aws-cdk-lib.aws_sqs.CfnQueue\n   Acknowledge with '{rule}'" in str(
            raised.value
        )


def test_sample_synth_has_no_unacknowledged_finding(sample: Synthesized) -> None:
    report = json.loads((sample.outdir / "validation-report.json").read_text(encoding="utf-8"))
    assert [plugin for plugin in report["pluginReports"] if plugin.get("violations")] == []


def test_every_acknowledgment_names_a_finding_and_gives_a_reason(sample: Synthesized) -> None:
    acknowledgments = _acknowledgments(sample.outdir)
    assert len(acknowledgments) >= 10
    for construct, rule, reason in acknowledgments:
        assert len(reason) > 30, (construct, rule)
        assert re.fullmatch(
            r"(AwsSolutions|Serverless)::(AwsSolutions|Serverless)-[A-Za-z0-9]+(\[.+\])?", rule
        )


def test_cfn_lint_finds_no_error_in_any_template(sample: Synthesized) -> None:
    templates = sorted(sample.outdir.glob("*.template.json"))
    assert len(templates) == 3
    for path in templates:
        template = json.loads(path.read_text(encoding="utf-8"))
        matches = lint(json.dumps(template), config=ManualArgs(regions=LINT_REGIONS))
        errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.id.startswith("E")]
        assert errors == [], path.name


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, str):
        return _ASSET_HASH.sub("<asset-hash>", value)
    return value


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack", ["bus", "source-legacy", "consumers"])
def test_template_matches_the_reviewed_snapshot(
    sample: Synthesized, snapshot_json: SnapshotAssertion, stack: str
) -> None:
    # A change here is reviewed: `pytest --snapshot-update`, then read the diff.
    stacks: dict[str, Stack] = {
        "bus": sample.stacks.bus,
        "source-legacy": sample.stacks.sources["legacy"],
        "consumers": sample.stacks.consumers,
    }
    template = sample.template(stacks[stack]).to_json()
    assert _masked(template) == snapshot_json
