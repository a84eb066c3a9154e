"""What the OpenID provider keeps for the life of a process: the client cache, the live-token
check and the cache of verified token signatures. Keys, the HTTP client and the journal are the
platform's (app/core/deps.py); the provider is one extension of the application context."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request

from app.clients.service import ClientCache
from app.core.deps import AppContext, get_ctx
from app.core.keys import KeyStore
from app.core.metrics import CacheCounters
from app.oidc.livecheck import LiveCheck, VerifiedTokens


@dataclass
class Provider:
    ctx: AppContext
    clients: ClientCache
    live: LiveCheck
    verified: VerifiedTokens = field(default_factory=VerifiedTokens)
    jwks_uri_cache: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    _jwks_counted: CacheCounters = field(default_factory=lambda: CacheCounters("client_jwks"), repr=False)

    @property
    def keys(self) -> KeyStore:
        return self.ctx.keys

    @property
    def http(self) -> httpx.AsyncClient:
        return self.ctx.http

    @property
    def issuer(self) -> str:
        return self.ctx.settings.issuer

    def url(self, path: str) -> str:
        return self.ctx.settings.issuer + path

    async def client_jwks(self, jwks_uri: str) -> dict[str, Any]:
        hit = self.jwks_uri_cache.get(jwks_uri)
        if hit is not None and time.monotonic() - hit[0] < 300:
            self._jwks_counted.hit.inc()
            return hit[1]
        self._jwks_counted.miss.inc()
        resp = await self.http.get(jwks_uri, timeout=5.0)
        resp.raise_for_status()
        jwks: dict[str, Any] = resp.json()
        self.jwks_uri_cache[jwks_uri] = (time.monotonic(), jwks)
        return jwks

    async def close(self) -> None:
        await self.live.close()


def get_provider(request: Request) -> Provider:
    provider = get_ctx(request).extension(Provider)
    assert provider is not None, "the app was not started"
    return provider


async def _get_provider_dependency(request: Request) -> Provider:
    # An async dependency: FastAPI runs plain `def` dependencies in a thread pool.
    return get_provider(request)


ProviderDep = Annotated[Provider, Depends(_get_provider_dependency)]
