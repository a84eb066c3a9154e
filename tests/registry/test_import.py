"""Bulk registry import (app.registry.importer): validation, rejects, batches, upserts.

Every test runs on SQLite and PostgreSQL (the session's shared database), so each one uses
ID numbers of its own. The rules across rows (duplicates, guardians), the counts and the header
check are in test_import_rules.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.core.audit import Actor, AuditEvent
from app.core.schemas import clean_text
from app.registry import importer
from app.registry.idnumber import PROVINCES, Sex, make_id_number
from app.registry.importer import FIELDS, ImportReport, import_registry, validate_row
from app.registry.rules import RowError, validate_record
from tests.support import PROVINCE_CODES, Harness, _serials, years_ago

ACTOR = Actor("admin", "test")


# --- helpers ---------------------------------------------------------------------------------


def person(
    env: Harness,
    *,
    full_name: str = "Nguyễn Văn An",
    sex: Sex = Sex.male,
    age: int = 30,
    phone: str = "",
    guardians: str = "",
    residence: str = "12 Tràng Tiền, Hoàn Kiếm, Hà Nội",
) -> dict[str, str]:
    """A CSV-shaped record with a new, valid ID number."""
    dob = years_ago(env.ctx.clock.today(), age, days=40)
    return {
        "id_number": make_id_number(random.choice(PROVINCE_CODES), sex, dob, next(_serials)),
        "full_name": full_name,
        "date_of_birth": dob.isoformat(),
        "sex": sex.value,
        "residence": residence,
        "phone": phone,
        "guardians": guardians,
    }


def csv_bytes(rows: Iterable[dict[str, str]], header: Sequence[str] = FIELDS) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(header), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def csv_line(row: dict[str, str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([row[f] for f in FIELDS])
    return out.getvalue()


async def run_import(
    env: Harness,
    data: bytes | io.RawIOBase,
    tmp_path: Path,
    *,
    fmt: str = "csv",
    batch_size: int = 10_000,
    now: dt.datetime | None = None,
    source_name: str = "",
) -> ImportReport:
    return await import_registry(
        env.ctx.settings,
        io.BytesIO(data) if isinstance(data, bytes) else data,  # type: ignore[arg-type]
        fmt=fmt,
        rejects_path=tmp_path / "rejects.csv",
        actor=ACTOR,
        now=now or env.ctx.clock.now(),
        today=env.ctx.clock.today(),
        batch_size=batch_size,
        source_name=source_name,
    )


def read_rejects(tmp_path: Path) -> list[tuple[int, str]]:
    with (tmp_path / "rejects.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["line", "reason"]
    return [(int(line), reason) for line, reason in rows[1:]]


async def get_citizen(env: Harness, id_number: str) -> dict[str, Any]:
    resp = await env.client.get(f"/registry/citizens/{id_number}", headers=env.staff())
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def absent(env: Harness, id_number: str) -> bool:
    resp = await env.client.get(f"/registry/citizens/{id_number}", headers=env.staff())
    return resp.status_code == 404


async def count_in(env: Harness, table: str, column: str, ids: Sequence[str]) -> int:
    params = {f"p{i}": v for i, v in enumerate(ids)}
    return await env.count(table, f"{column} IN ({', '.join(':' + k for k in params)})", **params)


async def import_audit_rows(env: Harness, source: str) -> list[AuditEvent]:
    async with env.ctx.sessionmaker() as session:
        rows = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "registry.import.batch"))).all()
    return sorted((r for r in rows if (r.detail or {}).get("source") == source), key=lambda r: r.id)


class FlakySource(io.RawIOBase):
    """Hands out the data one line per read and raises OSError when asked for line `fail_at`."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        self._lines = data.splitlines(keepends=True)
        self._next = 0
        self._fail_at = fail_at

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._next + 1 >= self._fail_at:
            raise OSError("the registry share went away")
        if self._next >= len(self._lines):
            return 0
        line = self._lines[self._next]
        assert len(line) <= len(buffer)
        buffer[: len(line)] = line
        self._next += 1
        return len(line)


# --- happy paths -----------------------------------------------------------------------------


async def test_csv_import_creates_readable_records_with_guardian_links(env: Harness, tmp_path: Path) -> None:
    mother = person(env, full_name="Trần Thị Bích Ngọc", sex=Sex.female, age=35, phone="0912 345 678")
    father = person(env, full_name="  Lê   Văn  Hùng ", age=38, phone="+84 3 8765 4321")
    # NFD on the way in (as some systems export), NFC when stored.
    child = person(env, full_name=unicodedata.normalize("NFD", "Lê Minh Khôi"), age=8)
    child["guardians"] = f"{mother['id_number']}:parent;{father['id_number']}:guardian"
    other = person(env, full_name="Phạm Thị Hoa", sex=Sex.female, age=70)
    other["sex"] = "Nữ"  # the Vietnamese spelling is accepted too

    report = await run_import(env, csv_bytes([mother, father, child, other]), tmp_path, batch_size=3)

    assert (report.rows_read, report.imported, report.rejected, report.batches) == (4, 4, 0, 2)
    assert report.rejects_path is None and not (tmp_path / "rejects.csv").exists()
    got = await get_citizen(env, child["id_number"])
    assert got["full_name"] == "Lê Minh Khôi" == unicodedata.normalize("NFC", got["full_name"])
    assert got["date_of_birth"] == child["date_of_birth"] and got["sex"] == "male"
    assert got["birth_province"] == child["id_number"][:3]
    assert got["birth_province_name"] == PROVINCES[child["id_number"][:3]]
    assert got["phone"] is None
    assert sorted((g["id_number"], g["relation"]) for g in got["guardians"]) == sorted(
        [(mother["id_number"], "parent"), (father["id_number"], "guardian")]
    )
    got = await get_citizen(env, mother["id_number"])
    assert (got["full_name"], got["sex"], got["phone"]) == ("Trần Thị Bích Ngọc", "female", "+84912345678")
    assert got["wards"] == [{"id_number": child["id_number"], "relation": "parent"}]
    got = await get_citizen(env, father["id_number"])
    assert (got["full_name"], got["phone"]) == ("Lê Văn Hùng", "+84387654321")
    assert (await get_citizen(env, other["id_number"]))["sex"] == "female"


async def test_jsonl_import(env: Harness, tmp_path: Path) -> None:
    guardian = person(env, full_name="Đỗ Thị Lan", sex=Sex.female, age=44)
    ward = person(env, full_name="Đỗ Gia Bảo", age=12)
    lines = [
        json.dumps({**{k: guardian[k] for k in FIELDS if k != "guardians"}, "phone": "0084 97 123 4567"}),
        "",  # blank lines are skipped
        json.dumps(
            {
                **{k: ward[k] for k in FIELDS if k not in ("guardians", "phone")},
                "guardians": [{"id_number": guardian["id_number"], "relation": "guardian"}],
            },
            ensure_ascii=False,
        ),
    ]
    report = await run_import(env, "\n".join(lines).encode() + b"\n", tmp_path, fmt="jsonl")

    assert (report.rows_read, report.imported, report.rejected, report.batches) == (2, 2, 0, 1)
    got = await get_citizen(env, ward["id_number"])
    assert got["full_name"] == "Đỗ Gia Bảo" and got["phone"] is None
    assert got["guardians"] == [{"id_number": guardian["id_number"], "relation": "guardian"}]
    got = await get_citizen(env, guardian["id_number"])
    assert got["phone"] == "+84971234567"
    assert got["wards"] == [{"id_number": ward["id_number"], "relation": "guardian"}]


# --- rejects ---------------------------------------------------------------------------------


async def test_every_rejection_reason_with_its_line_and_nothing_written(env: Harness, tmp_path: Path) -> None:
    today = env.ctx.clock.today()
    good1, good2 = person(env), person(env, full_name="Vũ Thị Mai", sex=Sex.female)
    guardian_id = person(env)["id_number"]
    cases: list[tuple[dict[str, str], str]] = []

    def bad(reason: str, **over: str) -> None:
        row = person(env, guardians=f"{guardian_id}:parent")
        row.update(over)
        cases.append((row, reason))

    male_1990 = dt.date(1990, 5, 17)
    bad("id_number: missing", id_number="")
    bad("id_number: An ID number is exactly 12 digits.", id_number="1")
    bad("id_number: An ID number is exactly 12 digits.", id_number="00109901234５")  # a full-width digit
    bad(
        "id_number: Digits 1-3 are not a known birth-registration province code.",
        id_number=make_id_number("003", Sex.male, male_1990, next(_serials)),
        date_of_birth=male_1990.isoformat(),
    )
    bad(
        "id_number: Digit 4 does not match the sex and century of birth.",
        id_number=make_id_number("001", Sex.male, male_1990, next(_serials)),
        date_of_birth=male_1990.isoformat(),
        sex="female",
    )
    bad(
        "id_number: Digits 5-6 are not the last two digits of the birth year.",
        id_number=make_id_number("079", Sex.male, male_1990, next(_serials)),
        date_of_birth="1991-05-17",
    )
    bad("full_name: must not be empty", full_name="   ")
    bad("full_name: contains control, invisible or unassigned characters", full_name="Lê\x07Văn Tám")
    bad("full_name: longer than 200 characters", full_name="Nguyễn " + "A" * 200)
    bad("date_of_birth: not a date (YYYY-MM-DD)", date_of_birth="1990-13-01")
    bad("date_of_birth: out of range", date_of_birth="1899-12-31")
    bad("date_of_birth: out of range", date_of_birth=(today + dt.timedelta(days=1)).isoformat())
    bad("sex: must be male or female", sex="x")
    bad("residence: must not be empty", residence="")
    bad("residence: longer than 500 characters", residence="Hà Nội " + "x" * 500)
    bad("residence: contains control, invisible or unassigned characters", residence="Huế \ue000")
    bad("phone: not a Vietnamese mobile number", phone="+1 202 555 0100")
    bad("phone: not a Vietnamese mobile number", phone="0212345678")  # 02x is a landline prefix
    bad("guardians: each guardian is a 12-digit ID number", guardians="12345:parent")
    bad("guardians: relation must be parent or guardian", guardians=f"{guardian_id}:uncle")
    bad("guardians: at most 4 distinct guardians", guardians=f"{guardian_id};{guardian_id}")
    self_row = person(env)
    self_row["guardians"] = self_row["id_number"]
    cases.append((self_row, "guardians: a citizen cannot be their own guardian"))

    lines = [",".join(FIELDS) + "\n", csv_line(good1)]
    expected: list[tuple[int, str]] = []
    for row, reason in cases:
        expected.append((len(lines) + 1, reason))
        lines.append(csv_line(row))
    extra = person(env)
    expected.append((len(lines) + 1, "too many columns"))
    lines.append(csv_line(extra).rstrip("\n") + ",surplus\n")
    lines.append("\n")  # a blank line: skipped, but it still counts for the line numbers
    multiline = person(env, residence="1 Lê Lợi\nHuế")  # a quoted newline: a row over two lines
    expected.append((len(lines) + 1, "residence: contains control, invisible or unassigned characters"))
    lines.append(csv_line(multiline))
    lines.append(csv_line(good2))
    assert sum(line.count("\n") for line in lines) == len(lines) + 1  # the multi-line row

    report = await run_import(env, "".join(lines).encode(), tmp_path, batch_size=4)

    assert read_rejects(tmp_path) == expected
    assert (report.imported, report.rejected, report.rows_read) == (2, len(expected), 2 + len(expected))
    assert report.rejects_path == tmp_path / "rejects.csv"
    rejected_ids = [r["id_number"] for r, _ in cases if len(r["id_number"]) == 12] + [
        extra["id_number"],
        multiline["id_number"],
    ]
    assert await count_in(env, "citizens", "id_number", rejected_ids) == 0
    assert await count_in(env, "guardian_links", "ward_id_number", rejected_ids) == 0
    assert (await get_citizen(env, good1["id_number"]))["full_name"] == "Nguyễn Văn An"
    assert (await get_citizen(env, good2["id_number"]))["full_name"] == "Vũ Thị Mai"


async def test_jsonl_rejects(env: Harness, tmp_path: Path) -> None:
    ok1, ok2, unknown, bad_guardian = person(env), person(env), person(env), person(env)

    def js(row: dict[str, Any]) -> bytes:
        return json.dumps({k: v for k, v in row.items() if v != ""}, ensure_ascii=False).encode()

    lines = [
        js(ok1),
        b'{"id_number": "0010',
        b"[1, 2, 3]",
        js({**unknown, "email": "a@example.vn"}),
        b"   ",
        js({**bad_guardian, "guardians": [{"id_number": "001", "relation": "parent"}]}),
        js(ok2).replace("Nguyễn".encode(), b"Nguy\xff\xfen"),  # bad UTF-8: only this line
        js({**person(env), "sex": None}),
    ]
    report = await run_import(env, b"\n".join(lines) + b"\n", tmp_path, fmt="jsonl")

    assert read_rejects(tmp_path) == [
        (2, "not valid JSON"),
        (3, "not a JSON object"),
        (4, "unknown fields: email"),
        (6, "guardians: each guardian is a 12-digit ID number"),
        (7, "not valid JSON"),
        (8, "sex: must be male or female"),
    ]
    assert (report.imported, report.rejected) == (1, 6)
    assert not await absent(env, ok1["id_number"])
    for row in (ok2, unknown, bad_guardian):
        assert await absent(env, row["id_number"])


async def test_bad_utf8_rejects_only_that_row(env: Harness, tmp_path: Path) -> None:
    before, broken, broken_residence, after = person(env), person(env), person(env), person(env)
    data = (
        csv_bytes([before])
        + csv_line(broken).encode().replace("Nguyễn".encode(), b"Nguy\xc3n")  # a truncated sequence
        + csv_line(broken_residence).encode().replace("Tràng".encode(), b"Tr\xe0ng")  # Latin-1, not UTF-8
        + csv_line(after).encode()
    )
    report = await run_import(env, data, tmp_path)

    assert read_rejects(tmp_path) == [
        (3, "full_name: contains invalid Unicode (lone surrogate)"),
        (4, "residence: contains invalid Unicode (lone surrogate)"),
    ]
    assert (report.imported, report.rejected) == (2, 2)
    assert await absent(env, broken["id_number"]) and await absent(env, broken_residence["id_number"])
    assert (await get_citizen(env, after["id_number"]))["residence"] == after["residence"]


async def test_missing_header_column_is_a_clear_error(env: Harness, tmp_path: Path) -> None:
    row = person(env)
    header = [f for f in FIELDS if f not in ("sex", "residence")]
    with pytest.raises(ValueError, match=r"^the CSV header lacks: sex, residence \(expected id_number,full_name,"):
        await run_import(env, csv_bytes([row], header=header), tmp_path)
    assert await absent(env, row["id_number"])
    with pytest.raises(ValueError, match="the CSV header lacks: id_number, full_name, date_of_birth, sex, residence"):
        await run_import(env, b"", tmp_path)


async def test_optional_columns_may_be_left_out_and_short_rows_are_padded(env: Harness, tmp_path: Path) -> None:
    a, b = person(env), person(env, phone="0987654321")
    header = ["full_name", "id_number", "date_of_birth", "sex", "residence", "phone"]  # any order
    data = csv_bytes([a], header=header[:5]) + csv_bytes([b], header=header).split(b"\n", 1)[1]
    # The second data row has one column more than the header: refused as "too many columns".
    report = await run_import(env, data, tmp_path)
    assert read_rejects(tmp_path) == [(3, "too many columns")]
    assert report.imported == 1
    assert (await get_citizen(env, a["id_number"]))["phone"] is None

    short = csv_line(b).rsplit(",", 2)[0] + "\n"  # phone and guardians cut off: both empty
    report = await run_import(env, csv_bytes([]) + short.encode(), tmp_path)
    assert (report.imported, report.rejected) == (1, 0)
    assert (await get_citizen(env, b["id_number"]))["phone"] is None


# --- upserts, batches, failures --------------------------------------------------------------


async def test_rerun_is_idempotent_and_applies_changes(env: Harness, tmp_path: Path) -> None:
    parent = person(env, age=40, phone="0911111111")
    child = person(env, age=6, guardians="")
    child["guardians"] = f"{parent['id_number']}:parent"
    rows = [parent, child, person(env, sex=Sex.female, full_name="Hồ Thị Thu")]
    ids = [r["id_number"] for r in rows]
    t0 = env.ctx.clock.now().replace(microsecond=0)
    data = csv_bytes(rows)

    first = await run_import(env, data, tmp_path, now=t0, batch_size=2)
    snapshot = [await get_citizen(env, i) for i in ids]
    second = await run_import(env, data, tmp_path, now=t0 + dt.timedelta(hours=1), batch_size=2)

    assert (first.imported, second.imported, second.batches) == (3, 3, 2)
    assert await count_in(env, "citizens", "id_number", ids) == 3
    assert await count_in(env, "guardian_links", "ward_id_number", ids) == 1
    # Nothing changed, so nothing was touched: not even updated_at.
    assert [await get_citizen(env, i) for i in ids] == snapshot

    changed_parent = {**parent, "residence": "5 Nguyễn Huệ, Quận 1, Hồ Chí Minh", "phone": ""}
    changed_child = {**child, "guardians": f"{parent['id_number']}:guardian"}
    t2 = t0 + dt.timedelta(hours=2)
    await run_import(env, csv_bytes([changed_parent, changed_child, rows[2]]), tmp_path, now=t2, batch_size=2)

    got = await get_citizen(env, parent["id_number"])
    assert (got["residence"], got["phone"]) == ("5 Nguyễn Huệ, Quận 1, Hồ Chí Minh", None)
    assert dt.datetime.fromisoformat(got["updated_at"]) == t2
    assert dt.datetime.fromisoformat(got["created_at"]) == t0
    assert (await get_citizen(env, child["id_number"]))["guardians"] == [
        {"id_number": parent["id_number"], "relation": "guardian"}
    ]
    assert await get_citizen(env, rows[2]["id_number"]) == snapshot[2]  # unchanged row: untouched
    # A ward whose row no longer names a guardian loses the link.
    await run_import(env, csv_bytes([{**child, "guardians": ""}]), tmp_path, now=t2)
    assert (await get_citizen(env, child["id_number"]))["guardians"] == []
    assert await count_in(env, "citizens", "id_number", ids) == 3


async def test_source_failure_midway_keeps_earlier_batches_only(env: Harness, tmp_path: Path) -> None:
    existing = person(env, full_name="Dương Văn Cũ")
    await run_import(env, csv_bytes([existing]), tmp_path)
    a, b, c, d = (person(env) for _ in range(4))
    lines = [
        ",".join(FIELDS) + "\n",  # 1
        csv_line(a),  # 2
        csv_line(b),  # 3
        csv_line({**person(env), "sex": "?"}),  # 4: rejected
        csv_line(c),  # 5: batch 1 (a, b, c) is full
        csv_line({**existing, "full_name": "Dương Văn Mới"}),  # 6: batch 2
        csv_line(d),  # 7: batch 2
        csv_line({**person(env), "date_of_birth": "yesterday"}),  # 8: rejected
        csv_line(person(env)),  # 9: the read fails here
    ]
    source = FlakySource("".join(lines).encode(), fail_at=9)

    with pytest.raises(OSError, match="went away"):
        await run_import(env, source, tmp_path, batch_size=3, source_name=f"flaky-{uuid.uuid4()}")

    for row in (a, b, c):
        assert not await absent(env, row["id_number"])
    assert await absent(env, d["id_number"])
    assert (await get_citizen(env, existing["id_number"]))["full_name"] == "Dương Văn Cũ"
    assert read_rejects(tmp_path) == [(4, "sex: must be male or female"), (8, "date_of_birth: not a date (YYYY-MM-DD)")]


async def test_database_failure_midway_rolls_back_that_batch_only(
    env: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = person(env, full_name="Hoàng Văn Cũ", guardians="")
    await run_import(env, csv_bytes([existing]), tmp_path)
    a, b, d, e, f = (person(env) for _ in range(5))
    source = f"dbfail-{uuid.uuid4()}"
    real_audit_row = importer._audit_row

    def audit_row(now: dt.datetime, actor: Actor, batch_no: int, count: int, src: str) -> dict[str, Any]:
        row = real_audit_row(now, actor, batch_no, count, src)
        if batch_no == 2:  # fails inside the transaction, after the batch's upserts ran
            row["detail"] = {"unserialisable": object()}
        return row

    monkeypatch.setattr(importer, "_audit_row", audit_row)
    guardian = person(env)["id_number"]
    lines = [
        ",".join(FIELDS) + "\n",
        csv_line(a),  # 2: batch 1
        csv_line({**person(env), "sex": "?"}),  # 3: rejected before batch 1 was complete
        csv_line(b),  # 4: batch 1 full
        csv_line({**existing, "full_name": "Hoàng Văn Mới", "guardians": guardian}),  # 5: batch 2
        csv_line(d),  # 6: batch 2, whose write fails
        csv_line({**person(env), "sex": "?"}),  # 7: never reached by a sequential import
        csv_line(e),
        csv_line(f),
    ]
    with pytest.raises(Exception, match="not JSON serializable"):
        await run_import(env, "".join(lines).encode(), tmp_path, batch_size=2, source_name=source)

    assert not await absent(env, a["id_number"]) and not await absent(env, b["id_number"])
    for row in (d, e, f):
        assert await absent(env, row["id_number"])
    got = await get_citizen(env, existing["id_number"])
    assert (got["full_name"], got["guardians"]) == ("Hoàng Văn Cũ", [])
    assert [r.detail for r in await import_audit_rows(env, source)] == [{"batch": 1, "records": 2, "source": source}]
    assert read_rejects(tmp_path) == [(3, "sex: must be male or female")]


async def test_an_audit_row_per_batch(env: Harness, tmp_path: Path) -> None:
    rows = [person(env) for _ in range(5)]
    source = f"registry-{uuid.uuid4()}.csv"
    now = env.ctx.clock.now()
    report = await run_import(env, csv_bytes(rows), tmp_path, batch_size=2, source_name=source, now=now)

    assert report.batches == 3
    audit = await import_audit_rows(env, source)
    assert [r.detail for r in audit] == [
        {"batch": 1, "records": 2, "source": source},
        {"batch": 2, "records": 2, "source": source},
        {"batch": 3, "records": 1, "source": source},
    ]
    assert {(r.actor_type, r.actor_id, r.outcome, r.target) for r in audit} == {("admin", "test", "ok", None)}
    assert all(abs((r.at - now).total_seconds()) < 1 for r in audit)


async def test_progress_callback_sees_each_committed_batch(env: Harness, tmp_path: Path) -> None:
    rows = [person(env) for _ in range(7)]
    seen: list[tuple[int, int]] = []
    report = await import_registry(
        env.ctx.settings,
        io.BytesIO(csv_bytes(rows)),
        fmt="csv",
        rejects_path=tmp_path / "rejects.csv",
        actor=ACTOR,
        now=env.ctx.clock.now(),
        today=env.ctx.clock.today(),
        batch_size=3,
        on_batch=lambda r: seen.append((r.batches, r.imported)),
    )
    assert report.imported == 7
    assert [imported for _, imported in seen] == [3, 6, 7]


async def test_many_rows_across_many_batches(env: Harness, tmp_path: Path) -> None:
    """Enough rows that parsing runs ahead of the writes (the overlapping path)."""
    rows = [person(env, full_name=f"Nguyễn Văn {i}", phone=f"09{i % 10}{i:07d}") for i in range(2_500)]
    for i in range(100, 2_500, 10):
        rows[i]["guardians"] = rows[i - 100]["id_number"]
    rows[1_234]["sex"] = "?"
    report = await run_import(env, csv_bytes(rows), tmp_path, batch_size=300)

    assert (report.imported, report.rejected, report.batches) == (2_499, 1, 9)
    assert read_rejects(tmp_path) == [(1_236, "sex: must be male or female")]
    ids = [r["id_number"] for r in rows]
    assert await count_in(env, "citizens", "id_number", ids) == 2_499
    assert await count_in(env, "guardian_links", "ward_id_number", ids) == 240
    got = await get_citizen(env, rows[2_490]["id_number"])
    assert got["guardians"] == [{"id_number": rows[2_390]["id_number"], "relation": "parent"}]
    assert got["full_name"] == "Nguyễn Văn 2490"


# --- validate_row against the rules as first written -------------------------------------------


def outcome(fn: Any, row: dict[str, Any], today: dt.date) -> tuple[str, Any]:
    try:
        r = fn(row, today)
    except RowError as exc:
        return "rejected", str(exc)
    return "ok", (r.id_number, r.full_name, r.date_of_birth, r.sex, r.residence, r.phone, r.guardians)


TODAY = dt.date(2026, 3, 1)
# Text that exercises every branch of clean_text: Vietnamese letters (NFC and NFD), spaces of
# several kinds, control and format characters, private-use, unassigned, lone surrogates.
tricky_chars = st.sampled_from(
    [*"aAđĐơưễỆ ", "e\u0302\u0301", "\u00a0", "\u2003", "\t", "\n", "\x00", "\x7f", "\u200b", "\u202e", "\ue000",
     "\U000e0001", "\u0378", "\ud800", "\udcff", "\u2028", "\u00ad"]
)  # fmt: skip
texts = st.one_of(st.text(max_size=30), st.lists(tricky_chars, max_size=12).map("".join))
birth_dates = st.dates(min_value=dt.date(1890, 1, 1), max_value=dt.date(2030, 12, 31))


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    dob = draw(birth_dates)
    sex = draw(st.sampled_from(list(Sex)))
    id_sex = draw(st.sampled_from([sex, Sex.male, Sex.female]))
    id_dob = draw(st.sampled_from([dob, dob.replace(year=max(1900, min(2299, dob.year + 1)), day=1)]))
    province = draw(st.sampled_from([*PROVINCE_CODES[:5], "003", "999"]))
    id_number = draw(
        st.one_of(
            st.just(make_id_number(province, id_sex, max(id_dob, dt.date(1900, 1, 1)), draw(st.integers(0, 999_999)))),
            st.text(alphabet="0123456789 ٣x", max_size=13),
        )
    )
    row: dict[str, Any] = {
        "id_number": id_number,
        "full_name": draw(st.one_of(texts, st.sampled_from(["Nguyễn Văn An", " Trần  Thị\u00a0Bích "]))),
        "date_of_birth": draw(st.one_of(st.just(dob.isoformat()), st.just(dob.strftime("%Y%m%d")), texts)),
        "sex": draw(st.one_of(st.sampled_from([sex.value, " Male", "F", "NỮ", "nu", "nam", "x", ""]), texts)),
        "residence": draw(st.one_of(texts, st.just("1 Lê Lợi, Huế"))),
        "phone": draw(
            st.one_of(
                st.sampled_from(["", "+84912345678", "0912 345 678", "84-91-234-5678", "+8491234567", "+84٩12345678"]),
                st.from_regex(r"\+84[0-9]{9}", fullmatch=True),
                texts,
            )
        ),
        "guardians": draw(st.one_of(st.just(""), st.just(None), st.just("001099012345"), texts)),
    }
    if draw(st.booleans()):  # JSON-shaped values: not always strings
        row[draw(st.sampled_from(list(FIELDS)))] = draw(st.one_of(st.none(), st.integers(), st.booleans()))
    return row


@settings(max_examples=400, deadline=None)
@given(rows())
@example({"id_number": "001099012345", "full_name": "An", "date_of_birth": "1999-01-01", "sex": "male",
          "residence": "Huế", "phone": "", "guardians": ""})  # fmt: skip
def test_validate_row_agrees_with_the_reference_rules(row: dict[str, Any]) -> None:
    assert outcome(validate_row, row, TODAY) == outcome(validate_record, row, TODAY)


def reference_clean_text(value: str) -> str:
    """clean_text as specified, character by character with no fast path."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains invalid Unicode (lone surrogate)") from None
    value = unicodedata.normalize("NFC", value)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value):
        raise ValueError("contains control, invisible or unassigned characters")
    value = " ".join(value.split())
    if not value:
        raise ValueError("must not be empty")
    return value


def _verdict(fn: Any, text: str) -> tuple[str, str]:
    try:
        return "ok", fn(text)
    except ValueError as exc:
        return "rejected", str(exc)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(tricky_chars, max_size=16).map("".join)))
def test_clean_text_fast_path_agrees_with_the_reference(text: str) -> None:
    assert _verdict(clean_text, text) == _verdict(reference_clean_text, text)
    try:
        got: tuple[str, str] = ("ok", importer._clean(text, "field"))
    except RowError as exc:
        got = ("rejected", str(exc))
    verdict, value = _verdict(clean_text, text)
    assert got == (verdict, value if verdict == "ok" else f"field: {value}")


def test_no_printable_character_is_of_a_refused_category() -> None:
    """What clean_text's fast path rests on, for this Python's Unicode database."""
    printable_but_refused = [
        hex(cp)
        for cp in range(sys.maxunicode + 1)
        if chr(cp).isprintable() and unicodedata.category(chr(cp)) in ("Cc", "Cf", "Cs", "Co", "Cn")
    ]
    assert printable_but_refused == []


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(PROVINCE_CODES),
    st.sampled_from(list(Sex)),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY),
    st.integers(0, 999_999),
)
def test_made_records_are_accepted(province: str, sex: Sex, dob: dt.date, serial: int) -> None:
    row = {
        "id_number": make_id_number(province, sex, dob, serial),
        "full_name": unicodedata.normalize("NFD", "  Phạm   Thị Ánh "),
        "date_of_birth": dob.isoformat(),
        "sex": sex.value,
        "residence": "3 Hàng Bài",
        "phone": "0355 123 456",
        "guardians": "",
    }
    record = validate_row(row, TODAY)
    assert (record.full_name, record.phone, record.date_of_birth, record.guardians) == (
        "Phạm Thị Ánh",
        "+84355123456",
        dob,
        [],
    )


async def test_a_run_of_rejects_behind_a_batch_in_flight(
    env: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "_MAX_HELD_REJECTS", 50)  # held back while a write runs: bounded
    good = [person(env) for _ in range(301)]
    bad = {**person(env), "sex": "?"}
    lines = [",".join(FIELDS) + "\n", *map(csv_line, good[:300]), *[csv_line(bad)] * 1_000, csv_line(good[300])]
    report = await run_import(env, "".join(lines).encode(), tmp_path, batch_size=300)

    assert (report.imported, report.rejected, report.batches) == (301, 1_000, 2)
    assert read_rejects(tmp_path) == [(line, "sex: must be male or female") for line in range(302, 1_302)]
    assert await count_in(env, "citizens", "id_number", [r["id_number"] for r in good]) == 301
