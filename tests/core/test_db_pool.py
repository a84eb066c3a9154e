"""The PostgreSQL pool holds at most EID_DATABASE_POOL_SIZE connections per process: a call
beyond it waits for one to be returned. An overflow (connections opened past the pool and
closed on return) made every busy moment fork and tear down PostgreSQL backends
(bench/token.py, userinfo: a third of the machine's CPU)."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from app.core.clock import Clock
from app.core.db import make_engine
from app.main import create_app
from tests.support import Harness


async def test_the_pool_never_opens_more_than_its_size(env: Harness) -> None:
    if env.backend == "sqlite":
        return  # SQLite has no server connections to budget
    settings = env.ctx.settings.model_copy(update={"database_pool_size": 3})
    engine = make_engine(settings)
    try:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(3):
                await held.enter_async_context(engine.connect())
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(engine.connect().__aenter__(), timeout=0.5)
        # Returned connections are reused, not reopened.
        async with engine.connect():
            pass
        assert engine.pool.checkedin() == 3  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_a_request_that_finds_no_free_connection_answers_503(env: Harness) -> None:
    if env.backend == "sqlite":
        return
    settings = env.ctx.settings.model_copy(update={"database_pool_size": 1, "database_pool_timeout_seconds": 0.2})
    app = create_app(settings, clock=Clock())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            login = {"username": "nobody.here", "password": "not a password at all"}
            assert (await client.post("/staff/token", json=login)).status_code == 401
            attempts = await env.count("audit_events", "action = 'staff.login'")
            async with app.state.engine.connect():  # the only connection, held
                r = await client.post("/staff/token", json=login)
                assert r.status_code == 503 and r.headers["retry-after"] == "1"
                assert r.json()["type"] == "urn:eid:problem:unavailable"
                assert (await client.get("/readyz")).status_code == 503
            assert await env.count("audit_events", "action = 'staff.login'") == attempts  # nothing written
            assert (await client.get("/readyz")).status_code == 200
