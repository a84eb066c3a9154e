"""Fixed-window rate limits, shared by every process that can serve.

Three stores, chosen by ``EID_RATE_LIMITS`` (``auto``: Redis when ``EID_REDIS_URL`` is set, else
the database):
- ``redis``: one INCR + EXPIRE per hit, shared by every replica. While Redis does not answer
  (refused, reset, or no answer within 0.5 s), the limits are counted in the database instead
  (FallbackRateLimiter), still shared by every replica, and Redis is asked again a second
  later. A limit is therefore never dropped: it stays exact, except in a window during which
  the store changed, where both stores' counts start from zero and up to twice the limit can
  pass. /readyz says which store counts (app/main.py).
- ``database``: one upsert per hit in ``rate_limits`` (PostgreSQL or SQLite), shared by every
  process on that database; ``eid purge-expired`` deletes ended windows.
- ``memory``: this process only. Two workers would let twice the traffic through, so the
  service refuses it with ``--workers`` above 1 and in production (app/core/config.py, app/cli.py).

Keys are stored as keyed hashes: they name phones and ID numbers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.core.config import RateLimitStore, Settings
from app.core.crypto import Keyring
from app.core.db import Base, UTCDateTime

log = logging.getLogger("eid.ratelimit")


class RateLimit(Base):
    """One window of one key (the database store)."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class RateLimiter(Protocol):
    shared: bool

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        """Count one hit; None when allowed, else the seconds until the window resets."""
        ...

    async def close(self) -> None: ...


def _verdict(count: int, limit: int, window: int, window_seconds: int, now: int) -> int | None:
    if count > limit:
        return (window + 1) * window_seconds - now or 1
    return None


class MemoryRateLimiter:
    shared = False

    def __init__(self, hash_key: Callable[[str], str] = str) -> None:
        self._windows: dict[str, tuple[int, int]] = {}
        self._hash = hash_key

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        now = int(time.time())
        window = now // window_seconds
        key = self._hash(key)
        start, count = self._windows.get(key, (window, 0))
        if start != window:
            start, count = window, 0
        count += 1
        self._windows[key] = (start, count)
        if len(self._windows) > 100_000:  # bound memory: drop windows that have ended
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        return _verdict(count, limit, window, window_seconds, now)

    async def close(self) -> None:
        return None


# How long a Redis call may take before the limit is counted in the database: a stopped Redis
# refuses at once, an unreachable one would otherwise hold every request for redis-py's
# defaults (5 s timeouts, 10 retries with exponential backoff).
REDIS_TIMEOUT_SECONDS = 0.5


class RedisRateLimiter:
    shared = True

    def __init__(self, url: str, prefix: str = "eid:", hash_key: Callable[[str], str] = str) -> None:
        self.redis: Redis = Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        self.prefix = prefix + "rl:"
        self._hash = hash_key

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        now = int(time.time())
        window = now // window_seconds
        rkey = f"{self.prefix}{self._hash(key)}:{window}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(rkey)
            pipe.expire(rkey, window_seconds + 1)
            count, _ = await pipe.execute()
        return _verdict(int(count), limit, window, window_seconds, now)

    async def close(self) -> None:
        await self.redis.aclose()


@dataclass
class _Lease:
    window: int
    left: int = 0  # hits this process may still admit in the window
    used_up: bool = False  # the shared count passed the limit: refuse until the window ends
    taking: asyncio.Future[None] | None = None  # the one lease being taken for this key


class DatabaseRateLimiter:
    """Counts in ``rate_limits``, shared by every process on the database.

    A process takes hits in leases: it adds ``k`` (1% of the limit, at least 1) to the shared
    count in one upsert and then admits up to ``k`` hits without a round trip. Limits of up to
    100 per window are therefore exact (one upsert per hit); larger ones, such as a bank's
    calls per minute, admit at most ``k`` more per process than the limit, and cost one upsert
    per ``k`` hits instead of one per hit. One lease is taken at a time per key (callers that
    run out wait for it together), and for large limits the next one is taken ahead, in the
    background, when a quarter of the current one is left, so that a busy route never waits
    for it. Once a window is used up, the process refuses until it ends without asking again
    (counts only grow within a window).

    Each upsert runs in its own short transaction, so call ``hit`` before the request's own
    transaction has run a statement: on SQLite that transaction holds the write lock.
    """

    shared = True
    _LEASE_FRACTION = 100

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], hash_key: Callable[[str], str]) -> None:
        self._sessionmaker = sessionmaker
        self._hash = hash_key
        self._leases: dict[tuple[str, int], _Lease] = {}

    async def _take(self, key: str, window: int, k: int, expires: dt.datetime) -> int:
        async with self._sessionmaker() as session:
            insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
            upsert = (
                insert(RateLimit)
                .values(key=key, window=window, count=k, expires_at=expires)
                .on_conflict_do_update(
                    index_elements=[RateLimit.key, RateLimit.window], set_={"count": RateLimit.count + k}
                )
                .returning(RateLimit.count)
            )
            total = int((await session.execute(upsert)).scalar_one())
            await session.commit()
        return total

    async def _refill(self, lease: _Lease, key: str, k: int, limit: int, window_seconds: int) -> None:
        try:
            expires = dt.datetime.fromtimestamp((lease.window + 1) * window_seconds, dt.UTC)
            total = await self._take(self._hash(key), lease.window, k, expires)
            # Of the k hits just added, those past the limit are not ours to admit.
            granted = max(0, min(k, limit - (total - k)))
            lease.left += granted
            if granted < k:
                lease.used_up = True
        finally:
            lease.taking = None

    def _start_refill(self, lease: _Lease, key: str, k: int, limit: int, window_seconds: int) -> asyncio.Future[None]:
        task = asyncio.ensure_future(self._refill(lease, key, k, limit, window_seconds))
        task.add_done_callback(_retrieve)
        lease.taking = task
        return task

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        # The hot path is a dict lookup and a decrement: the key is hashed and the window's end
        # computed only when a lease is taken (this process's memory holds the keys as given).
        now = int(time.time())
        window = now // window_seconds
        lease = self._leases.get((key, window_seconds))
        if lease is None or lease.window != window:
            if len(self._leases) > 50_000:  # bound memory: drop leases of ended windows
                self._leases = {k: v for k, v in self._leases.items() if v.window == now // k[1]}
            lease = self._leases[(key, window_seconds)] = _Lease(window)
        k = max(1, limit // self._LEASE_FRACTION)
        while lease.left == 0 and not lease.used_up:
            taking = lease.taking or self._start_refill(lease, key, k, limit, window_seconds)
            await asyncio.shield(taking)  # the upsert's error, if it failed, is this call's
        if lease.left == 0:
            return (window + 1) * window_seconds - now or 1
        lease.left -= 1
        if k >= 4 and lease.left <= k // 4 and lease.taking is None and not lease.used_up:
            self._start_refill(lease, key, k, limit, window_seconds)
        return None

    async def close(self) -> None:
        for lease in self._leases.values():
            if lease.taking is not None:
                lease.taking.cancel()


class FallbackRateLimiter:
    """Redis, and the database while Redis does not answer (see the module's docstring)."""

    shared = True
    RETRY_SECONDS = 1.0

    def __init__(self, redis: RedisRateLimiter, database: DatabaseRateLimiter) -> None:
        self.redis = redis
        self.database = database
        self._redis_down_until = 0.0
        self.redis_down_since: float | None = None  # time.time() of the first failure

    @property
    def store(self) -> str:
        """Which store counts now: ``redis``, or ``database`` while Redis is down."""
        return "database" if self.redis_down_since is not None else "redis"

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        if time.monotonic() >= self._redis_down_until:
            try:
                verdict = await self.redis.hit(key, limit, window_seconds)
            except (RedisError, OSError) as exc:
                self._redis_down_until = time.monotonic() + self.RETRY_SECONDS
                if self.redis_down_since is None:
                    self.redis_down_since = time.time()
                    log.warning("Redis does not answer (%s): rate limits counted in the database", type(exc).__name__)
            else:
                if self.redis_down_since is not None:
                    self.redis_down_since = None
                    log.warning("Redis answers again: rate limits counted in Redis")
                return verdict
        return await self.database.hit(key, limit, window_seconds)

    async def close(self) -> None:
        await self.redis.close()
        await self.database.close()


def _retrieve(task: asyncio.Future[None]) -> None:
    """A lease taken ahead that failed: the next caller that runs out takes one again."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("rate limit lease not taken ahead: %s", type(task.exception()).__name__)


def make_rate_limiter(
    settings: Settings, keyring: Keyring, sessionmaker: async_sessionmaker[AsyncSession]
) -> RateLimiter:
    """The store EID_RATE_LIMITS names (auto: Redis when configured, else the database)."""

    def hash_key(key: str) -> str:
        return keyring.keyed_hash("rate-limit", key)

    store = settings.rate_limit_store
    if store is RateLimitStore.redis:
        assert settings.redis_url
        redis = RedisRateLimiter(settings.redis_url, settings.redis_prefix, hash_key)
        return FallbackRateLimiter(redis, DatabaseRateLimiter(sessionmaker, hash_key))
    if store is RateLimitStore.database:
        return DatabaseRateLimiter(sessionmaker, hash_key)
    return MemoryRateLimiter(hash_key)
