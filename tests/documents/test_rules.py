"""Pure rules: derived status, categories, Idempotency-Key parsing (property-tested)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.accounts.schemas import DocumentType
from app.documents.errors import IdempotencyKeyInvalid, IdempotencyKeyMissing
from app.documents.idempotency import MAX_KEY_LENGTH, fingerprint, parse_key
from app.documents.rules import category_problem, effective_status

TODAY = dt.date(2026, 12, 1)


@pytest.mark.parametrize(
    ("status", "expires_on", "expected"),
    [
        ("valid", None, "valid"),
        ("valid", TODAY, "valid"),  # valid through the expiry date
        ("valid", TODAY - dt.timedelta(days=1), "expired"),
        ("suspended", None, "suspended"),
        ("suspended", TODAY - dt.timedelta(days=1), "expired"),
        ("revoked", TODAY - dt.timedelta(days=1), "revoked"),
        ("revoked", None, "revoked"),
    ],
)
def test_effective_status(status: str, expires_on: dt.date | None, expected: str) -> None:
    assert effective_status(status, expires_on, TODAY) == expected


def test_categories_per_type() -> None:
    assert category_problem(DocumentType.driving_licence, "B") is None
    assert category_problem(DocumentType.driving_licence, "B2") is None  # pre-2025 class
    assert category_problem(DocumentType.driving_licence, None) == "a driving_licence needs a category"
    assert category_problem(DocumentType.vehicle_registration, "car") is None
    assert category_problem(DocumentType.health_insurance, "DN") == "a health_insurance has no category"
    assert category_problem(DocumentType.social_insurance, None) is None


@given(st.text(max_size=300))
def test_any_header_is_a_key_or_a_clear_refusal(header: str) -> None:
    try:
        key = parse_key(header, required=True)
    except (IdempotencyKeyInvalid, IdempotencyKeyMissing):
        return
    assert key is not None
    assert 1 <= len(key) <= MAX_KEY_LENGTH
    assert all(0x21 <= ord(ch) <= 0x7E for ch in key)


def test_key_forms() -> None:
    assert parse_key('"abc-123"', required=True) == "abc-123"  # Structured Field string
    assert parse_key("abc-123", required=True) == "abc-123"
    assert parse_key(None, required=False) is None
    assert fingerprint("create", {"a": 1, "b": 2}) == fingerprint("create", {"b": 2, "a": 1})
    assert fingerprint("create", {"a": 1}) != fingerprint("update:x", {"a": 1})
