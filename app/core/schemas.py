"""Shared pydantic building blocks: strict bodies and the field types of personal data."""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
import unicodedata
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationInfo, field_validator

# The largest value of a BIGINT column (the journal's row IDs): a larger one is refused (422)
# before it reaches the database, which would answer it with an error (500).
MAX_BIGINT = 2**63 - 1

_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# RFC 3339 date-time with an offset (Z or ±hh:mm).
_ISO_DATETIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)


def _kind(annotation: Any) -> str | None:
    """What a field's value must be in JSON: "bool", "int", "number", "date", "datetime" (else None)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = {_kind(a) for a in typing.get_args(annotation) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "number"
    if annotation is dt.datetime:
        return "datetime"
    if annotation is dt.date:
        return "date"
    return None


def _strict(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    # Python callers (the seed, the importer) pass date objects; decoded JSON never holds one.
    if kind == "date":
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return True
        return isinstance(value, str) and bool(_ISO_DATE.fullmatch(value))
    if isinstance(value, dt.datetime):
        return value.tzinfo is not None
    return isinstance(value, str) and bool(_ISO_DATETIME.fullmatch(value))


_SAYS = {
    "bool": "must be true or false",
    "int": "must be a whole number",
    "number": "must be a number",
    "date": "must be a date written YYYY-MM-DD",
    "datetime": "must be a date and time with its offset (RFC 3339), e.g. 2026-12-04T09:30:00+07:00",
}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused, strings are stripped, and values are taken
    only in their own JSON type: a date is a ``YYYY-MM-DD`` string (not a number of seconds, not
    a date-time), a number is a number (not a string), a boolean is true or false. No text holds
    a NUL character (PostgreSQL cannot store one; nothing legitimate has one). One rule for every
    body, in one place: FastAPI hands pydantic the decoded JSON, where pydantic's own strict
    mode would also refuse dates written as strings."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    _kinds: ClassVar[dict[str, str]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._kinds = {name: kind for name, f in cls.model_fields.items() if (kind := _kind(f.annotation)) is not None}

    @field_validator("*", mode="before")
    @classmethod
    def _json_types(cls, value: Any, info: ValidationInfo) -> Any:
        if _has_nul(value):
            raise ValueError("text must not contain NUL characters")
        kind = cls._kinds.get(info.field_name or "")
        if kind is not None and value is not None and not _strict(kind, value):
            raise ValueError(_SAYS[kind])
        return value


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
# What personal data is asked for (an e-KYC request, a QR share): the consents' purpose column.
Purpose = Annotated[str, StringConstraints(max_length=300), AfterValidator(clean_text)]


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains invalid Unicode (lone surrogate)") from None
    return value


Password = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_encodable)]
