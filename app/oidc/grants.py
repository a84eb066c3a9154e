"""The token endpoint's grants (RFC 6749 §4.1.3, §4.4, §6) and the tokens they issue.

- Codes are single-use and short-lived; a second use revokes the whole grant (RFC 6749
  §4.1.2, RFC 9700 §4.5) — every token issued from it.
- Refresh tokens rotate on every use; presenting a rotated one revokes the family (RFC 9700 §4.14.2).
- Access tokens are ES256 JWTs (RFC 9068) that resource servers verify offline; they carry the
  grant ID (``gid``) so introspection and userinfo can see a revoked grant in one query.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, AccountStatus
from app.clients.service import SERVICE_SCOPES, ClientInfo
from app.core import audit
from app.core.audit import Actor
from app.core.crypto import random_token
from app.core.db import note_revocation
from app.core.errors import OAuthError
from app.core.jose import epoch, new_jti
from app.oidc import pkce
from app.oidc.claims import pairwise_sub
from app.oidc.models import AuthorizationCode, Grant, RefreshToken
from app.oidc.provider import Provider


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a user token speaks for, in this client's sector."""

    sub: str
    act_sub: str | None  # the guardian, when acting for a dependent


def subject_for(provider: Provider, client: ClientInfo, grant: Grant) -> Subject:
    keyring = provider.ctx.keyring
    sub = pairwise_sub(keyring, client.sector_identifier, str(grant.account_id))
    act = (
        pairwise_sub(keyring, client.sector_identifier, str(grant.actor_account_id)) if grant.actor_account_id else None
    )
    return Subject(sub, act)


async def access_token(
    provider: Provider,
    *,
    client: ClientInfo,
    sub: str,
    scope: str,
    now: dt.datetime,
    grant: Grant | None = None,
    act_sub: str | None = None,
) -> tuple[str, int]:
    ttl = provider.ctx.settings.access_token_ttl_seconds
    claims: dict[str, Any] = {
        "iss": provider.issuer,
        "sub": sub,
        "aud": provider.issuer,
        "client_id": client.client_id,
        "scope": scope,
        "jti": new_jti(),
        "iat": epoch(now),
        "exp": epoch(now) + ttl,
    }
    if grant is not None:
        claims |= {"gid": str(grant.id), "auth_time": epoch(grant.auth_time), "acr": grant.acr}
    if act_sub:
        claims["act"] = {"sub": act_sub}
    # ES256 for the high-volume token (REFERENCE.md: ~27 µs to sign with a key object).
    return await provider.keys.sign(claims, "ES256", now, typ="at+jwt"), ttl


async def id_token(
    provider: Provider, *, client: ClientInfo, grant: Grant, subject: Subject, now: dt.datetime, nonce: str | None
) -> str:
    claims: dict[str, Any] = {
        "iss": provider.issuer,
        "sub": subject.sub,
        "aud": client.client_id,
        "azp": client.client_id,
        "iat": epoch(now),
        "exp": epoch(now) + provider.ctx.settings.id_token_ttl_seconds,
        "auth_time": epoch(grant.auth_time),
        "acr": grant.acr,
        "amr": grant.amr.split(),
    }
    if grant.sid:
        claims["sid"] = grant.sid
    if nonce:
        claims["nonce"] = nonce
    if subject.act_sub:
        claims["act"] = {"sub": subject.act_sub}
    return await provider.keys.sign(claims, client.id_token_alg, now)


async def _user_tokens(
    provider: Provider,
    session: AsyncSession,
    *,
    client: ClientInfo,
    grant: Grant,
    scope: str,
    now: dt.datetime,
    nonce: str | None,
) -> dict[str, Any]:
    subject = subject_for(provider, client, grant)
    token, ttl = await access_token(
        provider, client=client, sub=subject.sub, scope=scope, now=now, grant=grant, act_sub=subject.act_sub
    )
    response: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": scope}
    if "openid" in scope.split():
        response["id_token"] = await id_token(
            provider, client=client, grant=grant, subject=subject, now=now, nonce=nonce
        )
    if "refresh_token" in client.grant_types:
        refresh = random_token()
        session.add(
            RefreshToken(
                token_hash=provider.ctx.keyring.keyed_hash("refresh-token", refresh), grant_id=grant.id, client_id=client.client_id, scope=scope,
                created_at=now, expires_at=now + dt.timedelta(seconds=provider.ctx.settings.refresh_token_ttl_seconds),
            )
        )  # fmt: skip
        response["refresh_token"] = refresh
    return response


async def revoke_grant(
    session: AsyncSession, grant_id: uuid.UUID, reason: str, now: dt.datetime, *, actor: Actor
) -> None:
    await note_revocation(session)
    await session.execute(
        update(Grant)
        .where(Grant.id == grant_id, Grant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    audit.record(
        session,
        actor=actor,
        action="oauth.grant.revoke",
        outcome="ok",
        now=now,
        target=str(grant_id),
        detail={"reason": reason},
    )


async def _usable_grant(session: AsyncSession, grant_id: uuid.UUID) -> Grant:
    grant = await session.get(Grant, grant_id)
    if grant is None or grant.revoked_at is not None:
        raise invalid_grant("The grant was revoked.")
    # Locked, revoked or must-change-password accounts never get tokens (nor does a guardian
    # who lost their account act for a dependent).
    for account_id in filter(None, (grant.account_id, grant.actor_account_id)):
        account = await session.get(Account, account_id)
        if account is None or account.status != AccountStatus.active or account.must_change_password:
            raise invalid_grant("The account cannot receive tokens.")
    return grant


async def authorization_code_grant(
    provider: Provider, session: AsyncSession, client: ClientInfo, form: dict[str, str], now: dt.datetime
) -> dict[str, Any]:
    code, redirect_uri, verifier = form.get("code"), form.get("redirect_uri"), form.get("code_verifier")
    if not code or not redirect_uri:
        raise OAuthError("invalid_request", "code and redirect_uri are required.")
    if not verifier:
        raise OAuthError("invalid_request", "code_verifier is required (PKCE).")
    code_hash = provider.ctx.keyring.keyed_hash("auth-code", code)
    row = await session.get(AuthorizationCode, code_hash)
    if row is None or row.client_id != client.client_id:
        raise invalid_grant("Unknown authorization code.")
    # Single use: only one request can set used_at.
    claimed = await session.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.code_hash == code_hash, AuthorizationCode.used_at.is_(None))
        .values(used_at=now)
        .returning(AuthorizationCode.code_hash)
    )
    if claimed.first() is None:
        await revoke_grant(session, row.grant_id, "code_reuse", now, actor=Actor("client", client.client_id))
        await session.commit()
        raise invalid_grant("The authorization code was already used; its tokens are revoked.")
    if row.expires_at <= now:
        await session.commit()
        raise invalid_grant("The authorization code expired.")
    if row.redirect_uri != redirect_uri:
        await session.commit()
        raise invalid_grant("redirect_uri differs from the authorization request.")
    if not pkce.verify(verifier, row.code_challenge):
        await session.commit()
        raise invalid_grant("PKCE verification failed.")
    grant = await _usable_grant(session, row.grant_id)
    response = await _user_tokens(
        provider, session, client=client, grant=grant, scope=grant.scope, now=now, nonce=row.nonce
    )
    await session.commit()
    return response


async def refresh_token_grant(
    provider: Provider, session: AsyncSession, client: ClientInfo, form: dict[str, str], now: dt.datetime
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
    grant = await _usable_grant(session, row.grant_id)
    response = await _user_tokens(provider, session, client=client, grant=grant, scope=scope, now=now, nonce=None)
    await session.commit()
    return response


async def client_credentials_grant(
    provider: Provider, client: ClientInfo, form: dict[str, str], now: dt.datetime
) -> dict[str, Any]:
    """No database round trip: the client came from the cache, the token is a signed JWT."""
    allowed = client.scopes & set(SERVICE_SCOPES)
    asked = set(form["scope"].split()) if form.get("scope") else allowed
    if not asked or not asked <= allowed:
        raise OAuthError("invalid_scope", "The requested scope is not granted to this client.")
    scope = " ".join(sorted(asked))
    token, ttl = await access_token(provider, client=client, sub=client.client_id, scope=scope, now=now)
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": scope}


async def find_grant_for_refresh(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    return await session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
