"""How functions are packaged: their folder plus the shared ``dmsbus`` package as the code
asset, and their requirements (Powertools, aws-kinesis-agg, orjson, psycopg) as one layer built for
Python 3.12 on arm64 by ``make lambda-deps`` (pip with ``--platform``, no Docker)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
#: Written by ``make lambda-deps``: ``python/`` holds functions/requirements.txt's packages.
DEPENDENCIES = ROOT / ".build" / "lambda-deps"

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64


class MissingDependenciesError(RuntimeError):
    """The dependencies layer has not been built."""


def function_code(folder: str) -> lambda_.Code:
    """The asset for the function in ``functions/<folder>`` (e.g. ``glue`` or
    ``consumers/log_changes``): that folder, its parent packages and ``dmsbus``."""
    path = FUNCTIONS / folder
    if not (path / "handler.py").is_file():
        raise FileNotFoundError(f"{path} has no handler.py")
    parts = folder.split("/")
    keep = ["dmsbus", "dmsbus/**"]
    for depth in range(1, len(parts)):
        keep.append("/".join(parts[:depth]) + "/__init__.py")
    keep += [folder, f"{folder}/**"]
    return lambda_.Code.from_asset(
        str(FUNCTIONS),
        exclude=["*", *(f"!{pattern}" for pattern in keep), "**/__pycache__", "**/*.pyc"],
    )


def handler_name(folder: str, entry: str = "handler") -> str:
    return folder.replace("/", ".") + f".handler.{entry}"


def dependencies_layer(scope: Construct, id_: str) -> lambda_.LayerVersion:
    if not (DEPENDENCIES / "python").is_dir():
        raise MissingDependenciesError(
            f"{DEPENDENCIES / 'python'} is missing: run `make lambda-deps` (make synth and make test do)"
        )
    return lambda_.LayerVersion(
        scope,
        id_,
        code=lambda_.Code.from_asset(str(DEPENDENCIES), exclude=["**/__pycache__"]),
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[ARCHITECTURE],
        description="dmsbus function dependencies (functions/requirements.txt)",
    )
