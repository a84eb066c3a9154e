"""The client credentials grant (RFC 6749 §4.4): a client's token for itself, with the service
scopes it was registered with."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.clients.service import SERVICE_SCOPES, ClientInfo
from app.core.errors import OAuthError
from app.oidc.grants.base import GrantType, access_token, register
from app.oidc.provider import Provider


@register
class ClientCredentialsGrant(GrantType):
    grant_type = "client_credentials"

    async def respond(
        self, provider: Provider, client: ClientInfo, form: dict[str, str], now: dt.datetime
    ) -> dict[str, Any]:
        """No database round trip: the client came from the cache, the token is a signed JWT."""
        allowed = client.scopes & set(SERVICE_SCOPES)
        asked = set(form["scope"].split()) if form.get("scope") else allowed
        if not asked or not asked <= allowed:
            raise OAuthError("invalid_scope", "The requested scope is not granted to this client.")
        scope = " ".join(sorted(asked))
        token, ttl = await access_token(provider, client=client, sub=client.client_id, scope=scope, now=now)
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": scope}
