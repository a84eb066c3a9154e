"""Masking of personal data for logs, audit rows and public answers."""

from __future__ import annotations

import logging
import re

_ID_RE = re.compile(r"(?<!\d)(\d{3})\d{7}(\d{2})(?!\d)")
_PHONE_RE = re.compile(r"\+84\d{6}(\d{3})\b")


def mask_id_number(id_number: str) -> str:
    """``001099012345`` → ``001*******45`` (docs/facts.md §1: displayed masked except to its owner and officers)."""
    if len(id_number) != 12:
        return "*" * len(id_number)
    return id_number[:3] + "*" * 7 + id_number[-2:]


def mask_phone(phone: str) -> str:
    return phone[:3] + "*" * max(len(phone) - 6, 0) + phone[-3:] if len(phone) > 6 else "***"


def scrub(text: str) -> str:
    """Mask every 12-digit run and Vietnamese mobile number in free text."""
    text = _ID_RE.sub(lambda m: m.group(1) + "*" * 7 + m.group(2), text)
    return _PHONE_RE.sub(lambda m: "+84******" + m.group(1), text)


class ScrubFilter(logging.Filter):
    """Last line of defence: no full ID number or phone reaches a log line, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        return True
