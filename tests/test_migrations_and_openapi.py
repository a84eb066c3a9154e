"""Schema only through Alembic: upgrade, downgrade and no drift on both backends;
openapi/openapi.json is the app's schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.core.db import make_engine
from app.core.migrations import run_migrations
from app.models import Base
from app.openapi import openapi_document
from tests.conftest import BACKENDS, _create_pg_database, _drop_pg_database, make_settings

ROOT = Path(__file__).resolve().parent.parent


def _diff_and_tables(settings) -> tuple[list, set[str]]:  # type: ignore[no-untyped-def]
    async def go() -> tuple[list, set[str]]:
        engine = make_engine(settings)
        async with engine.connect() as conn:

            def inspect_sync(sync_conn):  # type: ignore[no-untyped-def]
                ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return compare_metadata(ctx, Base.metadata), set(inspect(sync_conn).get_table_names())

            result = await conn.run_sync(inspect_sync)
        await engine.dispose()
        return result

    return asyncio.run(go())


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_downgrade_upgrade_without_drift(backend: str, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}" if backend == "sqlite" else _create_pg_database()
    settings = make_settings(url, backend, tmp_path)
    try:
        run_migrations(settings)
        diff, tables = _diff_and_tables(settings)
        assert diff == [], diff
        assert set(Base.metadata.tables) <= tables
        run_migrations(settings, "base", downgrade=True)
        _, tables = _diff_and_tables(settings)
        assert tables <= {"alembic_version"}
        run_migrations(settings)
        diff, _ = _diff_and_tables(settings)
        assert diff == []
    finally:
        if backend == "postgresql":
            _drop_pg_database(url)


def test_openapi_file_matches_the_app() -> None:
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert committed == openapi_document(), "openapi/openapi.json is stale: run `make openapi`"


def test_every_rest_error_is_documented_as_problem_json() -> None:
    doc = openapi_document()
    assert doc["info"]["title"] == "e-ID service"
    paths = set(doc["paths"])
    for expected in (
        "/accounts/registrations",
        "/registry/citizens/{id_number}",
        "/officer-registrations",
        "/staff/token",
        "/readyz",
    ):
        assert expected in paths
