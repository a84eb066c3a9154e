"""The OpenID provider's start-up: its state as an extension of the application context."""

from __future__ import annotations

import functools

from app.accounts.service import AccessEnded
from app.clients.service import client_cache
from app.consent.service import ConsentWithdrawn
from app.core.deps import AppContext
from app.oidc.livecheck import LiveCheck
from app.oidc.logout import on_access_ended, on_consent_withdrawn
from app.oidc.provider import Provider


async def start_provider(ctx: AppContext) -> Provider:
    """Build the provider's state, listen for revocations, make sure signing keys exist, and let
    the accounts domain's access-ended events revoke grants (app/oidc/logout.py)."""
    dsn = ctx.raw_dsn if ctx.raw_pool is not None else None
    provider = Provider(
        ctx=ctx,
        clients=client_cache(ctx),
        live=LiveCheck(ctx.reader, dsn, ctx.raw_pool),
    )
    ctx.add_extension(provider)
    await provider.live.start(ctx.engine)
    await ctx.keys.ensure(ctx.clock.now())
    ctx.events.subscribe(AccessEnded, functools.partial(on_access_ended, provider))
    ctx.events.subscribe(ConsentWithdrawn, functools.partial(on_consent_withdrawn, provider))
    return provider
