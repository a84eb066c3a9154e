"""Shared pydantic building blocks: strict bodies and the field types of personal data."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def clean_text(value: str) -> str:
    """NFC-normalise and refuse what cannot be stored or displayed safely: lone surrogates,
    control characters (including NUL), and text that is empty after stripping."""
    # Printable text (str.isprintable, in C) has none of the categories refused below, nor
    # lone surrogates: only other text is examined character by character.
    if not value.isprintable():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains invalid Unicode (lone surrogate)") from None
    value = unicodedata.normalize("NFC", value)
    # Cf: invisible format characters (U+202E right-to-left override, U+200B zero-width
    # space, soft hyphen) would let a name look like another.
    if not value.isprintable() and any(unicodedata.category(ch) in _REFUSED for ch in value):
        raise ValueError("contains control, invisible or unassigned characters")
    value = " ".join(value.split())
    if not value:
        raise ValueError("must not be empty")
    return value


_REFUSED = frozenset(("Cc", "Cf", "Cs", "Co", "Cn"))


def fold_name(name: str) -> str:
    """The form in which two names are compared: NFC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


_VN_MOBILE = re.compile(r"^(?:\+84|0084|84|0)([35789][0-9]{8})$")  # ASCII digits only


def normalise_phone(value: str) -> str:
    """Vietnamese mobile numbers in E.164 (+84 then 9 digits, prefixes 3/5/7/8/9)."""
    compact = re.sub(r"[\s.\-()]", "", value)
    match = _VN_MOBILE.match(compact)
    if not match:
        raise ValueError("must be a Vietnamese mobile number, e.g. +84912345678 or 0912345678")
    return "+84" + match.group(1)


_EARLIEST_BIRTH = dt.date(1900, 1, 1)
_A_DAY = dt.timedelta(days=1)


def _birth_date(value: dt.date) -> dt.date:
    if value < _EARLIEST_BIRTH:
        raise ValueError("must be on or after 1900-01-01")
    # Tomorrow in UTC is on or after today in every time zone (and needs no local-time lookup).
    if value > dt.datetime.now(dt.UTC).date() + _A_DAY:
        raise ValueError("must not be in the future")
    return value


def is_id_number(value: str) -> bool:
    """The shape of a personal ID number: exactly 12 ASCII digits (Decree 137/2015/NĐ-CP art. 13;
    the Law on Identification 2023 art. 12 keeps it). What the digits mean (province, century
    and sex, year) is the registry's: app/registry/idnumber.py."""
    return len(value) == 12 and value.isascii() and value.isdigit()


def _id_number(value: str) -> str:
    if not is_id_number(value):
        raise ValueError("must be exactly 12 digits")
    return value


_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an email address")
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


Text = Annotated[str, StringConstraints(max_length=500), AfterValidator(clean_text)]
Name = Annotated[str, StringConstraints(max_length=200), AfterValidator(clean_text)]
Phone = Annotated[str, StringConstraints(max_length=20), AfterValidator(normalise_phone)]
Email = Annotated[str, StringConstraints(max_length=254), AfterValidator(clean_text), AfterValidator(_email)]
# The 12-digit rule as a type: bodies, query and path parameters, fixtures.
IdNumber = Annotated[
    str, StringConstraints(max_length=12, min_length=12, pattern=r"^[0-9]{12}$"), AfterValidator(_id_number)
]
BirthDate = Annotated[dt.date, AfterValidator(_birth_date)]
Reason = Annotated[str, StringConstraints(max_length=500), AfterValidator(clean_text)]


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains invalid Unicode (lone surrogate)") from None
    return value


Password = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_encodable)]
