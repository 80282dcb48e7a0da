"""Run the first-deploy integ test (tests/integ/integ_first_deploy.py) and keep its snapshot.

    python tests/integ/run.py snapshot   # write integ_first_deploy.py.snapshot/ (no account)
    python tests/integ/run.py check      # compare a fresh synth with it (no account)
    python tests/integ/run.py estimate   # what a run costs, roughly
    python tests/integ/run.py deploy     # deploy, assert, destroy, sweep (an account)

integ-runner is the CDK convention for this, and the app and its snapshot keep its layout
(``integ_*.py``, ``<file>.snapshot/``, aws-cdk.integ-tests-alpha's ``IntegTest``), but the
newest integ-runner (2.197.10) reads cloud assemblies up to schema 53 and aws-cdk-lib
2.275.0 writes schema 55 ("Maximum schema version supported is 53.x.x, but found 55.0.0").
Until an integ-runner reads it, this script does integ-runner's steps with the repo's own
CDK CLI (node_modules/.bin/cdk, which does): synthesize once, deploy the test stacks,
deploy the assertion stack without rollback and read its ``AssertionResults`` outputs,
destroy, and then remove what the stacks leave behind on purpose (retained buckets,
queues, logs and keys, the tables DMS created, discovery's event source mappings).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
APP = HERE / "integ_first_deploy.py"
SNAPSHOT = HERE / "integ_first_deploy.py.snapshot"
CDK = REPO / "node_modules" / ".bin" / "cdk"
ANSWERS = HERE / "first-deploy-answers.json"
#: integ_first_deploy.py's names (its module is a script, run by path, not imported).
BUS = "integ"
SOURCE = "legacy"
CHECKER = "dmsbus-integ-checker"
DMS_ROLES_CONTEXT = "dmsbus-integ:dms-roles"
ANSWER_MARK = "dmsbus-integ-answer"
#: Files of a cloud assembly the snapshot keeps: integ-runner's snapshot without assets
#: (the test has no update workflow, so integ-runner would drop them too) and without
#: tree.json (200 KB of construct paths that would make every review noisy).
KEPT = re.compile(r".*\.(template|assets)\.json|integ\.json|manifest\.json")
#: The hours a run keeps its resources: about 20 minutes to create (RDS, DMS), 40 of
#: assertions (the full load, the changes, the wildcard question's stop and resume), 30 to
#: destroy; rounded up.
RUN_HOURS = 2.0
#: Public on-demand prices in us-east-1 (USD), from AWS's price pages as of 2025; not
#: re-checked for this file: an estimate, other regions differ.
PRICES: list[tuple[str, float, str]] = [
    ("RDS for PostgreSQL db.t4g.micro, single-AZ", 0.016, "per hour"),
    ("RDS gp2 storage, 20 GB", 20 * 0.115 / 730, "per hour"),
    ("DMS replication instance dms.t3.micro", 0.018, "per hour"),
    ("DMS storage, 20 GB gp2", 20 * 0.115 / 730, "per hour"),
    ("Secrets Manager interface endpoint, 2 AZs", 2 * 0.01, "per hour"),
    ("NAT gateway", 0.0, "none: the VPC has no NAT (DynamoDB and Secrets Manager endpoints)"),
    ("Kinesis provisioned stream, 1 shard", 0.015, "per hour"),
    ("KMS keys (2), secret, alarms, dashboards", (2 * 1.0 + 0.40 + 20 * 0.10 + 2 * 3.0) / 730, "per hour"),
]
#: Per run, not per hour: Lambda, DynamoDB on-demand, Kinesis PUT units, Step Functions
#: transitions of the assertions' waiters, CloudWatch Logs: well under this.
PER_RUN = 0.10


def estimate(hours: float = RUN_HOURS) -> str:
    """A table of what a run costs, and its total."""
    lines = ["What `make integ` costs (an estimate: us-east-1 on-demand list prices, 2025):"]
    hourly = 0.0
    for item, price, unit in PRICES:
        hourly += price
        shown = f"${price:.4f} {unit}" if price else unit
        lines.append(f"  {item:<48} {shown}")
    lines.append(
        f"  {'Lambda, DynamoDB, Kinesis PUTs, Step Functions, logs':<48} under ${PER_RUN:.2f} per run"
    )
    total = hourly * hours + PER_RUN
    lines.append(f"  about ${hourly:.3f} an hour; a {hours:g}-hour run: about ${total:.2f}")
    lines.append("  (no free tier assumed; a run left standing costs the hourly figure until destroyed)")
    return "\n".join(lines)


# --- synthesis and the snapshot ---------------------------------------------------------


def synthesize(outdir: Path, context: Mapping[str, Any] | None = None) -> Path:
    """The integ app's cloud assembly in ``outdir``, with the repository's cdk.json context
    (the flags the real app has) and ``context``; no account, no network."""
    flags = json.loads((REPO / "cdk.json").read_text())["context"]
    env = {
        **os.environ,
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps({**flags, **(context or {})}),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    for name in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(APP)], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{APP.name} did not synthesize:\n{done.stderr[-4000:]}")
    return outdir


def test_stacks(assembly: Path) -> list[str]:
    """The stacks the test deploys (integ.json), without the assertion stack."""
    manifest = json.loads((assembly / "integ.json").read_text())
    return [stack for case in manifest["testCases"].values() for stack in case["stacks"]]


def assertion_stack(assembly: Path) -> tuple[str, str]:
    """The assertion stack's path (what the CLI selects) and name (its outputs' key)."""
    manifest = json.loads((assembly / "integ.json").read_text())
    (case,) = manifest["testCases"].values()
    return case["assertionStack"], case["assertionStackName"]


def canonical(assembly: Path, stack: str) -> str:
    """A stack's template as JSON text with its asset hashes numbered in order of
    appearance: integ-runner's comparison without ``diffAssets``."""
    text = json.dumps(json.loads((assembly / f"{stack}.template.json").read_text()), indent=1, sort_keys=True)
    assets = json.loads((assembly / f"{stack}.assets.json").read_text())
    hashes = [*assets.get("files", {}), *assets.get("dockerImages", {})]
    found = sorted((text.find(digest), digest) for digest in hashes if digest in text)
    for number, (_, digest) in enumerate(found, start=1):
        text = text.replace(digest, f"<asset {number}>")
    return text


def snapshot_diff(expected: Path, actual: Path) -> str:
    """What differs between the snapshot and a fresh synth, stack by stack (empty: none)."""
    if not expected.is_dir():
        return f"no snapshot at {expected}: run `make integ-snapshot`"
    out: list[str] = []
    before, after = test_stacks(expected), test_stacks(actual)
    for stack in sorted(set(before) ^ set(after)):
        out.append(f"stack {stack} is {'only in the snapshot' if stack in before else 'new'}")
    for stack in [name for name in after if name in before]:
        lines = difflib.unified_diff(
            canonical(expected, stack).splitlines(),
            canonical(actual, stack).splitlines(),
            f"snapshot/{stack}.template.json",
            f"synthesized/{stack}.template.json",
            n=2,
            lineterm="",
        )
        out.extend(lines)
    return "\n".join(out)


def write_snapshot(assembly: Path, target: Path = SNAPSHOT) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for path in sorted(assembly.iterdir()):
        if path.is_file() and KEPT.fullmatch(path.name):
            shutil.copy(path, target / path.name)


def check() -> int:
    with tempfile.TemporaryDirectory(prefix="dmsbus-integ-") as scratch:
        diff = snapshot_diff(SNAPSHOT, synthesize(Path(scratch)))
    if diff:
        print(f"The integ test's templates differ from {SNAPSHOT.relative_to(REPO)}:\n{diff}")
        print("If the change is meant, review it and run `make integ-snapshot`.")
        return 1
    print("The integ test's templates match the snapshot.")
    return 0


# --- a run in an account ----------------------------------------------------------------


def _cdk(*args: str) -> int:
    command = [str(CDK), *args, "--no-notices", "--require-approval", "never"]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=REPO, check=False).returncode


def assertion_results(outputs: Mapping[str, Mapping[str, str]], stack: str) -> dict[str, dict[str, Any]]:
    """integ-runner's reading of the assertion stack's outputs: ``AssertionResults*`` are
    ``{"status": "success" | "fail", "message": ...}``."""
    results = {}
    for name, value in outputs.get(stack, {}).items():
        if name.startswith("AssertionResults"):
            results[name] = json.loads(value.replace("\n", "\\n"))
    return results


def answers_from(outputs: Mapping[str, Mapping[str, str]], stack: str) -> dict[str, str]:
    """The ``Answer*`` outputs: one field of a question's answer each."""
    return {
        name.removeprefix("Answer"): value
        for name, value in outputs.get(stack, {}).items()
        if name.startswith("Answer")
    }


def deploy(region: str, keep: bool) -> int:
    import boto3

    session = boto3.Session(region_name=region)
    os.environ["AWS_REGION"] = os.environ["AWS_DEFAULT_REGION"] = region
    print(estimate())
    iam = session.client("iam")
    try:
        iam.get_role(RoleName="dms-vpc-role")
        roles = "existing"
    except iam.exceptions.NoSuchEntityException:
        roles = "create"
    outdir = HERE / "cdk-integ.out.integ_first_deploy.py.snapshot"
    if outdir.exists():
        shutil.rmtree(outdir)
    synthesize(outdir, {DMS_ROLES_CONTEXT: roles})
    app = str(outdir.relative_to(REPO))
    started = time.time()
    failed = False
    answers: dict[str, Any] = {}
    try:
        if _cdk("deploy", "--app", app, *test_stacks(outdir)) != 0:
            failed = True
        else:
            path, stack = assertion_stack(outdir)
            outputs_file = outdir / "assertion-results.json"
            code = _cdk("deploy", "--app", app, path, "--no-rollback", "--outputs-file", str(outputs_file))
            outputs = json.loads(outputs_file.read_text()) if outputs_file.exists() else {}
            results = assertion_results(outputs, stack)
            answers["outputs"] = answers_from(outputs, stack)
            for name, result in sorted(results.items()):
                status = result.get("status")
                print(f"  {status:<8} {name}" + ("" if status == "success" else f"\n{result.get('message')}"))
            failed = code != 0 or any(result.get("status") == "fail" for result in results.values())
    finally:
        if not keep:
            _cdk("destroy", "--app", app, "--all", "--force")
            # The checker's log holds every settled answer, also of a run that failed later.
            answers["logged"] = sweep(session)
        if answers:
            ANSWERS.write_text(json.dumps(answers, indent=2, sort_keys=True) + "\n")
            print(f"Answers to docs/dms.md's open questions: {ANSWERS.relative_to(REPO)}")
            print(json.dumps(answers, indent=2, sort_keys=True))
        print(f"{'FAILED' if failed else 'PASSED'} in {(time.time() - started) / 60:.0f} minutes")
    return 1 if failed else 0


def _paged(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def sweep(session: Any) -> dict[str, Any]:
    """Remove what the destroyed stacks leave behind on purpose or cannot own; return the
    answers the checker logged (its log group is Lambda's, not the stack's)."""
    answers = logged_answers(session)
    dynamodb = session.client("dynamodb")
    for table in _paged(dynamodb, "list_tables", "TableNames"):
        if table.startswith(f"{BUS}.{SOURCE}."):  # created by DMS, not CloudFormation
            print(f"  deleting DynamoDB table {table}")
            dynamodb.delete_table(TableName=table)
        elif table.startswith("awsdms_"):
            print(
                f"  left: {table}, DMS's control table, shared by every DMS task of the account: "
                f"aws dynamodb delete-table --table-name {table} if no other task writes DynamoDB"
            )
    lambda_ = session.client("lambda")
    glue = f":function:{BUS}-glue"
    for mapping in _paged(lambda_, "list_event_source_mappings", "EventSourceMappings"):
        if mapping["FunctionArn"].endswith(glue):  # made by discovery, not CloudFormation
            print(f"  deleting event source mapping {mapping['UUID']}")
            lambda_.delete_event_source_mapping(UUID=mapping["UUID"])
    tagging = session.client("resourcegroupstaggingapi")
    filters = [{"Key": "dmsbus:bus", "Values": [BUS]}]
    for resource in _paged(tagging, "get_resources", "ResourceTagMappingList", TagFilters=filters):
        _remove(session, resource["ResourceARN"])
    logs = session.client("logs")
    for prefix in (f"/aws/lambda/{BUS}-", "/aws/lambda/dmsbus-integ", "/aws/lambda/FirstDeploy"):
        for group in _paged(logs, "describe_log_groups", "logGroups", logGroupNamePrefix=prefix):
            print(f"  deleting log group {group['logGroupName']}")
            logs.delete_log_group(logGroupName=group["logGroupName"])
    return answers


def _remove(session: Any, arn: str) -> None:
    """One retained resource the bus's tag names, if it still exists."""
    parts = arn.split(":", 5)  # arn:partition:service:region:account:resource
    service, rest = parts[2], parts[5]
    try:
        if service == "s3":
            bucket = session.resource("s3").Bucket(rest)
            print(f"  emptying and deleting bucket {rest}")
            bucket.object_versions.delete()
            bucket.delete()
        elif service == "sqs":
            queue = session.client("sqs")
            print(f"  deleting queue {rest}")
            queue.delete_queue(QueueUrl=queue.get_queue_url(QueueName=rest)["QueueUrl"])
        elif service == "kms":
            key = session.client("kms")
            if key.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] != "PendingDeletion":
                print(f"  scheduling key {rest} for deletion (7 days)")
                key.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7)
        elif service == "dynamodb" and rest.startswith("table/"):
            print(f"  deleting table {rest}")
            session.client("dynamodb").delete_table(TableName=rest.removeprefix("table/"))
        elif service == "logs":
            name = rest.removeprefix("log-group:").removesuffix(":*")
            print(f"  deleting log group {name}")
            session.client("logs").delete_log_group(logGroupName=name)
    except Exception as exc:  # the tag index lags deletions: report, go on
        print(f"  could not remove {arn}: {exc}")


def logged_answers(session: Any) -> dict[str, Any]:
    """The checker's answers from its log (the last of each question)."""
    logs = session.client("logs")
    found: dict[str, Any] = {}
    try:
        for event in _paged(
            logs,
            "filter_log_events",
            "events",
            logGroupName=f"/aws/lambda/{CHECKER}",
            filterPattern=f'"{ANSWER_MARK}"',
        ):
            answer = json.loads(event["message"])
            found[answer.pop(ANSWER_MARK)] = answer
    except logs.exceptions.ResourceNotFoundException:
        pass
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["snapshot", "check", "estimate", "deploy"])
    parser.add_argument(
        "--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    )
    parser.add_argument("--keep", action="store_true", help="deploy: leave the stacks standing (to debug)")
    args = parser.parse_args(argv)
    if args.command == "estimate":
        print(estimate())
        return 0
    if args.command == "check":
        return check()
    if args.command == "snapshot":
        with tempfile.TemporaryDirectory(prefix="dmsbus-integ-") as scratch:
            write_snapshot(synthesize(Path(scratch)))
        print(f"wrote {SNAPSHOT.relative_to(REPO)}")
        return 0
    if os.environ.get("CI") == "true":
        print("make integ deploys into an AWS account and costs money: it never runs on CI")
        return 2
    if not args.region:
        print("set AWS_REGION (or --region): the region to deploy the integ test into")
        return 2
    return deploy(args.region, args.keep)


if __name__ == "__main__":
    sys.exit(main())
