"""Attribute matching for identity verification (pure functions).

Every attribute's ``match`` is exact: names after NFC normalisation, case folding and
whitespace collapsing; dates, sex and phone numbers when equal.

Partial mode adds a score in [0, 1] per attribute:
- name: ``difflib.SequenceMatcher`` ratio of the two names with diacritics removed as well
  (``Nguyễn`` ~ ``Nguyen``), so a name typed without Vietnamese accents scores 1.0;
- date of birth: 1.0 equal, 0.5 same year and day and month swapped (a common entry error), else 0;
- sex, phone: 1.0 or 0.
The overall result is ``match`` when every given attribute matches exactly, ``partial`` when
(in partial mode) the mean score is at least 0.8, else ``no_match``.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from difflib import SequenceMatcher

from app.core.schemas import fold_name

PARTIAL_THRESHOLD = 0.8


def strip_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def name_score(given: str, recorded: str) -> float:
    a, b = fold_name(given), fold_name(recorded)
    if a == b:
        return 1.0
    return round(SequenceMatcher(None, strip_diacritics(a), strip_diacritics(b)).ratio(), 3)


def date_score(given: dt.date, recorded: dt.date) -> float:
    if given == recorded:
        return 1.0
    if given.year == recorded.year and (given.month, given.day) == (recorded.day, recorded.month):
        return 0.5
    return 0.0
