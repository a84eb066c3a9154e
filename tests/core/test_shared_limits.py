"""Rate limits held in the database (app/core/ratelimit.py DatabaseRateLimiter): shared by every
process, exact for small limits, leased for large ones. Two limiter objects on one database
stand for two processes (tests/test_two_processes.py does it with real servers)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import ValidationError

from app.core.config import Environment, Settings
from app.core.ratelimit import DatabaseRateLimiter
from tests.support import Harness


def two_processes(env: Harness) -> tuple[DatabaseRateLimiter, DatabaseRateLimiter]:
    def hashed(key: str) -> str:
        return env.ctx.keyring.keyed_hash("rate-limit", key)

    return DatabaseRateLimiter(env.ctx.sessionmaker, hashed), DatabaseRateLimiter(env.ctx.sessionmaker, hashed)


async def test_a_small_limit_is_exact_across_processes(env: Harness) -> None:
    a, b = two_processes(env)
    key = f"test:{uuid.uuid4()}"
    answers = [await (a if i % 2 else b).hit(key, 5, 3600) for i in range(12)]
    assert answers[:5] == [None] * 5
    assert all(isinstance(x, int) and x > 0 for x in answers[5:])


async def test_a_large_limit_is_leased_and_stays_within_a_lease_per_process(env: Harness) -> None:
    a, b = two_processes(env)
    key = f"test:{uuid.uuid4()}"
    limit = 400  # leases of 4
    allowed = 0
    for i in range(500):
        if await (a if i % 3 else b).hit(key, limit, 3600) is None:
            allowed += 1
    assert limit - 2 * 4 <= allowed <= limit, allowed


async def test_callers_that_run_out_together_wait_for_one_lease(env: Harness) -> None:
    a, _ = two_processes(env)
    key = f"test:{uuid.uuid4()}"
    taken = 0
    real_take = a._take

    async def counting_take(*args: object) -> int:
        nonlocal taken
        taken += 1
        return await real_take(*args)  # type: ignore[arg-type]

    a._take = counting_take  # type: ignore[method-assign]
    answers = await asyncio.gather(*(a.hit(key, 100_000, 3600) for _ in range(60)))
    assert answers == [None] * 60
    assert taken <= 2  # one lease of 1,000 (and perhaps the next, taken ahead), not one per caller


def test_in_memory_limits_are_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="EID_RATE_LIMITS=memory"):
        Settings(
            env=Environment.production, rate_limits="memory", secret_key="x" * 43,  # type: ignore[arg-type]
            issuer="https://id.example.vn",
        )  # fmt: skip
