"""Fixtures: a fresh, migrated database per backend (SQLite and PostgreSQL) for the session,
the real app on it, an httpx client, and a clock that tests can move.

PostgreSQL is required: when it does not answer, its tests error (never skip). Set
EID_TEST_BACKENDS=sqlite to run without it on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.core.clock import Clock
from app.core.config import Environment, Settings
from app.core.migrations import run_migrations
from app.main import create_app
from tests.support import Harness

PG_URL = os.environ.get("EID_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EID_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = [b.strip() for b in os.environ.get("EID_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
TEST_SECRET = base64.urlsafe_b64encode(b"test-secret-key-for-eid-tests-32b").decode()


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _create_pg_database() -> str:
    name = f"eid_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(_pg_dsn(PG_URL), timeout=5)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def _drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        conn = await asyncpg.connect(_pg_dsn(PG_URL), timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def make_settings(database_url: str, backend: str, tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": Environment.test,
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "data_dir": tmp,
        # Cheap argon2id so the suite runs fast; production parameters are the defaults.
        "argon2_memory_kib": 1024,
        "argon2_time_cost": 1,
        "registration_rate_per_hour": 100_000,
        "signin_rate_per_hour": 100_000,
        # A fake operator registry the tests fill (env.subscribers.add): never in production.
        "subscriber_check": "fake",
        # The PostgreSQL run also exercises the shared Redis rate limiter.
        "redis_url": REDIS_URL if backend == "postgresql" else None,
        "redis_prefix": f"eid-test-{uuid.uuid4().hex[:8]}:",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session", params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(backend, url) of a fresh database migrated to head, dropped afterwards."""
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'eid.db'}"
    else:
        url = _create_pg_database()
    run_migrations(make_settings(url, backend, tmp_path_factory.mktemp("data")))
    yield backend, url
    if backend == "postgresql":
        _drop_pg_database(url)


@pytest.fixture(scope="session")
async def test_app(database: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    backend, url = database
    settings = make_settings(url, backend, tmp_path_factory.mktemp("data"))
    app = create_app(settings, clock=Clock())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            from app.admin.service import create_staff
            from app.core.principal import STAFF_SCOPES

            ctx = app.state.ctx
            async with ctx.sessionmaker() as session:
                await create_staff(
                    session, ctx, username="admin.test", display_name="Test admin",
                    password="test admin password 1", scopes=sorted(STAFF_SCOPES),
                )  # fmt: skip
            resp = await client.post(
                "/staff/token", json={"username": "admin.test", "password": "test admin password 1"}
            )
            assert resp.status_code == 200, resp.text
            yield Harness(app=app, client=client, admin_token=resp.json()["access_token"], backend=backend)


@pytest.fixture
async def env(test_app: Harness) -> AsyncIterator[Harness]:
    """The session's app, with the clock put back after each test."""
    yield test_app
    test_app.ctx.clock.offset = __import__("datetime").timedelta(0)


@pytest.fixture
def client(env: Harness) -> httpx.AsyncClient:
    return env.client
