"""Bearer access tokens (RFC 6750; JWT access tokens, RFC 9068): is this token good, and who is
the client calling with it. Used by userinfo and introspection, and registered at start-up as
the resolver of client callers for every client-token API (app/core/auth.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import Request

from app.core.deps import AppContext
from app.core.errors import Unauthenticated
from app.core.jose import JwtRejected, unverified_header, verify_jwt
from app.core.principal import Principal, Subject
from app.oidc.provider import Provider


async def verify_access_token(provider: Provider, token: str, now: dt.datetime) -> dict[str, Any]:
    cached = provider.verified.get(token)
    if cached is not None:
        kid, claims = cached
        # The signature was checked before; expiry and the key's retirement may have changed.
        if claims["exp"] > now.timestamp() and await provider.keys.verification_key(kid, now) is not None:
            return claims
        raise JwtRejected("expired")

    async def key_for(kid: str | None, alg: str) -> Any | None:
        key = await provider.keys.verification_key(kid, now) if kid else None
        return key.verifier if key is not None and key.alg == alg else None

    claims = await verify_jwt(
        token,
        key_for,
        now=now,
        issuer=provider.issuer,
        audience=provider.issuer,
        typ="at+jwt",
        require=("exp", "iat", "jti", "client_id", "sub"),
    )
    provider.verified.put(token, str(unverified_header(token)["kid"]), claims)
    return claims


async def token_is_live(provider: Provider, claims: dict[str, Any]) -> bool:
    """Not revoked, nor its grant, nor the account behind it: one query (app/oidc/livecheck.py)."""
    gid = claims.get("gid")
    grant_id = None
    if gid is not None:
        try:
            grant_id = uuid.UUID(str(gid))
        except ValueError:
            return False
    return await provider.live.is_live(str(claims["jti"]), grant_id)


async def resolve_client_token(ctx: AppContext, _request: Request, token: str) -> Principal | None:
    """A client speaking for itself: a client_credentials access token of this provider, not
    revoked, of a client approved to connect (never a token issued for a citizen)."""
    if token.count(".") != 2:
        return None
    provider = ctx.extension(Provider)
    assert provider is not None
    now = ctx.clock.now()
    try:
        claims = await verify_access_token(provider, token, now)
    except JwtRejected:
        raise Unauthenticated("The access token is invalid or expired.") from None
    if claims.get("gid") is not None or claims["sub"] != claims["client_id"]:
        raise Unauthenticated("This needs a client_credentials access token, not a citizen's.")
    if not await token_is_live(provider, claims):
        raise Unauthenticated("The access token was revoked.")
    client = await provider.clients.get(claims["client_id"])
    if client is None or not client.approved:
        raise Unauthenticated("The client is not approved to connect.")
    scopes = frozenset(str(claims.get("scope", "")).split())
    return Principal(Subject.client, client.client_id, client.name, scopes, client)
