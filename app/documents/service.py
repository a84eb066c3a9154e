"""Integrated documents: agencies issue and maintain them, citizens see and present them,
verifiers ask for their status. No HTTP here; writes are audited in their own transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal, NoReturn

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, AccountStatus, DeclaredDocument
from app.accounts.schemas import DocumentType
from app.clients.errors import ClientNotFound
from app.clients.models import Client
from app.clients.service import client_cache
from app.core import audit
from app.core.audit import Actor, LegalBasis, disclose
from app.core.deps import AppContext
from app.documents import idempotency
from app.documents.errors import (
    DependentNotFound,
    DocumentExists,
    DocumentHolderUnknown,
    DocumentInvalid,
    DocumentNotFound,
    DocumentNotPresentable,
    DocumentStateConflict,
    DocumentTypeNotAllowed,
    NotAnAgency,
)
from app.documents.idempotency import Answer, IdempotentRequest
from app.documents.models import DocumentIssuerType, DocumentStatus, IntegratedDocument
from app.documents.presentation import PRESENTATION_TTL, PRESENTATION_TYP, presentation_claims
from app.documents.rules import VerifiedStatus, category_problem, effective_status, normalise_number, number_is_valid
from app.documents.schemas import (
    DocumentIn,
    DocumentOut,
    DocumentStatusOut,
    DocumentUpdate,
    IssuerOut,
    MyDocumentOut,
    PresentationOut,
)
from app.registry.models import Citizen

StatusAction = Literal["suspend", "reinstate", "revoke"]

# Which stored statuses each action leaves from, and where it goes.
TRANSITIONS: dict[StatusAction, tuple[frozenset[str], DocumentStatus]] = {
    "suspend": (frozenset({DocumentStatus.valid}), DocumentStatus.suspended),
    "reinstate": (frozenset({DocumentStatus.suspended}), DocumentStatus.valid),
    "revoke": (frozenset({DocumentStatus.valid, DocumentStatus.suspended}), DocumentStatus.revoked),
}


def describe(doc: IntegratedDocument, today: dt.date) -> DocumentOut:
    return DocumentOut(
        id=doc.id, type=doc.doc_type, number=doc.number, holder_id_number=doc.holder_id_number,
        category=doc.category, issued_on=doc.issued_on, expires_on=doc.expires_on, status=doc.status,
        effective_status=effective_status(doc.status, doc.expires_on, today).value, status_reason=doc.status_reason,
        issuer_client_id=doc.issuer_client_id, created_at=doc.created_at, updated_at=doc.updated_at,
    )  # fmt: skip


# --- which agency issues what ----------------------------------------------------------------


async def issuer_types(session: AsyncSession, client_id: str) -> list[str]:
    rows = await session.scalars(
        select(DocumentIssuerType.doc_type)
        .where(DocumentIssuerType.client_id == client_id)
        .order_by(DocumentIssuerType.doc_type)
    )
    return list(rows.all())


async def set_issuer_types(
    session: AsyncSession, client_id: str, types: list[DocumentType], *, actor: Actor, now: dt.datetime
) -> list[str]:
    """Replace the document types an agency may issue (documents already issued stay)."""
    client = await session.get(Client, client_id)
    if client is None:
        raise ClientNotFound()
    wanted = sorted({t.value for t in types})
    if wanted and (client.kind != "agency" or "documents:issue" not in client.scopes):
        raise NotAnAgency("Register the client as kind agency with the documents:issue scope first.")
    before = await issuer_types(session, client_id)
    await session.execute(delete(DocumentIssuerType).where(DocumentIssuerType.client_id == client_id))
    for doc_type in wanted:
        session.add(DocumentIssuerType(client_id=client_id, doc_type=doc_type, granted_at=now, granted_by=actor.label))
    audit.record(
        session, actor=actor, action="documents.issuer_types", outcome="ok", now=now, target=client_id,
        detail={"before": before, "after": wanted},
    )  # fmt: skip
    await session.commit()
    return wanted


async def _may_issue(session: AsyncSession, client_id: str, doc_type: str) -> bool:
    found = await session.scalar(
        select(DocumentIssuerType.doc_type).where(
            DocumentIssuerType.client_id == client_id, DocumentIssuerType.doc_type == doc_type
        )
    )
    return found is not None


async def _refuse_type(session: AsyncSession, client_id: str, action: str, doc_type: str, now: dt.datetime) -> NoReturn:
    """A write outside the agency's remit: recorded (in its own transaction), then refused."""
    await session.rollback()
    audit.record(
        session, actor=Actor("client", client_id), action=action, outcome="type_not_allowed", now=now,
        target=client_id, detail={"type": doc_type},
    )  # fmt: skip
    await session.commit()
    raise DocumentTypeNotAllowed(f"This agency may not issue {doc_type} documents.", document_type=doc_type)


# --- agency writes ----------------------------------------------------------------------------


async def create_document(
    session: AsyncSession, ctx: AppContext, client_id: str, body: DocumentIn, *, key: str
) -> Answer:
    now, today = ctx.clock.now(), ctx.clock.today()
    request = IdempotentRequest(client_id, key, idempotency.fingerprint("create", body.model_dump(mode="json")))
    if (stored := await idempotency.replay(session, request, now)) is not None:
        return stored
    if not await _may_issue(session, client_id, body.type.value):
        await _refuse_type(session, client_id, "document.create", body.type.value, now)
    if body.issued_on > today:
        raise DocumentInvalid("issued_on is in the future.")
    if await session.get(Citizen, body.holder_id_number) is None:
        raise DocumentHolderUnknown("No registry record has this holder ID number.")
    exists = await session.scalar(
        select(IntegratedDocument.id).where(
            IntegratedDocument.doc_type == body.type.value, IntegratedDocument.number == body.number
        )
    )
    if exists is not None:
        # Perhaps this very request, committed meanwhile by a concurrent retry.
        if (stored := await idempotency.replay(session, request, now)) is not None:
            return stored
        raise DocumentExists("Another document has this type and number; update it instead.")
    doc = IntegratedDocument(
        id=uuid.uuid4(), doc_type=body.type.value, number=body.number, holder_id_number=body.holder_id_number,
        category=body.category, issued_on=body.issued_on, expires_on=body.expires_on, issuer_client_id=client_id,
        status=DocumentStatus.valid.value, status_reason=None, created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(doc)
    # The citizen declared this document at officer registration step 1: the agency confirms it.
    confirmed = await session.execute(
        update(DeclaredDocument)
        .where(
            DeclaredDocument.id_number == body.holder_id_number,
            DeclaredDocument.doc_type == body.type.value,
            DeclaredDocument.number == body.number,
            DeclaredDocument.status == "declared",
        )
        .values(status="confirmed")
    )
    audit.record(
        session, actor=Actor("client", client_id), action="document.create", outcome="ok", now=now,
        target_id_number=body.holder_id_number,
        detail={"document": str(doc.id), "type": doc.doc_type, "declarations_confirmed": _rowcount(confirmed)},
    )  # fmt: skip
    answer = Answer(201, describe(doc, today).model_dump(mode="json"))
    return await idempotency.commit(
        session,
        request,
        answer,
        now,
        on_conflict=lambda: DocumentExists("Another document has this type and number; update it instead."),
    )


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def _issued_by(session: AsyncSession, client_id: str, document_id: uuid.UUID) -> IntegratedDocument:
    doc = await session.get(IntegratedDocument, document_id, populate_existing=True)
    # Another agency's document is not found, rather than forbidden: agencies learn nothing of it.
    if doc is None or doc.issuer_client_id != client_id:
        raise DocumentNotFound()
    return doc


async def update_document(
    session: AsyncSession,
    ctx: AppContext,
    client_id: str,
    document_id: uuid.UUID,
    body: DocumentUpdate,
    *,
    key: str | None,
) -> Answer:
    now, today = ctx.clock.now(), ctx.clock.today()
    changes = body.model_dump(mode="json", include=body.model_fields_set)
    request = IdempotentRequest(client_id, key, idempotency.fingerprint(f"update:{document_id}", changes))
    if (stored := await idempotency.replay(session, request, now)) is not None:
        return stored
    doc = await _issued_by(session, client_id, document_id)
    if not await _may_issue(session, client_id, doc.doc_type):
        await _refuse_type(session, client_id, "document.update", doc.doc_type, now)
    if doc.status == DocumentStatus.revoked:
        raise DocumentStateConflict("A revoked document cannot be changed.", current_status=doc.status)
    fields = body.model_fields_set
    category = body.category if "category" in fields else doc.category
    issued_on = body.issued_on if "issued_on" in fields and body.issued_on is not None else doc.issued_on
    expires_on = body.expires_on if "expires_on" in fields else doc.expires_on
    problem = category_problem(DocumentType(doc.doc_type), category)
    if problem:
        raise DocumentInvalid(problem)
    if issued_on > today:
        raise DocumentInvalid("issued_on is in the future.")
    if expires_on is not None and expires_on < issued_on:
        raise DocumentInvalid("expires_on must not be before issued_on.")
    doc.category, doc.issued_on, doc.expires_on, doc.updated_at = category, issued_on, expires_on, now
    audit.record(
        session, actor=Actor("client", client_id), action="document.update", outcome="ok", now=now,
        target_id_number=doc.holder_id_number, detail={"document": str(doc.id), "fields": sorted(fields)},
    )  # fmt: skip
    answer = Answer(200, describe(doc, today).model_dump(mode="json"))
    return await idempotency.commit(
        session, request, answer, now, on_conflict=lambda: DocumentStateConflict("The document changed; try again.")
    )


async def change_document_status(
    session: AsyncSession,
    ctx: AppContext,
    client_id: str,
    document_id: uuid.UUID,
    action: StatusAction,
    reason: str | None,
    *,
    key: str | None,
) -> Answer:
    now, today = ctx.clock.now(), ctx.clock.today()
    request = IdempotentRequest(client_id, key, idempotency.fingerprint(f"{action}:{document_id}", {"reason": reason}))
    if (stored := await idempotency.replay(session, request, now)) is not None:
        return stored
    doc = await _issued_by(session, client_id, document_id)
    if not await _may_issue(session, client_id, doc.doc_type):
        await _refuse_type(session, client_id, f"document.{action}", doc.doc_type, now)
    sources, target = TRANSITIONS[action]
    # Conditional update: of two concurrent transitions only one leaves the expected state.
    moved = await session.execute(
        update(IntegratedDocument)
        .where(IntegratedDocument.id == document_id, IntegratedDocument.status.in_(sorted(sources)))
        .values(status=target.value, status_reason=reason, updated_at=now)
        .returning(IntegratedDocument.id)
    )
    if moved.first() is None:
        await session.rollback()
        # Perhaps this very request, committed meanwhile by a concurrent retry.
        if (stored := await idempotency.replay(session, request, now)) is not None:
            return stored
        current = await _issued_by(session, client_id, document_id)
        raise DocumentStateConflict(f"The document is {current.status}.", current_status=current.status)
    doc = await _issued_by(session, client_id, document_id)
    audit.record(
        session, actor=Actor("client", client_id), action=f"document.{action}", outcome="ok", now=now,
        target_id_number=doc.holder_id_number, detail={"document": str(doc.id), "reason": reason},
    )  # fmt: skip
    answer = Answer(200, describe(doc, today).model_dump(mode="json"))
    return await idempotency.commit(
        session, request, answer, now, on_conflict=lambda: DocumentStateConflict("The document changed; try again.")
    )


# --- status -------------------------------------------------------------------------------------


async def _status_row(session: AsyncSession, doc_type: str, number: str) -> Any | None:
    return (
        await session.execute(
            select(IntegratedDocument.status, IntegratedDocument.expires_on, IntegratedDocument.holder_id_number).where(
                IntegratedDocument.doc_type == doc_type, IntegratedDocument.number == number
            )
        )
    ).first()


async def document_status(
    session: AsyncSession, doc_type: str, number: str, holder_id_number: str | None, today: dt.date
) -> str:
    """valid, expired, suspended, revoked or unknown. A holder ID number that is not the
    document's holder answers unknown, so the check never tells whose a number is."""
    try:
        kind = DocumentType(doc_type)
    except ValueError:
        return VerifiedStatus.unknown.value
    number = normalise_number(number)
    if not number_is_valid(kind, number):
        return VerifiedStatus.unknown.value
    row = await _status_row(session, kind.value, number)
    if row is None or (holder_id_number is not None and row.holder_id_number != holder_id_number):
        return VerifiedStatus.unknown.value
    return effective_status(row.status, row.expires_on, today).value


async def check_status(
    session: AsyncSession,
    ctx: AppContext,
    *,
    client_id: str,
    client_name: str | None,
    doc_type: DocumentType,
    number: str,
    holder_id_number: str | None,
) -> DocumentStatusOut:
    """A verifier's online status check (rate-limited per client by the authenticator, as
    every client is), audited, and logged in the holder's access log (a verification the law
    allows) when the document exists."""
    now, today = ctx.clock.now(), ctx.clock.today()
    number = normalise_number(number)
    row = await _status_row(session, doc_type.value, number) if number_is_valid(doc_type, number) else None
    if row is not None and holder_id_number is not None and row.holder_id_number != holder_id_number:
        row = None
    status = effective_status(row.status, row.expires_on, today) if row is not None else VerifiedStatus.unknown
    holder = row.holder_id_number if row is not None else None
    audit.record(
        session, actor=Actor("client", client_id), action="document.status", outcome=status.value, now=now,
        target_id_number=holder, target=None if holder else client_id, detail={"type": doc_type.value},
    )  # fmt: skip
    if holder is not None:
        disclose(
            session, id_number=holder, recipient_type="client", recipient_id=client_id, recipient_name=client_name,
            channel="document-status", categories=["document_status"], legal_basis=LegalBasis.law,
            consent_id=None, now=now,
        )  # fmt: skip
    await session.commit()
    return DocumentStatusOut(type=doc_type.value, number=number, status=status, checked_on=today)


# --- the citizen's side ---------------------------------------------------------------------


async def acting_for(session: AsyncSession, account: Account, for_account_id: uuid.UUID | None) -> Account:
    """The citizen themself, or a dependent whose account sits under theirs."""
    if for_account_id is None or for_account_id == account.id:
        return account
    dependent = await session.get(Account, for_account_id)
    if dependent is None or dependent.guardian_account_id != account.id or dependent.status != AccountStatus.active:
        raise DependentNotFound()
    return dependent


async def _issuer_names(session: AsyncSession, client_ids: set[str]) -> dict[str, str]:
    if not client_ids:
        return {}
    rows = await session.execute(select(Client.client_id, Client.name).where(Client.client_id.in_(client_ids)))
    return {cid: name for cid, name in rows.all()}


async def my_documents(session: AsyncSession, ctx: AppContext, holder: Account) -> list[MyDocumentOut]:
    today = ctx.clock.today()
    docs = (
        await session.scalars(
            select(IntegratedDocument)
            .where(IntegratedDocument.holder_id_number == holder.id_number)
            .order_by(IntegratedDocument.doc_type, IntegratedDocument.issued_on.desc())
        )
    ).all()
    names = await _issuer_names(session, {d.issuer_client_id for d in docs})
    return [
        MyDocumentOut(
            id=d.id,
            type=d.doc_type,
            number=d.number,
            holder_id_number=d.holder_id_number,
            category=d.category,
            issued_on=d.issued_on,
            expires_on=d.expires_on,
            status=effective_status(d.status, d.expires_on, today).value,
            issuer=IssuerOut(client_id=d.issuer_client_id, name=names.get(d.issuer_client_id)),
        )
        for d in docs
    ]


async def holder_document(session: AsyncSession, account: Account, document_id: uuid.UUID) -> IntegratedDocument:
    """A document of the citizen or of one of their dependents; anyone else's is not found."""
    doc = await session.get(IntegratedDocument, document_id)
    if doc is None:
        raise DocumentNotFound()
    if doc.holder_id_number != account.id_number:
        dependent = await session.scalar(
            select(Account.id).where(
                Account.id_number == doc.holder_id_number,
                Account.guardian_account_id == account.id,
                Account.status == AccountStatus.active,
            )
        )
        if dependent is None:
            raise DocumentNotFound()
    return doc


def disclosed_document(doc: IntegratedDocument, issuer_name: str | None) -> dict[str, Any]:
    """A document's fields as presentations and shares disclose them (no holder ID number)."""
    return {
        "type": doc.doc_type,
        "number": doc.number,
        "category": doc.category,
        "issued_on": doc.issued_on.isoformat(),
        "expires_on": doc.expires_on.isoformat() if doc.expires_on else None,
        "status": VerifiedStatus.valid.value,
        "issuer": {"id": doc.issuer_client_id, "name": issuer_name},
    }


def require_presentable(doc: IntegratedDocument, today: dt.date) -> None:
    status = effective_status(doc.status, doc.expires_on, today)
    if status != VerifiedStatus.valid:
        raise DocumentNotPresentable(f"The document is {status.value}.", document_status=status.value)


async def present_document(
    session: AsyncSession, ctx: AppContext, account: Account, document_id: uuid.UUID
) -> PresentationOut:
    now, today = ctx.clock.now(), ctx.clock.today()
    doc = await holder_document(session, account, document_id)
    require_presentable(doc, today)
    holder = await session.get(Citizen, doc.holder_id_number)
    assert holder is not None  # documents.holder_id_number references citizens
    issuer = await client_cache(ctx).get(doc.issuer_client_id)
    claims = presentation_claims(
        issuer=ctx.settings.issuer,
        now=now,
        document=disclosed_document(doc, issuer.name if issuer else None),
        holder_name=holder.full_name,
        holder_birthdate=holder.date_of_birth,
    )
    token = await ctx.keys.sign(claims, "ES256", now, typ=PRESENTATION_TYP)
    audit.record(
        session, actor=Actor("citizen", str(account.id)), action="document.present", outcome="ok", now=now,
        target_id_number=doc.holder_id_number, detail={"document": str(doc.id), "jti": claims["jti"]},
    )  # fmt: skip
    await session.commit()
    expires_at = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
    return PresentationOut(
        presentation=token,
        typ=PRESENTATION_TYP,
        expires_at=expires_at,
        expires_in=int(PRESENTATION_TTL.total_seconds()),
    )


async def documents_claim(session: AsyncSession, id_number: str, today: dt.date) -> list[dict[str, Any]]:
    """The ``documents`` claim of userinfo: the citizen's documents that are not revoked."""
    rows = await session.execute(
        select(IntegratedDocument.doc_type, IntegratedDocument.number, IntegratedDocument.status,
               IntegratedDocument.expires_on)
        .where(IntegratedDocument.holder_id_number == id_number,
               IntegratedDocument.status != DocumentStatus.revoked.value)
        .order_by(IntegratedDocument.doc_type, IntegratedDocument.number)
    )  # fmt: skip
    return [
        {
            "type": r.doc_type,
            "number": r.number,
            "status": effective_status(r.status, r.expires_on, today).value,
            "expires": r.expires_on.isoformat() if r.expires_on else None,
        }
        for r in rows.all()
    ]
