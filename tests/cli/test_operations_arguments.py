"""The operations commands refuse bad arguments with a message that names them, before
touching any bus."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmsbus_cli.main import main


@pytest.mark.parametrize("command", ["status", "tail", "redrive"])
def test_local_without_a_running_up_is_refused_naming_its_state_file(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--local", str(tmp_path)]) == 2
    assert f"{tmp_path / 'up.json'}" in capsys.readouterr().err


def test_redrive_from_an_unknown_function_is_refused_listing_the_consumers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["redrive", "--endpoint-url", "http://127.0.0.1:9", "--from", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--from 'nope'" in err and "pg-mirror" in err


def test_tail_refuses_an_unknown_op(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "--endpoint-url", "http://127.0.0.1:9", "--op", "c,x"]) == 2
    assert "--op x" in capsys.readouterr().err


def test_resync_refuses_a_consumer_that_does_not_take_the_tables_reads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # log-changes takes public.* only
    assert (
        main(
            [
                "resync",
                "audit.event_login",
                "--endpoint-url",
                "http://127.0.0.1:9",
                "--consumer",
                "log-changes",
            ]
        )
        == 2
    )
    assert "consumer log-changes does not take r events of audit.event_login" in capsys.readouterr().err


def test_resync_refuses_a_table_the_source_does_not_select(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resync", "public.nope", "--endpoint-url", "http://127.0.0.1:9"]) == 2
    assert "public.nope is not selected by source legacy" in capsys.readouterr().err


def test_resync_names_a_saved_position_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "resync-demo.legacy.public.orders-all.json"
    saved.write_text("{half", encoding="utf-8")
    command = ["resync", "public.orders", "--endpoint-url", "http://127.0.0.1:9", "--state", str(tmp_path)]
    assert main(command) == 2
    assert f"{saved} is not a resync's saved position" in capsys.readouterr().err
