#!/usr/bin/env python3
"""The CDK app: ``cdk synth`` / ``cdk deploy --all`` turn ``config/`` into dmsbus.

Context: ``-c config=DIR`` (default ``config``), ``-c previous_config=DIR`` (the deployed
config, to refuse versions going backwards).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aws_cdk import App, Environment

from config import ConfigError, load_config
from stacks.app import build

ROOT = Path(__file__).resolve().parent


def main() -> None:
    app = App()
    config_dir = app.node.try_get_context("config") or str(ROOT / "config")
    previous = app.node.try_get_context("previous_config")
    try:
        config = load_config(config_dir, previous=previous, repo=ROOT)
    except ConfigError as exc:
        sys.exit(f"dmsbus: the config cannot be deployed:\n{exc}")
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    build(app, config, env=Environment(account=account, region=region) if account and region else None)
    app.synth()


if __name__ == "__main__":
    main()
