from sqlalchemy import text

from tests.support import Harness


async def test_healthz_and_readyz(env: Harness) -> None:
    assert (await env.client.get("/healthz")).json() == {"status": "ok"}
    resp = await env.client.get("/readyz")
    assert resp.status_code == 200
    checks = {"database": "ok", "migrations": "ok", "signing_keys": "ok"}
    if env.backend == "postgresql":  # the suite's PostgreSQL run counts rate limits in Redis
        checks["redis"] = "ok"
    assert resp.json() == {"status": "ready", "checks": checks}
    assert resp.headers["x-request-id"]


async def test_readyz_says_why_it_is_not_ready(env: Harness) -> None:
    async with env.ctx.sessionmaker() as session:
        head = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        await session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        await session.commit()
    try:
        resp = await env.client.get("/readyz")
    finally:
        async with env.ctx.sessionmaker() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head})
            await session.commit()
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["type"] == "urn:eid:problem:not-ready"
    assert body["checks"]["database"] == "ok" and "eid migrate" in body["checks"]["migrations"]
    assert f"this code expects {head}" in body["detail"]
    assert (await env.client.get("/readyz")).status_code == 200


async def test_unknown_route_is_problem_json(env: Harness) -> None:
    resp = await env.client.get("/no-such-thing")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"] == "urn:eid:problem:not-found"
