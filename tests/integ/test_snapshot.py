"""The first-deploy integ test's snapshot, checked without an account: a change to stacks/
that changes what the integ test deploys fails here with the template diff, until the
snapshot is refreshed (`make integ-snapshot`) and reviewed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.integ import run


def test_the_synthesized_integ_app_matches_its_snapshot(tmp_path: Path) -> None:
    # Given the integ app synthesized now, as `make integ` would deploy it
    assembly = run.synthesize(tmp_path / "assembly")

    # When it is compared with the committed snapshot
    diff = run.snapshot_diff(run.SNAPSHOT, assembly)

    # Then nothing differs but asset hashes
    assert diff == "", f"{diff}\n\nA meant change: review it, then `make integ-snapshot`."


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run.SNAPSHOT, copy)
    return copy


def test_a_changed_resource_shows_as_a_diff_naming_the_stack_and_the_value(tmp_path: Path) -> None:
    # Given a synthesized assembly whose replication instance class differs from the snapshot's
    changed = _copy(tmp_path)
    template = changed / "dmsbus-integ-source-legacy.template.json"
    text = template.read_text()
    assert '"dms.t3.micro"' in text
    template.write_text(text.replace('"dms.t3.micro"', '"dms.t3.large"'))

    # When the two are compared
    diff = run.snapshot_diff(run.SNAPSHOT, changed)

    # Then the diff names the template and both values
    assert "synthesized/dmsbus-integ-source-legacy.template.json" in diff
    assert re.search(r'^-\s+"ReplicationInstanceClass": "dms.t3.micro",$', diff, re.MULTILINE)
    assert re.search(r'^\+\s+"ReplicationInstanceClass": "dms.t3.large",$', diff, re.MULTILINE)


def test_a_new_asset_hash_alone_is_no_difference(tmp_path: Path) -> None:
    # Given an assembly whose probe code asset has another hash (its code changed)
    changed = _copy(tmp_path)
    assets = json.loads((changed / "dmsbus-integ-probe.assets.json").read_text())
    old = next(
        digest
        for digest in assets["files"]
        if digest in (changed / "dmsbus-integ-probe.template.json").read_text()
    )
    new = "0" * len(old)
    for name in ("dmsbus-integ-probe.assets.json", "dmsbus-integ-probe.template.json"):
        path = changed / name
        path.write_text(path.read_text().replace(old, new))

    # When it is compared with the snapshot
    diff = run.snapshot_diff(run.SNAPSHOT, changed)

    # Then nothing differs (integ-runner's comparison without diffAssets)
    assert diff == ""


def test_a_stack_missing_from_the_synth_is_named(tmp_path: Path) -> None:
    # Given an assembly whose integ manifest no longer lists the probe stack
    changed = _copy(tmp_path)
    manifest = json.loads((changed / "integ.json").read_text())
    for case in manifest["testCases"].values():
        case["stacks"].remove("dmsbus-integ-probe")
    (changed / "integ.json").write_text(json.dumps(manifest))

    # When it is compared with the snapshot
    diff = run.snapshot_diff(run.SNAPSHOT, changed)

    # Then the stack is named
    assert diff == "stack dmsbus-integ-probe is only in the snapshot"


def test_the_cost_estimate_states_its_prices_and_a_total() -> None:
    # Given the price table  When the estimate is printed
    text = run.estimate(hours=2)

    # Then it says it is an estimate, names each priced resource and totals a run
    assert "an estimate" in text
    assert "db.t4g.micro" in text and "dms.t3.micro" in text and "NAT gateway" in text
    hourly = sum(price for _, price, _ in run.PRICES)
    assert f"a 2-hour run: about ${hourly * 2 + run.PER_RUN:.2f}" in text


def test_make_integ_refuses_to_run_on_ci(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given CI=true
    monkeypatch.setenv("CI", "true")

    # When the deploy command starts
    code = run.main(["deploy", "--region", "eu-west-1"])

    # Then it deploys nothing and says why
    assert code == 2
    assert "never runs on CI" in capsys.readouterr().out
