from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from app.accounts import assisted, registration, service
from app.accounts.auth import AccountsAdmin, AccountsOfficer, ApprovingOfficer, CurrentCitizen
from app.accounts.errors import AccountNotFound
from app.accounts.models import Account
from app.accounts.schemas import (
    AccountOut,
    AssistedRegistrationIn,
    AssistedRegistrationOut,
    CardApplicationIn,
    ChallengeOut,
    ClaimApprovalIn,
    ClaimApprovalOut,
    Decision,
    DependentOut,
    NotificationOut,
    OtpVerify,
    PasswordChange,
    PasswordResetComplete,
    PasswordResetStart,
    PhoneChange,
    ProfileOut,
    RegistrationDone,
    RegistrationStart,
    Rejection,
    SessionOut,
    SignIn,
    StatusChange,
)
from app.core import notify
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.http import json_body_only
from app.core.schemas import IdNumber
from app.registry.models import Citizen

public = APIRouter(prefix="/accounts", tags=["accounts"], dependencies=[json_body_only])
me = APIRouter(prefix="/me", tags=["me"])
officer = APIRouter(tags=["officer"], dependencies=[json_body_only])

# Every caller gets this answer, whatever the registry holds (app/accounts/registration.py).
REGISTRATION_SENT = (
    "If the details match the population registry and the phone number is linked to you (in the registry, "
    "by your mobile operator, or by your guardian's approval), a 6-digit code was sent by SMS. It expires in "
    "5 minutes. If no code arrives, register in person at a police office."
)


@public.post("/registrations", status_code=202, response_model=ChallengeOut, summary="Start level-1 self-registration")
async def start_registration(body: RegistrationStart, session: SessionDep, ctx: CtxDep) -> ChallengeOut:
    challenge = await registration.start_registration(session, ctx, body)
    return ChallengeOut(id=challenge.id, expires_at=challenge.expires_at, message=REGISTRATION_SENT)


@public.post("/registrations/{registration_id}/verify", response_model=RegistrationDone, summary="Confirm the SMS code")
async def verify_registration(
    registration_id: uuid.UUID, body: OtpVerify, session: SessionDep, ctx: CtxDep
) -> RegistrationDone:
    account = await registration.verify_registration(session, ctx, registration_id, body.code)
    return RegistrationDone(
        level=account.level,
        message="Your account is active. The initial password was sent by SMS; change it at first sign-in.",
    )


@public.post("/password", status_code=204, summary="Change the password (also the forced first change)")
async def change_password(body: PasswordChange, session: SessionDep, ctx: CtxDep) -> Response:
    await service.change_password(
        session, ctx, id_number=body.id_number, current=body.current_password, new=body.new_password
    )
    return Response(status_code=204)


@public.post(
    "/password-resets", status_code=202, response_model=ChallengeOut, summary="Start a password reset by SMS code"
)
async def start_password_reset(body: PasswordResetStart, session: SessionDep, ctx: CtxDep) -> ChallengeOut:
    challenge = await registration.start_password_reset(session, ctx, body)
    return ChallengeOut(
        id=challenge.id,
        expires_at=challenge.expires_at,
        message="If an active account has this ID number and phone, a 6-digit code was sent by SMS.",
    )


@public.post("/password-resets/{reset_id}/complete", status_code=204, summary="Set a new password with the SMS code")
async def complete_password_reset(
    reset_id: uuid.UUID, body: PasswordResetComplete, session: SessionDep, ctx: CtxDep
) -> Response:
    await registration.complete_password_reset(session, ctx, reset_id, body.code, body.new_password)
    return Response(status_code=204)


@public.post("/sessions", status_code=201, response_model=SessionOut, summary="Sign in with ID number and password")
async def sign_in(body: SignIn, session: SessionDep, ctx: CtxDep) -> SessionOut:
    token, row = await service.sign_in(session, ctx, id_number=body.id_number, password=body.password)
    return SessionOut(access_token=token, expires_in=int((row.expires_at - row.auth_time).total_seconds()))


@public.delete("/sessions/current", status_code=204, summary="Sign out")
async def sign_out(citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep) -> Response:
    assert citizen.token_hash is not None  # a citizen principal is a session
    await service.sign_out(session, ctx, citizen.token_hash)
    return Response(status_code=204)


@me.get("", response_model=ProfileOut, summary="The signed-in citizen's account and registry record")
async def my_profile(citizen: CurrentCitizen, session: SessionDep) -> ProfileOut:
    account = citizen.entity
    record = await session.get(Citizen, account.id_number)
    assert record is not None  # accounts.id_number references citizens
    return ProfileOut(
        account_id=account.id, id_number=account.id_number, level=account.level, status=account.status,
        phone=account.phone, email=account.email, full_name=record.full_name, date_of_birth=record.date_of_birth,
        sex=record.sex, residence=record.residence,
    )  # fmt: skip


@me.get("/dependents", response_model=list[DependentOut], summary="Dependents under 14 the citizen acts for")
async def my_dependents(citizen: CurrentCitizen, session: SessionDep) -> list[DependentOut]:
    return [
        DependentOut(account_id=a.id, id_number=a.id_number, full_name=c.full_name, date_of_birth=c.date_of_birth)
        for a, c in await service.dependents_of(session, citizen.entity)
    ]


@me.post(
    "/dependents/{account_id}/claim-approval",
    status_code=201,
    response_model=ClaimApprovalOut,
    summary="Let a dependent who reached 14 take over their account with this phone",
)
async def approve_claim(
    account_id: uuid.UUID, body: ClaimApprovalIn, citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep
) -> ClaimApprovalOut:
    approval = await registration.approve_claim(session, ctx, citizen.entity, account_id, body.phone)
    return ClaimApprovalOut(id=approval.id, phone=approval.phone, expires_at=approval.expires_at)


@me.get("/notifications", response_model=list[NotificationOut], summary="Recent security notifications, newest first")
async def my_notifications(
    citizen: CurrentCitizen, session: SessionDep, lang: Annotated[Literal["vi", "en"], Query()] = "vi"
) -> list[NotificationOut]:
    return [
        NotificationOut(kind=n.kind, message=notify.render(n.kind, n.params, lang), created_at=n.created_at)
        for n in await notify.recent(session, citizen.entity.id)
    ]


# --- officers ---------------------------------------------------------------------------------

IdNumberPath = Annotated[IdNumber, Path(description="The 12-digit personal ID number")]


@officer.get("/accounts/by-id-number/{id_number}", response_model=AccountOut, summary="Find a citizen's account")
async def account_by_id_number(id_number: IdNumberPath, staff: AccountsOfficer, session: SessionDep) -> Account:
    account = await service.current_account(session, id_number)
    if account is None:
        raise AccountNotFound()
    return account


@officer.post("/accounts/{account_id}/lock", response_model=AccountOut, summary="Lock an account")
async def lock(
    account_id: uuid.UUID, body: StatusChange, staff: AccountsOfficer, session: SessionDep, ctx: CtxDep
) -> Account:
    return await service.change_status(session, ctx, account_id, "lock", actor=staff.actor, reason=body.reason)


@officer.post(
    "/accounts/{account_id}/unlock", response_model=AccountOut, summary="Unlock an account (also ends a lockout)"
)
async def unlock(
    account_id: uuid.UUID, body: StatusChange, staff: AccountsOfficer, session: SessionDep, ctx: CtxDep
) -> Account:
    return await service.change_status(session, ctx, account_id, "unlock", actor=staff.actor, reason=body.reason)


@officer.put("/accounts/{account_id}/phone", response_model=AccountOut, summary="Record a new phone (in person)")
async def change_phone(
    account_id: uuid.UUID, body: PhoneChange, staff: AccountsOfficer, session: SessionDep, ctx: CtxDep
) -> Account:
    return await service.change_phone(session, ctx, account_id, body.phone, actor=staff.actor, reason=body.reason)


@officer.post("/accounts/{account_id}/revoke", response_model=AccountOut, summary="Revoke an account (terminal)")
async def revoke(
    account_id: uuid.UUID, body: StatusChange, staff: AccountsAdmin, session: SessionDep, ctx: CtxDep
) -> Account:
    return await service.change_status(session, ctx, account_id, "revoke", actor=staff.actor, reason=body.reason)


@officer.post(
    "/officer-registrations",
    status_code=201,
    response_model=AssistedRegistrationOut,
    summary="Level 2, step 1: contact details, dependents, documents",
)
async def submit(
    body: AssistedRegistrationIn, staff: AccountsOfficer, session: SessionDep, ctx: CtxDep
) -> AssistedRegistrationOut:
    reg = await assisted.submit(session, ctx, body, actor=staff.actor)
    return await assisted.describe(session, reg)


@officer.get(
    "/officer-registrations/{registration_id}",
    response_model=AssistedRegistrationOut,
    summary="Read an officer-assisted registration",
)
async def get_registration(
    registration_id: uuid.UUID, staff: AccountsOfficer, session: SessionDep
) -> AssistedRegistrationOut:
    return await assisted.get_registration(session, registration_id)


@officer.put(
    "/officer-registrations/{registration_id}/card-application",
    response_model=AssistedRegistrationOut,
    summary="Level 2, step 2: attach the chip ID card application",
)
async def attach_card(
    registration_id: uuid.UUID, body: CardApplicationIn, staff: AccountsOfficer, session: SessionDep, ctx: CtxDep
) -> AssistedRegistrationOut:
    reg = await assisted.attach_card_application(session, ctx, registration_id, body, actor=staff.actor)
    return await assisted.describe(session, reg)


@officer.post(
    "/officer-registrations/{registration_id}/approve",
    response_model=AssistedRegistrationOut,
    summary="Level 2, step 3: approve",
)
async def approve(
    registration_id: uuid.UUID, body: Decision, staff: ApprovingOfficer, session: SessionDep, ctx: CtxDep
) -> AssistedRegistrationOut:
    reg = await assisted.approve(session, ctx, registration_id, actor=staff.actor, reason=body.reason)
    return await assisted.describe(session, reg)


@officer.post(
    "/officer-registrations/{registration_id}/reject",
    response_model=AssistedRegistrationOut,
    summary="Level 2, step 3: reject with a reason",
)
async def reject(
    registration_id: uuid.UUID, body: Rejection, staff: ApprovingOfficer, session: SessionDep, ctx: CtxDep
) -> AssistedRegistrationOut:
    reg = await assisted.reject(session, ctx, registration_id, body.reason, actor=staff.actor)
    return await assisted.describe(session, reg)
