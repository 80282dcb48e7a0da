"""``dmsbus new-consumer``: a handler, a passing test and the bus.yaml entry, comments kept."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config import load_config
from dmsbus_cli.main import main
from dmsbus_cli.new_consumer import NewConsumerError, with_entry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A copy of the parts of the repository new-consumer writes to and reads."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(
        REPO / "functions" / "consumers",
        tmp_path / "functions" / "consumers",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (tmp_path / "tests" / "consumers").mkdir(parents=True)
    return tmp_path


def _new(repository: Path, *arguments: str) -> int:
    return main(
        ["new-consumer", *arguments, "--config", str(repository / "config"), "--repository", str(repository)]
    )


def test_it_writes_a_handler_a_passing_test_and_the_entry_keeping_comments(repository: Path) -> None:
    before = (repository / "config" / "bus.yaml").read_text(encoding="utf-8")
    # When a consumer is created
    assert _new(repository, "invoice-mailer", "--tables", "public.invoices,billing.*", "--ops", "c,u") == 0
    # Then the config has its entry, with the tables and ops given, and every old line stays
    (entry,) = [
        c
        for c in load_config(repository / "config", repo=repository).bus.consumers
        if c.name == "invoice-mailer"
    ]
    assert (entry.code, entry.tables, entry.ops) == (
        "functions/consumers/invoice_mailer",
        ["public.invoices", "billing.*"],
        ["c", "u"],
    )
    after = (repository / "config" / "bus.yaml").read_text(encoding="utf-8")
    assert [line for line in after.splitlines() if line in before.splitlines()] == before.splitlines()
    assert "# The reporting mirror: every table, one transaction per batch (docs/consumers.md)." in after
    # And the generated test passes as written, against the generated handler
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(repository / "tests" / "consumers"),
        ],
        cwd=repository,
        env={"PYTHONPATH": f"{repository / 'functions'}:{REPO / 'functions'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


def test_a_name_that_exists_is_refused_and_nothing_is_written(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (repository / "config" / "bus.yaml").read_text(encoding="utf-8")
    assert _new(repository, "pg-mirror", "--tables", "public.orders") == 2
    assert "a consumer named 'pg-mirror' exists already" in capsys.readouterr().err
    assert (repository / "config" / "bus.yaml").read_text(encoding="utf-8") == before
    assert not (repository / "tests" / "consumers" / "test_pg_mirror.py").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["Bad Name", "--tables", "public.orders"], "name 'Bad Name': use lowercase letters"),
        (["mailer", "--tables", "orders"], "is not a schema.table pattern"),
        (["mailer", "--tables", "public.orders", "--ops", "c,x"], "ops"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    repository: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert _new(repository, *arguments) == 2
    assert message in capsys.readouterr().err
    assert not (repository / "functions" / "consumers" / "mailer").exists()


def test_the_console_script_is_installed_and_lists_its_commands() -> None:
    script = Path(sys.executable).parent / "dmsbus"
    assert script.exists(), "make installs dmsbus into .venv (pip install -e .)"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=True, cwd="/"
    )
    for command in ("demo", "up", "verify", "new-consumer", "replay"):
        assert command in result.stdout


def test_the_generated_code_passes_the_repository_s_lint_and_format(repository: Path) -> None:
    assert _new(repository, "stock-watch", "--tables", "public.products,audit.event_*") == 0
    files = [
        str(repository / "functions" / "consumers" / "stock_watch" / "handler.py"),
        str(repository / "tests" / "consumers" / "test_stock_watch.py"),
    ]
    ruff = Path(sys.executable).parent / "ruff"
    settings = ["--config", str(REPO / "pyproject.toml")]
    for command in (["check", *settings, *files], ["format", "--check", *settings, *files]):
        result = subprocess.run(
            [str(ruff), *command], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: demo\n", "name: demo\n\nconsumers:\n  - name: x\n"),
        ("name: demo\nconsumers: []  # none yet\n", "name: demo\nconsumers:  # none yet\n  - name: x\n"),
        (
            "consumers:\n- name: a\n  code: c\nalarms: {}\n",
            "consumers:\n- name: a\n  code: c\n- name: x\nalarms: {}\n",
        ),
        (
            "consumers:\n    - name: a  # the first\nname: demo",
            "consumers:\n    - name: a  # the first\n    - name: x\nname: demo\n",
        ),
    ],
)
def test_the_entry_goes_last_in_the_list_as_its_items_are_indented(text: str, expected: str) -> None:
    assert with_entry(text, "  - name: x\n") == expected


def test_a_consumers_list_written_inline_is_refused_with_how_to_write_it() -> None:
    with pytest.raises(NewConsumerError, match="write consumers as a block list"):
        with_entry("consumers: [{name: a, code: functions/consumers/a}]\n", "  - name: x\n")
