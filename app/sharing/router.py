from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.accounts.auth import CurrentCitizen
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.http import json_body_only
from app.oidc.provider import ProviderDep
from app.sharing import qr, service
from app.sharing.auth import Verifier
from app.sharing.schemas import RedeemedShare, RedeemIn, ShareCreated, ShareIn, ShareOut

me = APIRouter(prefix="/me", tags=["me"], dependencies=[json_body_only])
router = APIRouter(prefix="/sharing", tags=["sharing"], dependencies=[json_body_only])

ShareId = Annotated[str, Path(min_length=1, max_length=64, description="The share's opaque ID")]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@me.post(
    "/shares",
    status_code=201,
    response_model=ShareCreated,
    summary="Share chosen attributes by QR (an SD-JWT, or an eidshare: reference when too large)",
)
async def create_share(
    body: ShareIn, citizen: CurrentCitizen, session: SessionDep, provider: ProviderDep
) -> ShareCreated:
    return await service.create_share(session, provider, citizen.entity, body)


@me.get("/shares", response_model=list[ShareOut], summary="The citizen's shares (and those made for dependents)")
async def my_shares(citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep) -> list[ShareOut]:
    return await service.my_shares(session, citizen.entity, ctx.clock.now())


@me.delete("/shares/{share_id}", status_code=204, summary="Revoke a share and its consent")
async def revoke_share(share_id: ShareId, citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep) -> Response:
    await service.revoke_share(session, citizen.entity, share_id, ctx.clock.now())
    return Response(status_code=204)


def _image(kind: qr.ImageKind) -> dict[int | str, dict[str, object]]:
    return {200: {"content": {qr.MEDIA_TYPES[kind]: {}}, "description": "The QR code (owner only)"}}


@router.get(
    "/{share_id}/qr.png", response_class=Response, responses=_image("png"), summary="The share's QR code as PNG"
)
async def share_qr_png(
    share_id: ShareId, citizen: CurrentCitizen, session: SessionDep, provider: ProviderDep
) -> Response:
    image = await service.share_qr(session, provider, citizen.entity, share_id, "png")
    return Response(image, media_type=qr.MEDIA_TYPES["png"], headers=NO_STORE)


@router.get(
    "/{share_id}/qr.svg", response_class=Response, responses=_image("svg"), summary="The share's QR code as SVG"
)
async def share_qr_svg(
    share_id: ShareId, citizen: CurrentCitizen, session: SessionDep, provider: ProviderDep
) -> Response:
    image = await service.share_qr(session, provider, citizen.entity, share_id, "svg")
    return Response(image, media_type=qr.MEDIA_TYPES["svg"], headers=NO_STORE)


@router.post(
    "/redeem",
    response_model=RedeemedShare,
    summary="Redeem a scanned share online, once (any approved client)",
)
async def redeem(
    body: RedeemIn, verifier: Verifier, session: SessionDep, provider: ProviderDep, response: Response
) -> RedeemedShare:
    response.headers.update(NO_STORE)
    return await service.redeem(session, provider, verifier, body.token)
