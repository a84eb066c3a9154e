"""What the OpenID provider holds once per process: keys, the client cache, its URLs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import httpx
from fastapi import Depends, Request

from app.core.deps import AppContext
from app.core.journal import Journal
from app.oidc.clients import ClientCache
from app.oidc.keys import KeyStore
from app.oidc.livecheck import LiveCheck, VerifiedTokens

if TYPE_CHECKING:
    from app.verify.service import IdentityChecks


@dataclass
class Provider:
    ctx: AppContext
    keys: KeyStore
    clients: ClientCache
    http: httpx.AsyncClient
    live: LiveCheck
    verified: VerifiedTokens = field(default_factory=VerifiedTokens)
    jwks_uri_cache: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    # Group commit of hot paths' audit and access-log rows (PostgreSQL only; None on SQLite).
    journal: Journal | None = None
    # /verify/identity calls, batched (PostgreSQL only; app/verify/service.py).
    identity_checks: IdentityChecks | None = None

    @property
    def issuer(self) -> str:
        return self.ctx.settings.issuer

    def url(self, path: str) -> str:
        return self.ctx.settings.issuer + path

    async def client_jwks(self, jwks_uri: str) -> dict[str, Any]:
        hit = self.jwks_uri_cache.get(jwks_uri)
        if hit is not None and time.monotonic() - hit[0] < 300:
            return hit[1]
        resp = await self.http.get(jwks_uri, timeout=5.0)
        resp.raise_for_status()
        jwks: dict[str, Any] = resp.json()
        self.jwks_uri_cache[jwks_uri] = (time.monotonic(), jwks)
        return jwks


def get_provider(request: Request) -> Provider:
    provider: Provider = request.app.state.oidc
    return provider


async def _get_provider_dependency(request: Request) -> Provider:
    # An async dependency: FastAPI runs plain `def` dependencies in a thread pool.
    return get_provider(request)


ProviderDep = Annotated[Provider, Depends(_get_provider_dependency)]
