"""What every grant type shares: the ``GrantType`` base the token endpoint dispatches to by name
(as Authlib's grants: one class per grant type, registered), and the tokens grants issue.

Access tokens are ES256 JWTs (RFC 9068) that resource servers verify offline; they carry the
grant ID (``gid``) so introspection and userinfo can see a revoked grant in one query.
"""

from __future__ import annotations

import datetime as dt
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, AccountStatus
from app.clients.service import ClientInfo
from app.core import audit
from app.core.audit import Actor
from app.core.crypto import random_token
from app.core.db import note_revocation
from app.core.errors import OAuthError
from app.core.jose import epoch, new_jti
from app.oidc.claims import pairwise_sub
from app.oidc.models import Grant, RefreshToken
from app.oidc.provider import Provider


class GrantType(ABC):
    """A grant type of the token endpoint (RFC 6749 §4, §6): its name, and how it answers."""

    grant_type: ClassVar[str]

    @abstractmethod
    async def respond(
        self, provider: Provider, client: ClientInfo, form: dict[str, str], now: dt.datetime
    ) -> dict[str, Any]:
        """The token response (RFC 6749 §5.1), or OAuthError (§5.2)."""


GRANT_TYPES: dict[str, GrantType] = {}


def register(cls: type[GrantType]) -> type[GrantType]:
    """Make a grant type answer at the token endpoint (a class decorator)."""
    GRANT_TYPES[cls.grant_type] = cls()
    return cls


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
    # ES256 for the high-volume token (docs/facts.md §5: ~27 µs to sign with a key object).
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


async def user_tokens(
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


async def usable_grant(session: AsyncSession, grant_id: uuid.UUID) -> Grant:
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


@dataclass(frozen=True, slots=True)
class SingleUse:
    """What a single-use credential's refusals say (RFC 6749 §4.1.2, RFC 9700 §4.14.2)."""

    unknown: str
    reused: str  # the grant is revoked: whoever presented it again had stolen or replayed it
    reuse_reason: str
    expired: str


async def spend_once(
    session: AsyncSession, model: Any, key: Any, key_hash: str, client: ClientInfo, now: dt.datetime, says: SingleUse
) -> Any:
    """Spend a code or a refresh token (``model`` with client_id, grant_id, expires_at, used_at;
    ``key`` its key column): only one request can set used_at, and a second use revokes the
    whole grant with every token issued from it."""
    row = await session.get(model, key_hash)
    if row is None or row.client_id != client.client_id:
        raise invalid_grant(says.unknown)
    spent = await session.execute(
        update(model).where(key == key_hash, model.used_at.is_(None)).values(used_at=now).returning(key)
    )
    if spent.first() is None:
        await revoke_grant(session, row.grant_id, says.reuse_reason, now, actor=Actor("client", client.client_id))
        await session.commit()
        raise invalid_grant(says.reused)
    if row.expires_at <= now:
        await session.commit()
        raise invalid_grant(says.expired)
    return row
