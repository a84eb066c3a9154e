from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from app.accounts.schemas import DocumentType
from app.core.schemas import IdNumber, Reason, ResponseModel, StrictModel
from app.documents.rules import VerifiedStatus, category_problem, number_is_valid

DocumentNumber = Annotated[str, StringConstraints(min_length=1, max_length=40, strip_whitespace=True, to_upper=True)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=40, strip_whitespace=True)]
IssueDate = Annotated[dt.date, Field(ge=dt.date(1950, 1, 1))]


class DocumentIn(StrictModel):
    """A document an agency issues (docs/facts.md §3 for the numbers)."""

    type: DocumentType
    number: DocumentNumber
    holder_id_number: IdNumber
    category: Category | None = Field(
        default=None, description="Licence class (e.g. B, A1) or vehicle kind; none for insurance."
    )
    issued_on: IssueDate
    expires_on: dt.date | None = Field(default=None, description="Last day of validity; none if it does not expire.")

    @model_validator(mode="after")
    def _fits_type(self) -> DocumentIn:
        if not number_is_valid(self.type, self.number):
            raise ValueError(f"number is not a valid {self.type.value} number")
        problem = category_problem(self.type, self.category)
        if problem:
            raise ValueError(problem)
        if self.expires_on is not None and self.expires_on < self.issued_on:
            raise ValueError("expires_on must not be before issued_on")
        return self


class DocumentUpdate(StrictModel):
    """A correction or renewal: the number, type and holder never change (a new number is a new
    document). Send only the fields that change; ``expires_on: null`` means it no longer expires."""

    category: Category | None = None
    issued_on: IssueDate | None = None
    expires_on: dt.date | None = None

    @model_validator(mode="after")
    def _something(self) -> DocumentUpdate:
        if not self.model_fields_set:
            raise ValueError("send at least one of category, issued_on, expires_on")
        if "issued_on" in self.model_fields_set and self.issued_on is None:
            raise ValueError("issued_on cannot be removed")
        return self


class SuspensionIn(StrictModel):
    reason: Reason


class ReinstatementIn(StrictModel):
    reason: Reason | None = None


class DocumentOut(ResponseModel):
    """The issuing agency's view."""

    id: uuid.UUID
    type: str
    number: str
    holder_id_number: str
    category: str | None
    issued_on: dt.date
    expires_on: dt.date | None
    status: str = Field(description="As the agency set it: valid, suspended or revoked.")
    effective_status: str = Field(description="What a verifier sees today: also expired.")
    status_reason: str | None
    issuer_client_id: str
    created_at: dt.datetime
    updated_at: dt.datetime


class IssuerOut(ResponseModel):
    client_id: str
    name: str | None


class MyDocumentOut(ResponseModel):
    """The holder's (or guardian's) view."""

    id: uuid.UUID
    type: str
    number: str
    holder_id_number: str
    category: str | None
    issued_on: dt.date
    expires_on: dt.date | None
    status: str = Field(description="valid, expired, suspended or revoked")
    issuer: IssuerOut


class PresentationOut(ResponseModel):
    presentation: str = Field(description="A compact JWS (typ document+jwt, ES256); verify it with /jwks.")
    typ: str
    expires_at: dt.datetime
    expires_in: int


class DocumentStatusOut(ResponseModel):
    type: str
    number: str
    status: VerifiedStatus
    checked_on: dt.date


class IssuerTypesIn(StrictModel):
    types: Annotated[list[DocumentType], Field(max_length=4)]


class IssuerTypesOut(ResponseModel):
    client_id: str
    types: list[str]
