"""Level-1 self-registration and password reset, both proven by a one-time code sent by SMS.

Enumeration resistance: a request for an unknown ID number, one whose details do not match
the registry, one for a citizen under 14 and one for an ID number that already has an account
all get the same 202 answer with a challenge ID, do the same work (one challenge row, one
audit row) and differ only in whether an SMS is queued. The real reason is audited.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service
from app.accounts.errors import OtpInvalid, RegistrationNotCompleted
from app.accounts.models import Account, AccountStatus, OtpChallenge, OtpPurpose
from app.accounts.schemas import PasswordResetStart, RegistrationStart
from app.core import audit
from app.core.audit import ANONYMOUS
from app.core.crypto import random_digits
from app.core.deps import AppContext
from app.core.errors import RateLimited
from app.core.passwords import generate_initial_password
from app.core.schemas import fold_name
from app.core.sms import queue_sms
from app.registry.models import Citizen
from app.registry.service import age_on

SELF_REGISTRATION_MIN_AGE = 14


async def _rate_limit(ctx: AppContext, *keys: str) -> None:
    for key in keys:
        retry = await ctx.limiter.hit(key, ctx.settings.registration_rate_per_hour, 3600)
        if retry is not None:
            raise RateLimited(retry)


def _new_challenge(ctx: AppContext, purpose: OtpPurpose, phone: str, id_number: str | None) -> tuple[OtpChallenge, str]:
    now = ctx.clock.now()
    challenge_id = uuid.uuid4()
    code = random_digits(6)
    challenge = OtpChallenge(
        id=challenge_id,
        purpose=purpose.value,
        id_number=id_number,
        phone=phone,
        # Keyed hash bound to the challenge: the code cannot be tried against another one.
        code_hash=ctx.keyring.keyed_hash("otp", str(challenge_id), code),
        attempts_left=ctx.settings.otp_max_attempts,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ctx.settings.otp_ttl_seconds),
    )
    return challenge, code


async def _send_challenge(
    session: AsyncSession,
    ctx: AppContext,
    purpose: OtpPurpose,
    phone: str,
    id_number: str,
    reason: str | None,
    sms_text: str,
) -> OtpChallenge:
    """Store a challenge whatever the outcome (refused ones are bound to no ID number and
    send nothing), audit the real reason, and queue the code when it is a real one."""
    now = ctx.clock.now()
    challenge, code = _new_challenge(ctx, purpose, phone, None if reason else id_number)
    session.add(challenge)
    if reason is None:
        queue_sms(
            session, ctx.keyring, phone=phone, purpose=f"{purpose.value}_otp", now=now, text=sms_text.format(code=code)
        )
    detail: dict[str, str] = {"challenge": str(challenge.id)}
    if reason:
        detail["reason"] = reason
    audit.record(
        session, actor=ANONYMOUS, action=f"account.{purpose.value}.start", outcome="otp_sent" if reason is None else "refused",
        now=now, target_id_number=id_number, detail=detail,
    )  # fmt: skip
    await session.commit()
    return challenge


def _claimable(account: Account, age: int) -> bool:
    """A dependent's account that the minor may take over from their 14th birthday."""
    return (
        account.guardian_account_id is not None
        and account.password_hash is None
        and age >= SELF_REGISTRATION_MIN_AGE
        and account.status == AccountStatus.active
    )


async def start_registration(session: AsyncSession, ctx: AppContext, body: RegistrationStart) -> OtpChallenge:
    await _rate_limit(ctx, f"reg:phone:{body.phone}", "reg:id:" + ctx.keyring.keyed_hash("rl", body.id_number))
    citizen = await session.get(Citizen, body.id_number)
    account = await session.scalar(select(Account).where(Account.id_number == body.id_number)) if citizen else None
    reason: str | None = None
    if citizen is None:
        reason = "unknown_id"
    elif fold_name(citizen.full_name) != fold_name(body.full_name) or citizen.date_of_birth != body.date_of_birth:
        reason = "details_mismatch"
    elif citizen.phone is not None and citizen.phone != body.phone:
        reason = "phone_mismatch"
    elif (age := age_on(citizen.date_of_birth, ctx.clock.today())) < SELF_REGISTRATION_MIN_AGE:
        reason = "under_14"
    elif account is not None and not _claimable(account, age):
        reason = "already_registered"

    return await _send_challenge(
        session, ctx, OtpPurpose.registration, body.phone, body.id_number, reason,
        "Ma xac thuc dang ky tai khoan dinh danh dien tu: {code}. Het han sau 5 phut. Khong chia se ma nay.",
    )  # fmt: skip


async def _consume_otp(
    session: AsyncSession, ctx: AppContext, challenge_id: uuid.UUID, purpose: OtpPurpose, code: str
) -> OtpChallenge:
    """Spend one attempt and check the code; single use, race-free on every backend."""
    now = ctx.clock.now()
    # Take an attempt first, atomically: parallel guesses cannot exceed the limit.
    spent = await session.execute(
        update(OtpChallenge)
        .where(
            OtpChallenge.id == challenge_id,
            OtpChallenge.purpose == purpose.value,
            OtpChallenge.attempts_left > 0,
            OtpChallenge.used_at.is_(None),
            OtpChallenge.expires_at > now,
        )
        .values(attempts_left=OtpChallenge.attempts_left - 1)
        .returning(OtpChallenge.code_hash, OtpChallenge.id_number)
    )
    row = spent.first()
    matches = (
        row is not None
        and row.id_number is not None
        and ctx.keyring.verify_keyed_hash(row.code_hash, "otp", str(challenge_id), code)
    )
    if not matches:
        audit.record(
            session,
            actor=ANONYMOUS,
            action=f"otp.{purpose.value}",
            outcome="denied",
            now=now,
            target=str(challenge_id),
            detail={"reason": "no_attempt_left_or_expired" if row is None else "wrong_code"},
        )
        await session.commit()
        raise OtpInvalid("Request a new code if this one expired or was tried 5 times.")
    used = await session.execute(
        update(OtpChallenge)
        .where(OtpChallenge.id == challenge_id, OtpChallenge.used_at.is_(None))
        .values(used_at=now)
        .returning(OtpChallenge.id)
    )
    if used.first() is None:  # lost a race with a parallel correct answer
        await session.rollback()
        raise OtpInvalid()
    challenge = await session.get(OtpChallenge, challenge_id, populate_existing=True)
    assert challenge is not None
    return challenge


async def verify_registration(session: AsyncSession, ctx: AppContext, challenge_id: uuid.UUID, code: str) -> Account:
    challenge = await _consume_otp(session, ctx, challenge_id, OtpPurpose.registration, code)
    assert challenge.id_number is not None
    now = ctx.clock.now()
    password = generate_initial_password()
    password_hash = await ctx.hasher.hash(password)
    account = await session.scalar(select(Account).where(Account.id_number == challenge.id_number))
    claimed = account is not None
    if account is None:
        account = Account(id=uuid.uuid4(), id_number=challenge.id_number, level=1, created_at=now)
        session.add(account)
    elif account.guardian_account_id is None or account.password_hash is not None:
        await session.rollback()
        raise RegistrationNotCompleted("If you already have an account, sign in or reset your password.")
    account.status = AccountStatus.active.value
    account.phone = challenge.phone
    account.guardian_account_id = None  # a claimed dependent's account becomes the citizen's own
    account.password_hash = password_hash
    account.must_change_password = True
    account.failed_logins = 0
    account.updated_at = now
    queue_sms(
        session,
        ctx.keyring,
        phone=challenge.phone,
        purpose="initial_password",
        now=now,
        text=f"Tai khoan dinh danh dien tu da duoc kich hoat. Mat khau tam thoi: {password} . Doi mat khau khi dang nhap lan dau.",
    )
    audit.record(
        session,
        actor=service.citizen_actor(account),
        action="account.claim" if claimed else "account.register",
        outcome="ok",
        now=now,
        target_id_number=account.id_number,
        detail={"level": account.level},
    )
    try:
        await session.commit()
    except IntegrityError:
        # Two registrations for the same ID number verified at once: the unique constraint
        # on accounts.id_number lets exactly one through.
        await session.rollback()
        raise RegistrationNotCompleted("If you already have an account, sign in or reset your password.") from None
    return account


async def start_password_reset(session: AsyncSession, ctx: AppContext, body: PasswordResetStart) -> OtpChallenge:
    await _rate_limit(ctx, f"reset:phone:{body.phone}", "reset:id:" + ctx.keyring.keyed_hash("rl", body.id_number))
    account = await session.scalar(select(Account).where(Account.id_number == body.id_number))
    reason = None
    if account is None:
        reason = "unknown_id"
    elif account.status != AccountStatus.active:
        reason = f"status_{account.status}"
    elif account.phone != body.phone:
        reason = "phone_mismatch"
    return await _send_challenge(
        session, ctx, OtpPurpose.password_reset, body.phone, body.id_number, reason,
        "Ma dat lai mat khau tai khoan dinh danh dien tu: {code}. Het han sau 5 phut. Khong chia se ma nay.",
    )  # fmt: skip


async def complete_password_reset(
    session: AsyncSession, ctx: AppContext, challenge_id: uuid.UUID, code: str, new_password: str
) -> None:
    challenge = await session.get(OtpChallenge, challenge_id)
    if challenge is not None and challenge.id_number is not None:
        # Policy first, so that a refused password does not spend an attempt.
        await service.check_new_password(session, ctx, challenge.id_number, new_password)
    challenge = await _consume_otp(session, ctx, challenge_id, OtpPurpose.password_reset, code)
    assert challenge.id_number is not None
    account = await session.scalar(select(Account).where(Account.id_number == challenge.id_number))
    if account is None or account.status != AccountStatus.active:
        await session.rollback()
        raise OtpInvalid()
    await service.set_password(
        session, ctx, account, new_password, actor=service.citizen_actor(account), action="account.password.reset"
    )
