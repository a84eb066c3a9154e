"""Who may call the documents APIs, declared once here.

- ``IssuingAgency``: an approved client holding a ``client_credentials`` access token with the
  ``documents:issue`` scope (the document types it may issue are checked per write).
- ``ApprovedClient``: any approved client with a valid ``client_credentials`` access token
  (status checks; the sharing domain's redemption uses it too).
- Citizens call the ``/me`` routes with their session (``CurrentCitizen``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.core.audit import Actor
from app.core.errors import Forbidden, Unauthenticated
from app.core.jose import JwtRejected
from app.oidc.endpoints import token_is_live, verify_access_token
from app.oidc.provider import ProviderDep

DOCUMENTS_ISSUE = "documents:issue"


@dataclass(frozen=True, slots=True)
class ClientPrincipal:
    client_id: str
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> Actor:
        return Actor("client", self.client_id)


async def current_client(request: Request, provider: ProviderDep) -> ClientPrincipal:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Send a client access token: Authorization: Bearer <token>.")
    now = provider.ctx.clock.now()
    try:
        claims = await verify_access_token(provider, token.strip(), now)
    except JwtRejected:
        raise Unauthenticated("The access token is invalid or expired.") from None
    # A client speaking for itself (client_credentials): no citizen grant behind the token.
    if claims.get("gid") is not None or claims["sub"] != claims["client_id"]:
        raise Unauthenticated("This needs a client_credentials access token, not a citizen's.")
    if not await token_is_live(provider, claims):
        raise Unauthenticated("The access token was revoked.")
    client = await provider.clients.get(claims["client_id"])
    if client is None or not client.approved:
        raise Unauthenticated("The client is not approved.")
    return ClientPrincipal(client.client_id, client.name, frozenset(str(claims.get("scope", "")).split()))


ApprovedClient = Annotated[ClientPrincipal, Depends(current_client)]


def require_client_scope(scope: str) -> Callable[..., Awaitable[ClientPrincipal]]:
    async def dependency(client: ApprovedClient) -> ClientPrincipal:
        if scope not in client.scopes:
            raise Forbidden(f"This needs the scope {scope}.", required_scope=scope)
        return client

    return dependency


IssuingAgency = Annotated[ClientPrincipal, Depends(require_client_scope(DOCUMENTS_ISSUE))]
