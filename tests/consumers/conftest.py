from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dmsbus.envelope import ChangeEvent, Source


def change(
    op: str,
    table: str,
    key: dict[str, Any],
    after: dict[str, Any] | None = None,
    *,
    sequence: int,
    version: str | None = None,
    before: dict[str, Any] | None = None,
    ts_ms: int = 1_763_800_000_000,
) -> ChangeEvent:
    """A change event of ``schema.table`` as the glue (or, with op r, the backfill) makes it."""
    schema, name = table.split(".")
    dynamodb_table = ".".join(["demo", "legacy", schema, name, *([version] if version else [])])
    text = f"{sequence:024d}"
    return ChangeEvent(
        id=f"{dynamodb_table}/{text}",
        op=op,  # type: ignore[arg-type]
        ts_ms=ts_ms,
        source=Source(
            bus="demo",
            source="legacy",
            schema=schema,
            table=name,
            version=version,
            dynamodb_table=dynamodb_table,
            sequence=text,
            snapshot=op == "r",
        ),
        key=key,
        before=before,
        after=None if op == "d" else {**key, **(after or {})},
    )


@pytest.fixture
def mirror_db(database: str) -> Iterator[psycopg.Connection[Any]]:
    """An empty mirror database (a fresh PostgreSQL database), autocommit."""
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection
