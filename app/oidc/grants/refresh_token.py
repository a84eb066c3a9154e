"""The refresh token grant (RFC 6749 §6). Refresh tokens rotate on every use; presenting a
rotated one revokes the whole family (RFC 9700 §4.14.2)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.service import ClientInfo
from app.core.errors import OAuthError
from app.oidc.grants.base import GrantType, SingleUse, register, spend_once, usable_grant, user_tokens
from app.oidc.models import RefreshToken
from app.oidc.provider import Provider

REFRESH = SingleUse(
    unknown="Unknown refresh token.",
    reused="The refresh token was already used; the session's tokens are revoked.",
    reuse_reason="refresh_reuse",
    expired="The refresh token expired.",
)


@register
class RefreshTokenGrant(GrantType):
    grant_type = "refresh_token"

    async def respond(
        self, provider: Provider, client: ClientInfo, form: dict[str, str], now: dt.datetime
    ) -> dict[str, Any]:
        async with provider.ctx.sessionmaker() as session:
            return await self._rotate(provider, session, client, form, now)

    async def _rotate(
        self, provider: Provider, session: AsyncSession, client: ClientInfo, form: dict[str, str], now: dt.datetime
    ) -> dict[str, Any]:
        presented = form.get("refresh_token")
        if not presented:
            raise OAuthError("invalid_request", "refresh_token is required.")
        token_hash = provider.ctx.keyring.keyed_hash("refresh-token", presented)
        # Rotation: each refresh token works once; a rotated one that comes back revokes the family.
        row = await spend_once(session, RefreshToken, RefreshToken.token_hash, token_hash, client, now, REFRESH)
        scope = row.scope
        if form.get("scope"):
            asked = set(form["scope"].split())
            if not asked <= set(row.scope.split()):
                await session.rollback()
                raise OAuthError("invalid_scope", "A refresh cannot widen the scope.")
            scope = " ".join(sorted(asked))
        grant = await usable_grant(session, row.grant_id)
        response = await user_tokens(provider, session, client=client, grant=grant, scope=scope, now=now, nonce=None)
        await session.commit()
        return response
