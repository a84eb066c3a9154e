"""Accounts: authentication with lockout, password changes, and the officer lifecycle."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.errors import AccountNotFound, AccountStateConflict, LoginFailed, PasswordChangeRequired, WeakPassword
from app.accounts.models import Account, AccountStatus, CitizenSession
from app.core import audit
from app.core.audit import ANONYMOUS, Actor
from app.core.crypto import random_token
from app.core.deps import AppContext
from app.core.passwords import password_problems
from app.registry.models import Citizen


def citizen_actor(account: Account) -> Actor:
    return Actor("citizen", str(account.id))


async def authenticate(
    session: AsyncSession, ctx: AppContext, *, id_number: str, password: str, allow_must_change: bool = False
) -> Account:
    """Check a citizen's password. Every failure answers LoginFailed, whatever its reason;
    the reason goes to the audit trail. Unknown ID numbers cost the same argon2id verify."""
    account = await session.scalar(select(Account).where(Account.id_number == id_number))
    ok, new_hash = await ctx.hasher.verify(password, account.password_hash if account else None)
    now = ctx.clock.now()

    def fail(reason: str) -> LoginFailed:
        audit.record(
            session,
            actor=ANONYMOUS,
            action="account.login",
            outcome="denied",
            now=now,
            target_id_number=id_number,
            detail={"reason": reason},
        )
        return LoginFailed()

    if account is None:
        exc = fail("unknown_id")
    elif account.status != AccountStatus.active or account.password_hash is None:
        exc = fail(f"status_{account.status}" if account.password_hash else "no_password")
    elif account.locked_until is not None and account.locked_until > now:
        exc = fail("lockout")
    elif not ok:
        failures = await session.scalar(
            update(Account)
            .where(Account.id == account.id)
            .values(failed_logins=Account.failed_logins + 1)
            .returning(Account.failed_logins)
        )
        if failures is not None and failures >= ctx.settings.lockout_threshold:
            await session.execute(
                update(Account)
                .where(Account.id == account.id)
                .values(failed_logins=0, locked_until=now + dt.timedelta(minutes=ctx.settings.lockout_minutes))
            )
            audit.record(
                session,
                actor=ANONYMOUS,
                action="account.lockout",
                outcome="ok",
                now=now,
                target_id_number=id_number,
                detail={"minutes": ctx.settings.lockout_minutes},
            )
        exc = fail("wrong_password")
    else:
        account.failed_logins = 0
        account.locked_until = None
        if new_hash:
            account.password_hash = new_hash  # argon2 parameters changed since it was hashed
        if account.must_change_password and not allow_must_change:
            audit.record(
                session,
                actor=citizen_actor(account),
                action="account.login",
                outcome="password_change_required",
                now=now,
                target_id_number=id_number,
            )
            await session.commit()
            raise PasswordChangeRequired("Your password was sent by SMS: choose your own before you sign in.")
        audit.record(
            session,
            actor=citizen_actor(account),
            action="account.login",
            outcome="ok",
            now=now,
            target_id_number=id_number,
        )
        await session.commit()
        return account
    await session.commit()
    raise exc


async def check_new_password(session: AsyncSession, ctx: AppContext, account_id_number: str, password: str) -> None:
    citizen = await session.get(Citizen, account_id_number)
    words = [account_id_number]
    if citizen is not None:
        words += [citizen.phone[-9:] if citizen.phone else "", *citizen.full_name.split()]
    problems = password_problems(password, min_length=ctx.settings.password_min_length, context_words=tuple(words))
    if problems:
        raise WeakPassword(" ".join(problems), problems=problems)


async def set_password(
    session: AsyncSession, ctx: AppContext, account: Account, password: str, *, actor: Actor, action: str
) -> None:
    now = ctx.clock.now()
    account.password_hash = await ctx.hasher.hash(password)
    account.must_change_password = False
    account.password_changed_at = now
    account.failed_logins = 0
    account.locked_until = None
    account.updated_at = now
    audit.record(session, actor=actor, action=action, outcome="ok", now=now, target_id_number=account.id_number)
    await session.commit()


async def change_password(session: AsyncSession, ctx: AppContext, *, id_number: str, current: str, new: str) -> None:
    # Policy first: refusing a weak password must not cost a login attempt.
    await check_new_password(session, ctx, id_number, new)
    account = await authenticate(session, ctx, id_number=id_number, password=current, allow_must_change=True)
    if current == new:
        raise WeakPassword("Choose a password different from the current one.", problems=["same as current"])
    await set_password(session, ctx, account, new, actor=citizen_actor(account), action="account.password.change")


# --- officer lifecycle ----------------------------------------------------------------------

_TRANSITIONS: dict[str, tuple[set[AccountStatus], AccountStatus]] = {
    "lock": ({AccountStatus.active}, AccountStatus.locked),
    "unlock": ({AccountStatus.locked, AccountStatus.active}, AccountStatus.active),
    "revoke": ({AccountStatus.pending, AccountStatus.active, AccountStatus.locked}, AccountStatus.revoked),
}


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    account = await session.get(Account, account_id, populate_existing=True)
    if account is None:
        raise AccountNotFound()
    return account


async def change_status(
    session: AsyncSession, ctx: AppContext, account_id: uuid.UUID, transition: str, *, actor: Actor, reason: str
) -> Account:
    allowed_from, target = _TRANSITIONS[transition]
    now = ctx.clock.now()
    values: dict[str, object] = {"status": target.value, "updated_at": now}
    if transition == "unlock":
        values |= {"failed_logins": 0, "locked_until": None}
    # Conditional update: two officers acting at once cannot both pass the state check.
    result = await session.execute(
        update(Account)
        .where(Account.id == account_id, Account.status.in_([s.value for s in allowed_from]))
        .values(**values)
        .returning(Account.id_number, Account.status)
    )
    row = result.first()
    if row is None:
        current = await session.scalar(select(Account.status).where(Account.id == account_id))
        await session.rollback()
        if current is None:
            raise AccountNotFound()
        raise AccountStateConflict(f"Cannot {transition} an account that is {current}.", current_status=current)
    audit.record(
        session,
        actor=actor,
        action=f"account.{transition}",
        outcome="ok",
        now=now,
        target_id_number=row.id_number,
        detail={"reason": reason},
    )
    await session.commit()
    return await get_account(session, account_id)


# --- citizen sessions -------------------------------------------------------------------------


async def sign_in(
    session: AsyncSession, ctx: AppContext, *, id_number: str, password: str
) -> tuple[str, CitizenSession]:
    account = await authenticate(session, ctx, id_number=id_number, password=password)
    now = ctx.clock.now()
    token = random_token()
    row = CitizenSession(
        token_hash=ctx.keyring.keyed_hash("citizen-session", token),
        account_id=account.id,
        sid=random_token(16),
        acr=f"urn:eid:loa:{account.level}",
        auth_time=now,
        amr="pwd",
        expires_at=now + dt.timedelta(minutes=ctx.settings.citizen_session_minutes),
    )
    session.add(row)
    await session.commit()
    return token, row


async def sign_out(session: AsyncSession, ctx: AppContext, token_hash: str) -> None:
    await session.execute(
        update(CitizenSession)
        .where(CitizenSession.token_hash == token_hash, CitizenSession.revoked_at.is_(None))
        .values(revoked_at=ctx.clock.now())
    )
    await session.commit()


async def dependents_of(session: AsyncSession, account: Account) -> list[tuple[Account, Citizen]]:
    rows = await session.execute(
        select(Account, Citizen)
        .join(Citizen, Citizen.id_number == Account.id_number)
        .where(Account.guardian_account_id == account.id)
        .order_by(Citizen.date_of_birth)
    )
    return [(a, c) for a, c in rows.all()]
