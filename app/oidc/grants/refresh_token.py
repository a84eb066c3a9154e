"""The refresh token grant (RFC 6749 §6). Refresh tokens rotate on every use; presenting a
rotated one revokes the whole family (RFC 9700 §4.14.2)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.service import ClientInfo
from app.core.audit import Actor
from app.core.errors import OAuthError
from app.oidc.grants.base import GrantType, invalid_grant, register, revoke_grant, usable_grant, user_tokens
from app.oidc.models import RefreshToken
from app.oidc.provider import Provider


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
        row = await session.get(RefreshToken, token_hash)
        if row is None or row.client_id != client.client_id:
            raise invalid_grant("Unknown refresh token.")
        rotated = await session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_(None))
            .values(used_at=now)
            .returning(RefreshToken.token_hash)
        )
        if rotated.first() is None:
            # A rotated token came back: it was stolen or replayed. Revoke the whole family.
            await revoke_grant(session, row.grant_id, "refresh_reuse", now, actor=Actor("client", client.client_id))
            await session.commit()
            raise invalid_grant("The refresh token was already used; the session's tokens are revoked.")
        if row.expires_at <= now:
            await session.commit()
            raise invalid_grant("The refresh token expired.")
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
