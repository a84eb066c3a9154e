"""Level-1 self-registration and password reset, both proven by a one-time code sent by SMS.

Proofing (NIST SP 800-63A §5.3.3, address of record): a citizen's ID number, name and date of
birth are printed on many papers and prove nothing on their own. The code goes only to a phone
that something other than the caller links to the citizen: the population registry, the mobile
operators' subscriber registry (app/core/subscribers.py), or, for a dependent who reached 14
and takes over their account, the guardian's approval from their own signed-in account.

Enumeration resistance: a request for an unknown ID number, one whose details do not match
the registry, one whose phone is not linked to the citizen, one for a citizen under 14 and one
for an ID number that already has an account all get the same 202 answer with a challenge ID,
do the same work (one challenge row, one audit row) and differ only in whether an SMS is
queued. The real reason is audited.

Guessing (NIST SP 800-63B §5.2.2, OWASP ASVS V2.2.1): a new challenge ends the earlier ones of
the same ID number; each challenge allows EID_OTP_MAX_ATTEMPTS tries; wrong codes are counted
per ID number and per phone across challenges, and past EID_OTP_FAILURES_PER_WINDOW in
EID_OTP_FAILURE_WINDOW_HOURS registration and reset are refused (429) until the oldest
failures leave the window, and the citizen is told. The count is kept by a keyed hash of the
ID number asked about, so it behaves the same whatever the registry holds.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service
from app.accounts.errors import AccountNotFound, ClaimNotAllowed, OtpInvalid, OtpLocked, RegistrationNotCompleted
from app.accounts.models import Account, AccountStatus, ClaimApproval, OtpChallenge, OtpFailure, OtpPurpose
from app.accounts.schemas import PasswordResetStart, RegistrationStart
from app.core import audit
from app.core.audit import ANONYMOUS
from app.core.crypto import random_digits
from app.core.deps import AppContext
from app.core.errors import RateLimited
from app.core.metrics import OTPS_SENT
from app.core.notify import Notice, Recipient, local_time, notify
from app.core.passwords import generate_initial_password
from app.core.schemas import fold_name
from app.core.sms import queue_sms
from app.core.subscribers import Subscription
from app.registry.models import Citizen
from app.registry.service import age_on

SELF_REGISTRATION_MIN_AGE = 14


def _id_key(ctx: AppContext, id_number: str) -> str:
    return ctx.keyring.keyed_hash("otp-subject", id_number)


async def _rate_limit(ctx: AppContext, *keys: str) -> None:
    for key in keys:
        retry = await ctx.limiter.hit(key, ctx.settings.registration_rate_per_hour, 3600)
        if retry is not None:
            raise RateLimited(retry)


async def _otp_lock(session: AsyncSession, ctx: AppContext, id_key: str, phone: str, now: dt.datetime) -> int | None:
    """Seconds until registration and reset are allowed again for this ID number and phone."""
    window = dt.timedelta(hours=ctx.settings.otp_failure_window_hours)
    threshold = ctx.settings.otp_failures_per_window
    waits = []
    for column, value in ((OtpFailure.id_key, id_key), (OtpFailure.phone, phone)):
        recent = (
            await session.scalars(
                select(OtpFailure.at)
                .where(column == value, OtpFailure.at > now - window)
                .order_by(OtpFailure.at.desc())
                .limit(threshold)
            )
        ).all()
        if len(recent) >= threshold:
            # Allowed again once the threshold-th most recent failure has left the window.
            waits.append(max(1, int((recent[-1] + window - now).total_seconds()) + 1))
    return max(waits) if waits else None


async def _refuse_if_locked(session: AsyncSession, ctx: AppContext, id_key: str, phone: str, now: dt.datetime) -> None:
    retry = await _otp_lock(session, ctx, id_key, phone, now)
    if retry is not None:
        await session.rollback()
        raise OtpLocked(retry)


def _new_challenge(
    ctx: AppContext, purpose: OtpPurpose, phone: str, id_number: str, *, real: bool, source: str | None
) -> tuple[OtpChallenge, str]:
    now = ctx.clock.now()
    challenge_id = uuid.uuid4()
    code = random_digits(6)
    challenge = OtpChallenge(
        id=challenge_id,
        purpose=purpose.value,
        id_number=id_number if real else None,
        id_key=_id_key(ctx, id_number),
        phone=phone,
        phone_source=source,
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
    source: str | None = None,
) -> OtpChallenge:
    """Store a challenge whatever the outcome (refused ones are bound to no ID number and
    send nothing), end the earlier ones of this ID number, audit the real reason, and queue
    the code when it is a real one."""
    now = ctx.clock.now()
    challenge, code = _new_challenge(ctx, purpose, phone, id_number, real=reason is None, source=source)
    # A new challenge ends the earlier ones: one live code per ID number, never several sets of tries.
    await session.execute(
        update(OtpChallenge)
        .where(OtpChallenge.id_key == challenge.id_key, OtpChallenge.used_at.is_(None), OtpChallenge.expires_at > now)
        .values(expires_at=now)
    )
    session.add(challenge)
    if reason is None:
        queue_sms(
            session, ctx.keyring, phone=phone, purpose=f"{purpose.value}_otp", now=now, text=sms_text.format(code=code)
        )
    detail: dict[str, str] = {"challenge": str(challenge.id)}
    if reason:
        detail["reason"] = reason
    if source:
        detail["phone_source"] = source
    audit.record(
        session, actor=ANONYMOUS, action=f"account.{purpose.value}.start", outcome="otp_sent" if reason is None else "refused",
        now=now, target_id_number=id_number, detail=detail,
    )  # fmt: skip
    await session.commit()
    if reason is None:
        OTPS_SENT.labels(purpose.value).inc()
    return challenge


def _claimable(account: Account, age: int) -> bool:
    """A dependent's account that the minor may take over from their 14th birthday."""
    return (
        account.guardian_account_id is not None
        and account.password_hash is None
        and age >= SELF_REGISTRATION_MIN_AGE
        and account.status == AccountStatus.active
    )


@dataclass(frozen=True, slots=True)
class _Proofing:
    reason: str | None  # why no code is sent; None: a code is sent
    registry_phone: str | None = None
    claim_account: uuid.UUID | None = None  # the dependent's account being claimed


async def _check_record(session: AsyncSession, ctx: AppContext, body: RegistrationStart) -> _Proofing:
    citizen = await session.get(Citizen, body.id_number)
    if citizen is None:
        return _Proofing("unknown_id")
    if fold_name(citizen.full_name) != fold_name(body.full_name) or citizen.date_of_birth != body.date_of_birth:
        return _Proofing("details_mismatch")
    age = age_on(citizen.date_of_birth, ctx.clock.today())
    if age < SELF_REGISTRATION_MIN_AGE:
        return _Proofing("under_14")
    account = await service.current_account(session, body.id_number)
    if account is not None and not _claimable(account, age):
        return _Proofing("already_registered")
    return _Proofing(None, citizen.phone, account.id if account is not None else None)


async def _guardian_approved(
    session: AsyncSession, ward_account_id: uuid.UUID, phone: str, now: dt.datetime
) -> ClaimApproval | None:
    return await session.scalar(
        select(ClaimApproval)
        .where(
            ClaimApproval.ward_account_id == ward_account_id,
            ClaimApproval.phone == phone,
            ClaimApproval.used_at.is_(None),
            ClaimApproval.expires_at > now,
        )
        .limit(1)
    )


async def start_registration(session: AsyncSession, ctx: AppContext, body: RegistrationStart) -> OtpChallenge:
    await _rate_limit(ctx, f"reg:phone:{body.phone}", f"reg:id:{body.id_number}")
    now = ctx.clock.now()
    await _refuse_if_locked(session, ctx, _id_key(ctx, body.id_number), body.phone, now)
    proof = await _check_record(session, ctx, body)
    reason, source = proof.reason, None
    if reason is None and proof.registry_phone == body.phone:
        source = "registry"
    elif (
        reason is None
        and proof.claim_account
        and await _guardian_approved(session, proof.claim_account, body.phone, now)
    ):
        source = "guardian"
    elif reason is None:
        # The operators' registry: no transaction may stay open across a network call (on
        # SQLite it would hold the write lock), and nothing was written yet.
        await session.rollback()
        confirmed = await ctx.subscribers.check(body.id_number, body.phone)
        if confirmed is Subscription.confirmed:
            source = "operator"
        else:
            reason = "phone_unconfirmed" if confirmed is Subscription.not_confirmed else "subscriber_check_unavailable"
    return await _send_challenge(
        session, ctx, OtpPurpose.registration, body.phone, body.id_number, reason,
        "Mã xác thực đăng ký tài khoản định danh điện tử: {code}. Hết hạn sau 5 phút. Không chia sẻ mã này.",
        source,
    )  # fmt: skip


async def _record_failure(session: AsyncSession, ctx: AppContext, challenge: OtpChallenge, now: dt.datetime) -> None:
    """Count one wrong code; when it reaches the threshold, tell the citizen (on their own
    phone, never the one the code was asked for)."""
    session.add(OtpFailure(id_key=challenge.id_key, phone=challenge.phone, at=now))
    await session.flush()
    window_start = now - dt.timedelta(hours=ctx.settings.otp_failure_window_hours)
    count = await session.scalar(
        select(func.count())
        .select_from(OtpFailure)
        .where(OtpFailure.id_key == challenge.id_key, OtpFailure.at > window_start)
    )
    if count != ctx.settings.otp_failures_per_window or challenge.id_number is None:
        return
    account = await service.current_account(session, challenge.id_number)
    citizen = await session.get(Citizen, challenge.id_number)
    to = service.recipient(account) if account is not None else Recipient(None, citizen.phone if citizen else None)
    until = now + dt.timedelta(hours=ctx.settings.otp_failure_window_hours)
    await notify(
        session, ctx.keyring, to=to, kind=Notice.otp_locked, params={"until": local_time(until)}, now=now,
        sms_per_hour=ctx.settings.notify_sms_per_hour,
    )  # fmt: skip


async def _consume_otp(
    session: AsyncSession, ctx: AppContext, challenge_id: uuid.UUID, purpose: OtpPurpose, code: str
) -> OtpChallenge:
    """Spend one attempt and check the code; single use, race-free on every backend."""
    now = ctx.clock.now()
    challenge = await session.get(OtpChallenge, challenge_id)
    if challenge is None or challenge.purpose != purpose.value:
        raise OtpInvalid("Request a new code if this one expired or was tried 5 times.")
    await _refuse_if_locked(session, ctx, challenge.id_key, challenge.phone, now)
    # Take an attempt first, atomically: parallel guesses cannot exceed the limit.
    spent = await session.execute(
        update(OtpChallenge)
        .where(
            OtpChallenge.id == challenge_id,
            OtpChallenge.attempts_left > 0,
            OtpChallenge.used_at.is_(None),
            OtpChallenge.expires_at > now,
        )
        .values(attempts_left=OtpChallenge.attempts_left - 1)
        .returning(OtpChallenge.code_hash)
    )
    row = spent.first()
    matches = (
        row is not None
        and challenge.id_number is not None
        and ctx.keyring.verify_keyed_hash(row.code_hash, "otp", str(challenge_id), code)
    )
    if not matches:
        if row is not None:
            await _record_failure(session, ctx, challenge, now)
        audit.record(
            session, actor=ANONYMOUS, action=f"otp.{purpose.value}", outcome="denied", now=now, target=str(challenge_id),
            detail={"reason": "no_attempt_left_or_expired" if row is None else "wrong_code"},
        )  # fmt: skip
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
    refreshed = await session.get(OtpChallenge, challenge_id, populate_existing=True)
    assert refreshed is not None
    return refreshed


async def verify_registration(session: AsyncSession, ctx: AppContext, challenge_id: uuid.UUID, code: str) -> Account:
    challenge = await _consume_otp(session, ctx, challenge_id, OtpPurpose.registration, code)
    assert challenge.id_number is not None
    now = ctx.clock.now()
    password = generate_initial_password()
    password_hash = await ctx.hasher.hash(password)
    account = await service.current_account(session, challenge.id_number)
    claimed = account is not None
    guardian: Account | None = None
    if account is None:
        account = Account(id=uuid.uuid4(), id_number=challenge.id_number, level=1, created_at=now)
        session.add(account)
    elif account.guardian_account_id is None or account.password_hash is not None or account.status != "active":
        await session.rollback()
        raise RegistrationNotCompleted("If you already have an account, sign in or reset your password.")
    else:
        guardian = await session.get(Account, account.guardian_account_id)
        # The claimed account starts at level 1: a phone proves less than an officer's check.
        account.level = 1
        if challenge.phone_source == "guardian":
            await session.execute(
                update(ClaimApproval)
                .where(ClaimApproval.ward_account_id == account.id, ClaimApproval.used_at.is_(None))
                .values(used_at=now)
            )
        # The guardian no longer acts for them: what they were issued for the dependent ends.
        await service.end_access(session, ctx, account.id, reason="claimed", now=now)
    account.status = AccountStatus.active.value
    account.phone = challenge.phone
    account.guardian_account_id = None  # a claimed dependent's account becomes the citizen's own
    account.password_hash = password_hash
    account.must_change_password = True
    account.failed_logins = 0
    account.updated_at = now
    queue_sms(
        session, ctx.keyring, phone=challenge.phone, purpose="initial_password", now=now,
        text=f"Tài khoản định danh điện tử đã được kích hoạt. Mật khẩu tạm thời: {password} . Đổi mật khẩu khi đăng nhập lần đầu.",
    )  # fmt: skip
    if guardian is not None:
        await notify_guardian_of_claim(session, ctx, guardian, challenge.id_number, now)
    audit.record(
        session, actor=service.citizen_actor(account), action="account.claim" if claimed else "account.register",
        outcome="ok", now=now, target_id_number=account.id_number,
        detail={"level": account.level, "phone_source": challenge.phone_source or "registry"},
    )  # fmt: skip
    try:
        await session.commit()
    except IntegrityError:
        # Two registrations for the same ID number verified at once: the unique index on the
        # current account of an ID number lets exactly one through.
        await session.rollback()
        raise RegistrationNotCompleted("If you already have an account, sign in or reset your password.") from None
    return account


async def notify_guardian_of_claim(
    session: AsyncSession, ctx: AppContext, guardian: Account, ward_id_number: str, now: dt.datetime
) -> None:
    citizen = await session.get(Citizen, ward_id_number)
    name = citizen.full_name if citizen else ward_id_number[:3] + "…"
    await service.notify_account(session, ctx, guardian, Notice.dependent_claimed, now, name=name, time=local_time(now))


async def approve_claim(
    session: AsyncSession, ctx: AppContext, guardian: Account, ward_account_id: uuid.UUID, phone: str
) -> ClaimApproval:
    """A guardian, signed in to their own account, lets a dependent who reached 14 take over
    their account with this phone; the dependent then registers with it as at level 1."""
    now = ctx.clock.now()
    ward = await session.get(Account, ward_account_id)
    if ward is None or ward.guardian_account_id != guardian.id or ward.status == AccountStatus.revoked:
        raise AccountNotFound()
    citizen = await session.get(Citizen, ward.id_number)
    assert citizen is not None
    if age_on(citizen.date_of_birth, ctx.clock.today()) < SELF_REGISTRATION_MIN_AGE:
        raise ClaimNotAllowed("Dependents can take over their account from their 14th birthday.")
    if not _claimable(ward, SELF_REGISTRATION_MIN_AGE):
        raise ClaimNotAllowed("This account cannot be taken over now.")
    # One approval at a time: a new one replaces the earlier.
    await session.execute(
        update(ClaimApproval)
        .where(ClaimApproval.ward_account_id == ward.id, ClaimApproval.used_at.is_(None))
        .values(expires_at=now)
    )
    approval = ClaimApproval(
        id=uuid.uuid4(), ward_account_id=ward.id, guardian_account_id=guardian.id, phone=phone, created_at=now,
        expires_at=now + dt.timedelta(hours=ctx.settings.claim_approval_hours),
    )  # fmt: skip
    session.add(approval)
    audit.record(
        session, actor=service.citizen_actor(guardian), action="account.claim.approve", outcome="ok", now=now,
        target_id_number=ward.id_number, detail={"approval": str(approval.id)},
    )  # fmt: skip
    await session.commit()
    return approval


async def start_password_reset(session: AsyncSession, ctx: AppContext, body: PasswordResetStart) -> OtpChallenge:
    await _rate_limit(ctx, f"reset:phone:{body.phone}", f"reset:id:{body.id_number}")
    await _refuse_if_locked(session, ctx, _id_key(ctx, body.id_number), body.phone, ctx.clock.now())
    account = await service.current_account(session, body.id_number)
    reason = None
    if account is None:
        reason = "unknown_id"
    elif account.status != AccountStatus.active:
        reason = f"status_{account.status}"
    elif account.phone != body.phone:
        reason = "phone_mismatch"
    return await _send_challenge(
        session, ctx, OtpPurpose.password_reset, body.phone, body.id_number, reason,
        "Mã đặt lại mật khẩu tài khoản định danh điện tử: {code}. Hết hạn sau 5 phút. Không chia sẻ mã này.",
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
    account = await service.current_account(session, challenge.id_number)
    if account is None or account.status != AccountStatus.active:
        await session.rollback()
        raise OtpInvalid()
    await service.set_password(
        session, ctx, account, new_password, actor=service.citizen_actor(account), action="account.password.reset"
    )
