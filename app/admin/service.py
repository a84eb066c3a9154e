"""Staff members (officers, administrators), their sign-in and the audit reading API."""

from __future__ import annotations

import datetime as dt

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.admin.models import StaffMember, StaffSession
from app.core import audit
from app.core.audit import ANONYMOUS, SYSTEM, Actor, AuditEvent
from app.core.crypto import random_token
from app.core.deps import AppContext
from app.core.errors import Conflict, InvalidInput, Problem
from app.core.metrics import SIGN_INS
from app.core.principal import STAFF_SCOPES, Principal, Subject


class StaffLoginFailed(Problem):
    status, slug, title = 401, "staff-login-failed", "Wrong username or password, or the account is locked"


async def create_staff(
    session: AsyncSession, ctx: AppContext, *, username: str, display_name: str, password: str, scopes: list[str]
) -> StaffMember:
    unknown = set(scopes) - STAFF_SCOPES
    if unknown:
        raise InvalidInput(f"Unknown scopes: {', '.join(sorted(unknown))}")
    if await session.scalar(select(StaffMember.id).where(StaffMember.username == username)):
        raise Conflict("A staff member with this username exists.")
    now = ctx.clock.now()
    member = StaffMember(
        username=username,
        display_name=display_name,
        password_hash=await ctx.hasher.hash(password),
        scopes=" ".join(sorted(set(scopes))),
        active=True,
        failed_logins=0,
        created_at=now,
    )
    session.add(member)
    audit.record(
        session,
        actor=SYSTEM,
        action="staff.create",
        outcome="ok",
        now=now,
        target=username,
        detail={"scopes": sorted(set(scopes))},
    )
    await session.commit()
    return member


async def staff_login(
    session: AsyncSession, ctx: AppContext, *, username: str, password: str
) -> tuple[str, StaffSession]:
    now = ctx.clock.now()
    member = await session.scalar(select(StaffMember).where(StaffMember.username == username))
    ok, new_hash = await ctx.hasher.verify(password, member.password_hash if member else None)
    locked = member is not None and member.locked_until is not None and member.locked_until > now
    if member is None or not member.active or locked or not ok:
        reason = "wrong_password"  # as counted in the metrics
        if member is None:
            reason = "unknown_user"
        elif not member.active:
            reason = "inactive"
        elif locked:
            reason = "locked"
        if member is not None and not ok and not locked:
            member.failed_logins += 1
            if member.failed_logins >= ctx.settings.lockout_threshold:
                member.locked_until = now + dt.timedelta(minutes=ctx.settings.lockout_minutes)
                member.failed_logins = 0
        audit.record(
            session,
            actor=ANONYMOUS,
            action="staff.login",
            outcome="locked" if locked else "denied",
            now=now,
            target=username,
        )
        await session.commit()
        SIGN_INS.labels("staff", "api", reason).inc()
        raise StaffLoginFailed()
    if new_hash:
        member.password_hash = new_hash
    member.failed_logins = 0
    member.locked_until = None
    token = random_token()
    row = StaffSession(
        token_hash=ctx.keyring.keyed_hash("staff-session", token),
        staff_id=member.id,
        scopes=member.scopes,
        created_at=now,
        expires_at=now + dt.timedelta(minutes=ctx.settings.staff_session_minutes),
    )
    session.add(row)
    audit.record(
        session, actor=Actor("officer", member.username), action="staff.login", outcome="ok", now=now, target=username
    )
    await session.commit()
    SIGN_INS.labels("staff", "api", "ok").inc()
    return token, row


async def resolve_staff_session(ctx: AppContext, _request: Request, token: str) -> Principal | None:
    """A staff member's bearer session (app/core/auth.py): the session and the member in one
    round trip, on the reader."""
    if "." in token or len(token) > 128:
        return None
    async with ctx.reader() as session:
        row = (
            await session.execute(
                select(StaffSession.scopes, StaffSession.expires_at, StaffSession.revoked_at, StaffMember)
                .join(StaffMember, StaffMember.id == StaffSession.staff_id)
                .where(StaffSession.token_hash == ctx.keyring.keyed_hash("staff-session", token))
            )
        ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= ctx.clock.now() or not row.StaffMember.active:
        return None
    member: StaffMember = row.StaffMember
    return Principal(Subject.staff, member.username, member.display_name, frozenset(row.scopes.split()), member)


async def read_audit(
    session: AsyncSession, *, before_id: int | None, limit: int, target: str | None, action: str | None
) -> list[AuditEvent]:
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(AuditEvent.id < before_id)
    if target:
        stmt = stmt.where(AuditEvent.target == target)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return list((await session.scalars(stmt)).all())
