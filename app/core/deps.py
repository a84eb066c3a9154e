"""What a running app holds once, built at start-up and shared by every request."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.config import Settings
from app.core.crypto import Keyring
from app.core.passwords import PasswordHasher
from app.core.ratelimit import RateLimiter
from app.core.subscribers import RegistryOnly, SubscriberCheck


@dataclass(frozen=True, slots=True)
class AccessEnded:
    """A citizen's sessions were ended by a change to their credentials or account state:
    whatever was issued under them must end too (tokens, and portals told by back-channel)."""

    account_id: uuid.UUID
    reason: str  # password_change, password_reset, lock, revoke, phone_change, claimed
    ended_sids: tuple[str, ...]
    now: dt.datetime
    kept_sid: str | None = None  # the session that made the change, which goes on


AccessEndedHook = Callable[[AsyncSession, AccessEnded], Awaitable[None]]


@dataclass
class AppContext:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    keyring: Keyring
    hasher: PasswordHasher
    clock: Clock
    limiter: RateLimiter
    subscribers: SubscriberCheck = field(default_factory=RegistryOnly)
    # Called in the same transaction when a citizen's access ends (the OpenID provider revokes
    # the grants and queues back-channel logout tokens): the accounts domain knows no provider.
    on_access_ended: list[AccessEndedHook] = field(default_factory=list)


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def _get_ctx_dependency(request: Request) -> AppContext:
    # An async dependency: FastAPI runs plain `def` dependencies in a thread pool.
    return get_ctx(request)


CtxDep = Annotated[AppContext, Depends(_get_ctx_dependency)]
