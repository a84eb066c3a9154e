"""Bulk import of registry records from CSV or JSON lines.

Streaming: the file is read row by row; every row is validated; rejected rows go to a rejects
file with their line number (the first physical line of the row) and reason; valid rows are
applied in batches, each batch in one transaction (all-or-nothing), as upserts by ID number.

Rules across rows (see "one run's state" below: the ID numbers seen are kept in memory up to a
bound, then in a temporary table, so that a file of any length costs the importer bounded memory):
- The first valid row with an ID number is the one applied; every later row with that number is
  rejected as "duplicate of line N (same data)" or "(different data: the fields that differ)".
- A guardian must be in the registry or accepted from the same file, earlier or later. A row whose
  guardian is not in the registry yet is deferred to the end of the run, then applied with the
  other deferred rows in one last batch, or rejected ("guardians: … is not in the registry or
  this file").
A re-run of the same file applies nothing new and rejects the same rows for the same reasons.

A failure part-way (a bad source, a database error) leaves every committed batch applied except
the rows it deferred, and neither the failing batch nor any deferred row applied; the rejects
file then holds the rows rejected by validation up to the failing batch and the duplicates found
by the committed batches, but nothing about the deferred rows. Re-running the same file finishes
the import (what was applied is found unchanged).

The report counts inserted, updated (the record or its guardian links changed), unchanged and
rejected rows.

PostgreSQL: COPY into a temporary staging table, then a few set-based statements and one
INSERT … ON CONFLICT merge. SQLite: an executemany into the staging table, then the same steps.

Throughput: parsing and validation run on the event loop while the previous batch is being
written (one batch in flight at most, written in file order, each in its own transaction), so
the database's work overlaps the Python work. The validation has fast paths for the common
case (printable text, in ``app.core.schemas.clean_text`` itself; a well-formed number) and
falls back to the shared rules of ``app.core.schemas`` whenever a fast path does not apply,
so both give the same verdicts and messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import difflib
import heapq
import io
import itertools
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import orjson
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.audit import Actor, AuditEvent
from app.core.config import Settings
from app.core.context import request_id_var
from app.core.db import make_engine
from app.core.schemas import clean_text, normalise_phone
from app.registry.idnumber import PROVINCES, RULE_MESSAGES, id_number_violations
from app.registry.models import Citizen
from app.registry.rules import EARLIEST_BIRTH, SEXES, Record, RowError, parse_guardians

csv.field_size_limit(1 << 16)

FIELDS = ("id_number", "full_name", "date_of_birth", "sex", "residence", "phone", "guardians")
_REQUIRED_CSV = ("id_number", "full_name", "date_of_birth", "sex", "residence")
_FIELD_SET = frozenset(FIELDS)
# +84 and nine digits with a mobile prefix: already E.164, nothing for normalise_phone to do.
_E164_MOBILE = re.compile(r"\+84[35789][0-9]{8}")
_YIELD_EVERY = 64  # rows parsed between two turns of the event loop (each round trip of the write waits for one)
_MAX_HELD_REJECTS = 10_000  # rejects kept in memory while a write is in flight

# Digits 4-6 of the ID number for a (birth year, female) pair: century-and-sex digit, then the
# last two digits of the year (Decree 137/2015/NĐ-CP art. 13). Filled on demand.
_CENTURY_SEX_YEAR: dict[tuple[int, bool], str] = {}


# A validated row: id_number, full_name, date_of_birth, sex, birth_province, residence, phone,
# and the guardians as text ("id:relation;id:relation", None for none); with its line number
# (_Staged) it is the PostgreSQL staging row as it is. Only immutable values: the garbage
# collector stops tracking such tuples, which keeps its passes over a batch cheap (they would
# cost more than the validation).
_Row = tuple[str, str, dt.date, str, str, str, str | None, str | None]


def _guardians_text(guardians: list[tuple[str, str]]) -> str | None:
    return ";".join(f"{g}:{rel}" for g, rel in guardians) if guardians else None


def _guardians_list(text: str | None) -> list[tuple[str, str]]:
    # Only ever parses _guardians_text's output: 12-digit numbers and a relation.
    return [(entry[:12], entry[13:]) for entry in text.split(";")] if text else []


def _record(row: _Row) -> Record:
    return Record(row[0], row[1], row[2], row[3], row[5], row[6], _guardians_list(row[7]))


@dataclass
class ImportReport:
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0  # the record or its guardian links changed
    unchanged: int = 0
    rejected: int = 0
    batches: int = 0
    rejects_path: Path | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        """Rows applied: inserted, updated or found unchanged."""
        return self.inserted + self.updated + self.unchanged


def _clean(value: str, name: str) -> str:
    """clean_text (whose fast path covers printable text), with the row's error."""
    try:
        return clean_text(value)
    except ValueError as exc:
        raise RowError(f"{name}: {exc}") from None


def _century_sex_year(year: int, female: bool) -> str:
    key = (year, female)
    digits = _CENTURY_SEX_YEAR.get(key)
    if digits is None:
        digits = _CENTURY_SEX_YEAR[key] = f"{(year - 1900) // 100 * 2 + female}{year % 100:02d}"
    return digits


def _validate(
    id_number: str,
    raw_name: str,
    raw_dob: str,
    raw_sex: str,
    raw_residence: str,
    raw_phone: str,
    raw_guardians: Any,
    today: dt.date,
) -> _Row:
    """The rules of app/registry/rules.py validate_record, checked in the same order, with fast
    paths for the common case (property tests prove the two equal)."""
    id_number = id_number.strip()
    if len(id_number) != 12 or not id_number.isdigit() or not id_number.isascii():
        raise RowError(
            "id_number: " + RULE_MESSAGES[id_number_violations(id_number)[0]] if id_number else "id_number: missing"
        )
    full_name = _clean(raw_name, "full_name")
    if len(full_name) > 200:
        raise RowError("full_name: longer than 200 characters")
    try:
        dob = dt.date.fromisoformat(raw_dob.strip())
    except ValueError:
        raise RowError("date_of_birth: not a date (YYYY-MM-DD)") from None
    if dob < EARLIEST_BIRTH or dob > today:
        raise RowError("date_of_birth: out of range")
    sex = SEXES.get(raw_sex) or SEXES.get(raw_sex.strip().casefold())
    if sex is None:
        raise RowError("sex: must be male or female")
    # Fast path: a known province and digits 4-6 exactly those of this sex and birth year is
    # what id_number_violations calls valid; otherwise it names the rules broken.
    if id_number[:3] not in PROVINCES or id_number[3:6] != _century_sex_year(dob.year, sex == "female"):
        rules = id_number_violations(id_number, sex=sex, date_of_birth=dob)  # type: ignore[arg-type]
        if rules:
            raise RowError("id_number: " + " ".join(RULE_MESSAGES[r] for r in rules))
    residence = _clean(raw_residence, "residence")
    if len(residence) > 500:
        raise RowError("residence: longer than 500 characters")
    phone: str | None = None
    if raw_phone:
        raw_phone = raw_phone.strip()
        if _E164_MOBILE.fullmatch(raw_phone):
            phone = raw_phone
        elif raw_phone:
            try:
                phone = normalise_phone(raw_phone)
            except ValueError:
                raise RowError("phone: not a Vietnamese mobile number") from None
    guardians = (
        None
        if raw_guardians is None or raw_guardians == ""
        else _guardians_text(parse_guardians(raw_guardians, id_number))
    )
    return id_number, full_name, dob, sex, id_number[:3], residence, phone, guardians


def _validate_mapping(row: dict[str, Any], today: dt.date) -> _Row:
    return _validate(
        str(row.get("id_number") or ""),
        str(row.get("full_name") or ""),
        str(row.get("date_of_birth") or ""),
        str(row.get("sex") or ""),
        str(row.get("residence") or ""),
        str(row.get("phone") or ""),
        row.get("guardians"),
        today,
    )


def validate_row(row: dict[str, Any], today: dt.date) -> Record:
    """One row → a Record, or RowError naming the field and the rule: validate_record's verdicts
    (app/registry/rules.py), faster."""
    return _record(_validate_mapping(row, today))


_Reject = Callable[[int, str], None]


class HeaderError(ValueError):
    """A CSV header that does not name the fields exactly: the file is refused before any row
    is read, so nothing is imported."""


def _column(name: str) -> str:
    # Quoted when blank or padded, so a stray space or an empty column shows in the message.
    return repr(name) if not name or name != name.strip() else name


def check_header(header: list[str]) -> None:
    """HeaderError unless the header names every required field, and only known fields, once.

    An unknown column used to be ignored, so a misspelt optional one (``guardian``) silently
    dropped every value in it; a repeated one silently lost all but its last copy.
    """
    expected = f"(expected {','.join(FIELDS)})"
    if header and not _FIELD_SET.intersection(header):
        # Most likely a file without its header line, whose first record would be quoted here:
        # ID numbers and phones stay out of the message (it reaches the terminal).
        raise HeaderError(f"the first line of the CSV file is not a header: it names none of the fields {expected}")
    problems = []
    missing = [f for f in _REQUIRED_CSV if f not in header]
    if missing:
        problems.append(f"lacks: {', '.join(missing)}")
    unknown = [name for name in header if name not in _FIELD_SET]
    if unknown:
        shown = []
        for name in unknown:
            close = difflib.get_close_matches(name.strip().casefold(), FIELDS, n=1, cutoff=0.75)
            shown.append(_column(name) + (f" (did you mean {close[0]}?)" if close else ""))
        problems.append(f"has unknown columns: {', '.join(shown)}")
    repeated = sorted({name for name in header if name in _FIELD_SET and header.count(name) > 1})
    if repeated:
        problems.append(f"repeats: {', '.join(repeated)}")
    if problems:
        raise HeaderError(f"the CSV header {'; '.join(problems)} {expected}")


def _csv_rows(text: IO[str], today: dt.date, reject: _Reject) -> Iterator[tuple[int, _Row | None]]:
    reader = csv.reader(text)
    header = next(reader, None) or []
    check_header(header)
    width = len(header)
    where = {name: i for i, name in enumerate(header)}
    i_id, i_name, i_dob, i_sex, i_res = (where[f] for f in _REQUIRED_CSV)
    i_phone, i_guardians = where.get("phone"), where.get("guardians")
    validate = _validate
    line_no = reader.line_num
    for row in reader:
        first_line, line_no = line_no + 1, reader.line_num
        if not row:
            continue  # a blank line
        n = len(row)
        if n == width:
            values = row
        elif n > width:
            reject(first_line, "too many columns")
            yield first_line, None
            continue
        else:  # missing trailing columns are empty
            values = row + [""] * (width - n)
        try:
            yield (
                first_line,
                validate(
                    values[i_id],
                    values[i_name],
                    values[i_dob],
                    values[i_sex],
                    values[i_res],
                    values[i_phone] if i_phone is not None else "",
                    values[i_guardians] if i_guardians is not None else None,
                    today,
                ),
            )
        except RowError as exc:
            reject(first_line, str(exc))
            yield first_line, None


def _jsonl_rows(text: IO[str], today: dt.date, reject: _Reject) -> Iterator[tuple[int, _Row | None]]:
    for line_no, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            reject(line_no, "not valid JSON")
            yield line_no, None
            continue
        if not isinstance(obj, dict):
            reject(line_no, "not a JSON object")
            yield line_no, None
            continue
        unknown = obj.keys() - _FIELD_SET
        if unknown:
            reject(line_no, f"unknown fields: {', '.join(sorted(unknown))}")
            yield line_no, None
            continue
        try:
            yield line_no, _validate_mapping(obj, today)
        except RowError as exc:
            reject(line_no, str(exc))
            yield line_no, None


def _rows(source: IO[bytes], fmt: str, today: dt.date, reject: _Reject) -> Iterator[tuple[int, _Row | None]]:
    """(line, row) for each row of the source: validated, or None when it went to reject(line, reason)."""
    # surrogateescape keeps reading past bad UTF-8; clean_text then rejects that row alone.
    text = io.TextIOWrapper(source, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(text, today, reject) if fmt == "csv" else _jsonl_rows(text, today, reject)
    finally:
        with contextlib.suppress(ValueError, OSError):
            text.detach()  # the caller's stream stays open (and theirs to close)


def iter_records(source: IO[bytes], fmt: str, today: dt.date, reject: _Reject) -> Iterator[tuple[int, Record]]:
    """(line, Record) for every valid row of the source; reject(line, reason) for the others."""
    for line_no, row in _rows(source, fmt, today, reject):
        if row is not None:
            yield line_no, _record(row)


class RejectsWriter:
    """The rejects file (created on the first reject): one line per rejected row, in line order.

    Rejects found while parsing are held back until the rows before them are either handed to
    the database or known to end the import (flush), so the file reads as if each batch had been
    written before the next one was parsed. Rejects the database finds go to side files, each in
    line order: one for the duplicates of the batches (each batch's after the batch before), one
    for the rows rejected at the end of the run. close() merges them into the rejects file,
    streaming, so that a file of millions of rejects is never held in memory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self._writer: Any = None
        self._pending: list[tuple[int, str]] = []
        self._sides: dict[bool, tuple[IO[str], Any]] = {}  # at the end of the run? -> (file, csv writer)
        self.count = 0  # rejects found while parsing, written
        self.found = 0  # rejects found by the database

    def __call__(self, line_no: int, reason: str) -> None:
        self._pending.append((line_no, reason))

    def flush(self) -> None:
        if not self._pending:
            return
        if self._fh is None:
            # backslashreplace: a reason can quote a JSON field name holding a lone surrogate.
            self._fh = self.path.open("w", newline="", encoding="utf-8", errors="backslashreplace")
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["line", "reason"])
        self._writer.writerows(self._pending)
        self.count += len(self._pending)
        self._pending.clear()

    def add_found(self, rejects: list[tuple[int, str]], *, at_end: bool = False) -> None:
        """Rejects of one committed batch (after those of the batches before), or of the end."""
        if not rejects:
            return
        side = self._sides.get(at_end)
        if side is None:
            fh = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
                "w+", dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part", newline="",
                encoding="utf-8", delete=False,
            )  # fmt: skip
            side = self._sides[at_end] = (fh, csv.writer(fh))
        side[1].writerows(sorted(rejects))
        self.found += len(rejects)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def total(self) -> int:
        return self.count + self.found

    def discard(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        sides = [fh for fh, _ in self._sides.values()]
        self._sides.clear()
        if not sides:
            return
        merged = Path(sides[0].name).with_suffix(".merged")
        try:
            with contextlib.ExitStack() as files:
                out = files.enter_context(merged.open("w", newline="", encoding="utf-8"))
                streams: list[Iterator[list[str]]] = []
                for side in sides:
                    side.seek(0)
                    streams.append(csv.reader(side))
                if self._fh is not None:
                    parsed = csv.reader(files.enter_context(self.path.open(newline="", encoding="utf-8")))
                    next(parsed)  # the header
                    streams.append(parsed)
                writer = csv.writer(out)
                writer.writerow(["line", "reason"])
                writer.writerows(heapq.merge(*streams, key=_line_of))
            merged.replace(self.path)
        finally:
            merged.unlink(missing_ok=True)
            for side in sides:
                side.close()
                Path(side.name).unlink(missing_ok=True)


def _line_of(reject: Any) -> int:  # a row of a rejects file (typeshed types heapq.merge loosely)
    return int(reject[0])


def _audit_row(now: dt.datetime, actor: Actor, batch_no: int, count: int, source: str) -> dict[str, Any]:
    return {
        "at": now,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "action": "registry.import.batch",
        "target": None,
        "outcome": "ok",
        "request_id": request_id_var.get(),
        "detail": {"batch": batch_no, "records": count, "source": source},
    }


_Audit = Callable[[int, int], dict[str, Any]]  # (batch number, records applied) -> the audit row


@dataclass(slots=True)
class _Applied:
    """What one transaction did: the rows it applied, and the rows the database rejected."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: list[tuple[int, str]] = field(default_factory=list)


# --- one run's state -------------------------------------------------------------------------------
#
# Duplicates. Each valid row claims its ID number with its line, unless an earlier row did: then
# it is staged with that row's line as its `first_line`, compared with that row and rejected.
# The claims are a dict int(id_number) -> line for the first _CLAIMS_IN_MEMORY numbers of a run,
# then a temporary table (import_claims) of the import's own connection. Measured (1M rows,
# 10k-row batches, PostgreSQL 15 and the importer on one 2-core machine, CPU time per row):
# - the dict takes ~80 bytes an entry (tracemalloc, CPython 3.11): 160 MB at the bound, where
#   10 million numbers would take ~800 MB and the whole population ~8 GB; it costs the importer
#   ~1 µs a row;
# - the table costs no memory of the importer's but 2-3.7 µs a row of the server's (claiming,
#   on a B-tree that grows with the run), and the server is what bounds the import: 52k rows/s
#   with the table from the first batch against 64-68k with the dict, in the same conditions.
#   On SQLite the table costs 0.7 µs a row.
# So the numbers of a file's first 2 million rows are checked in memory, and a longer file moves
# them to the table once (in the transaction of the batch that reaches the bound) and goes on
# there. A duplicate is compared with its first row where that row's data is: in the batch (a
# repeat within the batch, compared in Python), in the registry (the row was applied, so the
# registry holds its data and links), or in import_deferred.
#
# Guardians. In each batch's transaction, after the duplicates are dropped: rows with a guardian
# that is neither in the registry nor in this batch (or whose guardian in this batch is deferred
# itself) move to import_deferred (state 'd') and import_deferred_links; the rest are merged. At
# the end, in one transaction: deferred rows with a guardian neither in the registry nor among
# the deferred rows are rejected (state 'r'), then (repeatedly) the rows whose guardian was just
# rejected; the deferred rows left are merged. Rejecting in this order accepts the largest set of
# rows in which every guardian is in the registry or accepted from the file (two rows naming each
# other are both accepted). The end is one transaction so that no ward is ever applied with a
# link to a guardian that a failure would leave out.

_CLAIMS_IN_MEMORY = 2_000_000

_CLAIM = (
    "INSERT INTO import_claims (id, line) SELECT CAST(id_number AS BIGINT), line FROM citizens_stage "
    "WHERE true ON CONFLICT DO NOTHING"
)
# The staged rows whose number an earlier batch claimed (each number is staged once a batch).
_MARK_DUPLICATES = (
    "UPDATE citizens_stage SET first_line = c.line FROM import_claims c "
    "WHERE c.id = CAST(citizens_stage.id_number AS BIGINT) AND c.line <> citizens_stage.line"
)
# The staged duplicates, with their first row's data: from import_deferred when that row was
# deferred, else from the registry, which holds it since its batch.
_FIND_DUPLICATES = (
    "SELECT s.line, s.first_line, s.full_name, s.date_of_birth, s.sex, s.residence, s.phone, s.guardians, "
    "d.id_number IS NOT NULL, d.full_name, d.date_of_birth, d.sex, d.residence, d.phone, d.guardians, "
    "z.id_number IS NOT NULL, z.full_name, z.date_of_birth, z.sex, z.residence, z.phone, "
    "(SELECT {aggregate} FROM guardian_links g WHERE g.ward_id_number = z.id_number), "
    "s.id_number FROM citizens_stage s "
    "LEFT JOIN import_deferred d ON d.id_number = s.id_number "
    "LEFT JOIN citizens z ON z.id_number = s.id_number "
    "WHERE s.first_line IS NOT NULL"
)
_DROP_DUPLICATES = "DELETE FROM citizens_stage WHERE first_line IS NOT NULL"
# Rows whose guardian is neither in the registry nor in this batch, then rows whose guardian is
# one of those (unless that guardian is in the registry already).
_DEFERRED_NOW = (
    "INSERT INTO import_deferred_now (id_number) "
    "WITH RECURSIVE deferred (id_number) AS ("
    "SELECT l.ward_id_number FROM guardian_links_stage l "
    "LEFT JOIN citizens_stage s ON s.id_number = l.guardian_id_number "
    "WHERE s.id_number IS NULL AND NOT EXISTS (SELECT 1 FROM citizens c WHERE c.id_number = l.guardian_id_number) "
    "UNION "
    "SELECT l.ward_id_number FROM guardian_links_stage l JOIN deferred d ON d.id_number = l.guardian_id_number "
    "WHERE NOT EXISTS (SELECT 1 FROM citizens c WHERE c.id_number = l.guardian_id_number)"
    ") SELECT id_number FROM deferred"
)
_DEFER = (
    "INSERT INTO import_deferred SELECT s.*, 'd' FROM citizens_stage s "
    "WHERE s.id_number IN (SELECT id_number FROM import_deferred_now)",
    "INSERT INTO import_deferred_links (ward_id_number, guardian_id_number, relation) "
    "SELECT ward_id_number, guardian_id_number, relation FROM guardian_links_stage "
    "WHERE ward_id_number IN (SELECT id_number FROM import_deferred_now)",
    "DELETE FROM citizens_stage WHERE id_number IN (SELECT id_number FROM import_deferred_now)",
    "DELETE FROM guardian_links_stage WHERE ward_id_number IN (SELECT id_number FROM import_deferred_now)",
)
_REJECT_UNRESOLVED = (
    "UPDATE import_deferred SET state = 'r' WHERE id_number IN ("
    "WITH RECURSIVE unresolved (id_number) AS ("
    "SELECT l.ward_id_number FROM import_deferred_links l "
    "WHERE NOT EXISTS (SELECT 1 FROM citizens c WHERE c.id_number = l.guardian_id_number) "
    "AND NOT EXISTS (SELECT 1 FROM import_deferred y WHERE y.id_number = l.guardian_id_number AND y.state = 'd') "
    "UNION "
    "SELECT l.ward_id_number FROM import_deferred_links l JOIN unresolved u ON u.id_number = l.guardian_id_number "
    "WHERE NOT EXISTS (SELECT 1 FROM citizens c WHERE c.id_number = l.guardian_id_number)"
    ") SELECT id_number FROM unresolved)"
)
# For each rejected row, each guardian that is not in the registry, with its own row's line
# when it had one and that row was rejected too.
_UNRESOLVED_REASONS = (
    "SELECT c.line, l.guardian_id_number, y.line, y.state = 'r' FROM import_deferred_links l "
    "JOIN import_deferred c ON c.id_number = l.ward_id_number "
    "LEFT JOIN import_deferred y ON y.id_number = l.guardian_id_number "
    "WHERE c.state = 'r' AND NOT EXISTS (SELECT 1 FROM citizens x WHERE x.id_number = l.guardian_id_number) "
    "AND (y.state IS NULL OR y.state <> 'd') ORDER BY c.line, l.guardian_id_number"
)
_STAGE_DEFERRED = (
    "INSERT INTO citizens_stage SELECT id_number, full_name, date_of_birth, sex, birth_province, residence, "
    "phone, guardians, line, NULL FROM import_deferred WHERE state = 'd' ORDER BY id_number"
)
_STAGE_DEFERRED_LINKS = (
    "INSERT INTO guardian_links_stage (ward_id_number, guardian_id_number, relation) "
    "SELECT ward_id_number, guardian_id_number, relation FROM import_deferred_links "
    "WHERE ward_id_number IN (SELECT id_number FROM citizens_stage)"
)


_COMPARED = ("full_name", "date_of_birth", "sex", "residence", "phone")


def _guardian_set(text: str | None) -> frozenset[str]:
    return frozenset(text.split(";")) if text else frozenset()


def _differences(row: Sequence[Any], first: Sequence[Any]) -> list[str]:
    """The fields in which two rows (full_name, date_of_birth, sex, residence, phone, guardians,
    as normalised by the validation) differ; the guardians compare as sets."""
    fields = [name for name, a, b in zip(_COMPARED, row, first, strict=False) if a != b]
    if _guardian_set(row[5]) != _guardian_set(first[5]):
        fields.append("guardians")
    return fields


def _duplicate_reason(first_line: int, differences: list[str]) -> str:
    detail = f"different data: {', '.join(differences)}" if differences else "same data"
    return f"duplicate of line {first_line} ({detail})"


# The compared fields of a row: full_name, date_of_birth, sex, residence, phone, guardians.
_Fields = Sequence[Any]
# A duplicate's first row: its line and its fields.
_First = tuple[int, _Fields]


def _fields(row: _Row | _Staged) -> _Fields:
    return (row[1], row[2], row[3], row[5], row[6], row[7])


def _found_duplicates(found: Iterable[Sequence[Any]]) -> tuple[list[tuple[int, str]], dict[str, _First]]:
    """Rows of _FIND_DUPLICATES -> (line, reason) for each, and each number's first row."""
    rejects, firsts = [], {}
    for r in found:
        first = r[9:15] if r[8] else (*r[16:21], r[21]) if r[15] else (None,) * 6
        rejects.append((r[0], _duplicate_reason(r[1], _differences(r[2:8], first))))
        firsts[r[22]] = (r[1], first)
    return rejects, firsts


def _repeat_rejects(
    rows: list[_Staged], repeats: list[tuple[_Row, int]], firsts: dict[str, _First], date: Callable[[Any], Any]
) -> list[tuple[int, str]]:
    """The rows that repeat a number first seen in the batch: duplicates of the batch's row
    with that number, or, when that row turned out to repeat an earlier batch's, of that
    batch's row (whose fields come from the database: `date` makes the repeat's date_of_birth
    comparable)."""
    if not repeats:
        return []
    staged = {r[0]: r for r in rows}
    rejects = []
    for row, line in repeats:
        found = firsts.get(row[0])
        if found is None:
            first = staged[row[0]]
            reason = _duplicate_reason(first[8], _differences(_fields(row), _fields(first)))
        else:
            ours = (row[1], date(row[2]), row[3], row[5], row[6], row[7])
            reason = _duplicate_reason(found[0], _differences(ours, found[1]))
        rejects.append((line, reason))
    return rejects


def _unresolved_reasons(found: Iterable[Sequence[Any]]) -> list[tuple[int, str]]:
    reasons: dict[int, list[str]] = {}
    for line, guardian, guardian_line, guardian_rejected in found:
        if guardian_rejected:
            reason = f"{guardian} is not in the registry, and its row in this file (line {guardian_line}) was rejected"
        else:
            reason = f"{guardian} is not in the registry or this file"
        reasons.setdefault(line, []).append(reason)
    return [(line, "guardians: " + "; ".join(texts)) for line, texts in reasons.items()]


def _rowcount(status: str) -> int:
    """The row count of an asyncpg command status ("INSERT 0 12", "DELETE 3")."""
    return int(status.rsplit(" ", 1)[1])


# A row as staged: the validated row (_Row) and its line number; a duplicate also has the line
# of the earlier row with its ID number (first_line; staged apart, so that the other rows are
# copied without that column).
_Staged = tuple[str, str, dt.date, str, str, str, str | None, str | None, int]
_Duplicate = tuple[str, str, dt.date, str, str, str, str | None, str | None, int, int]


def _same(value: Any) -> Any:
    return value


def _sqlite_import_cache(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # This engine is the import's own: a 64 MiB page cache (default 2 MiB) for its upserts.
    cursor.execute("PRAGMA cache_size=-65536")
    # The run's temporary tables stay in a file (import_claims grows with the file), with their
    # rollback journal in memory: half the time of a journal file to fill import_claims, and the
    # temporary database goes with the connection anyway.
    cursor.execute("PRAGMA temp.journal_mode=MEMORY")
    cursor.execute("PRAGMA temp.cache_size=-65536")
    cursor.close()


class _SqliteSink:
    """One connection for the whole run (its temporary tables are the run's state)."""

    _STAGE_COLUMNS = (
        "(id_number TEXT NOT NULL, full_name TEXT NOT NULL, date_of_birth TEXT NOT NULL, sex TEXT NOT NULL, "
        "birth_province TEXT NOT NULL, residence TEXT NOT NULL, phone TEXT, guardians TEXT, line INTEGER NOT NULL, "
        "first_line INTEGER)"
    )
    _LINK_COLUMNS = (
        "(ward_id_number TEXT NOT NULL, guardian_id_number TEXT NOT NULL, relation TEXT NOT NULL, "
        "PRIMARY KEY (ward_id_number, guardian_id_number))"
    )
    _TABLES = (
        "CREATE TEMP TABLE citizens_stage " + _STAGE_COLUMNS,
        "CREATE TEMP TABLE guardian_links_stage " + _LINK_COLUMNS,
        "CREATE TEMP TABLE import_deferred_now (id_number TEXT PRIMARY KEY)",
        "CREATE TEMP TABLE import_relinked (id_number TEXT PRIMARY KEY)",
        "CREATE TEMP TABLE import_claims (id INTEGER PRIMARY KEY, line INTEGER NOT NULL)",
        "CREATE TEMP TABLE import_deferred "
        + _STAGE_COLUMNS.replace("id_number TEXT NOT NULL", "id_number TEXT PRIMARY KEY").replace(
            "first_line INTEGER)", "first_line INTEGER, state TEXT NOT NULL DEFAULT 'd')"
        ),
        "CREATE TEMP TABLE import_deferred_links " + _LINK_COLUMNS,
    )
    _CLEAR = (
        "DELETE FROM citizens_stage",
        "DELETE FROM guardian_links_stage",
        "DELETE FROM import_deferred_now",
        "DELETE FROM import_relinked",
    )
    _STAGE = "INSERT INTO citizens_stage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
    _STAGE_DUPLICATES = "INSERT INTO citizens_stage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    _SPILL = "INSERT INTO import_claims (id, line) VALUES (?, ?)"
    _STAGE_LINKS = "INSERT INTO guardian_links_stage VALUES (?, ?, ?)"
    _DUPLICATES = _FIND_DUPLICATES.format(aggregate="group_concat(g.guardian_id_number || ':' || g.relation, ';')")
    # The staged wards whose guardian links differ from the registry's: they count as updated
    # (and their updated_at moves) even when the rest of the record is unchanged.
    _RELINK = (
        "INSERT INTO import_relinked (id_number) "
        "SELECT g.ward_id_number FROM guardian_links g JOIN citizens_stage s ON s.id_number = g.ward_id_number "
        "WHERE NOT EXISTS (SELECT 1 FROM guardian_links_stage n WHERE n.ward_id_number = g.ward_id_number "
        "AND n.guardian_id_number = g.guardian_id_number AND n.relation = g.relation) "
        "UNION "
        "SELECT n.ward_id_number FROM guardian_links_stage n "
        "WHERE NOT EXISTS (SELECT 1 FROM guardian_links g WHERE g.ward_id_number = n.ward_id_number "
        "AND g.guardian_id_number = n.guardian_id_number AND g.relation = n.relation)"
    )
    # Unchanged rows are left alone (as on PostgreSQL), so a re-run does not touch updated_at.
    # Update, then insert: the row counts of the two are the updated and the inserted rows (one
    # writer holds the database, so nothing comes in between).
    _UPDATE = (
        "UPDATE citizens SET full_name = s.full_name, date_of_birth = s.date_of_birth, sex = s.sex, "
        "birth_province = s.birth_province, residence = s.residence, phone = s.phone, updated_at = ? "
        "FROM citizens_stage s WHERE citizens.id_number = s.id_number AND (citizens.full_name IS NOT s.full_name "
        "OR citizens.date_of_birth IS NOT s.date_of_birth OR citizens.sex IS NOT s.sex "
        "OR citizens.residence IS NOT s.residence OR citizens.phone IS NOT s.phone "
        "OR citizens.id_number IN (SELECT id_number FROM import_relinked))"
    )
    _INSERT = (
        "INSERT INTO citizens (id_number, full_name, date_of_birth, sex, birth_province, residence, phone, "
        "created_at, updated_at) SELECT id_number, full_name, date_of_birth, sex, birth_province, residence, phone, "
        "?, ? FROM citizens_stage WHERE true ORDER BY id_number ON CONFLICT (id_number) DO NOTHING"
    )
    # After the merge (a new ward must exist first): the relinked wards get exactly their links.
    _LINKS = (
        "DELETE FROM guardian_links WHERE ward_id_number IN (SELECT id_number FROM import_relinked) "
        "AND NOT EXISTS (SELECT 1 FROM guardian_links_stage n WHERE n.ward_id_number = guardian_links.ward_id_number "
        "AND n.guardian_id_number = guardian_links.guardian_id_number AND n.relation = guardian_links.relation)",
        "INSERT INTO guardian_links (ward_id_number, guardian_id_number, relation) "
        "SELECT ward_id_number, guardian_id_number, relation FROM guardian_links_stage "
        "WHERE ward_id_number IN (SELECT id_number FROM import_relinked) ON CONFLICT DO NOTHING",
    )

    def __init__(self, settings: Settings, url: str, now: dt.datetime) -> None:
        self.engine = make_engine(settings, url=url, long_statements=True)
        event.listen(self.engine.sync_engine, "connect", _sqlite_import_cache)
        self.conn: AsyncConnection | None = None
        self.deferred = 0  # rows deferred by the committed batches
        dialect = self.engine.dialect
        columns = Citizen.__table__.c
        # The exact values SQLAlchemy would store (UTC text for the timestamps, ISO dates).
        stamp = columns.updated_at.type.dialect_impl(dialect).bind_processor(dialect) or _same
        self._stamp = stamp(now)
        self._date: Callable[[Any], Any] = (
            columns.date_of_birth.type.dialect_impl(dialect).bind_processor(dialect) or _same
        )

    async def _connect(self) -> AsyncConnection:
        if self.conn is None:
            conn = await self.engine.connect()
            try:
                async with conn.begin():
                    for sql in self._TABLES:
                        await conn.exec_driver_sql(sql)
            except BaseException:
                await conn.close()
                raise
            self.conn = conn
        return self.conn

    async def write(
        self,
        rows: list[_Staged],
        duplicates: list[_Duplicate],
        repeats: list[tuple[_Row, int]],
        batch_no: int,
        audit: _Audit,
        *,
        claim: bool,
        spill: dict[int, int] | None,
    ) -> _Applied:
        """One batch in one transaction: rows of distinct numbers, duplicates of earlier batches'
        rows (known while the claims are in memory), rows that repeat a number of `rows`.
        claim: the rows claim their numbers in import_claims (else the caller did); spill: the
        caller's claims, moved there first."""
        conn = await self._connect()
        rows.sort()  # B-tree pages in key order: far fewer page misses (the numbers are distinct)
        date = self._date
        staged = [(r[0], r[1], date(r[2]), r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]
        applied = _Applied()
        deferred = 0
        async with conn.begin():
            for sql in self._CLEAR:
                await conn.exec_driver_sql(sql)
            if spill:
                claims = iter(spill.items())
                while chunk := list(itertools.islice(claims, 100_000)):
                    await conn.exec_driver_sql(self._SPILL, chunk)
            if staged:  # (a batch may hold duplicates only)
                await conn.exec_driver_sql(self._STAGE, staged)
            if duplicates:
                await conn.exec_driver_sql(
                    self._STAGE_DUPLICATES,
                    [(r[0], r[1], date(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9]) for r in duplicates],
                )
            marked = claim and (await conn.exec_driver_sql(_CLAIM)).rowcount < len(rows)
            if marked:
                await conn.exec_driver_sql(_MARK_DUPLICATES)
            dropped: set[int] = set()
            firsts: dict[str, _First] = {}
            if marked or duplicates:
                applied.rejects, firsts = _found_duplicates((await conn.exec_driver_sql(self._DUPLICATES)).all())
                dropped = {line for line, _ in applied.rejects}
                await conn.exec_driver_sql(_DROP_DUPLICATES)
            applied.rejects += _repeat_rejects(rows, repeats, firsts, date)
            links = [(r[0], g, rel) for r in rows if r[7] and r[8] not in dropped for g, rel in _guardians_list(r[7])]
            if links:
                await conn.exec_driver_sql(self._STAGE_LINKS, links)
                deferred = (await conn.exec_driver_sql(_DEFERRED_NOW)).rowcount
                if deferred:
                    for sql in _DEFER:
                        await conn.exec_driver_sql(sql)
            await self._apply(conn, applied, len(rows) + len(duplicates) - len(dropped) - deferred, batch_no, audit)
        self.deferred += deferred
        return applied

    async def _apply(self, conn: AsyncConnection, applied: _Applied, staged: int, batch_no: int, audit: _Audit) -> None:
        await conn.exec_driver_sql(self._RELINK)
        applied.updated = (await conn.exec_driver_sql(self._UPDATE, (self._stamp,))).rowcount
        applied.inserted = (await conn.exec_driver_sql(self._INSERT, (self._stamp, self._stamp))).rowcount
        applied.unchanged = staged - applied.inserted - applied.updated
        for sql in self._LINKS:
            await conn.exec_driver_sql(sql)
        await conn.execute(insert(AuditEvent), [audit(batch_no, staged)])

    async def finish(self, batch_no: int, audit: _Audit) -> _Applied | None:
        if not self.deferred or self.conn is None:
            return None
        conn = self.conn
        applied = _Applied()
        async with conn.begin():
            for sql in self._CLEAR:
                await conn.exec_driver_sql(sql)
            if (await conn.exec_driver_sql(_REJECT_UNRESOLVED)).rowcount:
                applied.rejects = _unresolved_reasons((await conn.exec_driver_sql(_UNRESOLVED_REASONS)).all())
            staged = (await conn.exec_driver_sql(_STAGE_DEFERRED)).rowcount
            if staged:
                await conn.exec_driver_sql(_STAGE_DEFERRED_LINKS)
                await self._apply(conn, applied, staged, batch_no, audit)
        return applied

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await self.engine.dispose()


class _PostgresSink:
    # The staging table holds the rows exactly as validated (_Staged), so they are copied as
    # they are; it and the other per-batch tables are this session's, emptied at each commit.
    _TABLES = (
        "CREATE TEMP TABLE citizens_stage ON COMMIT DELETE ROWS AS SELECT id_number, full_name, date_of_birth, "
        "sex, birth_province, residence, phone, NULL::text AS guardians, 0 AS line, NULL::integer AS first_line "
        "FROM citizens WITH NO DATA;"
        "CREATE TEMP TABLE guardian_links_stage (LIKE guardian_links) ON COMMIT DELETE ROWS;"
        "CREATE TEMP TABLE import_deferred_now (id_number text) ON COMMIT DELETE ROWS;"
        "CREATE TEMP TABLE import_claims (id bigint PRIMARY KEY, line integer NOT NULL);"
        "CREATE TEMP TABLE import_deferred (LIKE citizens_stage, state \"char\" NOT NULL DEFAULT 'd', "
        "PRIMARY KEY (id_number));"
        "CREATE TEMP TABLE import_deferred_links (LIKE guardian_links);"
    )
    # Temporary tables live in the session's own buffers, 8 MB by default: import_claims' index
    # (once the claims are there) outgrows that within a few hundred thousand rows, and every
    # batch then reads and writes it on disk (claiming took 3.3 s instead of 2.2 s per 500k rows
    # at 10k rows a batch). They are allocated as used, up to this.
    _SERVER_SETTINGS: ClassVar[dict[str, str]] = {"temp_buffers": "256MB"}
    _COLUMNS = (
        "id_number", "full_name", "date_of_birth", "sex", "birth_province", "residence", "phone", "guardians", "line",
    )  # fmt: skip
    _DUPLICATES = _FIND_DUPLICATES.format(aggregate="string_agg(g.guardian_id_number || ':' || g.relation, ';')")
    _STAGE_LINKS = (
        "INSERT INTO guardian_links_stage SELECT s.id_number, left(g, 12), substr(g, 14) "
        "FROM citizens_stage s CROSS JOIN LATERAL unnest(string_to_array(s.guardians, ';')) AS g "
        "WHERE s.guardians IS NOT NULL"
    )
    # One round trip; its status is that of the last statement: the rows to defer.
    _PREPARE = ";".join((_STAGE_LINKS, _DEFERRED_NOW))
    _DEFER_ALL = ";".join(_DEFER)
    _PREPARE_DEFERRED = ";".join((_STAGE_DEFERRED, _STAGE_DEFERRED_LINKS))
    # The merge, leaving unchanged rows alone; (xmax = 0) tells an inserted row from an updated
    # one, and the rows staged that it neither inserted nor updated are the unchanged ones.
    # A ward whose guardian links change counts as updated (and its updated_at moves) even when
    # the rest of its record is unchanged: when the batch names a link the registry lacks
    # (`relinked`, one primary-key lookup per staged link), or the registry has a link the batch
    # no longer names (looked up by ward, for the existing rows only: a new row has no links;
    # a scalar subquery, which the planner cannot turn into a hash of all of guardian_links).
    # The updated wards lose the links the batch no longer names (`gone`); what the batch names
    # is inserted after this statement (a new ward must exist first). The links are looked up
    # by key on purpose: without statistics on the staging tables the planner sorted or hashed
    # the whole guardian_links table for every batch instead (92 ms a batch at 1M rows, growing).
    _MERGE = (
        "WITH relinked AS (SELECT n.ward_id_number FROM guardian_links_stage n "
        "WHERE (SELECT g.relation FROM guardian_links g WHERE g.ward_id_number = n.ward_id_number "
        "AND g.guardian_id_number = n.guardian_id_number) IS DISTINCT FROM n.relation), "
        "merged AS (INSERT INTO citizens AS c (id_number, full_name, date_of_birth, sex, birth_province, "
        "residence, phone, created_at, updated_at) "
        "SELECT id_number, full_name, date_of_birth, sex, birth_province, residence, phone, {now}, {now} "
        "FROM citizens_stage "
        "ON CONFLICT (id_number) DO UPDATE SET full_name = EXCLUDED.full_name, "
        "date_of_birth = EXCLUDED.date_of_birth, sex = EXCLUDED.sex, birth_province = EXCLUDED.birth_province, "
        "residence = EXCLUDED.residence, phone = EXCLUDED.phone, updated_at = EXCLUDED.updated_at "
        "WHERE (c.full_name, c.date_of_birth, c.sex, c.residence, c.phone) IS DISTINCT FROM "
        "(EXCLUDED.full_name, EXCLUDED.date_of_birth, EXCLUDED.sex, EXCLUDED.residence, EXCLUDED.phone) "
        "OR c.id_number IN (SELECT ward_id_number FROM relinked) "
        "OR (SELECT true FROM guardian_links g WHERE g.ward_id_number = c.id_number "
        "AND (g.ward_id_number, g.guardian_id_number, g.relation) NOT IN "
        "(SELECT ward_id_number, guardian_id_number, relation FROM guardian_links_stage) LIMIT 1) "
        "RETURNING c.id_number, xmax = 0 AS inserted), "
        "gone AS (DELETE FROM guardian_links g "
        "WHERE g.ward_id_number = ANY (ARRAY(SELECT id_number FROM merged WHERE NOT inserted)) "
        "AND (g.ward_id_number, g.guardian_id_number, g.relation) NOT IN "
        "(SELECT ward_id_number, guardian_id_number, relation FROM guardian_links_stage)) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted), "
        "(SELECT count(*) FROM citizens_stage) FROM merged"
    )
    _LINKS = (
        "INSERT INTO guardian_links (ward_id_number, guardian_id_number, relation) "
        "SELECT ward_id_number, guardian_id_number, relation FROM guardian_links_stage ON CONFLICT DO NOTHING"
    )
    _AUDIT = (
        "INSERT INTO audit_events (at, actor_type, actor_id, action, target, outcome, request_id, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json)"
    )

    def __init__(self, url: str, now: dt.datetime) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.conn: Any = None
        self.deferred = 0  # rows deferred by the committed batches
        # A timestamp literal made here from a datetime (a naive one is local time, as asyncpg
        # takes it): nothing from the file goes into the SQL text.
        self._merge = self._MERGE.format(now=f"'{now.astimezone(dt.UTC).isoformat()}'::timestamptz")

    async def _connect(self) -> Any:
        if self.conn is None:
            import asyncpg

            conn = await asyncpg.connect(self.dsn, server_settings=self._SERVER_SETTINGS)
            try:
                await conn.execute(self._TABLES)
            except BaseException:
                await conn.close()
                raise
            self.conn = conn
        return self.conn

    async def write(
        self,
        rows: list[_Staged],
        duplicates: list[_Duplicate],
        repeats: list[tuple[_Row, int]],
        batch_no: int,
        audit: _Audit,
        *,
        claim: bool,
        spill: dict[int, int] | None,
    ) -> _Applied:
        """As _SqliteSink.write."""
        conn = await self._connect()
        applied = _Applied()
        dropped = 0
        async with conn.transaction():
            if spill:
                await conn.copy_records_to_table("import_claims", records=spill.items(), columns=("id", "line"))
            # In key order (sorted here, where there is CPU to spare): the merge then walks the
            # primary-key index in order, which costs the server noticeably less.
            rows.sort()  # (the numbers are distinct)
            await conn.copy_records_to_table("citizens_stage", records=rows, columns=self._COLUMNS)
            if duplicates:
                columns = (*self._COLUMNS, "first_line")
                await conn.copy_records_to_table("citizens_stage", records=duplicates, columns=columns)
            marked = claim and _rowcount(await conn.execute(_CLAIM)) < len(rows)
            if marked:
                await conn.execute(_MARK_DUPLICATES)
            firsts: dict[str, _First] = {}
            if marked or duplicates:
                applied.rejects, firsts = _found_duplicates(await conn.fetch(self._DUPLICATES))
                dropped = len(applied.rejects)
                await conn.execute(_DROP_DUPLICATES)
            applied.rejects += _repeat_rejects(rows, repeats, firsts, _same)
            if _rowcount(await conn.execute(self._PREPARE)):
                await conn.execute(self._DEFER_ALL)
            staged = await self._apply(conn, applied, batch_no, audit)
        self.deferred += len(rows) + len(duplicates) - dropped - staged
        return applied

    async def _apply(self, conn: Any, applied: _Applied, batch_no: int, audit: _Audit) -> int:
        applied.inserted, applied.updated, staged = await conn.fetchrow(self._merge)
        applied.unchanged = staged - applied.inserted - applied.updated
        await conn.execute(self._LINKS)
        a = audit(batch_no, staged)
        await conn.execute(
            self._AUDIT,
            a["at"], a["actor_type"], a["actor_id"], a["action"], a["target"], a["outcome"], a["request_id"], json.dumps(a["detail"]),
        )  # fmt: skip
        return int(staged)

    async def finish(self, batch_no: int, audit: _Audit) -> _Applied | None:
        if not self.deferred or self.conn is None:
            return None
        conn = self.conn
        applied = _Applied()
        async with conn.transaction():
            if _rowcount(await conn.execute(_REJECT_UNRESOLVED)):
                applied.rejects = _unresolved_reasons(await conn.fetch(_UNRESOLVED_REASONS))
            await conn.execute(self._PREPARE_DEFERRED)
            if await conn.fetchval("SELECT count(*) FROM citizens_stage"):
                await self._apply(conn, applied, batch_no, audit)
        return applied

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


_Sink = _SqliteSink | _PostgresSink


class _Writer:
    """Writes batches in order, one in flight, each as its own task, while the caller parses."""

    def __init__(
        self,
        sink: _Sink,
        report: ImportReport,
        rejects: RejectsWriter,
        audit: _Audit,
        on_batch: Callable[[ImportReport], None] | None,
        on_progress: Callable[[ImportReport], None] | None,
    ) -> None:
        self.sink, self.report, self.rejects, self.audit = sink, report, rejects, audit
        self.on_batch, self.on_progress = on_batch, on_progress
        self.task: asyncio.Task[None] | None = None

    async def _write(
        self,
        rows: list[_Staged],
        duplicates: list[_Duplicate],
        repeats: list[tuple[_Row, int]],
        batch_no: int,
        claim: bool,
        spill: dict[int, int] | None,
    ) -> None:
        applied = await self.sink.write(rows, duplicates, repeats, batch_no, self.audit, claim=claim, spill=spill)
        self._count(applied)

    def _count(self, applied: _Applied, *, at_end: bool = False) -> None:
        report = self.report
        report.inserted += applied.inserted
        report.updated += applied.updated
        report.unchanged += applied.unchanged
        self.rejects.add_found(applied.rejects, at_end=at_end)
        report.rejected = self.rejects.total + self.rejects.pending
        if self.on_batch:
            self.on_batch(report)
        if self.on_progress:
            self.on_progress(report)

    async def wait(self) -> None:
        """Until the batch in flight is committed; its error, if it failed."""
        task, self.task = self.task, None
        if task is not None:
            try:
                await task
            except BaseException:
                self.rejects.discard()  # rows parsed after a failed batch were never reached
                raise

    async def submit(
        self,
        rows: list[_Staged],
        duplicates: list[_Duplicate],
        repeats: list[tuple[_Row, int]],
        *,
        claim: bool,
        spill: dict[int, int] | None,
    ) -> None:
        await self.wait()
        self.rejects.flush()
        self.report.batches += 1
        self.task = asyncio.create_task(self._write(rows, duplicates, repeats, self.report.batches, claim, spill))

    async def pause(self) -> None:
        """One turn of the event loop for the write in flight; raises at once if it failed.
        Rejects held back are written once nothing is in flight (or, when many pile up
        behind a slow write, after waiting for it)."""
        await asyncio.sleep(0)
        if self.task is not None and (self.task.done() or self.rejects.pending >= _MAX_HELD_REJECTS):
            await self.wait()
        if self.task is None:
            self.rejects.flush()
        if self.on_progress:
            self.report.rejected = self.rejects.total + self.rejects.pending
            self.on_progress(self.report)

    async def finish(self) -> None:
        """The deferred rows, once every batch is committed: rejected or applied, in one batch."""
        applied = await self.sink.finish(self.report.batches + 1, self.audit)
        if applied is not None:
            if applied.inserted + applied.updated + applied.unchanged:
                self.report.batches += 1
            self._count(applied, at_end=True)

    async def cancel(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):  # already failing: the original error propagates
                await task


async def import_registry(
    settings: Settings,
    source: IO[bytes],
    *,
    fmt: str,
    rejects_path: Path,
    actor: Actor,
    now: dt.datetime,
    today: dt.date,
    batch_size: int = 10_000,
    source_name: str = "",
    url: str | None = None,
    on_batch: Callable[[ImportReport], None] | None = None,
    on_progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Import the source; see the module's docstring. on_batch is called after each committed
    batch; on_progress after each batch and every few dozen rows (rows_read and rejected so far).
    A CSV header that does not name the fields raises HeaderError before anything is written."""
    url = url or settings.database_url
    sink: _Sink = _SqliteSink(settings, url, now) if url.startswith("sqlite") else _PostgresSink(url, now)
    report = ImportReport(rejects_path=rejects_path)
    rejects = RejectsWriter(rejects_path)

    def audit(batch_no: int, count: int) -> dict[str, Any]:
        return _audit_row(now, actor, batch_no, count, source_name)

    writer = _Writer(sink, report, rejects, audit, on_batch, on_progress)
    # The batch stages each ID number once, by the first row that has it. A row that repeats a
    # number first seen in this batch is held beside it (judged once the batch is written: that
    # first row may itself repeat an earlier batch's); one that repeats an earlier batch's is
    # staged with that row's line (first_line), while the claims are in memory (see above).
    batch: dict[str, _Staged] = {}
    repeats: list[tuple[_Row, int]] = []
    duplicates: list[_Duplicate] = []
    claims: dict[int, int] | None = {}
    valid = seen = size = 0  # size: the rows of the batch, of all three kinds

    async def submit() -> None:
        nonlocal batch, repeats, duplicates, claims, size
        spill = None
        if claims is not None and len(claims) >= _CLAIMS_IN_MEMORY:
            spill, claims = claims, None  # this batch was checked in memory; the next ones are not
        report.rows_read = seen
        claim = claims is None and spill is None
        await writer.submit(list(batch.values()), duplicates, repeats, claim=claim, spill=spill)
        batch, repeats, duplicates, size = {}, [], [], 0

    try:
        try:
            for line_no, row in _rows(source, fmt, today, rejects):
                seen += 1
                if row is not None:
                    valid += 1
                    size += 1
                    if row[0] in batch:
                        repeats.append((row, line_no))
                    elif claims is None:
                        batch[row[0]] = row + (line_no,)  # noqa: RUF005 - half the time of (*row, line_no)
                    else:
                        first = claims.setdefault(int(row[0]), line_no)
                        if first == line_no:
                            batch[row[0]] = row + (line_no,)  # noqa: RUF005
                        else:
                            duplicates.append(row + (line_no, first))  # noqa: RUF005
                    if size >= batch_size:
                        await submit()
                        continue
                if not seen % _YIELD_EVERY:
                    report.rows_read = seen
                    await writer.pause()
        except Exception:
            # A bad source: every batch handed over before it still commits, then the error.
            await writer.wait()
            rejects.flush()
            raise
        if size:
            await submit()
        await writer.wait()
        rejects.flush()
        await writer.finish()
    finally:
        await writer.cancel()  # only when leaving on an error: nothing is in flight otherwise
        rejects.close()
        report.rows_read = valid + rejects.count
        report.rejected = rejects.total
        await sink.close()
    if report.rejected == 0:
        report.rejects_path = None  # the rejects file is only created for the first reject
    return report


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


# --- progress, for the command ------------------------------------------------------------------

PROGRESS_LINE_EVERY = 5.0  # seconds between two plain progress lines (stderr not a terminal)
PROGRESS_BAR_EVERY = 0.2  # seconds between two updates of the progress bar (a terminal)


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s // 60 % 60:02d} min"


@dataclass(frozen=True, slots=True)
class ProgressFigures:
    """What the progress display shows: no ID number or phone, only counts and times."""

    rows: int
    rejected: int
    rate: float  # rows read per second so far
    read: float  # fraction of the file read
    left: float | None  # seconds left, from the bytes read against the file's size

    @classmethod
    def of(cls, report: ImportReport, elapsed: float, position: int, size: int) -> ProgressFigures:
        rate = report.rows_read / elapsed if elapsed > 0 else 0.0
        read = min(position / size, 1.0) if size > 0 else 1.0
        left = elapsed * (size - position) / position if 0 < position <= size and elapsed > 0 else None
        return cls(report.rows_read, report.rejected, rate, read, left)

    def text(self) -> str:
        left = f", about {_duration(self.left)} left" if self.left is not None else ""
        return f"{self.rows:,} rows ({self.rate:,.0f} rows/s), {self.rejected:,} rejected{left}"

    def line(self) -> str:
        return f"importing: {self.read:.0%} of the file read, {self.text()}"


class ProgressReporter:
    """An on_progress callback that shows ProgressFigures at most once every `every` seconds."""

    def __init__(
        self,
        show: Callable[[ProgressFigures, int], None],
        position: Callable[[], int],
        size: int,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.show, self.position, self.size, self.every, self.clock = show, position, size, every, clock
        self.started = self.last = clock()

    def __call__(self, report: ImportReport) -> None:
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        position = self.position()
        self.show(ProgressFigures.of(report, now - self.started, position, self.size), position)
