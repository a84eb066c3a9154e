"""Bulk registry import: the rules across rows (duplicate ID numbers, guardians), the counts of
the report, and the CSV header check. Both backends, through the importer's API.

Each test uses ID numbers of its own (the session's database is shared).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.core.audit import Actor
from app.registry import importer
from app.registry.idnumber import Sex
from app.registry.importer import FIELDS, HeaderError, ImportReport, ProgressFigures, ProgressReporter
from tests.registry.test_import import (
    FlakySource,
    absent,
    count_in,
    csv_bytes,
    csv_line,
    get_citizen,
    import_audit_rows,
    person,
    read_rejects,
    run_import,
)
from tests.support import Harness

# --- helpers ---------------------------------------------------------------------------------


def lines_of(rows: list[dict[str, str]]) -> str:
    """A CSV file whose row i (from 0) is on line i + 2."""
    return ",".join(FIELDS) + "\n" + "".join(csv_line(r) for r in rows)


def counts(report: ImportReport) -> tuple[int, int, int, int]:
    return report.inserted, report.updated, report.unchanged, report.rejected


def guardians_of(citizen: dict[str, Any]) -> set[tuple[str, str]]:
    return {(g["id_number"], g["relation"]) for g in citizen["guardians"]}


def another_day(row: dict[str, str]) -> dict[str, str]:
    """The row with another birth date in the same year (its ID number stays valid)."""
    dob = dt.date.fromisoformat(row["date_of_birth"])
    return {**row, "date_of_birth": dob.replace(day=2 if dob.day == 1 else 1).isoformat()}


def record(citizen: dict[str, Any]) -> dict[str, Any]:
    """A citizen as the registry answers, less the wards (those follow other rows)."""
    return {k: v for k, v in citizen.items() if k != "wards"}


# --- duplicate ID numbers --------------------------------------------------------------------


@pytest.fixture(params=["memory", "table", "spilled"])
def claims(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the run keeps the ID numbers it has seen: in memory (the default for files of up to
    importer._CLAIMS_IN_MEMORY rows), in the database from the first batch, or moved there
    part-way."""
    if request.param != "memory":
        monkeypatch.setattr(importer, "_CLAIMS_IN_MEMORY", 0 if request.param == "table" else 4)
    return str(request.param)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1_000])
async def test_the_first_row_of_an_id_number_wins_and_later_ones_are_rejected(
    env: Harness, tmp_path: Path, batch_size: int, claims: str
) -> None:
    """Whether the rows of a number meet in one batch or in several, and wherever the numbers
    seen are kept, the outcome is the same."""
    a = person(env, full_name="Bùi Văn Một", phone="0901111111")
    b = person(env, full_name="Ngô Thị Hai", sex=Sex.female)
    g1, g2 = person(env, age=60), person(env, age=61)
    c = person(env, age=9, full_name="Ngô Gia Ba")
    c["guardians"] = f"{g1['id_number']}:parent;{g2['id_number']}:guardian"
    rows = [
        a,  # 2: applied
        {**a, "phone": "+84 90 111 1111"},  # 3: the same once normalised
        b,  # 4: applied
        {**b, "full_name": "Ngô Thị Bốn", "phone": "0987654321"},  # 5
        {**person(env), "sex": "?"},  # 6: invalid: rejected for that, whatever follows
        {**a, "full_name": "Bùi Văn Năm"},  # 7
        a,  # 8: still line 2's duplicate when line 7 is in its batch
        g1,  # 9
        g2,  # 10
        c,  # 11: applied
        {**c, "guardians": f"{g2['id_number']}:guardian;{g1['id_number']}:parent"},  # 12: same set
        another_day({**c, "guardians": g1["id_number"]}),  # 13
        {**c, "residence": "9 Lê Lợi, Huế"},  # 14
    ]
    report = await run_import(env, lines_of(rows).encode(), tmp_path, batch_size=batch_size)

    assert read_rejects(tmp_path) == [
        (3, "duplicate of line 2 (same data)"),
        (5, "duplicate of line 4 (different data: full_name, phone)"),
        (6, "sex: must be male or female"),
        (7, "duplicate of line 2 (different data: full_name)"),
        (8, "duplicate of line 2 (same data)"),
        (12, "duplicate of line 11 (same data)"),
        (13, "duplicate of line 11 (different data: date_of_birth, guardians)"),
        (14, "duplicate of line 11 (different data: residence)"),
    ]
    assert (report.rows_read, *counts(report)) == (13, 5, 0, 0, 8)
    got = await get_citizen(env, a["id_number"])
    assert (got["full_name"], got["phone"], got["date_of_birth"]) == ("Bùi Văn Một", "+84901111111", a["date_of_birth"])
    got = await get_citizen(env, b["id_number"])
    assert (got["full_name"], got["phone"]) == ("Ngô Thị Hai", None)
    got = await get_citizen(env, c["id_number"])
    assert (got["date_of_birth"], got["residence"]) == (c["date_of_birth"], c["residence"])
    assert guardians_of(got) == {(g1["id_number"], "parent"), (g2["id_number"], "guardian")}


async def test_a_rerun_changes_nothing_and_rejects_the_same_rows_for_the_same_reasons(
    env: Harness, tmp_path: Path, claims: str
) -> None:
    parent, ward = person(env, age=40), person(env, age=7)
    ward["guardians"] = parent["id_number"]
    orphan = person(env, age=5, guardians=person(env)["id_number"])  # a guardian nowhere
    rows = [ward, parent, {**parent, "full_name": "Khác"}, orphan, {**ward, "sex": "x"}, person(env)]
    data = lines_of(rows).encode()
    t0 = env.ctx.clock.now()

    first = await run_import(env, data, tmp_path, batch_size=2, now=t0)
    rejects = (tmp_path / "rejects.csv").read_bytes()
    ids = [r["id_number"] for r in (ward, parent, rows[5])]
    snapshot = [await get_citizen(env, i) for i in ids]
    second = await run_import(env, data, tmp_path, batch_size=2, now=t0 + dt.timedelta(hours=1))

    assert counts(first) == (3, 0, 0, 3)
    assert counts(second) == (0, 0, 3, 3)
    assert (tmp_path / "rejects.csv").read_bytes() == rejects
    assert read_rejects(tmp_path) == [
        (4, "duplicate of line 3 (different data: full_name)"),
        (5, f"guardians: {orphan['guardians']} is not in the registry or this file"),
        (6, "sex: must be male or female"),
    ]
    assert [await get_citizen(env, i) for i in ids] == snapshot  # not even updated_at moved
    assert await absent(env, orphan["id_number"])


# --- guardians -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 1_000])
async def test_a_guardian_may_come_later_in_the_file(env: Harness, tmp_path: Path, batch_size: int) -> None:
    mother, father = person(env, age=35, sex=Sex.female), person(env, age=37)
    child = person(env, age=4, guardians=f"{mother['id_number']};{father['id_number']}:guardian")
    grandchild = person(env, age=1, guardians=child["id_number"])  # names a row that waits too
    a, b = person(env, age=20), person(env, age=21)  # name each other: both are in the file
    a["guardians"], b["guardians"] = b["id_number"], a["id_number"]
    rows = [grandchild, child, a, person(env), mother, b, father]
    source = f"late-{uuid.uuid4()}"

    report = await run_import(env, lines_of(rows).encode(), tmp_path, batch_size=batch_size, source_name=source)

    assert counts(report) == (7, 0, 0, 0) and report.rejects_path is None
    got = await get_citizen(env, child["id_number"])
    assert guardians_of(got) == {(mother["id_number"], "parent"), (father["id_number"], "guardian")}
    assert guardians_of(await get_citizen(env, grandchild["id_number"])) == {(child["id_number"], "parent")}
    assert guardians_of(await get_citizen(env, a["id_number"])) == {(b["id_number"], "parent")}
    assert guardians_of(await get_citizen(env, b["id_number"])) == {(a["id_number"], "parent")}
    # Row by row, the rows waiting for a guardian (grandchild, child, a, then b: its guardian a
    # is waiting) are applied in one more batch at the end.
    audit = [r.detail["records"] for r in await import_audit_rows(env, source)]
    assert audit == ([0, 0, 0, 1, 1, 0, 1, 4] if batch_size == 1 else [7])
    assert report.batches == len(audit)


@pytest.mark.parametrize("batch_size", [1, 1_000])
async def test_a_guardian_neither_in_the_registry_nor_in_the_file_rejects_the_row(
    env: Harness, tmp_path: Path, batch_size: int, claims: str
) -> None:
    registered = person(env, age=50)
    await run_import(env, lines_of([registered]).encode(), tmp_path)
    nowhere = person(env, age=45)["id_number"]
    invalid = {**person(env, age=44), "date_of_birth": "soon"}  # its row is in the file, but rejected
    ok = person(env, age=8, guardians=registered["id_number"])  # in the registry
    lost = person(env, age=7, guardians=f"{registered['id_number']};{nowhere}")
    lost_too = person(env, age=6, guardians=invalid["id_number"])
    chained = person(env, age=1, guardians=lost["id_number"])  # its guardian's row is rejected
    repeat = {**lost, "residence": "2 Hùng Vương, Huế"}
    rows = [lost, ok, chained, invalid, lost_too, repeat]

    report = await run_import(env, lines_of(rows).encode(), tmp_path, batch_size=batch_size)

    assert read_rejects(tmp_path) == [
        (2, f"guardians: {nowhere} is not in the registry or this file"),
        (4, f"guardians: {lost['id_number']} is not in the registry, and its row in this file (line 2) was rejected"),
        (5, "date_of_birth: not a date (YYYY-MM-DD)"),
        (6, f"guardians: {invalid['id_number']} is not in the registry or this file"),
        (7, "duplicate of line 2 (different data: residence)"),
    ]
    assert counts(report) == (1, 0, 0, 5)
    for row in (lost, chained, invalid, lost_too):
        assert await absent(env, row["id_number"])
    ids = [r["id_number"] for r in rows]
    assert await count_in(env, "guardian_links", "ward_id_number", ids) == 1
    assert guardians_of(await get_citizen(env, ok["id_number"])) == {(registered["id_number"], "parent")}


async def test_a_failure_part_way_leaves_the_waiting_rows_out_and_a_rerun_finishes(
    env: Harness, tmp_path: Path, claims: str
) -> None:
    guardian = person(env, age=40)
    ward = person(env, age=3, guardians=guardian["id_number"])
    a, b, c = person(env), person(env), person(env)
    lines = lines_of([ward, a, b, {**a, "full_name": "Khác"}, c, guardian])
    # Batches of two: (ward, a) with ward set aside for its guardian, then (b, the repeat of a);
    # the read fails at line 6, before the guardian (line 7) is reached.
    source = FlakySource(lines.encode(), fail_at=6)

    with pytest.raises(OSError, match="went away"):
        await run_import(env, source, tmp_path, batch_size=2)

    assert not await absent(env, a["id_number"]) and not await absent(env, b["id_number"])
    for row in (ward, c, guardian):
        assert await absent(env, row["id_number"])
    # The rejects of the batches that committed, and nothing about the waiting row.
    assert read_rejects(tmp_path) == [(5, "duplicate of line 3 (different data: full_name)")]

    report = await run_import(env, lines.encode(), tmp_path, batch_size=2)
    assert counts(report) == (3, 0, 2, 1)
    assert guardians_of(await get_citizen(env, ward["id_number"])) == {(guardian["id_number"], "parent")}


async def test_a_failure_of_the_last_batch_applies_no_waiting_row(
    env: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guardian, other = person(env, age=40), person(env)
    ward = person(env, age=3, guardians=guardian["id_number"])
    lost = person(env, age=2, guardians=person(env)["id_number"])
    source = f"lastfail-{uuid.uuid4()}"
    real_audit_row = importer._audit_row

    def audit_row(now: dt.datetime, actor: Actor, batch_no: int, count: int, src: str) -> dict[str, Any]:
        row = real_audit_row(now, actor, batch_no, count, src)
        if batch_no == 3:  # the batch of the rows that waited for a guardian
            row["detail"] = {"unserialisable": object()}
        return row

    monkeypatch.setattr(importer, "_audit_row", audit_row)
    data = lines_of([ward, lost, other, guardian]).encode()
    with pytest.raises(Exception, match="not JSON serializable"):
        await run_import(env, data, tmp_path, batch_size=2, source_name=source)

    for row in (ward, lost):
        assert await absent(env, row["id_number"])
    assert not await absent(env, other["id_number"]) and not await absent(env, guardian["id_number"])
    assert [r.detail["batch"] for r in await import_audit_rows(env, source)] == [1, 2]
    assert not (tmp_path / "rejects.csv").exists()  # the unresolved guardian was never reported


# --- counts ----------------------------------------------------------------------------------


async def test_the_report_counts_inserted_updated_unchanged_and_rejected(env: Harness, tmp_path: Path) -> None:
    parent, other_parent = person(env, age=40), person(env, age=41)
    kept, renamed, rephoned = person(env), person(env), person(env, phone="0912000111")
    relinked = person(env, age=6, guardians=parent["id_number"])
    unlinked = person(env, age=5, guardians=parent["id_number"])
    rerelated = person(env, age=4, guardians=parent["id_number"])
    gained, added = person(env, age=3), person(env, age=2, guardians=parent["id_number"])
    existing = [parent, other_parent, kept, renamed, rephoned, relinked, unlinked, rerelated, gained, added]
    t0 = env.ctx.clock.now()
    first = await run_import(env, lines_of(existing).encode(), tmp_path, now=t0)
    assert counts(first) == (10, 0, 0, 0)
    before = {r["id_number"]: record(await get_citizen(env, r["id_number"])) for r in existing}

    new1, new2 = person(env), person(env, age=3, guardians=other_parent["id_number"])
    rows = [
        parent,  # unchanged
        other_parent,  # unchanged
        kept,  # unchanged
        {**renamed, "full_name": "Tên Mới"},  # updated
        {**rephoned, "phone": ""},  # updated
        {**relinked, "guardians": other_parent["id_number"]},  # updated: another guardian
        {**unlinked, "guardians": ""},  # updated: no guardian any more
        {**rerelated, "guardians": f"{parent['id_number']}:guardian"},  # updated: another relation
        {**gained, "guardians": parent["id_number"]},  # updated: a guardian
        {**added, "guardians": f"{parent['id_number']};{other_parent['id_number']}"},  # updated: one more
        new1,  # inserted
        new2,  # inserted
        {**new1, "sex": "?"},  # rejected
    ]
    t1 = t0 + dt.timedelta(hours=1)
    report = await run_import(env, lines_of(rows).encode(), tmp_path, now=t1, batch_size=4)

    assert counts(report) == (2, 7, 3, 1) and report.imported == 12 and report.rows_read == 13
    for row in (renamed, rephoned, relinked, unlinked, rerelated, gained, added):
        got = await get_citizen(env, row["id_number"])
        assert dt.datetime.fromisoformat(got["updated_at"]) == t1, row
    for row in (parent, other_parent, kept):
        assert record(await get_citizen(env, row["id_number"])) == before[row["id_number"]]
    assert guardians_of(await get_citizen(env, relinked["id_number"])) == {(other_parent["id_number"], "parent")}
    assert guardians_of(await get_citizen(env, unlinked["id_number"])) == set()
    assert guardians_of(await get_citizen(env, rerelated["id_number"])) == {(parent["id_number"], "guardian")}
    assert guardians_of(await get_citizen(env, gained["id_number"])) == {(parent["id_number"], "parent")}
    assert len(guardians_of(await get_citizen(env, added["id_number"]))) == 2

    again = await run_import(env, lines_of(rows).encode(), tmp_path, now=t1 + dt.timedelta(hours=1), batch_size=4)
    assert counts(again) == (0, 0, 12, 1)


async def test_progress_sees_rows_and_rejects_so_far(env: Harness, tmp_path: Path) -> None:
    rows = [person(env) for _ in range(150)]
    for i in range(0, 150, 10):
        rows[i] = {**rows[i], "sex": "?"}
    seen: list[tuple[int, int, int]] = []
    await importer.import_registry(
        env.ctx.settings,
        io.BytesIO(lines_of(rows).encode()),
        fmt="csv",
        rejects_path=tmp_path / "rejects.csv",
        actor=Actor("admin", "test"),
        now=env.ctx.clock.now(),
        today=env.ctx.clock.today(),
        batch_size=100,
        on_progress=lambda r: seen.append((r.rows_read, r.rejected, r.imported)),
    )
    # Every few dozen rows while parsing (the rejects so far included), and after each batch.
    assert seen[0] == (importer._YIELD_EVERY, 7, 0)
    assert any(imported == 100 for _, _, imported in seen)
    assert seen[-1] == (150, 15, 135)
    assert [r for r, _, _ in seen] == sorted(r for r, _, _ in seen)


def test_progress_figures_and_their_pace() -> None:
    report = ImportReport(rows_read=120_000, rejected=12)
    figures = ProgressFigures.of(report, elapsed=40.0, position=30_000_000, size=100_000_000)
    assert figures.text() == "120,000 rows (3,000 rows/s), 12 rejected, about 1 min 33 s left"
    assert figures.line() == "importing: 30% of the file read, " + figures.text()
    assert ProgressFigures.of(report, 0.0, 0, 0).text() == "120,000 rows (0 rows/s), 12 rejected"
    assert ProgressFigures.of(report, 7200.0, 1, 3).left == 14400.0
    assert "about 4 h 00 min left" in ProgressFigures.of(report, 7200.0, 1, 3).text()

    clock = iter([0.0, 1.0, 4.9, 5.0, 5.1, 10.0, 10.1])
    shown: list[tuple[int, int]] = []
    progress = ProgressReporter(
        lambda f, position: shown.append((f.rows, position)), lambda: 42, 100, every=5.0, clock=lambda: next(clock)
    )
    for rows in range(1, 7):
        progress(ImportReport(rows_read=rows))
    assert shown == [(3, 42), (5, 42)]  # at 5.0 and 10.0 only


# --- the CSV header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            [*FIELDS[:6], "guardian"],
            "the CSV header has unknown columns: guardian (did you mean guardians?) (expected id_number,",
        ),
        ([*FIELDS, "email"], "the CSV header has unknown columns: email (expected "),
        ([*FIELDS, ""], "the CSV header has unknown columns: '' (expected "),
        (
            [*FIELDS[:4], " residence", *FIELDS[5:]],
            "the CSV header lacks: residence; has unknown columns: ' residence'",
        ),
        ([*FIELDS, "phone"], "the CSV header repeats: phone (expected "),
        (
            ["id_number", "fullname", "dob", "sex", "residence"],
            "lacks: full_name, date_of_birth; has unknown columns: ",
        ),
    ],
)
async def test_a_csv_header_that_does_not_name_the_fields_refuses_the_file(
    env: Harness, tmp_path: Path, header: list[str], message: str
) -> None:
    row = person(env, guardians=person(env)["id_number"])
    source = f"header-{uuid.uuid4()}"
    line = ",".join(header) + "\n" + ",".join(row[f] for f in FIELDS) + "\n"

    with pytest.raises(HeaderError) as caught:
        await run_import(env, line.encode(), tmp_path, source_name=source)

    assert message in str(caught.value)
    assert await absent(env, row["id_number"])
    assert await import_audit_rows(env, source) == []
    assert not (tmp_path / "rejects.csv").exists()


async def test_a_csv_file_without_its_header_line_is_refused_without_quoting_it(env: Harness, tmp_path: Path) -> None:
    row = person(env, phone="0912345678")
    data = csv_bytes([row]).split(b"\n", 1)[1]  # the header line left out

    with pytest.raises(HeaderError) as caught:
        await run_import(env, data, tmp_path)

    assert str(caught.value).startswith("the first line of the CSV file is not a header: it names none of the fields")
    assert row["id_number"] not in str(caught.value) and "0912345678" not in str(caught.value)
    assert await absent(env, row["id_number"])


async def test_json_lines_keep_rejecting_unknown_keys_row_by_row(env: Harness, tmp_path: Path) -> None:
    good, extra = person(env), person(env)
    lines = [json.dumps(good), json.dumps({**extra, "guardian": ""})]
    report = await run_import(env, "\n".join(lines).encode(), tmp_path, fmt="jsonl")
    assert read_rejects(tmp_path) == [(2, "unknown fields: guardian")]
    assert counts(report) == (1, 0, 0, 1)
    assert await absent(env, extra["id_number"])
