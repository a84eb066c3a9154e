from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from app.core.schemas import Purpose, ResponseModel, StrictModel

ShareAttribute = Literal["name", "birthdate", "address", "gender", "photo_ref", "age_over_18", "age_over_14"]
ShareState = Literal["active", "expired", "revoked", "redeemed"]
ClientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,64}$")]
MAX_LIFETIME_SECONDS = 600
DEFAULT_LIFETIME_SECONDS = 300


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat")
    return values


class ShareIn(StrictModel):
    """What to show, to whom, for how long. ``age_over_18``/``age_over_14`` tell the age
    threshold without the birth date; ``photo_ref`` is the card's face-template reference (left
    out when the citizen has none)."""

    attributes: Annotated[list[ShareAttribute], Field(max_length=7), AfterValidator(_distinct)] = []
    document_id: uuid.UUID | None = Field(default=None, description="One of the holder's valid documents")
    audience: ClientId | None = Field(default=None, description="An approved client's ID; none: any verifier")
    lifetime_seconds: Annotated[int, Field(ge=30, le=MAX_LIFETIME_SECONDS)] = DEFAULT_LIFETIME_SECONDS
    for_account: uuid.UUID | None = Field(default=None, alias="for", description="A dependent's account ID")
    purpose: Purpose | None = None

    @model_validator(mode="after")
    def _something(self) -> ShareIn:
        if not self.attributes and self.document_id is None:
            raise ValueError("choose at least one attribute or a document")
        return self


class ShareCreated(ResponseModel):
    id: str
    form: Literal["sd-jwt", "reference"] = Field(
        description="sd-jwt: the QR holds the signed data; reference: the QR holds eidshare:<id>, redeemed online."
    )
    qr_payload: str = Field(description="The text the QR code encodes")
    sd_jwt: str = Field(description="The compact SD-JWT (typ vc+sd-jwt) with the chosen disclosures")
    attributes: list[str] = Field(description="What the share discloses")
    omitted: list[str] = Field(description="Chosen but unavailable (e.g. photo_ref without a card photo)")
    audience: str | None
    consent_id: uuid.UUID
    created_at: dt.datetime
    expires_at: dt.datetime
    qr_png: str
    qr_svg: str


class ShareOut(ResponseModel):
    id: str
    for_account_id: uuid.UUID
    attributes: list[str]
    audience: str | None
    form: str
    status: ShareState
    created_at: dt.datetime
    expires_at: dt.datetime
    redeemed_at: dt.datetime | None
    redeemed_by: str | None
    consent_id: uuid.UUID


class RedeemIn(StrictModel):
    token: str = Field(min_length=1, description="The scanned QR text: a compact SD-JWT or eidshare:<id>")


class RedeemedShare(ResponseModel):
    share_id: str
    claims: dict[str, Any] = Field(description="The disclosed attributes, nothing else")
    issued_at: dt.datetime
    expires_at: dt.datetime
    audience: str | None
