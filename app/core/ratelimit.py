"""Fixed-window rate limits: Redis when configured (shared by every replica), else in memory
(the embedded single-process default)."""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        """Count one hit; None when allowed, else the seconds until the window resets."""
        ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        now = int(time.time())
        window = now // window_seconds
        start, count = self._windows.get(key, (window, 0))
        if start != window:
            start, count = window, 0
        count += 1
        self._windows[key] = (start, count)
        if len(self._windows) > 100_000:  # bound memory: drop windows that have ended
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        if count > limit:
            return (window + 1) * window_seconds - now or 1
        return None

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    def __init__(self, url: str, prefix: str = "eid:") -> None:
        self.redis: Redis = Redis.from_url(url)
        self.prefix = prefix + "rl:"

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        now = int(time.time())
        window = now // window_seconds
        rkey = f"{self.prefix}{key}:{window}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(rkey)
            pipe.expire(rkey, window_seconds + 1)
            count, _ = await pipe.execute()
        if int(count) > limit:
            return (window + 1) * window_seconds - now or 1
        return None

    async def close(self) -> None:
        await self.redis.aclose()


def make_rate_limiter(redis_url: str | None, prefix: str = "eid:") -> RateLimiter:
    return RedisRateLimiter(redis_url, prefix) if redis_url else MemoryRateLimiter()
