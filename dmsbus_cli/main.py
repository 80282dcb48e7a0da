"""The ``dmsbus`` command: argparse subcommands, one module each.

argparse because it is in the standard library, gives every subcommand its own ``--help``
and errors that name the argument, and adds no dependency to an install that already
carries the CDK; the commands are few and their arguments plain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dmsbus_cli import doctor, new_consumer, plan, redrive, replay, resync, status, tail, up, verify
from local.__main__ import add_demo_command, run_command

#: The repository dmsbus runs from: its config/, functions/ and tests/.
REPOSITORY = Path(__file__).resolve().parent.parent


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="dmsbus",
        description="dmsbus: legacy SQL databases as event sources (DMS -> DynamoDB -> Kinesis).",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_command(commands, REPOSITORY)
    commands.choices["demo"].set_defaults(run=run_command)
    up.add_command(commands, REPOSITORY)
    verify.add_command(commands, REPOSITORY)
    doctor.add_command(commands, REPOSITORY)
    new_consumer.add_command(commands, REPOSITORY)
    redrive.add_command(commands, REPOSITORY)
    replay.add_command(commands, REPOSITORY)
    tail.add_command(commands, REPOSITORY)
    status.add_command(commands, REPOSITORY)
    plan.add_command(commands, REPOSITORY)
    resync.add_command(commands, REPOSITORY)
    return root


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    status: int = arguments.run(arguments)
    return status


if __name__ == "__main__":
    sys.exit(main())
