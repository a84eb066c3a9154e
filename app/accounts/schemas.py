from __future__ import annotations

import datetime as dt
import re
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from app.core.schemas import BirthDate, Email, IdNumber, Name, Password, Phone, Reason, ResponseModel, StrictModel, Text

OtpCode = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]


class RegistrationStart(StrictModel):
    id_number: IdNumber
    full_name: Name
    date_of_birth: BirthDate
    phone: Phone


class ChallengeOut(ResponseModel):
    id: uuid.UUID
    expires_at: dt.datetime
    message: str


class OtpVerify(StrictModel):
    code: OtpCode


class RegistrationDone(ResponseModel):
    status: Literal["active"] = "active"
    level: int
    message: str


class PasswordChange(StrictModel):
    id_number: IdNumber
    current_password: Password
    new_password: Password


class PasswordResetStart(StrictModel):
    id_number: IdNumber
    phone: Phone


class PasswordResetComplete(StrictModel):
    code: OtpCode
    new_password: Password


class StatusChange(StrictModel):
    reason: Reason


class AccountOut(ResponseModel):
    id: uuid.UUID
    id_number: str
    status: str
    level: int
    phone: str | None
    email: str | None
    must_change_password: bool
    locked_until: dt.datetime | None
    guardian_account_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


# --- level 2, officer-assisted -------------------------------------------------------------


class DocumentType(StrEnum):
    driving_licence = "driving_licence"
    vehicle_registration = "vehicle_registration"
    health_insurance = "health_insurance"
    social_insurance = "social_insurance"


# docs/facts.md §3: licence 12 digits; health insurance 2 letters + 1 digit +
# 2-digit province + 10-digit social-insurance number; social insurance book 10 digits;
# vehicle plates such as 30A-123.45.
DOCUMENT_FORMATS: dict[DocumentType, re.Pattern[str]] = {
    DocumentType.driving_licence: re.compile(r"^\d{12}$"),
    DocumentType.vehicle_registration: re.compile(r"^\d{2}[A-Z]{1,2}\d?-\d{3}\.\d{2}$|^\d{2}[A-Z]{1,2}\d?-\d{4,5}$"),
    DocumentType.health_insurance: re.compile(r"^[A-Z]{2}\d\d{2}\d{10}$"),
    DocumentType.social_insurance: re.compile(r"^\d{10}$"),
}


class DeclaredDocumentIn(StrictModel):
    type: DocumentType
    number: Annotated[str, StringConstraints(min_length=1, max_length=40, to_upper=True)]

    @model_validator(mode="after")
    def _format(self) -> DeclaredDocumentIn:
        if not DOCUMENT_FORMATS[self.type].match(self.number):
            raise ValueError(f"number is not a valid {self.type.value} number")
        return self


class AssistedRegistrationIn(StrictModel):
    """Step 1 at the police office: contact details, dependents under 14, documents."""

    id_number: IdNumber
    phone: Phone
    email: Email | None = None
    dependents: Annotated[list[IdNumber], Field(max_length=20)] = []
    documents: Annotated[list[DeclaredDocumentIn], Field(max_length=20)] = []


# Biometric enrollment references are identifiers issued by the card system's biometric
# store, never images or templates: short opaque tokens only.
BiometricRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{8,128}$")]


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat")
    return values


class Biometrics(StrictModel):
    face_template_id: BiometricRef
    fingerprint_template_ids: Annotated[
        list[BiometricRef], Field(min_length=1, max_length=10), AfterValidator(_distinct)
    ]
    enrolled_at: dt.datetime
    enrollment_station: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


class Relative(StrictModel):
    relation: Literal["father", "mother", "spouse", "guardian", "child", "other"]
    full_name: Name
    id_number: IdNumber | None = None


class CardApplicationIn(StrictModel):
    """Step 2: the chip ID card application (personal and relatives' information)."""

    full_name: Name
    date_of_birth: BirthDate
    ethnicity: Annotated[str, StringConstraints(max_length=50)] | None = None
    religion: Annotated[str, StringConstraints(max_length=50)] | None = None
    hometown: Text | None = None
    permanent_address: Text
    relatives: Annotated[list[Relative], Field(max_length=20)] = []
    biometrics: Biometrics


class Decision(StrictModel):
    reason: Reason | None = None


class Rejection(StrictModel):
    reason: Reason


class DeclaredDocumentOut(ResponseModel):
    type: str
    number: str
    status: str


class AssistedRegistrationOut(ResponseModel):
    id: uuid.UUID
    id_number: str
    status: str
    phone: str
    email: str | None
    dependents: list[str]
    documents: list[DeclaredDocumentOut]
    card_application: dict[str, Any] | None
    reason: str | None
    account_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SignIn(StrictModel):
    id_number: IdNumber
    password: Password


class SessionOut(ResponseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class ProfileOut(ResponseModel):
    """The signed-in citizen's own account and registry record (unmasked: it is theirs)."""

    account_id: uuid.UUID
    id_number: str
    level: int
    status: str
    phone: str | None
    email: str | None
    full_name: str
    date_of_birth: dt.date
    sex: str
    residence: str


class DependentOut(ResponseModel):
    account_id: uuid.UUID
    id_number: str
    full_name: str
    date_of_birth: dt.date


class PhoneChange(StrictModel):
    phone: Phone
    reason: Reason


class ClaimApprovalIn(StrictModel):
    phone: Phone


class ClaimApprovalOut(ResponseModel):
    id: uuid.UUID
    phone: str
    expires_at: dt.datetime


class NotificationOut(ResponseModel):
    kind: str
    message: str
    created_at: dt.datetime
