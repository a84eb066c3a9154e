"""Masking of personal data for logs, audit rows and public answers."""

from __future__ import annotations

import logging
import re

_ID_RE = re.compile(r"(?<!\d)(\d{3})\d{7}(\d{2})(?!\d)")
_PHONE_RE = re.compile(r"\+84\d{6}(\d{3})\b")
# Mobile numbers written nationally (0912345678) or without the plus (84912345678): Vietnamese
# mobile numbers are 0 + 9 digits, with the prefixes 03, 05, 07, 08 and 09 (docs/facts.md §3).
_LOCAL_PHONE_RE = re.compile(r"(?<![\d+])(0|84)([35789])\d{5}(\d{3})(?!\d)")
_FORMATTER = logging.Formatter()


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
    text = _PHONE_RE.sub(lambda m: "+84******" + m.group(1), text)
    return _LOCAL_PHONE_RE.sub(lambda m: m.group(1) + m.group(2) + "*****" + m.group(3), text)


class ScrubFilter(logging.Filter):
    """Last line of defence: no full ID number or phone reaches a log line, whoever logged it:
    the message, the exception's text and traceback (an SQL error names its parameters), and
    the stack. Fields set beside the message (the request ID) are not touched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if not isinstance(record.msg, str):
            record.msg = str(record.msg)
        record.msg = scrub(record.msg)
        if record.exc_info and not record.exc_text:
            # Formatted here, scrubbed, and cached where every formatter looks for it first.
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
