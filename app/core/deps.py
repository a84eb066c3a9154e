"""The application context: what a running service holds once, built in one place
(``build_context``) for the HTTP app, the command line and demo mode alike.

It holds the platform's services only (database, keys, hashing, limits, the journal, the HTTP
client, the caller authenticator's resolvers); a domain that keeps state of its own for the
life of the process (the OpenID provider's client cache, the identity-check batcher) adds it as
an extension at start-up (app/main.py) and finds it again with ``ctx.extension(Kind)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypeVar

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.config import Settings
from app.core.crypto import Keyring
from app.core.db import create_raw_pool, make_engine, make_sessionmaker, raw_dsn
from app.core.journal import GroupCommitJournal, Journal, SessionJournal
from app.core.keys import KeyStore
from app.core.passwords import PasswordHasher
from app.core.principal import Resolver
from app.core.ratelimit import RateLimiter, make_rate_limiter
from app.core.subscribers import SubscriberCheck, make_subscriber_check

T = TypeVar("T")
E = TypeVar("E")


class Events:
    """Domain events within a transaction: a lower domain publishes (the accounts domain: a
    citizen's access ended), a higher one subscribes at start-up (the provider revokes grants),
    so neither imports the other upward. Handlers run in the publisher's transaction."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[AsyncSession, Any], Awaitable[None]]]] = {}

    def subscribe(self, kind: type[E], handler: Callable[[AsyncSession, E], Awaitable[None]]) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    async def publish(self, session: AsyncSession, event: object) -> None:
        for handler in self._handlers.get(type(event), ()):
            await handler(session, event)


class Closable(Protocol):
    async def close(self) -> None: ...


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # For caches that reload while a request's transaction may be open: on SQLite a read-only
    # engine whose transactions do not take the write lock; on PostgreSQL the same engine.
    reader: async_sessionmaker[AsyncSession]
    keyring: Keyring
    hasher: PasswordHasher
    clock: Clock
    limiter: RateLimiter
    keys: KeyStore
    http: httpx.AsyncClient
    subscribers: SubscriberCheck
    # Where read-only calls leave their audit and access-log rows (app/core/journal.py): group
    # commits on the raw asyncpg pool of the hot paths (PostgreSQL, serving), else a short
    # transaction per call. raw_pool is None on SQLite and for commands.
    journal: Journal
    raw_pool: Any = None
    events: Events = field(default_factory=Events)
    # How bearer credentials are resolved to callers (app/core/auth.py), registered at start-up.
    resolvers: list[Resolver] = field(default_factory=list)
    _extensions: dict[type, Any] = field(default_factory=dict)

    @property
    def raw_dsn(self) -> str:
        return raw_dsn(self.settings.database_url)

    def add_extension(self, extension: Any) -> None:
        """A domain's long-lived state, closed with the context (in reverse order)."""
        self._extensions[type(extension)] = extension

    def extension(self, kind: type[T]) -> T | None:
        found = self._extensions.get(kind)
        return found if isinstance(found, kind) else None


@contextlib.asynccontextmanager
async def build_context(
    settings: Settings, *, clock: Clock | None = None, serving: bool = False
) -> AsyncIterator[AppContext]:
    """The context, and everything in it closed on the way out (also on failure). ``serving``:
    the HTTP app, which on PostgreSQL also opens the raw pool and the journal."""
    engine = make_engine(settings)
    reader_engine = make_engine(settings, reader=True) if settings.is_sqlite else engine
    sessionmaker, reader = make_sessionmaker(engine), make_sessionmaker(reader_engine)
    keyring = Keyring(settings.master_secret())
    ctx = AppContext(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        reader=reader,
        keyring=keyring,
        hasher=PasswordHasher(settings),
        clock=clock or Clock(),
        limiter=make_rate_limiter(settings, keyring, sessionmaker),
        keys=KeyStore(sessionmaker, keyring.sealer, settings.cache_ttl_seconds, reader=reader),
        http=httpx.AsyncClient(timeout=5.0, follow_redirects=False),
        subscribers=make_subscriber_check(settings),
        journal=SessionJournal(sessionmaker),
    )
    try:
        if serving and not settings.is_sqlite:
            ctx.raw_pool = await create_raw_pool(settings)
            ctx.journal = GroupCommitJournal(ctx.raw_pool)
        yield ctx
    finally:
        for extension in reversed(list(ctx._extensions.values())):
            await extension.close()
        await ctx.journal.close()
        if ctx.raw_pool is not None:
            await ctx.raw_pool.close()
        await ctx.http.aclose()
        await ctx.limiter.close()
        await ctx.subscribers.close()
        if reader_engine is not engine:
            await reader_engine.dispose()
        await engine.dispose()


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def _get_ctx_dependency(request: Request) -> AppContext:
    # An async dependency: FastAPI runs plain `def` dependencies in a thread pool.
    return get_ctx(request)


CtxDep = Annotated[AppContext, Depends(_get_ctx_dependency)]
