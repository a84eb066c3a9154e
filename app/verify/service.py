"""Relying-party verification: identity match (no data leaked) and e-KYC with consent."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, AccountStatus
from app.accounts.service import current_account, recipient
from app.clients.service import ClientInfo
from app.consent.models import Consent, ConsentKind
from app.core import audit
from app.core.audit import AccessRow, Actor, AuditRow, LegalBasis, disclose
from app.core.deps import AppContext
from app.core.errors import InvalidInput, NotFound, Problem
from app.core.jose import epoch, new_jti
from app.core.journal import GroupCommitJournal, RecordedReads
from app.core.metrics import VERIFY_CALLS
from app.core.notify import Notice, notify
from app.core.schemas import fold_name
from app.documents.service import document_status
from app.oidc.claims import ACR_LEVEL, pairwise_sub, registry_claims
from app.oidc.provider import Provider
from app.registry.models import Citizen
from app.verify.matching import PARTIAL_THRESHOLD, date_score, name_score
from app.verify.models import EkycRequest, EkycStatus
from app.verify.schemas import (
    AttributeResult,
    DocumentQuery,
    DocumentResult,
    EkycRequestIn,
    IdentityQuery,
    IdentityResult,
)

log = logging.getLogger("eid.verify")

EKYC_TTL = dt.timedelta(minutes=10)
EKYC_RESULT_TTL = dt.timedelta(minutes=5)
EKYC_FETCH_WINDOW = dt.timedelta(minutes=10)
# Identity checks by result, in the metrics (app/core/metrics.py): made once, a bank's hot path.
_IDENTITY_CHECKS = {r: VERIFY_CALLS.labels("identity", r) for r in ("match", "partial", "no_match")}

# e-KYC claim → the OIDC scope whose claims carry it.
_CLAIM_SCOPE = {
    "name": "profile",
    "family_name": "profile",
    "given_name": "profile",
    "birthdate": "profile",
    "gender": "profile",
    "address": "address",
    "phone_number": "phone",
    "national_id": "national_id",
}


@dataclass(frozen=True, slots=True)
class _Record:
    full_name: str
    date_of_birth: dt.date
    sex: str
    phone: str | None
    account_status: str | None
    account_level: int | None


@dataclass(frozen=True, slots=True)
class _Check:
    caller: ClientInfo
    query: IdentityQuery
    given: dict[str, Any]
    now: dt.datetime


_Outcome = tuple[str, dict[str, AttributeResult], _Record | None]
# The registry record of each ID number of a batch ($3): the citizen's current account is the
# one not revoked, else the latest revoked (re-issue leaves the revoked one beside the new,
# app/accounts/service.py current_account).
_READ_RECORDS = (
    "SELECT c.id_number, c.full_name, c.date_of_birth, c.sex, c.phone, a.status, a.level FROM citizens c"
    " LEFT JOIN LATERAL (SELECT status, level FROM accounts WHERE accounts.id_number = c.id_number"
    "  ORDER BY status = 'revoked', created_at DESC LIMIT 1) a ON true WHERE c.id_number = ANY($3::varchar[])"
)


def _decide(check: _Check, found: Any) -> tuple[_Outcome, AuditRow, AccessRow | None]:
    record = _Record(*found[1:]) if found is not None else None
    result, attributes = compare(check.query, check.given, record)
    return (result, attributes, record), *_identity_rows(check, result, record)


class IdentityChecks(RecordedReads[_Check, _Outcome]):
    """Concurrent identity checks on PostgreSQL: read and recorded in pipelined batches
    (app/core/journal.py RecordedReads), a bank's hot path (bench/token.py)."""

    def __init__(self, dsn: str, journal: GroupCommitJournal) -> None:
        super().__init__(
            "identity checks", dsn, journal, read_sql=_READ_RECORDS, key=lambda check: check.query.id_number,
            decide=_decide,
        )  # fmt: skip


def start_identity_checks(ctx: AppContext) -> None:
    """On PostgreSQL, when serving: identity checks are batched (an extension of the context)."""
    if ctx.raw_pool is not None and isinstance(ctx.journal, GroupCommitJournal):
        ctx.add_extension(IdentityChecks(ctx.raw_dsn, ctx.journal))


def _identity_rows(check: _Check, result: str, record: _Record | None) -> tuple[AuditRow, AccessRow | None]:
    caller, id_number = check.caller, check.query.id_number
    audit_row = AuditRow(
        check.now, "client", caller.client_id, "verify.identity", id_number, result, {"attributes": sorted(check.given)}
    )
    if record is None:
        return audit_row, None
    # The caller learns whether its data matches the registry: a disclosure, logged.
    categories = [f"match:{n}" for n in check.given]
    return audit_row, AccessRow(
        id_number, check.now, "client", caller.client_id, caller.name, "verify", categories, LegalBasis.law.value, None
    )


def compare(
    query: IdentityQuery, given: dict[str, Any], record: _Record | None
) -> tuple[str, dict[str, AttributeResult]]:
    """Per-attribute exact match (and score in partial mode), and the overall result."""
    partial = query.match == "partial"
    attributes: dict[str, AttributeResult] = {}
    for name, value in given.items():
        exact_match, score = False, 0.0
        if record is not None:
            if name == "full_name":
                exact_match, score = (
                    fold_name(value) == fold_name(record.full_name),
                    name_score(value, record.full_name),
                )
            elif name == "date_of_birth":
                exact_match, score = value == record.date_of_birth, date_score(value, record.date_of_birth)
            elif name == "sex":
                exact_match = value == record.sex
            elif name == "phone":
                exact_match = record.phone is not None and value == record.phone
            if name in ("sex", "phone"):
                score = 1.0 if exact_match else 0.0
        attributes[name] = AttributeResult(match=exact_match, score=score if partial else None)
    exact = record is not None and all(a.match for a in attributes.values())
    mean = sum(a.score if a.score is not None else float(a.match) for a in attributes.values()) / len(attributes)
    partial_hit = partial and record is not None and mean >= PARTIAL_THRESHOLD
    return ("match" if exact else "partial" if partial_hit else "no_match"), attributes


async def verify_identity(
    ctx: AppContext, caller: ClientInfo, query: IdentityQuery, now: dt.datetime
) -> IdentityResult:
    given = query.model_dump(exclude={"id_number", "match"}, exclude_none=True)
    if not given:
        raise InvalidInput("Send at least one attribute to compare besides the ID number.")
    check = _Check(caller, query, given, now)
    checks = ctx.extension(IdentityChecks)
    record: _Record | None
    if checks is not None:
        # PostgreSQL, a bank's hot path (bench/token.py): batched with concurrent calls.
        result, attributes, record = await checks.read(check)
    else:
        async with ctx.sessionmaker() as session:
            found = (
                await session.execute(
                    select(
                        Citizen.full_name, Citizen.date_of_birth, Citizen.sex, Citizen.phone,
                        Account.status, Account.level,
                    )
                    .outerjoin(Account, Account.id_number == Citizen.id_number)
                    .where(Citizen.id_number == query.id_number)
                    .order_by(Account.status == AccountStatus.revoked.value, Account.created_at.desc())
                    .limit(1)
                )
            ).first()  # fmt: skip
        record = _Record(*found) if found is not None else None
        result, attributes = compare(query, given, record)
        await ctx.journal.write(*_identity_rows(check, result, record))
    _IDENTITY_CHECKS[result].inc()
    if result != "match" or record is None:
        return IdentityResult(result=result, attributes=attributes, assurance_level=None, account_status=None)
    status = record.account_status or "none"
    level = record.account_level if record.account_status == AccountStatus.active else None
    return IdentityResult(result="match", attributes=attributes, assurance_level=level, account_status=status)


async def verify_document(
    session: AsyncSession, caller: ClientInfo, query: DocumentQuery, now: dt.datetime, today: dt.date
) -> DocumentResult:
    """A document's validity for a bank or agency; with a holder ID number, a document of
    someone else answers unknown (the check never tells whose a number is)."""
    status = await document_status(session, query.type.value, query.number, query.holder_id_number, today)
    audit.record(
        session,
        actor=Actor("client", caller.client_id),
        action="verify.document",
        outcome=status,
        now=now,
        target_id_number=query.holder_id_number,
        detail={"type": query.type.value},
    )
    if query.holder_id_number and status != "unknown":
        disclose(
            session,
            id_number=query.holder_id_number,
            recipient_type="client",
            recipient_id=caller.client_id,
            recipient_name=caller.name,
            channel="verify",
            categories=[f"document_status:{query.type.value}"],
            legal_basis=LegalBasis.law,
            consent_id=None,
            now=now,
        )
    await session.commit()
    VERIFY_CALLS.labels("document", status).inc()
    return DocumentResult(status=status)


class EkycNotFound(NotFound):
    slug, title = "ekyc-not-found", "No such e-KYC request"


class EkycPending(Problem):
    status, slug, title = 409, "ekyc-pending", "The citizen has not answered yet"


class EkycDenied(Problem):
    status, slug, title = 403, "ekyc-denied", "The citizen denied the request"


class EkycExpired(Problem):
    status, slug, title = 410, "ekyc-expired", "The request expired before the citizen approved it"


def effective_status(req: EkycRequest, now: dt.datetime) -> Literal["pending", "approved", "denied", "expired"]:
    if req.status == EkycStatus.pending and req.expires_at <= now:
        return "expired"
    if (
        req.status == EkycStatus.approved
        and req.decided_at is not None
        and req.decided_at + EKYC_RESULT_TTL < now
        and req.expires_at <= now
    ):
        return "expired"
    if req.status == EkycStatus.approved:
        return "approved"
    return "denied" if req.status == EkycStatus.denied else "pending"


async def start_ekyc(session: AsyncSession, ctx: AppContext, caller: ClientInfo, body: EkycRequestIn) -> EkycRequest:
    """A bank's request, waiting for the citizen's answer. The citizen is told (SMS, and their
    notifications) with the bank's name and the binding message to compare; a request for an
    unknown or inactive citizen is stored and answered alike, and tells nobody anything."""
    now = ctx.clock.now()
    req = EkycRequest(
        id=uuid.uuid4(), client_id=caller.client_id, id_number=body.id_number, claims=sorted(set(body.claims)), purpose=body.purpose,
        binding_message=body.binding_message, status=EkycStatus.pending.value, created_at=now, expires_at=now + EKYC_TTL,
    )  # fmt: skip
    session.add(req)
    audit.record(
        session,
        actor=Actor("client", caller.client_id),
        action="ekyc.request",
        outcome="ok",
        now=now,
        target_id_number=body.id_number,
        detail={"request": str(req.id), "claims": req.claims},
    )
    account = await current_account(session, body.id_number)
    if account is not None and account.status == AccountStatus.active and account.password_hash is not None:
        await notify(
            session, ctx.keyring, to=recipient(account), kind=Notice.ekyc_request, now=now,
            params={"bank": caller.name, "binding": body.binding_message or "—"},
            sms_per_hour=ctx.settings.notify_sms_per_hour,
        )  # fmt: skip
    await session.commit()
    return req


async def get_own_request(session: AsyncSession, caller: ClientInfo, request_id: uuid.UUID) -> EkycRequest:
    req = await session.get(EkycRequest, request_id, populate_existing=True)
    if req is None or req.client_id != caller.client_id:
        raise EkycNotFound()
    return req


async def pending_for_citizen(session: AsyncSession, account: Account, now: dt.datetime) -> list[EkycRequest]:
    stmt = (
        select(EkycRequest)
        .where(
            EkycRequest.id_number == account.id_number,
            EkycRequest.status == EkycStatus.pending.value,
            EkycRequest.expires_at > now,
        )
        .order_by(EkycRequest.created_at.desc())
    )
    return list((await session.scalars(stmt)).all())


async def decide(
    session: AsyncSession, account: Account, request_id: uuid.UUID, approve: bool, now: dt.datetime
) -> EkycRequest:
    req = await session.get(EkycRequest, request_id)
    if req is None or req.id_number != account.id_number:
        raise EkycNotFound()
    consent_id = uuid.uuid4() if approve else None
    # Conditional update: a request is answered once, and only while it is pending and fresh.
    result = await session.execute(
        update(EkycRequest)
        .where(
            EkycRequest.id == request_id, EkycRequest.status == EkycStatus.pending.value, EkycRequest.expires_at > now
        )
        .values(
            status=(EkycStatus.approved if approve else EkycStatus.denied).value, decided_at=now, consent_id=consent_id
        )
        .returning(EkycRequest.id)
    )
    if result.first() is None:
        await session.rollback()
        raise EkycExpired("The request is no longer pending.")
    if approve:
        assert consent_id is not None
        session.add(
            Consent(
                id=consent_id,
                account_id=account.id,
                client_id=req.client_id,
                kind=ConsentKind.ekyc.value,
                scope="ekyc",
                claims=req.claims,
                purpose=req.purpose,
                granted_at=now,
            )
        )
    audit.record(
        session,
        actor=Actor("citizen", str(account.id)),
        action="ekyc.approve" if approve else "ekyc.deny",
        outcome="ok",
        now=now,
        target_id_number=account.id_number,
        detail={"request": str(request_id), "client": req.client_id},
    )
    await session.commit()
    refreshed = await session.get(EkycRequest, request_id, populate_existing=True)
    assert refreshed is not None
    return refreshed


async def ekyc_result(
    provider: Provider, session: AsyncSession, caller: ClientInfo, request_id: uuid.UUID, now: dt.datetime
) -> str:
    """The signed result: exactly the approved claims, bound to this request and client."""
    req = await get_own_request(session, caller, request_id)
    status = effective_status(req, now)
    if status == "pending":
        raise EkycPending(headers={"Retry-After": "5"})
    if status == "denied":
        raise EkycDenied()
    if status == "expired":
        raise EkycExpired()
    consent = await session.get(Consent, req.consent_id) if req.consent_id else None
    if consent is None or consent.revoked_at is not None:
        raise EkycDenied("The citizen withdrew the consent.")
    row = (
        await session.execute(
            select(Citizen, Account)
            .join(Account, Account.id_number == Citizen.id_number)
            .where(Citizen.id_number == req.id_number, Account.status != AccountStatus.revoked.value)
        )
    ).first()
    if row is None or row.Account.status != AccountStatus.active:
        raise EkycDenied("The account cannot share data now.")
    citizen, account = row.Citizen, row.Account
    scopes = {_CLAIM_SCOPE[c] for c in req.claims if c in _CLAIM_SCOPE}
    available = registry_claims(
        scopes,
        full_name=citizen.full_name,
        date_of_birth=citizen.date_of_birth,
        sex=citizen.sex,
        residence=citizen.residence,
        updated_at=citizen.updated_at,
        phone=account.phone,
        email=None,
        id_number=citizen.id_number,
        national_id_allowed="national_id" in req.claims,
    )
    disclosed: dict[str, Any] = {c: available[c] for c in req.claims if c in available}
    if "assurance_level" in req.claims:
        disclosed["assurance_level"] = ACR_LEVEL[account.level]
    claims = {
        "iss": provider.issuer, "aud": caller.client_id, "sub": pairwise_sub(provider.ctx.keyring, caller.sector_identifier, str(account.id)),
        "iat": epoch(now), "exp": epoch(now) + int(EKYC_RESULT_TTL.total_seconds()), "jti": new_jti(),
        "ekyc_request": str(req.id), "purpose": req.purpose, "claims": disclosed,
    }  # fmt: skip
    token = await provider.keys.sign(claims, "ES256", now, typ="ekyc+jwt")
    disclose(
        session,
        id_number=citizen.id_number,
        recipient_type="client",
        recipient_id=caller.client_id,
        recipient_name=caller.name,
        channel="ekyc",
        categories=sorted(disclosed),
        legal_basis=LegalBasis.consent,
        consent_id=consent.id,
        now=now,
    )
    audit.record(
        session,
        actor=Actor("client", caller.client_id),
        action="ekyc.result",
        outcome="ok",
        now=now,
        target_id_number=citizen.id_number,
        detail={"request": str(req.id), "claims": sorted(disclosed)},
    )
    await session.commit()
    return token
