"""Accounts: authentication with lockout, password changes, and the officer lifecycle.

Whenever a citizen's credentials or account state change (password changed or reset, locked
or revoked by an officer, phone changed by an officer), every other session of theirs ends and
whatever was issued under them is revoked (``end_access``), and the citizen is notified.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.errors import (
    AccountLocked,
    AccountNotFound,
    AccountStateConflict,
    LoginFailed,
    PasswordChangeRequired,
    WeakPassword,
)
from app.accounts.models import Account, AccountStatus, CitizenSession, KnownBrowser
from app.core import audit
from app.core.audit import ANONYMOUS, Actor
from app.core.crypto import random_token
from app.core.db import note_revocation
from app.core.deps import AppContext
from app.core.errors import RateLimited, Unauthenticated
from app.core.metrics import SIGN_INS
from app.core.notify import Notice, Recipient, local_time, notify
from app.core.passwords import PasswordRule, password_rules_broken
from app.core.principal import Principal, Subject
from app.core.privacy import mask_phone
from app.registry.models import Citizen


@dataclass(frozen=True, slots=True)
class AccessEnded:
    """Event: a citizen's sessions were ended by a change to their credentials or account state;
    whatever was issued under them must end too (the provider subscribes: app/oidc/logout.py)."""

    account_id: uuid.UUID
    reason: str  # password_change, password_reset, lock, revoke, phone_change, claimed
    ended_sids: tuple[str, ...]
    now: dt.datetime
    kept_sid: str | None = None  # the session that made the change, which goes on


def citizen_actor(account: Account) -> Actor:
    return Actor("citizen", str(account.id))


def recipient(account: Account) -> Recipient:
    return Recipient(account.id, account.phone, account.email)


async def current_account(session: AsyncSession, id_number: str) -> Account | None:
    """The account of an ID number: the one that is not revoked (at most one, by a partial
    unique index), else the most recent revoked one."""
    return await session.scalar(
        select(Account)
        .where(Account.id_number == id_number)
        .order_by(case((Account.status == AccountStatus.revoked.value, 1), else_=0), Account.created_at.desc())
        .limit(1)
    )


async def notify_account(
    session: AsyncSession, ctx: AppContext, account: Account, kind: Notice, now: dt.datetime, **params: str
) -> None:
    await notify(
        session, ctx.keyring, to=recipient(account), kind=kind, params=params, now=now,
        sms_per_hour=ctx.settings.notify_sms_per_hour,
    )  # fmt: skip


def count_sign_in(channel: str | None, result: str) -> None:
    """A citizen's sign-in attempt in the metrics (app/core/metrics.py), by where it was made
    (``page``: the OpenID login form, ``api``: POST /accounts/sessions) and its result (``ok``
    or the failure's reason, as audited). None: a password check that is no sign-in."""
    if channel is not None:
        SIGN_INS.labels("citizen", channel, result).inc()


async def limit_sign_ins(ctx: AppContext, id_number: str, *, channel: str) -> None:
    """At most EID_SIGNIN_RATE_PER_HOUR attempts per ID number, in every process: on top of the
    lockout, it bounds guessing also while an account is locked (NIST SP 800-63B §5.2.2).
    Call it before the request's transaction runs a statement (app/core/ratelimit.py)."""
    retry = await ctx.limiter.hit(f"signin:{id_number}", ctx.settings.signin_rate_per_hour, 3600)
    if retry is not None:
        count_sign_in(channel, "rate_limited")
        raise RateLimited(retry)


async def authenticate(
    session: AsyncSession,
    ctx: AppContext,
    *,
    id_number: str,
    password: str,
    allow_must_change: bool = False,
    channel: str | None = None,
) -> Account:
    """Check a citizen's password. Every failure answers LoginFailed, whatever its reason;
    the reason goes to the audit trail (and, for a sign-in made through ``channel``, to the
    metrics). Unknown ID numbers cost the same argon2id verify.
    Only a caller who gave the right password learns that the account is locked, and until when."""
    account = await current_account(session, id_number)
    ok, new_hash = await ctx.hasher.verify(password, account.password_hash if account else None)
    now = ctx.clock.now()

    def fail(reason: str) -> LoginFailed:
        count_sign_in(channel, reason)
        audit.record(
            session, actor=ANONYMOUS, action="account.login", outcome="denied", now=now,
            target_id_number=id_number, detail={"reason": reason},
        )  # fmt: skip
        return LoginFailed()

    exc: Exception
    if account is None:
        exc = fail("unknown_id")
    elif account.password_hash is None or account.status == AccountStatus.pending:
        exc = fail(f"status_{account.status}" if account.password_hash else "no_password")
    elif not ok:
        if account.status == AccountStatus.active:
            await _count_failure(session, ctx, account, now)
        exc = fail("wrong_password")
    elif account.status != AccountStatus.active:
        fail(f"status_{account.status}")
        exc = AccountLocked(
            "This account was locked by an officer. Contact a police office."
            if account.status == AccountStatus.locked
            else "This account was revoked. A police office can issue a new one.",
            account_status=account.status,
        )
    elif account.locked_until is not None and account.locked_until > now:
        fail("lockout")
        exc = AccountLocked(
            f"Too many wrong passwords: sign-in is paused until {account.locked_until.isoformat()}.",
            locked_until=account.locked_until.isoformat(),
        )
    else:
        account.failed_logins = 0
        account.locked_until = None
        if new_hash:
            account.password_hash = new_hash  # argon2 parameters changed since it was hashed
        if account.must_change_password and not allow_must_change:
            audit.record(
                session, actor=citizen_actor(account), action="account.login", outcome="password_change_required",
                now=now, target_id_number=id_number,
            )  # fmt: skip
            await session.commit()
            count_sign_in(channel, "password_change_required")
            raise PasswordChangeRequired("Your password was sent by SMS: choose your own before you sign in.")
        audit.record(
            session, actor=citizen_actor(account), action="account.login", outcome="ok", now=now,
            target_id_number=id_number,
        )  # fmt: skip
        await session.commit()
        count_sign_in(channel, "ok")
        return account
    await session.commit()
    raise exc


async def _count_failure(session: AsyncSession, ctx: AppContext, account: Account, now: dt.datetime) -> None:
    """One more wrong password; at the threshold a lockout starts (and the citizen hears of it).
    Wrong passwords during a lockout count too, so guessing on never gets a fresh budget."""
    failures = await session.scalar(
        update(Account)
        .where(Account.id == account.id)
        .values(failed_logins=Account.failed_logins + 1)
        .returning(Account.failed_logins)
    )
    if failures is None or failures < ctx.settings.lockout_threshold:
        return
    until = now + dt.timedelta(minutes=ctx.settings.lockout_minutes)
    await session.execute(update(Account).where(Account.id == account.id).values(failed_logins=0, locked_until=until))
    audit.record(
        session, actor=ANONYMOUS, action="account.lockout", outcome="ok", now=now,
        target_id_number=account.id_number, detail={"minutes": ctx.settings.lockout_minutes},
    )  # fmt: skip
    await notify_account(session, ctx, account, Notice.lockout, now, until=local_time(until))


async def check_new_password(session: AsyncSession, ctx: AppContext, account_id_number: str, password: str) -> None:
    citizen = await session.get(Citizen, account_id_number)
    words = [account_id_number]
    if citizen is not None:
        words += [citizen.phone[-9:] if citizen.phone else "", *citizen.full_name.split()]
    rules = password_rules_broken(password, min_length=ctx.settings.password_min_length, context_words=tuple(words))
    if rules:
        raise WeakPassword.of(rules, ctx.settings.password_min_length)


async def end_access(
    session: AsyncSession,
    ctx: AppContext,
    account_id: uuid.UUID,
    *,
    reason: str,
    now: dt.datetime,
    keep_session: str | None = None,
) -> None:
    """End every session of the account but ``keep_session`` (a session token hash), and let
    the provider revoke what was issued under them, in the caller's transaction."""
    ended = await session.execute(
        update(CitizenSession)
        .where(
            CitizenSession.account_id == account_id,
            CitizenSession.revoked_at.is_(None),
            CitizenSession.token_hash != (keep_session or ""),
        )
        .values(revoked_at=now)
        .returning(CitizenSession.sid)
    )
    sids = tuple(sorted(sid for (sid,) in ended.all() if sid))
    kept_sid = await session.scalar(select(CitizenSession.sid).where(CitizenSession.token_hash == keep_session))
    event = AccessEnded(account_id=account_id, reason=reason, ended_sids=sids, now=now, kept_sid=kept_sid)
    await ctx.events.publish(session, event)


async def set_password(
    session: AsyncSession,
    ctx: AppContext,
    account: Account,
    password: str,
    *,
    actor: Actor,
    action: str,
    keep_session: str | None = None,
) -> None:
    now = ctx.clock.now()
    account.password_hash = await ctx.hasher.hash(password)
    account.must_change_password = False
    account.password_changed_at = now
    account.failed_logins = 0
    account.locked_until = None
    account.updated_at = now
    reset = action == "account.password.reset"
    await end_access(
        session, ctx, account.id, reason="password_reset" if reset else "password_change", now=now,
        keep_session=keep_session,
    )  # fmt: skip
    await notify_account(
        session, ctx, account, Notice.password_reset if reset else Notice.password_changed, now, time=local_time(now)
    )
    audit.record(session, actor=actor, action=action, outcome="ok", now=now, target_id_number=account.id_number)
    await session.commit()


async def change_password(
    session: AsyncSession,
    ctx: AppContext,
    *,
    id_number: str,
    current: str,
    new: str,
    keep_session: str | None = None,
) -> None:
    # Policy first: refusing a weak password must not cost a login attempt.
    await check_new_password(session, ctx, id_number, new)
    account = await authenticate(session, ctx, id_number=id_number, password=current, allow_must_change=True)
    if current == new:
        raise WeakPassword.of([PasswordRule.same_as_current], ctx.settings.password_min_length)
    await set_password(
        session, ctx, account, new, actor=citizen_actor(account), action="account.password.change",
        keep_session=keep_session,
    )  # fmt: skip


# --- officer lifecycle ----------------------------------------------------------------------

_TRANSITIONS: dict[str, tuple[set[AccountStatus], AccountStatus, Notice]] = {
    "lock": ({AccountStatus.active}, AccountStatus.locked, Notice.account_locked),
    "unlock": ({AccountStatus.locked, AccountStatus.active}, AccountStatus.active, Notice.account_unlocked),
    "revoke": (
        {AccountStatus.pending, AccountStatus.active, AccountStatus.locked},
        AccountStatus.revoked,
        Notice.account_revoked,
    ),
}


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    account = await session.get(Account, account_id, populate_existing=True)
    if account is None:
        raise AccountNotFound()
    return account


async def change_status(
    session: AsyncSession, ctx: AppContext, account_id: uuid.UUID, transition: str, *, actor: Actor, reason: str
) -> Account:
    allowed_from, target, notice = _TRANSITIONS[transition]
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
    await note_revocation(session)  # the account's tokens go (lock, revoke) or come back (unlock)
    if transition != "unlock":
        await end_access(session, ctx, account_id, reason=transition, now=now)
    account = await get_account(session, account_id)
    await notify_account(session, ctx, account, notice, now, reason=reason)
    audit.record(
        session, actor=actor, action=f"account.{transition}", outcome="ok", now=now,
        target_id_number=row.id_number, detail={"reason": reason},
    )  # fmt: skip
    await session.commit()
    return await get_account(session, account_id)


async def change_phone(
    session: AsyncSession, ctx: AppContext, account_id: uuid.UUID, phone: str, *, actor: Actor, reason: str
) -> Account:
    """An officer records a new phone after checking the citizen in person: every session
    ends (whoever held the old phone may have used it to reset the password), and both the old
    and the new phone are told."""
    now = ctx.clock.now()
    account = await get_account(session, account_id)
    if account.status == AccountStatus.revoked:
        raise AccountStateConflict("Cannot change the phone of a revoked account.", current_status=account.status)
    old = account.phone
    account.phone = phone
    account.updated_at = now
    await end_access(session, ctx, account_id, reason="phone_change", now=now)
    params = {"phone": mask_phone(phone), "time": local_time(now)}
    await notify_account(session, ctx, account, Notice.phone_changed, now, **params)
    if old and old != phone:
        await notify(
            session, ctx.keyring, to=Recipient(None, old), kind=Notice.phone_changed, params=params, now=now,
            sms_per_hour=ctx.settings.notify_sms_per_hour,
        )  # fmt: skip
    audit.record(
        session, actor=actor, action="account.phone.change", outcome="ok", now=now,
        target_id_number=account.id_number, detail={"reason": reason, "phone": mask_phone(phone)},
    )  # fmt: skip
    await session.commit()
    return await get_account(session, account_id)


# --- citizen sessions -------------------------------------------------------------------------


async def resolve_citizen_session(ctx: AppContext, _request: Request, token: str) -> Principal | None:
    """A citizen's bearer session (app/core/auth.py): one round trip for the session and its
    account, on the reader (it takes no write lock on SQLite)."""
    if "." in token or len(token) > 128:
        return None
    token_hash = ctx.keyring.keyed_hash("citizen-session", token)
    async with ctx.reader() as session:
        row = (
            await session.execute(
                select(CitizenSession.expires_at, CitizenSession.revoked_at, Account)
                .join(Account, Account.id == CitizenSession.account_id)
                .where(CitizenSession.token_hash == token_hash)
            )
        ).first()
    now = ctx.clock.now()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    account: Account = row.Account
    if account.status != AccountStatus.active or (account.locked_until is not None and account.locked_until > now):
        raise Unauthenticated("The account is not active.")
    return Principal(Subject.citizen, str(account.id), None, frozenset(), account, token_hash)


async def note_browser(
    session: AsyncSession, ctx: AppContext, account: Account, browser: str, now: dt.datetime
) -> None:
    """Remember the browser a citizen signed in from; one not seen before is notified, except
    at the very first sign-in with the SMS password (the citizen has just registered)."""
    known = await session.get(KnownBrowser, (account.id, browser))
    if known is not None:
        known.last_seen = now
        return
    first = await session.scalar(
        select(KnownBrowser.browser_hash).where(KnownBrowser.account_id == account.id).limit(1)
    )
    session.add(KnownBrowser(account_id=account.id, browser_hash=browser, first_seen=now, last_seen=now))
    if first is not None or not account.must_change_password:
        await notify_account(session, ctx, account, Notice.new_browser, now, time=local_time(now))


async def sign_in(
    session: AsyncSession, ctx: AppContext, *, id_number: str, password: str
) -> tuple[str, CitizenSession]:
    await limit_sign_ins(ctx, id_number, channel="api")
    account = await authenticate(session, ctx, id_number=id_number, password=password, channel="api")
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
        .where(Account.guardian_account_id == account.id, Account.status != AccountStatus.revoked.value)
        .order_by(Citizen.date_of_birth)
    )
    return [(a, c) for a, c in rows.all()]
