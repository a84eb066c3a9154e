"""Who may call the staff APIs: bearer tokens of officers and administrators, with scopes.

Declared once here as dependencies; routes name the scope they need.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select

from app.admin.models import StaffMember, StaffSession
from app.core.audit import Actor
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.errors import Forbidden, Unauthenticated

# Scopes of the registry authority's staff.
OFFICER_REGISTRY = "officer:registry"  # read citizen records
ADMIN_REGISTRY = "admin:registry"  # create, correct and import citizen records
OFFICER_ACCOUNTS = "officer:accounts"  # level-2 registration steps 1-2, lock and unlock
OFFICER_APPROVE = "officer:approve"  # level-2 registration step 3
ADMIN_ACCOUNTS = "admin:accounts"  # revoke accounts
AUDIT_READ = "audit:read"
ADMIN_CLIENTS = "admin:clients"  # relying-party onboarding (OpenID Connect issue)

STAFF_SCOPES = frozenset(
    {OFFICER_REGISTRY, ADMIN_REGISTRY, OFFICER_ACCOUNTS, OFFICER_APPROVE, ADMIN_ACCOUNTS, AUDIT_READ, ADMIN_CLIENTS}
)


@dataclass(frozen=True, slots=True)
class StaffPrincipal:
    """A staff member, or a client holding an access token with staff scopes
    (``client_credentials`` from this provider, e.g. an administration console)."""

    staff_id: uuid.UUID | None
    username: str
    scopes: frozenset[str]

    @property
    def actor(self) -> Actor:
        if self.staff_id is None:
            return Actor("client", self.username)
        kind = "admin" if any(s.startswith("admin:") for s in self.scopes) else "officer"
        return Actor(kind, self.username)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Send an officer access token: Authorization: Bearer <token>.")
    return token.strip()


async def current_staff(request: Request, session: SessionDep, ctx: CtxDep) -> StaffPrincipal:
    token = _bearer(request)
    now = ctx.clock.now()
    if token.count(".") == 2:
        return await _client_principal(request, token, now)
    # One round trip: the session row and its staff member together.
    row = (
        await session.execute(
            select(StaffSession.scopes, StaffSession.expires_at, StaffSession.revoked_at, StaffMember)
            .join(StaffMember, StaffMember.id == StaffSession.staff_id)
            .where(StaffSession.token_hash == ctx.keyring.keyed_hash("staff-session", token))
        )
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now or not row.StaffMember.active:
        raise Unauthenticated("The access token is unknown, expired or revoked.")
    return StaffPrincipal(row.StaffMember.id, row.StaffMember.username, frozenset(row.scopes.split()))


CurrentStaff = Annotated[StaffPrincipal, Depends(current_staff)]


def require_scope(scope: str) -> Callable[..., Awaitable[StaffPrincipal]]:
    async def dependency(staff: CurrentStaff) -> StaffPrincipal:
        if scope not in staff.scopes:
            raise Forbidden(f"This needs the scope {scope}.", required_scope=scope)
        return staff

    return dependency


RegistryReader = Annotated[StaffPrincipal, Depends(require_scope(OFFICER_REGISTRY))]
RegistryAdmin = Annotated[StaffPrincipal, Depends(require_scope(ADMIN_REGISTRY))]
AccountsOfficer = Annotated[StaffPrincipal, Depends(require_scope(OFFICER_ACCOUNTS))]
ApprovingOfficer = Annotated[StaffPrincipal, Depends(require_scope(OFFICER_APPROVE))]
AccountsAdmin = Annotated[StaffPrincipal, Depends(require_scope(ADMIN_ACCOUNTS))]
AuditReader = Annotated[StaffPrincipal, Depends(require_scope(AUDIT_READ))]


async def _client_principal(request: Request, token: str, now: dt.datetime) -> StaffPrincipal:
    from app.core.jose import JwtRejected
    from app.oidc.endpoints import token_is_live, verify_access_token
    from app.oidc.provider import get_provider

    provider = get_provider(request)
    try:
        claims = await verify_access_token(provider, token, now)
    except JwtRejected:
        raise Unauthenticated("The access token is invalid or expired.") from None
    # Only client tokens (no citizen behind them) carry staff scopes.
    if (
        claims.get("gid") is not None
        or claims["sub"] != claims["client_id"]
        or not await token_is_live(provider, claims)
    ):
        raise Unauthenticated("The access token is not a client token or was revoked.")
    return StaffPrincipal(None, claims["client_id"], frozenset(claims.get("scope", "").split()) & STAFF_SCOPES)


AdminClients = Annotated[StaffPrincipal, Depends(require_scope(ADMIN_CLIENTS))]
