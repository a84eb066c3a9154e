"""The rules of a registry record, once: what the API (``PUT /registry/citizens``), the demo seed
and the bulk importer all accept.

``validate_record`` is the plain statement of the rules, checked in a fixed order so that a
record with several problems is refused for the same first one everywhere. The importer has
fast paths for the common case (app/registry/importer.py ``validate_row``); property tests
(tests/registry/test_import.py) prove them equal to this function for every input.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from app.core.schemas import clean_text, is_id_number, normalise_phone
from app.registry.idnumber import RULE_MESSAGES, IdRule, id_number_violations

# Accepted spellings of the sex (the registry's files write Vietnamese ones too).
SEXES = {"male": "male", "female": "female", "m": "male", "f": "female", "nam": "male", "nữ": "female", "nu": "female"}
RELATIONS = frozenset({"parent", "guardian"})
EARLIEST_BIRTH = dt.date(1900, 1, 1)
MAX_GUARDIANS = 4


class RowError(ValueError):
    """Why a record is refused: ``field``, and the ID-number rules broken when it is the number."""

    def __init__(self, message: str, *, field: str = "", rules: list[IdRule] | None = None) -> None:
        super().__init__(message)
        self.field = field or message.split(":", 1)[0]
        self.rules = rules or []


@dataclass(slots=True)
class Record:
    id_number: str
    full_name: str
    date_of_birth: dt.date
    sex: str
    residence: str
    phone: str | None
    guardians: list[tuple[str, str]] = field(default_factory=list)


def parse_guardians(raw: Any, own_id: str) -> list[tuple[str, str]]:
    """Guardians as ``ID[:relation];…`` text, or a list of such strings or of
    ``{"id_number", "relation"}`` objects (JSON lines, the API)."""
    if raw in (None, ""):
        return []
    items: list[tuple[str, str]] = []
    entries = raw if isinstance(raw, list) else str(raw).split(";")
    for entry in entries:
        if isinstance(entry, dict):
            gid, rel = str(entry.get("id_number", "")), str(entry.get("relation", "parent"))
        else:
            gid, _, rel = str(entry).strip().partition(":")
            rel = rel or "parent"
        if not is_id_number(gid):
            raise RowError("guardians: each guardian is a 12-digit ID number")
        if rel not in RELATIONS:
            raise RowError("guardians: relation must be parent or guardian")
        if gid == own_id:
            raise RowError("guardians: a citizen cannot be their own guardian")
        items.append((gid, rel))
    if len(items) > MAX_GUARDIANS or len({g for g, _ in items}) != len(items):
        raise RowError(f"guardians: at most {MAX_GUARDIANS} distinct guardians")
    return items


def _text(value: Any, name: str, longest: int) -> str:
    try:
        text = clean_text(str(value or ""))
    except ValueError as exc:
        raise RowError(f"{name}: {exc}") from None
    if len(text) > longest:
        raise RowError(f"{name}: longer than {longest} characters")
    return text


def validate_record(row: dict[str, Any], today: dt.date) -> Record:
    """One record's values → a Record, or RowError naming the field and the rule. ``today`` is
    Vietnam's date (app/core/clock.py): nobody is born after it."""
    id_number = str(row.get("id_number") or "").strip()
    if not is_id_number(id_number):
        rules = id_number_violations(id_number)
        raise RowError("id_number: " + RULE_MESSAGES[rules[0]] if id_number else "id_number: missing", rules=rules)
    full_name = _text(row.get("full_name"), "full_name", 200)
    raw_dob = row.get("date_of_birth")
    if isinstance(raw_dob, dt.date) and not isinstance(raw_dob, dt.datetime):
        dob = raw_dob
    else:
        try:
            dob = dt.date.fromisoformat(str(raw_dob or "").strip())
        except ValueError:
            raise RowError("date_of_birth: not a date (YYYY-MM-DD)") from None
    if dob < EARLIEST_BIRTH or dob > today:
        raise RowError("date_of_birth: out of range")
    sex = SEXES.get(str(row.get("sex") or "").strip().casefold())
    if sex is None:
        raise RowError("sex: must be male or female")
    broken = id_number_violations(id_number, sex=sex, date_of_birth=dob)  # type: ignore[arg-type]
    if broken:
        raise RowError("id_number: " + " ".join(RULE_MESSAGES[r] for r in broken), rules=broken)
    residence = _text(row.get("residence"), "residence", 500)
    raw_phone = str(row.get("phone") or "").strip()
    try:
        phone = normalise_phone(raw_phone) if raw_phone else None
    except ValueError:
        raise RowError("phone: not a Vietnamese mobile number") from None
    return Record(id_number, full_name, dob, sex, residence, phone, parse_guardians(row.get("guardians"), id_number))
