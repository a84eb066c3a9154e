"""What a running app holds once, built at start-up and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.config import Settings
from app.core.crypto import Keyring
from app.core.passwords import PasswordHasher
from app.core.ratelimit import RateLimiter


@dataclass
class AppContext:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    keyring: Keyring
    hasher: PasswordHasher
    clock: Clock
    limiter: RateLimiter


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def _get_ctx_dependency(request: Request) -> AppContext:
    # An async dependency: FastAPI runs plain `def` dependencies in a thread pool.
    return get_ctx(request)


CtxDep = Annotated[AppContext, Depends(_get_ctx_dependency)]
