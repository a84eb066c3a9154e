from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import Field

from app.accounts.schemas import DocumentType
from app.core.schemas import BirthDate, IdNumber, Name, Phone, Purpose, ResponseModel, StrictModel
from app.registry.idnumber import Sex


class IdentityQuery(StrictModel):
    """The attributes the caller holds about a person; at least one besides the ID number."""

    id_number: IdNumber
    full_name: Name | None = None
    date_of_birth: BirthDate | None = None
    sex: Sex | None = None
    phone: Phone | None = None
    match: Literal["exact", "partial"] = "exact"


class AttributeResult(ResponseModel):
    match: bool
    score: float | None = None


class IdentityResult(ResponseModel):
    result: Literal["match", "partial", "no_match"]
    attributes: dict[str, AttributeResult]
    # Only when every given attribute matched: the caller has shown it knows the person.
    assurance_level: int | None
    account_status: Literal["active", "locked", "revoked", "pending", "none"] | None


class DocumentQuery(StrictModel):
    type: DocumentType
    number: Annotated[str, Field(min_length=1, max_length=40)]
    holder_id_number: IdNumber | None = None


class DocumentResult(ResponseModel):
    status: Literal["valid", "expired", "suspended", "revoked", "unknown"]


EKYC_CLAIMS = (
    "name",
    "family_name",
    "given_name",
    "birthdate",
    "gender",
    "address",
    "phone_number",
    "national_id",
    "assurance_level",
)


class EkycRequestIn(StrictModel):
    id_number: IdNumber
    claims: Annotated[list[Literal[EKYC_CLAIMS]], Field(min_length=1, max_length=len(EKYC_CLAIMS))]  # type: ignore[valid-type]
    purpose: Purpose
    binding_message: Annotated[str, Field(max_length=64, pattern=r"^[\w .,:-]+$")] | None = None


class EkycRequestOut(ResponseModel):
    id: uuid.UUID
    status: Literal["pending", "approved", "denied", "expired"]
    claims: list[str]
    purpose: str
    expires_at: dt.datetime
    interval: int = Field(default=5, description="Seconds to wait between polls (CIBA poll mode).")


class EkycResult(ResponseModel):
    request_id: uuid.UUID
    result: str = Field(
        description="A JWT signed by the service (typ ekyc+jwt): exactly the approved claims, bound to the request."
    )


class CitizenEkycRequestOut(ResponseModel):
    id: uuid.UUID
    client_id: str
    client_name: str
    claims: list[str]
    purpose: str
    binding_message: str | None
    expires_at: dt.datetime
