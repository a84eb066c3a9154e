from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from starlette.responses import Response

from app.accounts.auth import CurrentCitizen
from app.accounts.schemas import DocumentType
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.http import json_body_only
from app.core.schemas import IdNumber
from app.documents import service
from app.documents.auth import ApprovedClient, ClientsAdmin, IssuingAgency
from app.documents.idempotency import Answer, parse_key
from app.documents.schemas import (
    DocumentIn,
    DocumentOut,
    DocumentStatusOut,
    DocumentUpdate,
    IssuerTypesIn,
    IssuerTypesOut,
    MyDocumentOut,
    PresentationOut,
    ReinstatementIn,
    SuspensionIn,
)

agency = APIRouter(prefix="/documents", tags=["documents"], dependencies=[json_body_only])
me = APIRouter(prefix="/me", tags=["me"], dependencies=[json_body_only])
admin = APIRouter(tags=["staff"], dependencies=[json_body_only])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="A unique value per write (e.g. a UUID); send the same one to retry the same write. "
        "Kept 24 hours per client.",
    ),
]
_REPLAY = {"description": "A retry: the stored answer, with `Idempotent-Replayed: true`."}


def _answer(answer: Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(
        orjson.dumps(answer.body), status_code=answer.status, media_type="application/json", headers=headers
    )


# --- issuing agencies ---------------------------------------------------------------------------


@agency.post(
    "",
    status_code=201,
    response_model=DocumentOut,
    summary="Issue a document (agency; Idempotency-Key required)",
    responses={201: _REPLAY},
)
async def create_document(
    body: DocumentIn, caller: IssuingAgency, session: SessionDep, ctx: CtxDep, idempotency_key: IdempotencyKey = None
) -> Response:
    key = parse_key(idempotency_key, required=True)
    assert key is not None
    return _answer(await service.create_document(session, ctx, caller.id, body, key=key))


@agency.get(
    "/status",
    response_model=DocumentStatusOut,
    summary="Is this document valid now? (any approved client)",
)
async def document_status(
    caller: ApprovedClient,
    session: SessionDep,
    ctx: CtxDep,
    type: Annotated[DocumentType, Query(description="The document type")],
    number: Annotated[str, Query(min_length=1, max_length=40)],
    holder_id_number: Annotated[IdNumber | None, Query(description="Also check whose it is")] = None,
) -> DocumentStatusOut:
    return await service.check_status(
        session, ctx, client_id=caller.id, client_name=caller.name, doc_type=type, number=number,
        holder_id_number=holder_id_number,
    )  # fmt: skip


@agency.patch("/{document_id}", response_model=DocumentOut, summary="Correct or renew a document (issuing agency)")
async def update_document(
    document_id: uuid.UUID,
    body: DocumentUpdate,
    caller: IssuingAgency,
    session: SessionDep,
    ctx: CtxDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    key = parse_key(idempotency_key, required=False)
    return _answer(await service.update_document(session, ctx, caller.id, document_id, body, key=key))


@agency.post("/{document_id}/suspend", response_model=DocumentOut, summary="Suspend a document (issuing agency)")
async def suspend_document(
    document_id: uuid.UUID,
    body: SuspensionIn,
    caller: IssuingAgency,
    session: SessionDep,
    ctx: CtxDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    key = parse_key(idempotency_key, required=False)
    return _answer(
        await service.change_document_status(session, ctx, caller.id, document_id, "suspend", body.reason, key=key)
    )


@agency.post("/{document_id}/reinstate", response_model=DocumentOut, summary="Lift a suspension (issuing agency)")
async def reinstate_document(
    document_id: uuid.UUID,
    body: ReinstatementIn,
    caller: IssuingAgency,
    session: SessionDep,
    ctx: CtxDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    key = parse_key(idempotency_key, required=False)
    return _answer(
        await service.change_document_status(session, ctx, caller.id, document_id, "reinstate", body.reason, key=key)
    )


@agency.post(
    "/{document_id}/revoke", response_model=DocumentOut, summary="Revoke a document, for good (issuing agency)"
)
async def revoke_document(
    document_id: uuid.UUID,
    body: SuspensionIn,
    caller: IssuingAgency,
    session: SessionDep,
    ctx: CtxDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    key = parse_key(idempotency_key, required=False)
    return _answer(
        await service.change_document_status(session, ctx, caller.id, document_id, "revoke", body.reason, key=key)
    )


# --- citizens -------------------------------------------------------------------------------------


@me.get(
    "/documents",
    response_model=list[MyDocumentOut],
    summary="The citizen's integrated documents (or a dependent's, with ?for=)",
)
async def my_documents(
    citizen: CurrentCitizen,
    session: SessionDep,
    ctx: CtxDep,
    for_account: Annotated[uuid.UUID | None, Query(alias="for", description="A dependent's account ID")] = None,
) -> list[MyDocumentOut]:
    holder = await service.acting_for(session, citizen.entity, for_account)
    return await service.my_documents(session, ctx, holder)


@me.post(
    "/documents/{document_id}/presentation",
    response_model=PresentationOut,
    summary="A signed presentation of a valid document, for a verifier to check offline",
)
async def present_document(
    document_id: uuid.UUID, citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep
) -> PresentationOut:
    return await service.present_document(session, ctx, citizen.entity, document_id)


# --- administrators -------------------------------------------------------------------------------


@admin.get(
    "/admin/clients/{client_id}/document-types",
    response_model=IssuerTypesOut,
    summary="The document types an agency may issue",
)
async def get_issuer_types(client_id: str, staff: ClientsAdmin, session: SessionDep) -> IssuerTypesOut:
    return IssuerTypesOut(client_id=client_id, types=await service.issuer_types(session, client_id))


@admin.put(
    "/admin/clients/{client_id}/document-types",
    response_model=IssuerTypesOut,
    summary="Set the document types an agency may issue",
)
async def put_issuer_types(
    client_id: str, body: IssuerTypesIn, staff: ClientsAdmin, session: SessionDep, ctx: CtxDep
) -> IssuerTypesOut:
    types = await service.set_issuer_types(session, client_id, body.types, actor=staff.actor, now=ctx.clock.now())
    return IssuerTypesOut(client_id=client_id, types=types)
