"""Readiness: whether this process can serve, and if not, why (``GET /readyz``).

A load balancer sends traffic only to a ready process. Ready means: the database answers
within 2 s with a free pooled connection, its schema is at the migrations' head (a process
of older or newer code than the schema would fail on its first query that differs), and a
signing key is loaded for every algorithm. Redis, when configured, does not decide readiness:
while it is down the rate limits are counted in the database (app/core/ratelimit.py), so the
process still serves with every limit kept; the answer says so (``"status": "degraded"``).
Liveness (``/healthz``) asks nothing of anything: a process restarted because its database
is down would not come back any sooner.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import text

from app.core.migrations import migration_head
from app.core.ratelimit import FallbackRateLimiter

if TYPE_CHECKING:
    from app.core.deps import AppContext

DATABASE_TIMEOUT_SECONDS = 2.0
REDIS_TIMEOUT_SECONDS = 0.5


@dataclass
class Readiness:
    ready: bool = True
    degraded: bool = False
    checks: dict[str, str] = field(default_factory=dict)

    def fail(self, name: str, why: str) -> None:
        self.ready = False
        self.checks[name] = why


async def _schema_version(ctx: AppContext) -> str | None:
    async with ctx.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    return None if version is None else str(version)


async def readiness(ctx: AppContext) -> Readiness:
    out = Readiness()
    try:
        version = await asyncio.wait_for(_schema_version(ctx), DATABASE_TIMEOUT_SECONDS)
    except Exception as exc:  # whatever the cause, the database cannot serve this process now
        out.fail("database", f"does not answer ({type(exc).__name__})")
        out.checks["migrations"] = "unknown"
    else:
        out.checks["database"] = "ok"
        head = migration_head()
        if version == head:
            out.checks["migrations"] = "ok"
        else:
            out.fail("migrations", f"the schema is at {version}, this code expects {head}: run `eid migrate`")
    missing = ctx.keys.unready(ctx.clock.now())
    if missing:
        out.fail("signing_keys", f"no active key for {', '.join(missing)}: run `eid rotate-keys`")
    else:
        out.checks["signing_keys"] = "ok"
    limiter = ctx.limiter
    if isinstance(limiter, FallbackRateLimiter):
        try:
            await asyncio.wait_for(limiter.redis.redis.ping(), REDIS_TIMEOUT_SECONDS)
        except Exception as exc:  # down, refused or slow: the limits fall back either way
            out.degraded = True
            out.checks["redis"] = f"does not answer ({type(exc).__name__}): rate limits counted in the database"
        else:
            out.checks["redis"] = "ok" if limiter.store == "redis" else "ok; rate limits back to Redis on the next hit"
    return out
