"""dmsbus is an installed package (pyproject.toml, `pip install -e .` by make): nothing
outside the tests edits the import path to find its code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: sys.path edits, and PYTHONPATH handed to a child process or set for pytest.
EDITS = re.compile(r"sys\.path\s*(\.|\[|=|\+)|PYTHONPATH|^pythonpath\s*=", re.MULTILINE)


def test_no_code_outside_the_tests_edits_the_import_path() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.toml", "*.cfg", "Makefile", "*.json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    offenders = [
        f"{name}:{text[: match.start()].count(chr(10)) + 1}"
        for name in tracked
        if not name.startswith("tests/") and name != "package-lock.json"
        for text in [(REPO / name).read_text(encoding="utf-8")]
        for match in EDITS.finditer(text)
    ]
    assert offenders == []


def test_the_functions_packages_import_from_anywhere_as_installed() -> None:
    # From a folder outside the repository, with the venv's interpreter only
    code = "import dmsbus.envelope, glue.core, discovery.core, consumers.pg_mirror.mirror, task_lifecycle.core, local, dmsbus_cli.main"
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
