"""Level-2 registration at a police office, in three steps (each one transaction and one state
transition, so a crash between steps loses nothing and a repeated step gets 409):

1. ``submitted``: phone, email, dependents under 14 (registry wards of the citizen), documents.
2. ``card_attached``: the chip ID card application with a biometric enrollment reference.
3. ``approved`` (account created or upgraded to level 2, dependents linked, password sent by
   SMS) or ``rejected`` with a reason.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.errors import (
    AssistedRegistrationNotFound,
    AssistedRegistrationRefused,
    StepOutOfOrder,
)
from app.accounts.models import Account, AccountStatus, DeclaredDocument, OfficerRegistration, OfficerRegistrationStatus
from app.accounts.registration import SELF_REGISTRATION_MIN_AGE, notify_guardian_of_claim
from app.accounts.schemas import AssistedRegistrationIn, AssistedRegistrationOut, CardApplicationIn, DeclaredDocumentOut
from app.accounts.service import current_account, end_access, recipient
from app.core import audit
from app.core.audit import Actor
from app.core.deps import AppContext
from app.core.notify import Notice, local_time, notify
from app.core.passwords import generate_initial_password
from app.core.schemas import fold_name
from app.core.sms import queue_sms
from app.registry.models import Citizen, GuardianLink
from app.registry.service import CitizenNotFound, age_on

S = OfficerRegistrationStatus


async def _load(session: AsyncSession, registration_id: uuid.UUID) -> OfficerRegistration:
    reg = await session.get(OfficerRegistration, registration_id, populate_existing=True)
    if reg is None:
        raise AssistedRegistrationNotFound()
    return reg


async def describe(session: AsyncSession, reg: OfficerRegistration) -> AssistedRegistrationOut:
    docs = (
        await session.scalars(
            select(DeclaredDocument)
            .where(DeclaredDocument.registration_id == reg.id)
            .order_by(DeclaredDocument.doc_type, DeclaredDocument.number)
        )
    ).all()
    return AssistedRegistrationOut(
        id=reg.id,
        id_number=reg.id_number,
        status=reg.status,
        phone=reg.phone,
        email=reg.email,
        dependents=reg.dependents,
        documents=[DeclaredDocumentOut(type=d.doc_type, number=d.number, status=d.status) for d in docs],
        card_application=reg.card_application,
        reason=reg.reason,
        account_id=reg.account_id,
        created_at=reg.created_at,
        updated_at=reg.updated_at,
    )


async def get_registration(session: AsyncSession, registration_id: uuid.UUID) -> AssistedRegistrationOut:
    return await describe(session, await _load(session, registration_id))


async def submit(
    session: AsyncSession, ctx: AppContext, body: AssistedRegistrationIn, *, actor: Actor
) -> OfficerRegistration:
    """Step 1."""
    now = ctx.clock.now()
    today = ctx.clock.today()
    citizen = await session.get(Citizen, body.id_number)
    if citizen is None:
        raise CitizenNotFound()
    if age_on(citizen.date_of_birth, today) < SELF_REGISTRATION_MIN_AGE:
        raise AssistedRegistrationRefused("Citizens under 14 are registered as dependents of a parent or guardian.")
    # A revoked account is re-issued through these three steps: in-person proofing, then a new
    # account with new credentials at approval; the revoked one and its audit trail stay.
    account = await current_account(session, body.id_number)
    reissue = account is not None and account.status == AccountStatus.revoked
    problems = await _dependent_problems(session, body.id_number, body.dependents, today)
    if problems:
        raise AssistedRegistrationRefused("Some dependents cannot be added.", dependents=problems)

    reg = OfficerRegistration(
        id=uuid.uuid4(),
        id_number=body.id_number,
        status=S.submitted.value,
        phone=body.phone,
        email=body.email,
        dependents=sorted(set(body.dependents)),
        submitted_by=actor.label,
        created_at=now,
        updated_at=now,
    )
    session.add(reg)
    try:
        await session.flush()  # the registration row first: declared documents reference it
    except IntegrityError:
        await session.rollback()
        raise StepOutOfOrder("This citizen already has an open registration; finish or reject it first.") from None
    for doc in {(d.type.value, d.number) for d in body.documents}:
        session.add(
            DeclaredDocument(
                registration_id=reg.id, id_number=body.id_number, doc_type=doc[0], number=doc[1], status="declared"
            )
        )
    audit.record(
        session,
        actor=actor,
        action="account.assisted.submit",
        outcome="ok",
        now=now,
        target_id_number=body.id_number,
        detail={
            "registration": str(reg.id), "dependents": len(reg.dependents), "documents": len(body.documents),
            "reissue": reissue,
        },
    )  # fmt: skip
    try:
        await session.commit()
    except IntegrityError:
        # The partial unique index allows one open registration per citizen.
        await session.rollback()
        raise StepOutOfOrder("This citizen already has an open registration; finish or reject it first.") from None
    return reg


async def _dependent_problems(
    session: AsyncSession, guardian_id: str, dependents: list[str], today: dt.date
) -> list[dict[str, str]]:
    if not dependents:
        return []
    wards = set(
        (
            await session.scalars(
                select(GuardianLink.ward_id_number).where(
                    GuardianLink.guardian_id_number == guardian_id, GuardianLink.ward_id_number.in_(dependents)
                )
            )
        ).all()
    )
    births = dict(
        (
            await session.execute(
                select(Citizen.id_number, Citizen.date_of_birth).where(Citizen.id_number.in_(dependents))
            )
        ).all()
    )
    problems = []
    for dep in sorted(set(dependents)):
        if dep not in wards:
            problems.append({"id_number": dep, "problem": "not a registry ward of this citizen"})
        elif dep not in births or age_on(births[dep], today) >= SELF_REGISTRATION_MIN_AGE:
            problems.append({"id_number": dep, "problem": "is 14 or older: registers on their own"})
    return problems


async def _transition(session: AsyncSession, reg_id: uuid.UUID, expected: set[S], **values: object) -> None:
    """Move to the next state only from an expected one (conditional update: race-free)."""
    result = await session.execute(
        update(OfficerRegistration)
        .where(OfficerRegistration.id == reg_id, OfficerRegistration.status.in_([s.value for s in expected]))
        .values(**values)
        .returning(OfficerRegistration.id)
    )
    if result.first() is None:
        await session.rollback()
        reg = await _load(session, reg_id)
        raise StepOutOfOrder(f"The registration is {reg.status}.", current_status=reg.status)


async def attach_card_application(
    session: AsyncSession, ctx: AppContext, reg_id: uuid.UUID, body: CardApplicationIn, *, actor: Actor
) -> OfficerRegistration:
    """Step 2. The card application must describe the same person as the registry record."""
    now = ctx.clock.now()
    reg = await _load(session, reg_id)
    if reg.status != S.submitted:
        raise StepOutOfOrder(f"The registration is {reg.status}.", current_status=reg.status)
    citizen = await session.get(Citizen, reg.id_number)
    assert citizen is not None
    mismatches = []
    if fold_name(citizen.full_name) != fold_name(body.full_name):
        mismatches.append("full_name")
    if citizen.date_of_birth != body.date_of_birth:
        mismatches.append("date_of_birth")
    if mismatches:
        raise AssistedRegistrationRefused("The card application differs from the registry record.", fields=mismatches)
    await _transition(
        session,
        reg_id,
        {S.submitted},
        status=S.card_attached.value,
        card_application=body.model_dump(mode="json"),
        card_attached_by=actor.label,
        updated_at=now,
    )
    audit.record(
        session,
        actor=actor,
        action="account.assisted.card",
        outcome="ok",
        now=now,
        target_id_number=reg.id_number,
        detail={"registration": str(reg_id)},
    )
    await session.commit()
    return await _load(session, reg_id)


async def reject(
    session: AsyncSession, ctx: AppContext, reg_id: uuid.UUID, reason: str, *, actor: Actor
) -> OfficerRegistration:
    now = ctx.clock.now()
    reg = await _load(session, reg_id)
    await _transition(
        session,
        reg_id,
        {S.submitted, S.card_attached},
        status=S.rejected.value,
        reason=reason,
        decided_by=actor.label,
        updated_at=now,
    )
    audit.record(
        session,
        actor=actor,
        action="account.assisted.reject",
        outcome="ok",
        now=now,
        target_id_number=reg.id_number,
        detail={"registration": str(reg_id), "reason": reason},
    )
    await session.commit()
    return await _load(session, reg_id)


async def approve(
    session: AsyncSession, ctx: AppContext, reg_id: uuid.UUID, *, actor: Actor, reason: str | None
) -> OfficerRegistration:
    """Step 3: create or upgrade the account to level 2, link dependents, send the password."""
    now = ctx.clock.now()
    reg = await _load(session, reg_id)
    if reg.status != S.card_attached:
        raise StepOutOfOrder(f"The registration is {reg.status}.", current_status=reg.status)
    # Checked again at approval: the registry may have changed since step 1.
    problems = await _dependent_problems(session, reg.id_number, reg.dependents, ctx.clock.today())
    if problems:
        raise AssistedRegistrationRefused("Some dependents can no longer be added.", dependents=problems)
    password_hash, password = None, None
    account = await current_account(session, reg.id_number)
    revoked: Account | None = None
    if account is not None and account.status == AccountStatus.revoked:
        revoked, account = account, None  # re-issue: a new account beside the revoked one
    guardian = (
        await session.get(Account, account.guardian_account_id) if account and account.guardian_account_id else None
    )
    if account is None or account.password_hash is None:
        password = generate_initial_password()
        password_hash = await ctx.hasher.hash(password)

    await _transition(
        session,
        reg_id,
        {S.card_attached},
        status=S.approved.value,
        decided_by=actor.label,
        reason=reason,
        updated_at=now,
    )
    created = account is None
    if account is None:
        account = Account(
            id=uuid.uuid4(), id_number=reg.id_number, status=AccountStatus.active.value, created_at=now, failed_logins=0,
            replaces_account_id=revoked.id if revoked is not None else None,
        )  # fmt: skip
        session.add(account)
    account.level = 2
    account.phone = reg.phone
    account.email = reg.email
    account.updated_at = now
    account.guardian_account_id = None
    if password_hash is not None:
        account.password_hash = password_hash
        account.must_change_password = True
        if account.status == AccountStatus.pending:
            account.status = AccountStatus.active.value
    await session.flush()
    await session.execute(
        update(OfficerRegistration).where(OfficerRegistration.id == reg_id).values(account_id=account.id)
    )
    linked = await _link_dependents(session, account, reg.dependents, now)
    if guardian is not None:  # a dependent who reached 14, taken over in person
        await end_access(session, ctx, account.id, reason="claimed", now=now)
        await notify_guardian_of_claim(session, ctx, guardian, reg.id_number, now)
    if revoked is not None:
        await notify(
            session, ctx.keyring, to=recipient(account), kind=Notice.account_reissued, params={"time": local_time(now)},
            now=now, sms_per_hour=ctx.settings.notify_sms_per_hour,
        )  # fmt: skip
    if password is not None:
        queue_sms(
            session,
            ctx.keyring,
            phone=reg.phone,
            purpose="initial_password",
            now=now,
            text=f"Tài khoản định danh điện tử mức 2 đã được cấp. Mật khẩu tạm thời: {password} . Đổi mật khẩu khi đăng nhập lần đầu.",
        )
    else:
        queue_sms(
            session,
            ctx.keyring,
            phone=reg.phone,
            purpose="level_upgrade",
            now=now,
            text="Tài khoản định danh điện tử của bạn đã được nâng lên mức 2.",
        )
    audit.record(
        session,
        actor=actor,
        action="account.reissue" if revoked is not None else "account.assisted.approve",
        outcome="ok",
        now=now,
        target_id_number=reg.id_number,
        detail={
            "registration": str(reg_id), "created": created, "dependents_linked": linked,
            **({"replaces": str(revoked.id)} if revoked is not None else {}),
        },
    )  # fmt: skip
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise StepOutOfOrder("The account changed during approval; try again.") from None
    return await _load(session, reg_id)


async def _link_dependents(session: AsyncSession, guardian: Account, dependents: list[str], now: dt.datetime) -> int:
    existing = (
        {
            a.id_number: a
            for a in (
                await session.scalars(
                    select(Account).where(
                        Account.id_number.in_(dependents), Account.status != AccountStatus.revoked.value
                    )
                )
            ).all()
        }
        if dependents
        else {}
    )
    linked = 0
    for dep in dependents:
        account = existing.get(dep)
        if account is None:
            # A dependent's account has no password: the guardian acts for the minor until
            # the minor claims it from their 14th birthday.
            session.add(
                Account(
                    id=uuid.uuid4(),
                    id_number=dep,
                    status=AccountStatus.active.value,
                    level=guardian.level,
                    guardian_account_id=guardian.id,
                    must_change_password=False,
                    failed_logins=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            linked += 1
        elif account.guardian_account_id is None and account.password_hash is None:
            account.guardian_account_id = guardian.id
            account.updated_at = now
            linked += 1
        # Already under another guardian: left as it is (one guardian account per minor).
    return linked
