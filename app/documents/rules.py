"""Pure rules of integrated documents: number formats, categories and the status a verifier sees."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from app.accounts.schemas import DOCUMENT_FORMATS, DocumentType

# Driving licence classes: Law on Road Traffic Order and Safety 2024 art. 57 (from 2025), and
# the classes of the Road Traffic Law 2008 art. 59 that licences issued before 2025 still carry.
LICENCE_CLASSES = frozenset(
    {"A1", "A", "B1", "B", "C1", "C", "D1", "D2", "D", "BE", "C1E", "CE", "D1E", "D2E", "DE"}
    | {"A2", "A3", "A4", "B2", "E", "FB2", "FC", "FD", "FE"}
)
VEHICLE_KINDS = frozenset({"motorcycle", "car", "truck", "bus", "trailer", "other"})

# Which types carry a category, and from which set. Health insurance has none: the beneficiary
# code is the first two letters of the card number (docs/facts.md §3).
CATEGORIES: dict[DocumentType, frozenset[str] | None] = {
    DocumentType.driving_licence: LICENCE_CLASSES,
    DocumentType.vehicle_registration: VEHICLE_KINDS,
    DocumentType.health_insurance: None,
    DocumentType.social_insurance: None,
}


class VerifiedStatus(StrEnum):
    """What a status check answers."""

    valid = "valid"
    expired = "expired"
    suspended = "suspended"
    revoked = "revoked"
    unknown = "unknown"


def normalise_number(number: str) -> str:
    return number.strip().upper()


def number_is_valid(doc_type: DocumentType, number: str) -> bool:
    return DOCUMENT_FORMATS[doc_type].match(number) is not None


def category_problem(doc_type: DocumentType, category: str | None) -> str | None:
    """Why the category does not fit the type, or None."""
    allowed = CATEGORIES[doc_type]
    if allowed is None:
        return None if category is None else f"a {doc_type.value} has no category"
    if category is None:
        return f"a {doc_type.value} needs a category"
    if category not in allowed:
        return f"category must be one of {', '.join(sorted(allowed))}"
    return None


def effective_status(status: str, expires_on: dt.date | None, today: dt.date) -> VerifiedStatus:
    """Revoked is final and says most; an expired document stays expired whether or not it is
    also suspended (reinstating it would not make it valid). A document is valid through its
    expiry date ("có giá trị đến"), counted in Vietnam's civil date."""
    if status == "revoked":
        return VerifiedStatus.revoked
    if expires_on is not None and expires_on < today:
        return VerifiedStatus.expired
    if status == "suspended":
        return VerifiedStatus.suspended
    return VerifiedStatus.valid
