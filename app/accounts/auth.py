"""Who is the citizen calling: a bearer token of a citizen session (declared once here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select

from app.accounts.models import Account, AccountStatus, CitizenSession
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.errors import Unauthenticated


@dataclass(frozen=True, slots=True)
class CitizenPrincipal:
    account: Account
    token_hash: str


async def current_citizen(request: Request, session: SessionDep, ctx: CtxDep) -> CitizenPrincipal:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Sign in first: Authorization: Bearer <session token>.")
    token_hash = ctx.keyring.keyed_hash("citizen-session", token.strip())
    # One round trip: the session and its account.
    row = (
        await session.execute(
            select(CitizenSession.expires_at, CitizenSession.revoked_at, Account)
            .join(Account, Account.id == CitizenSession.account_id)
            .where(CitizenSession.token_hash == token_hash)
        )
    ).first()
    now = ctx.clock.now()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthenticated("The session is unknown, expired or ended.")
    account: Account = row.Account
    if account.status != AccountStatus.active or (account.locked_until is not None and account.locked_until > now):
        raise Unauthenticated("The account is not active.")
    return CitizenPrincipal(account, token_hash)


CurrentCitizen = Annotated[CitizenPrincipal, Depends(current_citizen)]
