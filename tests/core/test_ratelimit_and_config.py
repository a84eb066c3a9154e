"""Rate limits (real Redis, and the in-memory fallback) and start-up configuration errors."""

import os
import subprocess
import sys
import uuid

import pytest

from app.core.ratelimit import MemoryRateLimiter, RedisRateLimiter
from tests.conftest import REDIS_URL
from tests.support import Harness, new_phone


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_fixed_window_limit(kind: str) -> None:
    limiter = (
        MemoryRateLimiter() if kind == "memory" else RedisRateLimiter(REDIS_URL, prefix=f"eid-test-{uuid.uuid4().hex}:")
    )
    try:
        results = [await limiter.hit("k", 3, 60) for _ in range(5)]
        assert results[:3] == [None, None, None]
        assert all(r is not None and 1 <= r <= 60 for r in results[3:])
        assert await limiter.hit("other", 3, 60) is None
    finally:
        await limiter.close()


async def test_registration_is_rate_limited_per_phone(env: Harness) -> None:
    phone = new_phone()
    limit = env.ctx.settings.registration_rate_per_hour
    env.ctx.settings.registration_rate_per_hour = 3
    try:
        c = await env.citizen(phone=phone)
        body = {k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}
        codes = [(await env.client.post("/accounts/registrations", json=body)).status_code for _ in range(3)]
        assert codes == [202, 202, 202]
        before = await env.count("otp_challenges")
        r = await env.client.post("/accounts/registrations", json=body)
        assert r.status_code == 429
        assert r.json()["type"] == "urn:eid:problem:rate-limited"
        assert 1 <= int(r.headers["retry-after"]) <= 3600
        assert await env.count("otp_challenges") == before
    finally:
        env.ctx.settings.registration_rate_per_hour = limit


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"EID_DATABASE_URL": "mysql://x"}, "EID_DATABASE_URL"),
        ({"EID_ENV": "production"}, "EID_SECRET_KEY is required"),
        ({"EID_SECRET_KEY": "short"}, "EID_SECRET_KEY"),
        ({"EID_LOCKOUT_THRESHOLD": "zero"}, "EID_LOCKOUT_THRESHOLD"),
        ({"EID_SMS_GATEWAY": "webhook"}, "EID_SMS_WEBHOOK_URL"),
        ({"EID_ISSUER": "ftp://x/"}, "EID_ISSUER"),
    ],
)
def test_invalid_configuration_fails_with_one_clear_line(env: dict[str, str], needle: str) -> None:
    result = run_cli("migrate", **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("invalid configuration:")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr
