"""Bulk import of registry records from CSV or JSON lines.

Streaming: the file is read row by row; every row is validated; rejected rows go to a rejects
file with their line number and reason; valid rows are applied in batches, each batch in one
transaction (all-or-nothing), as upserts by ID number, so a re-run is idempotent and a
failure part-way leaves every earlier batch applied and the failing batch not at all.

PostgreSQL: COPY into a temporary staging table, then one INSERT … ON CONFLICT merge.
SQLite: batched executemany upserts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import delete, insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.core.audit import Actor, AuditEvent
from app.core.config import Settings
from app.core.context import request_id_var
from app.core.db import make_engine
from app.core.schemas import clean_text, normalise_phone
from app.registry.idnumber import RULE_MESSAGES, id_number_violations
from app.registry.models import Citizen, GuardianLink

csv.field_size_limit(1 << 16)

FIELDS = ("id_number", "full_name", "date_of_birth", "sex", "residence", "phone", "guardians")
_SEXES = {"male": "male", "female": "female", "m": "male", "f": "female", "nam": "male", "nữ": "female", "nu": "female"}
_RELATIONS = {"parent", "guardian"}
_MIN_BIRTH = dt.date(1900, 1, 1)


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


def validate_row(row: dict[str, Any], today: dt.date) -> Record:
    """One row → a Record, or RowError naming the field and the rule."""
    id_number = str(row.get("id_number") or "").strip()
    if len(id_number) != 12 or not id_number.isdigit() or not id_number.isascii():
        raise RowError(
            "id_number: " + RULE_MESSAGES[id_number_violations(id_number)[0]] if id_number else "id_number: missing"
        )
    try:
        full_name = clean_text(str(row.get("full_name") or ""))
    except ValueError as exc:
        raise RowError(f"full_name: {exc}") from None
    if len(full_name) > 200:
        raise RowError("full_name: longer than 200 characters")
    try:
        dob = dt.date.fromisoformat(str(row.get("date_of_birth") or "").strip())
    except ValueError:
        raise RowError("date_of_birth: not a date (YYYY-MM-DD)") from None
    if dob < _MIN_BIRTH or dob > today:
        raise RowError("date_of_birth: out of range")
    sex = _SEXES.get(str(row.get("sex") or "").strip().casefold())
    if sex is None:
        raise RowError("sex: must be male or female")
    rules = id_number_violations(id_number, sex=sex, date_of_birth=dob)  # type: ignore[arg-type]
    if rules:
        raise RowError("id_number: " + " ".join(RULE_MESSAGES[r] for r in rules))
    try:
        residence = clean_text(str(row.get("residence") or ""))
    except ValueError as exc:
        raise RowError(f"residence: {exc}") from None
    if len(residence) > 500:
        raise RowError("residence: longer than 500 characters")
    raw_phone = str(row.get("phone") or "").strip()
    try:
        phone = normalise_phone(raw_phone) if raw_phone else None
    except ValueError:
        raise RowError("phone: not a Vietnamese mobile number") from None
    return Record(id_number, full_name, dob, sex, residence, phone, _parse_guardians(row.get("guardians"), id_number))


def _csv_rows(text: IO[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    reader = csv.DictReader(text)
    missing = [
        f for f in ("id_number", "full_name", "date_of_birth", "sex", "residence") if f not in (reader.fieldnames or [])
    ]
    if missing:
        raise ValueError(f"the CSV header lacks: {', '.join(missing)} (expected {','.join(FIELDS)})")
    for row in reader:
        if None in row:
            yield reader.line_num, None, "too many columns"
            continue
        yield reader.line_num, row, None


def _jsonl_rows(text: IO[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    for line_no, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield line_no, None, "not valid JSON"
            continue
        if not isinstance(obj, dict):
            yield line_no, None, "not a JSON object"
            continue
        unknown = set(obj) - set(FIELDS)
        if unknown:
            yield line_no, None, f"unknown fields: {', '.join(sorted(unknown))}"
            continue
        yield line_no, obj, None


def iter_records(
    source: IO[bytes], fmt: str, today: dt.date, reject: Callable[[int, str], None]
) -> Iterator[tuple[int, Record]]:
    # surrogateescape keeps reading past bad UTF-8; clean_text then rejects that row alone.
    text = io.TextIOWrapper(source, encoding="utf-8-sig", errors="surrogateescape", newline="")
    rows = _csv_rows(text) if fmt == "csv" else _jsonl_rows(text)
    for line_no, row, problem in rows:
        if row is None:
            reject(line_no, problem or "unreadable")
            continue
        try:
            yield line_no, validate_row(row, today)
        except RowError as exc:
            reject(line_no, str(exc))


class RejectsWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self._writer: Any = None
        self.count = 0

    def __call__(self, line_no: int, reason: str) -> None:
        if self._fh is None:
            self._fh = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["line", "reason"])
        self._writer.writerow([line_no, reason])
        self.count += 1

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


class _SqliteSink:
    def __init__(self, settings: Settings, url: str) -> None:
        self.engine = make_engine(settings, url=url)

    async def write(self, batch: dict[str, Record], audit_row: dict[str, Any], now: dt.datetime) -> None:
        stmt = sqlite_insert(Citizen)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id_number"],
            set_={
                c: stmt.excluded[c]
                for c in ("full_name", "date_of_birth", "sex", "birth_province", "residence", "phone", "updated_at")
            },
        )
        rows = [
            {
                "id_number": r.id_number,
                "full_name": r.full_name,
                "date_of_birth": r.date_of_birth,
                "sex": r.sex,
                "birth_province": r.id_number[:3],
                "residence": r.residence,
                "phone": r.phone,
                "created_at": now,
                "updated_at": now,
            }
            for r in batch.values()
        ]
        links = [
            {"ward_id_number": r.id_number, "guardian_id_number": g, "relation": rel}
            for r in batch.values()
            for g, rel in r.guardians
        ]
        async with self.engine.begin() as conn:
            await conn.execute(stmt, rows)
            ids = list(batch)
            for i in range(0, len(ids), 500):
                await conn.execute(delete(GuardianLink).where(GuardianLink.ward_id_number.in_(ids[i : i + 500])))
            if links:
                await conn.execute(insert(GuardianLink), links)
            await conn.execute(insert(AuditEvent), [audit_row])

    async def close(self) -> None:
        await self.engine.dispose()


class _PostgresSink:
    _COLUMNS = (
        "id_number",
        "full_name",
        "date_of_birth",
        "sex",
        "birth_province",
        "residence",
        "phone",
        "created_at",
        "updated_at",
    )

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.conn: Any = None

    async def _connect(self) -> Any:
        if self.conn is None:
            import asyncpg

            self.conn = await asyncpg.connect(self.dsn)
            await self.conn.execute(
                "CREATE TEMP TABLE citizens_stage (LIKE citizens INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
                "CREATE TEMP TABLE guardian_links_stage (LIKE guardian_links) ON COMMIT DELETE ROWS;"
            )
        return self.conn

    async def write(self, batch: dict[str, Record], audit_row: dict[str, Any], now: dt.datetime) -> None:
        conn = await self._connect()
        records = [
            (r.id_number, r.full_name, r.date_of_birth, r.sex, r.id_number[:3], r.residence, r.phone, now, now)
            for r in batch.values()
        ]
        links = [(r.id_number, g, rel) for r in batch.values() for g, rel in r.guardians]
        async with conn.transaction():
            await conn.copy_records_to_table("citizens_stage", records=records, columns=self._COLUMNS)
            await conn.execute(
                "INSERT INTO citizens AS c SELECT * FROM citizens_stage "
                "ON CONFLICT (id_number) DO UPDATE SET full_name = EXCLUDED.full_name, "
                "date_of_birth = EXCLUDED.date_of_birth, sex = EXCLUDED.sex, birth_province = EXCLUDED.birth_province, "
                "residence = EXCLUDED.residence, phone = EXCLUDED.phone, updated_at = EXCLUDED.updated_at "
                "WHERE (c.full_name, c.date_of_birth, c.sex, c.residence, c.phone) IS DISTINCT FROM "
                "(EXCLUDED.full_name, EXCLUDED.date_of_birth, EXCLUDED.sex, EXCLUDED.residence, EXCLUDED.phone)"
            )
            await conn.execute(
                "DELETE FROM guardian_links g USING citizens_stage s WHERE g.ward_id_number = s.id_number"
            )
            if links:
                await conn.copy_records_to_table(
                    "guardian_links_stage", records=links, columns=("ward_id_number", "guardian_id_number", "relation")
                )
                await conn.execute(
                    "INSERT INTO guardian_links SELECT * FROM guardian_links_stage ON CONFLICT DO NOTHING"
                )
            a = audit_row
            await conn.execute(
                "INSERT INTO audit_events (at, actor_type, actor_id, action, target, outcome, request_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json)",
                a["at"], a["actor_type"], a["actor_id"], a["action"], a["target"], a["outcome"], a["request_id"], json.dumps(a["detail"]),
            )  # fmt: skip

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


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
    sink: _SqliteSink | _PostgresSink = _SqliteSink(settings, url) if url.startswith("sqlite") else _PostgresSink(url)
    report = ImportReport(rejects_path=rejects_path)
    rejects = RejectsWriter(rejects_path)
    batch: dict[str, Record] = {}
    try:
        for _line_no, record in iter_records(source, fmt, today, rejects):
            report.rows_read += 1
            batch[record.id_number] = record  # a repeated ID within a batch: the last row wins
            if len(batch) >= batch_size:
                await _flush(sink, batch, report, actor, now, source_name, on_batch)
        if batch:
            await _flush(sink, batch, report, actor, now, source_name, on_batch)
    finally:
        rejects.close()
        report.rejected = rejects.count
        report.rows_read += rejects.count
        await sink.close()
    if rejects.count == 0:
        report.rejects_path = None  # the rejects file is only created for the first reject
    return report


async def _flush(
    sink: _SqliteSink | _PostgresSink,
    batch: dict[str, Record],
    report: ImportReport,
    actor: Actor,
    now: dt.datetime,
    source_name: str,
    on_batch: Callable[[ImportReport], None] | None,
) -> None:
    report.batches += 1
    await sink.write(batch, _audit_row(now, actor, report.batches, len(batch), source_name), now)
    report.imported += len(batch)
    batch.clear()
    if on_batch:
        on_batch(report)


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


def _stdout_progress(report: ImportReport) -> None:  # pragma: no cover - CLI only
    print(f"\r{report.imported} records imported", end="", file=sys.stderr)
