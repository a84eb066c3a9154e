"""The relying-party registry: clients, their secrets (random 256-bit, shown once, stored as a
keyed hash: they are high-entropy, so no password hashing), and a short in-process cache so the
token endpoint does not ask the database for the client on every request."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.errors import ClientNotFound
from app.clients.models import Client
from app.core import audit
from app.core.audit import Actor
from app.core.crypto import Keyring
from app.core.deps import AppContext
from app.core.errors import Conflict, InvalidInput
from app.core.metrics import CacheCounters
from app.core.principal import METRICS

CLIENT_KINDS = ("portal", "bank", "agency", "admin")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")

# Scopes a citizen can grant to a portal, and scopes granted to a client for itself.
USER_SCOPES = ("openid", "profile", "phone", "email", "address", "national_id", "documents", "offline_access")
SERVICE_SCOPES = ("verify", "ekyc", "documents:issue", "admin:clients", "introspect", METRICS)


@dataclass(frozen=True)
class ClientInfo:
    """An immutable snapshot of a client, safe to cache and share between requests."""

    client_id: str
    name: str
    kind: str
    approved: bool
    secret_hash: str | None
    auth_method: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: frozenset[str]
    scopes: frozenset[str]
    id_token_alg: str
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    sector_identifier: str
    backchannel_logout_uri: str | None
    can_introspect_any: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    @classmethod
    def of(cls, c: Client) -> ClientInfo:
        return cls(
            client_id=c.client_id, name=c.name, kind=c.kind, approved=c.status == "approved",
            secret_hash=c.secret_hash, auth_method=c.auth_method, redirect_uris=tuple(c.redirect_uris),
            post_logout_redirect_uris=tuple(c.post_logout_redirect_uris), grant_types=frozenset(c.grant_types),
            scopes=frozenset(c.scopes), id_token_alg=c.id_token_alg, jwks=c.jwks, jwks_uri=c.jwks_uri,
            sector_identifier=c.sector_identifier, backchannel_logout_uri=c.backchannel_logout_uri,
            can_introspect_any=c.can_introspect_any,
        )  # fmt: skip


class ClientCache:
    """Clients by ID for EID_CACHE_TTL_SECONDS per process (an extension of the application
    context: the provider, documents and verify read it)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], ttl_seconds: float) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[float, ClientInfo | None]] = {}
        self._counted = CacheCounters("clients")

    async def get(self, client_id: str) -> ClientInfo | None:
        hit = self._entries.get(client_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            self._counted.hit.inc()
            return hit[1]
        self._counted.miss.inc()
        async with self._sessionmaker() as session:
            row = await session.get(Client, client_id)
            info = ClientInfo.of(row) if row is not None else None
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[client_id] = (now, info)
        return info

    async def close(self) -> None:
        self._entries.clear()

    def forget(self, client_id: str) -> None:
        self._entries.pop(client_id, None)


def hash_secret(keyring: Keyring, client_id: str, secret: str) -> str:
    return keyring.keyed_hash("client-secret", client_id, secret)


def _check_redirect_uri(uri: str, kind: str) -> None:
    parts = urlsplit(uri)
    if parts.fragment or not parts.netloc:
        raise InvalidInput(f"redirect URI {uri!r} must be absolute and without a fragment")
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise InvalidInput(f"redirect URI {uri!r} must use https (http only for loopback)")


async def create_client(
    session: AsyncSession,
    keyring: Keyring,
    *,
    name: str,
    kind: str,
    redirect_uris: list[str],
    grant_types: list[str],
    scopes: list[str],
    auth_method: str = "client_secret_basic",
    id_token_alg: str = "RS256",
    post_logout_redirect_uris: list[str] | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_uri: str | None = None,
    sector_identifier: str | None = None,
    backchannel_logout_uri: str | None = None,
    can_introspect_any: bool = False,
    approved: bool = False,
    client_id: str | None = None,
    secret: str | None = None,
    actor: Actor,
    now: dt.datetime,
) -> tuple[Client, str | None]:
    """Register a client; returns it and its secret (shown once), if it has one."""
    if kind not in CLIENT_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(CLIENT_KINDS)}")
    if auth_method not in AUTH_METHODS:
        raise InvalidInput(f"auth_method must be one of {', '.join(AUTH_METHODS)}")
    if id_token_alg not in ("RS256", "ES256"):
        raise InvalidInput("id_token_alg must be RS256 or ES256")
    unknown = set(grant_types) - set(GRANT_TYPES)
    if unknown or not grant_types:
        raise InvalidInput(f"grant_types must be among {', '.join(GRANT_TYPES)}")
    bad_scopes = set(scopes) - set(USER_SCOPES) - set(SERVICE_SCOPES)
    if bad_scopes:
        raise InvalidInput(f"unknown scopes: {', '.join(sorted(bad_scopes))}")
    if auth_method == "none" and "client_credentials" in grant_types:
        raise InvalidInput("public clients cannot use client_credentials")
    if auth_method == "private_key_jwt" and not (jwks or jwks_uri):
        raise InvalidInput("private_key_jwt needs jwks or jwks_uri")
    if "authorization_code" in grant_types:
        if not redirect_uris:
            raise InvalidInput("authorization_code needs at least one redirect URI")
        if "openid" not in scopes:
            raise InvalidInput("authorization_code clients need the openid scope")
    for uri in [*redirect_uris, *(post_logout_redirect_uris or [])]:
        _check_redirect_uri(uri, kind)
    # Unreserved characters only: client IDs travel in Basic credentials and URLs.
    if client_id is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{1,64}", client_id):
        raise InvalidInput("client_id may use letters, digits and . _ ~ - (at most 64)")
    client_id = client_id or f"{kind}-{secrets.token_hex(8)}"
    if await session.get(Client, client_id) is not None:
        raise Conflict("A client with this ID exists.")
    secret_value = None
    if auth_method in ("client_secret_basic", "client_secret_post"):
        secret_value = secret or secrets.token_urlsafe(32)  # 256 bits
    sector = sector_identifier or (urlsplit(redirect_uris[0]).hostname if redirect_uris else None) or client_id
    client = Client(
        client_id=client_id, name=name, kind=kind, status="approved" if approved else "pending",
        secret_hash=hash_secret(keyring, client_id, secret_value) if secret_value else None,
        auth_method=auth_method, redirect_uris=redirect_uris, post_logout_redirect_uris=post_logout_redirect_uris or [],
        grant_types=sorted(set(grant_types)), scopes=sorted(set(scopes)), id_token_alg=id_token_alg, jwks=jwks,
        jwks_uri=jwks_uri, sector_identifier=sector, backchannel_logout_uri=backchannel_logout_uri,
        can_introspect_any=can_introspect_any, created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(client)
    audit.record(
        session,
        actor=actor,
        action="client.create",
        outcome="ok",
        now=now,
        target=client_id,
        detail={"kind": kind, "scopes": sorted(set(scopes)), "approved": approved},
    )
    await session.commit()
    return client, secret_value


async def set_status(session: AsyncSession, client_id: str, status: str, *, actor: Actor, now: dt.datetime) -> Client:
    client = await session.get(Client, client_id)
    if client is None:
        raise ClientNotFound()
    client.status = status
    client.updated_at = now
    audit.record(session, actor=actor, action=f"client.{status}", outcome="ok", now=now, target=client_id)
    await session.commit()
    return client


async def list_clients(session: AsyncSession) -> list[Client]:
    return list((await session.scalars(select(Client).order_by(Client.created_at))).all())


def start_client_cache(ctx: AppContext) -> ClientCache:
    cache = ClientCache(ctx.reader, ctx.settings.cache_ttl_seconds)
    ctx.add_extension(cache)
    return cache


def client_cache(ctx: AppContext) -> ClientCache:
    cache = ctx.extension(ClientCache)
    assert cache is not None, "the app was not started"
    return cache
