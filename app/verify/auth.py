"""Who may call the relying-party APIs: approved clients with a client_credentials access
token carrying the scope a route needs, rate-limited per client (declared once here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.core.errors import Forbidden, RateLimited, Unauthenticated
from app.core.jose import JwtRejected
from app.oidc.clients import ClientInfo
from app.oidc.endpoints import token_is_live, verify_access_token
from app.oidc.provider import Provider, get_provider


@dataclass(frozen=True, slots=True)
class ClientCaller:
    client: ClientInfo
    scopes: frozenset[str]


async def current_client(request: Request) -> ClientCaller:
    provider: Provider = get_provider(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Send a client access token: Authorization: Bearer <token>.")
    now = provider.ctx.clock.now()
    try:
        claims = await verify_access_token(provider, token.strip(), now)
    except JwtRejected:
        raise Unauthenticated("The access token is invalid or expired.") from None
    # A client's own token (client_credentials), never one issued for a citizen.
    if claims.get("gid") is not None or claims["sub"] != claims["client_id"]:
        raise Unauthenticated("Use a client_credentials access token.")
    client = await provider.clients.get(claims["client_id"])
    if client is None or not client.approved:
        raise Unauthenticated("The client is not approved to connect.")
    if not await token_is_live(provider, claims):
        raise Unauthenticated("The access token was revoked.")
    retry = await provider.ctx.limiter.hit(
        f"client:{client.client_id}", provider.ctx.settings.verify_rate_per_minute, 60
    )
    if retry is not None:
        raise RateLimited(retry)
    return ClientCaller(client, frozenset(claims.get("scope", "").split()))


def check_scope(caller: ClientCaller, any_of: tuple[str, ...]) -> ClientCaller:
    if caller.scopes.isdisjoint(any_of):
        raise Forbidden(f"This needs one of the scopes: {' '.join(any_of)}.", required_scope=" ".join(any_of))
    return caller


def require_client_scope(*any_of: str) -> Callable[..., Awaitable[ClientCaller]]:
    async def dependency(caller: Annotated[ClientCaller, Depends(current_client)]) -> ClientCaller:
        return check_scope(caller, any_of)

    return dependency


VERIFY_SCOPES = ("verify", "ekyc")


VerifyCaller = Annotated[ClientCaller, Depends(require_client_scope(*VERIFY_SCOPES))]
EkycCaller = Annotated[ClientCaller, Depends(require_client_scope("ekyc"))]
