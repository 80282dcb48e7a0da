"""Synthesize the sample config once per session (cdk-nag on) and hand out templates."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from config import Config, load_config
from stacks.app import Stacks, build

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Synthesized:
    config: Config
    stacks: Stacks
    outdir: Path

    def template(self, stack: Stack) -> Template:
        return Template.from_stack(stack)


def synthesize(config: Config, outdir: Path) -> Synthesized:
    app = App(outdir=str(outdir))
    stacks = build(app, config)
    app.synth()  # cdk-nag runs here: an unacknowledged finding fails the synth
    return Synthesized(config, stacks, outdir)


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(load_config(REPO / "config"), tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def bus(sample: Synthesized) -> Template:
    return sample.template(sample.stacks.bus)


@pytest.fixture(scope="session")
def source(sample: Synthesized) -> Template:
    return sample.template(sample.stacks.sources["legacy"])


@pytest.fixture(scope="session")
def consumers(sample: Synthesized) -> Template:
    return sample.template(sample.stacks.consumers)
