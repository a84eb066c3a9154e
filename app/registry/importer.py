"""Bulk import of registry records from CSV or JSON lines.

Streaming: the file is read row by row; every row is validated; rejected rows go to a rejects
file with their line number (the first physical line of the row) and reason; valid rows are
applied in batches, each batch in one transaction (all-or-nothing), as upserts by ID number, so
a re-run is idempotent and a failure part-way leaves every earlier batch applied and the
failing batch not at all.

PostgreSQL: COPY into a temporary staging table, then one INSERT … ON CONFLICT merge.
SQLite: batched executemany upserts.

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
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import event, insert

from app.core.audit import Actor, AuditEvent
from app.core.config import Settings
from app.core.context import request_id_var
from app.core.db import make_engine
from app.core.schemas import clean_text, normalise_phone
from app.registry.idnumber import PROVINCES, RULE_MESSAGES, id_number_violations
from app.registry.models import Citizen

csv.field_size_limit(1 << 16)

FIELDS = ("id_number", "full_name", "date_of_birth", "sex", "residence", "phone", "guardians")
_REQUIRED_CSV = ("id_number", "full_name", "date_of_birth", "sex", "residence")
_FIELD_SET = frozenset(FIELDS)
_SEXES = {"male": "male", "female": "female", "m": "male", "f": "female", "nam": "male", "nữ": "female", "nu": "female"}
_RELATIONS = {"parent", "guardian"}
_MIN_BIRTH = dt.date(1900, 1, 1)
# +84 and nine digits with a mobile prefix: already E.164, nothing for normalise_phone to do.
_E164_MOBILE = re.compile(r"\+84[35789][0-9]{8}")
_YIELD_EVERY = 64  # rows parsed between two turns of the event loop (each round trip of the write waits for one)
_MAX_HELD_REJECTS = 10_000  # rejects kept in memory while a write is in flight

# Digits 4-6 of the ID number for a (birth year, female) pair: century-and-sex digit, then the
# last two digits of the year (Decree 137/2015/NĐ-CP art. 13). Filled on demand.
_CENTURY_SEX_YEAR: dict[tuple[int, bool], str] = {}


class RowError(ValueError):
    pass


@dataclass(slots=True)
class Record:
    id_number: str
    full_name: str
    date_of_birth: dt.date
    sex: str
    residence: str
    phone: str | None
    guardians: list[tuple[str, str]]


# A validated row as the sinks take it, which is the PostgreSQL staging row as it is: id_number,
# full_name, date_of_birth, sex, birth_province, residence, phone, and the guardians as text
# ("id:relation;id:relation", None for none). Only immutable values: the garbage collector
# stops tracking such tuples, which keeps its passes over a batch cheap (they would cost more
# than the validation).
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
    imported: int = 0
    rejected: int = 0
    batches: int = 0
    rejects_path: Path | None = None
    errors: list[str] = field(default_factory=list)


def _parse_guardians(raw: Any, own_id: str) -> list[tuple[str, str]]:
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
        if len(gid) != 12 or not gid.isdigit() or not gid.isascii():
            raise RowError("guardians: each guardian is a 12-digit ID number")
        if rel not in _RELATIONS:
            raise RowError("guardians: relation must be parent or guardian")
        if gid == own_id:
            raise RowError("guardians: a citizen cannot be their own guardian")
        items.append((gid, rel))
    if len(items) > 4 or len({g for g, _ in items}) != len(items):
        raise RowError("guardians: at most 4 distinct guardians")
    return items


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
    """The rules of validate_row, checked in the same order, on the row's values as strings."""
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
    if dob < _MIN_BIRTH or dob > today:
        raise RowError("date_of_birth: out of range")
    sex = _SEXES.get(raw_sex) or _SEXES.get(raw_sex.strip().casefold())
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
        else _guardians_text(_parse_guardians(raw_guardians, id_number))
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
    """One row → a Record, or RowError naming the field and the rule."""
    return _record(_validate_mapping(row, today))


_Reject = Callable[[int, str], None]


def _csv_rows(text: IO[str], today: dt.date, reject: _Reject) -> Iterator[tuple[int, _Row | None]]:
    reader = csv.reader(text)
    header = next(reader, None) or []
    missing = [f for f in _REQUIRED_CSV if f not in header]
    if missing:
        raise ValueError(f"the CSV header lacks: {', '.join(missing)} (expected {','.join(FIELDS)})")
    width = len(header)
    where = {name: i for i, name in enumerate(header)}  # a repeated column: the last one counts (as DictReader)
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
    """The rejects file (created on the first reject). Rejects are held back until the rows
    before them are either handed to the database or known to end the import (flush), so the
    file reads as if each batch had been written before the next one was parsed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self._writer: Any = None
        self._pending: list[tuple[int, str]] = []
        self.count = 0

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

    @property
    def pending(self) -> int:
        return len(self._pending)

    def discard(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


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


def _same(value: Any) -> Any:
    return value


def _sqlite_import_cache(dbapi_connection: Any, _record: Any) -> None:
    # This engine is the import's own: a 64 MiB page cache (default 2 MiB) for its upserts.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


class _SqliteSink:
    # Unchanged rows are left alone (as on PostgreSQL), so a re-run does not touch updated_at.
    _UPSERT = (
        "INSERT INTO citizens (id_number, full_name, date_of_birth, sex, birth_province, residence, phone, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id_number) DO UPDATE SET full_name = excluded.full_name, "
        "date_of_birth = excluded.date_of_birth, sex = excluded.sex, birth_province = excluded.birth_province, "
        "residence = excluded.residence, phone = excluded.phone, updated_at = excluded.updated_at "
        "WHERE citizens.full_name IS NOT excluded.full_name OR citizens.date_of_birth IS NOT excluded.date_of_birth "
        "OR citizens.sex IS NOT excluded.sex OR citizens.residence IS NOT excluded.residence "
        "OR citizens.phone IS NOT excluded.phone"
    )

    def __init__(self, settings: Settings, url: str) -> None:
        self.engine = make_engine(settings, url=url)
        event.listen(self.engine.sync_engine, "connect", _sqlite_import_cache)
        dialect = self.engine.dialect
        columns = Citizen.__table__.c
        # The exact values SQLAlchemy would store (UTC text for the timestamps, ISO dates).
        self._timestamp: Callable[[Any], Any] = (
            columns.updated_at.type.dialect_impl(dialect).bind_processor(dialect) or _same
        )
        self._date: Callable[[Any], Any] = (
            columns.date_of_birth.type.dialect_impl(dialect).bind_processor(dialect) or _same
        )

    async def write(self, batch: dict[str, _Row], audit_row: dict[str, Any], now: dt.datetime) -> None:
        stamp, date = self._timestamp(now), self._date
        ordered = sorted(batch.values())  # B-tree pages in key order: far fewer page misses
        rows = [(r[0], r[1], date(r[2]), r[3], r[4], r[5], r[6], stamp, stamp) for r in ordered]
        links = [(r[0], g, rel) for r in ordered if r[7] for g, rel in _guardians_list(r[7])]
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql(self._UPSERT, rows)
            await conn.exec_driver_sql(
                "DELETE FROM guardian_links WHERE ward_id_number = ?", [(r[0],) for r in ordered]
            )
            if links:
                await conn.exec_driver_sql(
                    "INSERT INTO guardian_links (ward_id_number, guardian_id_number, relation) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    links,
                )
            await conn.execute(insert(AuditEvent), [audit_row])

    async def close(self) -> None:
        await self.engine.dispose()


class _PostgresSink:
    # The staging table holds the rows exactly as validated (_Row), so they are copied as they
    # are; it is this session's temporary table, emptied at each commit.
    _STAGE = (
        "CREATE TEMP TABLE citizens_stage ON COMMIT DELETE ROWS AS SELECT id_number, full_name, date_of_birth, "
        "sex, birth_province, residence, phone, NULL::text AS guardians FROM citizens WITH NO DATA;"
        "CREATE TEMP TABLE guardian_links_stage (LIKE guardian_links) ON COMMIT DELETE ROWS;"
    )
    _COLUMNS = ("id_number", "full_name", "date_of_birth", "sex", "birth_province", "residence", "phone", "guardians")
    # One round trip after the COPY: the merge, leaving unchanged rows alone; then the batch's
    # wards get exactly the batch's guardian links, and links that did not change stay as they are.
    _MERGE = (
        "INSERT INTO citizens AS c (id_number, full_name, date_of_birth, sex, birth_province, residence, phone, "
        "created_at, updated_at) "
        "SELECT id_number, full_name, date_of_birth, sex, birth_province, residence, phone, {now}, {now} "
        "FROM citizens_stage "
        "ON CONFLICT (id_number) DO UPDATE SET full_name = EXCLUDED.full_name, "
        "date_of_birth = EXCLUDED.date_of_birth, sex = EXCLUDED.sex, birth_province = EXCLUDED.birth_province, "
        "residence = EXCLUDED.residence, phone = EXCLUDED.phone, updated_at = EXCLUDED.updated_at "
        "WHERE (c.full_name, c.date_of_birth, c.sex, c.residence, c.phone) IS DISTINCT FROM "
        "(EXCLUDED.full_name, EXCLUDED.date_of_birth, EXCLUDED.sex, EXCLUDED.residence, EXCLUDED.phone);"
        "INSERT INTO guardian_links_stage SELECT s.id_number, left(g, 12), substr(g, 14) "
        "FROM citizens_stage s CROSS JOIN LATERAL unnest(string_to_array(s.guardians, ';')) AS g "
        "WHERE s.guardians IS NOT NULL;"
        "DELETE FROM guardian_links g WHERE EXISTS (SELECT FROM citizens_stage s WHERE s.id_number = g.ward_id_number) "
        "AND NOT EXISTS (SELECT FROM guardian_links_stage n WHERE n.ward_id_number = g.ward_id_number "
        "AND n.guardian_id_number = g.guardian_id_number AND n.relation = g.relation);"
        "INSERT INTO guardian_links SELECT * FROM guardian_links_stage ON CONFLICT DO NOTHING;"
    )
    _AUDIT = (
        "INSERT INTO audit_events (at, actor_type, actor_id, action, target, outcome, request_id, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json)"
    )

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.conn: Any = None
        self._merge: tuple[dt.datetime, str] | None = None

    async def _connect(self) -> Any:
        if self.conn is None:
            import asyncpg

            self.conn = await asyncpg.connect(self.dsn)
            await self.conn.execute(self._STAGE)
        return self.conn

    def _merge_sql(self, now: dt.datetime) -> str:
        if self._merge is None or self._merge[0] != now:
            # A timestamp literal made here from a datetime (a naive one is local time, as
            # asyncpg takes it): nothing from the file goes into the SQL text.
            literal = f"'{now.astimezone(dt.UTC).isoformat()}'::timestamptz"
            self._merge = (now, self._MERGE.format(now=literal))
        return self._merge[1]

    async def write(self, batch: dict[str, _Row], audit_row: dict[str, Any], now: dt.datetime) -> None:
        conn = await self._connect()
        a = audit_row
        async with conn.transaction():
            # In key order (sorted here, where there is CPU to spare): the merge then walks the
            # primary-key index in order, which costs the server noticeably less.
            records = sorted(batch.values())
            await conn.copy_records_to_table("citizens_stage", records=records, columns=self._COLUMNS)
            await conn.execute(self._merge_sql(now))
            await conn.execute(
                self._AUDIT,
                a["at"], a["actor_type"], a["actor_id"], a["action"], a["target"], a["outcome"], a["request_id"], json.dumps(a["detail"]),
            )  # fmt: skip

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
        actor: Actor,
        now: dt.datetime,
        source_name: str,
        on_batch: Callable[[ImportReport], None] | None,
    ) -> None:
        self.sink, self.report, self.rejects = sink, report, rejects
        self.actor, self.now, self.source_name, self.on_batch = actor, now, source_name, on_batch
        self.task: asyncio.Task[None] | None = None

    async def _write(self, batch: dict[str, _Row], batch_no: int) -> None:
        await self.sink.write(batch, _audit_row(self.now, self.actor, batch_no, len(batch), self.source_name), self.now)
        self.report.imported += len(batch)
        if self.on_batch:
            self.on_batch(self.report)

    async def wait(self) -> None:
        """Until the batch in flight is committed; its error, if it failed."""
        task, self.task = self.task, None
        if task is not None:
            try:
                await task
            except BaseException:
                self.rejects.discard()  # rows parsed after a failed batch were never reached
                raise

    async def submit(self, batch: dict[str, _Row]) -> None:
        await self.wait()
        self.rejects.flush()
        self.report.batches += 1
        self.task = asyncio.create_task(self._write(batch, self.report.batches))

    async def pause(self) -> None:
        """One turn of the event loop for the write in flight; raises at once if it failed.
        Rejects held back are written once nothing is in flight (or, when many pile up
        behind a slow write, after waiting for it)."""
        await asyncio.sleep(0)
        if self.task is not None and (self.task.done() or self.rejects.pending >= _MAX_HELD_REJECTS):
            await self.wait()
        if self.task is None:
            self.rejects.flush()

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
) -> ImportReport:
    url = url or settings.database_url
    sink: _Sink = _SqliteSink(settings, url) if url.startswith("sqlite") else _PostgresSink(url)
    report = ImportReport(rejects_path=rejects_path)
    rejects = RejectsWriter(rejects_path)
    writer = _Writer(sink, report, rejects, actor, now, source_name, on_batch)
    batch: dict[str, _Row] = {}
    valid = seen = 0
    try:
        try:
            for _line_no, row in _rows(source, fmt, today, rejects):
                seen += 1
                if row is not None:
                    valid += 1
                    batch[row[0]] = row  # a repeated ID within a batch: the last row wins
                    if len(batch) >= batch_size:
                        await writer.submit(batch)
                        batch = {}
                        continue
                if not seen % _YIELD_EVERY:
                    await writer.pause()
        except Exception:
            # A bad source: every batch handed over before it still commits, then the error.
            await writer.wait()
            rejects.flush()
            raise
        if batch:
            await writer.submit(batch)
        await writer.wait()
        rejects.flush()
    finally:
        await writer.cancel()  # only when leaving on an error: nothing is in flight otherwise
        rejects.close()
        report.rows_read = valid + rejects.count
        report.rejected = rejects.count
        await sink.close()
    if rejects.count == 0:
        report.rejects_path = None  # the rejects file is only created for the first reject
    return report


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


def _stdout_progress(report: ImportReport) -> None:  # pragma: no cover - CLI only
    print(f"\r{report.imported} records imported", end="", file=sys.stderr)
