"""The authorization code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636 §4.6).

Codes are single-use and short-lived; a second use revokes the whole grant (RFC 6749 §4.1.2,
RFC 9700 §4.5): every token issued from it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.service import ClientInfo
from app.core.errors import OAuthError
from app.oidc import pkce
from app.oidc.grants.base import GrantType, SingleUse, invalid_grant, register, spend_once, usable_grant, user_tokens
from app.oidc.models import AuthorizationCode
from app.oidc.provider import Provider

CODE = SingleUse(
    unknown="Unknown authorization code.",
    reused="The authorization code was already used; its tokens are revoked.",
    reuse_reason="code_reuse",
    expired="The authorization code expired.",
)


@register
class AuthorizationCodeGrant(GrantType):
    grant_type = "authorization_code"

    async def respond(
        self, provider: Provider, client: ClientInfo, form: dict[str, str], now: dt.datetime
    ) -> dict[str, Any]:
        async with provider.ctx.sessionmaker() as session:
            return await self._exchange(provider, session, client, form, now)

    async def _exchange(
        self, provider: Provider, session: AsyncSession, client: ClientInfo, form: dict[str, str], now: dt.datetime
    ) -> dict[str, Any]:
        code, redirect_uri, verifier = form.get("code"), form.get("redirect_uri"), form.get("code_verifier")
        if not code or not redirect_uri:
            raise OAuthError("invalid_request", "code and redirect_uri are required.")
        if not verifier:
            raise OAuthError("invalid_request", "code_verifier is required (PKCE).")
        code_hash = provider.ctx.keyring.keyed_hash("auth-code", code)
        row = await spend_once(session, AuthorizationCode, AuthorizationCode.code_hash, code_hash, client, now, CODE)
        if row.redirect_uri != redirect_uri:
            await session.commit()
            raise invalid_grant("redirect_uri differs from the authorization request.")
        if not pkce.verify(verifier, row.code_challenge):
            await session.commit()
            raise invalid_grant("PKCE verification failed.")
        grant = await usable_grant(session, row.grant_id)
        response = await user_tokens(
            provider, session, client=client, grant=grant, scope=grant.scope, now=now, nonce=row.nonce
        )
        await session.commit()
        return response
