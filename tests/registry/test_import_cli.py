"""`eid import-registry`: the command around app.registry.importer (both backends): its summary,
its refusals, its progress lines, and no full ID number or phone in what it prints."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from sqlalchemy import text
from typer.testing import CliRunner

from app.cli import cli
from app.core.audit import Actor
from app.core.config import Settings, get_settings
from app.core.db import make_engine
from app.registry import importer
from app.registry.idnumber import Sex, make_id_number
from app.registry.importer import FIELDS
from tests.conftest import TEST_SECRET
from tests.support import PROVINCE_CODES, _serials, years_ago


@pytest.fixture
def eid_env(database: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The command's environment pointed at the session's database."""
    _backend, url = database
    monkeypatch.setenv("EID_DATABASE_URL", url)
    monkeypatch.setenv("EID_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("EID_ENV", "test")
    monkeypatch.setenv("EID_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _row(today: dt.date, name: str) -> list[str]:
    dob = years_ago(today, 33, days=3)
    number = make_id_number(random.choice(PROVINCE_CODES), Sex.female, dob, next(_serials))
    return [number, name, dob.isoformat(), "female", "7 Lê Duẩn, Đà Nẵng", "0935 111 222", ""]


def _names(settings: Settings, ids: list[str]) -> dict[str, str]:
    async def query() -> dict[str, str]:
        engine = make_engine(settings)
        try:
            async with engine.connect() as conn:
                params = {f"p{i}": v for i, v in enumerate(ids)}
                where = ", ".join(":" + k for k in params)
                result = await conn.execute(
                    text(f"SELECT id_number, full_name FROM citizens WHERE id_number IN ({where})"), params
                )
                return {r[0]: r[1] for r in result}
        finally:
            await engine.dispose()

    return asyncio.run(query())


def _write(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header or list(FIELDS), *rows])
    return path


def _audit_sources(settings: Settings, source: str) -> int:
    async def query() -> int:
        engine = make_engine(settings)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(
                    text("SELECT detail FROM audit_events WHERE action = 'registry.import.batch'")
                )
                details = [d if isinstance(d, dict) else json.loads(d) for (d,) in result]
                return sum(1 for d in details if d.get("source") == source)
        finally:
            await engine.dispose()

    return asyncio.run(query())


def _no_full_numbers(text: str, rows: list[list[str]]) -> None:
    """No ID number or phone of the rows in the text (masked forms are fine)."""
    for row in rows:
        assert row[0] not in text
        digits = "".join(ch for ch in row[5] if ch.isdigit())
        if digits:
            assert digits[-9:] not in "".join(ch for ch in text if ch.isdigit() or ch == "\n")


def test_import_registry_command(eid_env: Settings, tmp_path: Path) -> None:
    today = dt.date.today()
    rows = [_row(today, "Lý Thị Hạnh"), _row(today, "Võ Thị Yến"), _row(today, "Đặng Thị Oanh")]
    rows[1][3] = "unknown"
    rows.append([rows[0][0], "Lý Thị Khác", *rows[0][2:]])  # a duplicate of the first row
    path = _write(tmp_path / "registry.csv", rows)

    result = CliRunner().invoke(cli, ["import-registry", str(path), "--batch-size", "1"])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "2 inserted, 0 updated, 0 unchanged, 2 rejected in 3 batches"
    rejects = path.with_name("registry.csv.rejects.csv")
    assert f"rejected rows: {rejects}" in result.stdout
    assert rejects.read_text(encoding="utf-8").splitlines() == [
        "line,reason",
        "3,sex: must be male or female",
        "5,duplicate of line 2 (different data: full_name)",
    ]
    assert _names(eid_env, [r[0] for r in rows]) == {rows[0][0]: "Lý Thị Hạnh", rows[2][0]: "Đặng Thị Oanh"}
    _no_full_numbers(result.output, rows)

    again = CliRunner().invoke(cli, ["import-registry", str(path), "--batch-size", "1"])
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == "0 inserted, 0 updated, 2 unchanged, 2 rejected in 3 batches"
    assert rejects.read_text(encoding="utf-8").splitlines()[1:] == [
        "3,sex: must be male or female",
        "5,duplicate of line 2 (different data: full_name)",
    ]


def test_import_registry_command_reports_a_bad_file(eid_env: Settings, tmp_path: Path) -> None:
    row = _row(dt.date.today(), "Hồ Thị Xuân")
    path = tmp_path / "registry.jsonl"
    path.write_text(json.dumps({"id_number": row[0], "full_name": "x"}) + "\n", encoding="utf-8")
    bad_header = tmp_path / "no-sex.csv"
    bad_header.write_text("id_number,full_name,date_of_birth,residence\n", encoding="utf-8")

    result = CliRunner().invoke(cli, ["import-registry", str(bad_header)])
    assert result.exit_code == 2
    assert "refused, nothing imported: the CSV header lacks: sex (expected id_number," in result.stderr

    result = CliRunner().invoke(cli, ["import-registry", str(path)])  # JSON lines, from the suffix
    assert result.exit_code == 0, result.output
    assert "0 inserted, 0 updated, 0 unchanged, 1 rejected in 0 batches" in result.stdout
    assert _names(eid_env, [row[0]]) == {}

    result = CliRunner().invoke(cli, ["import-registry", str(path), "--format", "xml"])
    assert result.exit_code == 2 and "--format must be csv or jsonl" in result.stderr


def test_a_misspelt_column_refuses_the_file_and_writes_nothing(eid_env: Settings, tmp_path: Path) -> None:
    today = dt.date.today()
    rows = [_row(today, "Mai Thị Lan"), _row(today, "Mai Văn Tùng")]
    path = _write(tmp_path / "typo.csv", rows, [*FIELDS[:6], "guardian"])

    result = CliRunner().invoke(cli, ["import-registry", str(path)])

    assert result.exit_code == 2
    assert result.stderr.startswith(
        "refused, nothing imported: the CSV header has unknown columns: guardian (did you mean guardians?)"
    )
    assert result.stdout == ""
    assert _names(eid_env, [r[0] for r in rows]) == {}
    assert _audit_sources(eid_env, "typo.csv") == 0
    assert not path.with_name("typo.csv.rejects.csv").exists()


def test_a_file_without_a_header_is_refused_without_showing_its_first_record(eid_env: Settings, tmp_path: Path) -> None:
    rows = [_row(dt.date.today(), "Trịnh Thị Vân")]
    path = tmp_path / "no-header.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)

    result = CliRunner().invoke(cli, ["import-registry", str(path)])

    assert result.exit_code == 2
    assert "the first line of the CSV file is not a header" in result.stderr
    _no_full_numbers(result.output, rows)
    assert _names(eid_env, [rows[0][0]]) == {}


def test_progress_lines_when_stderr_is_not_a_terminal(
    eid_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "PROGRESS_LINE_EVERY", 0.0)  # a line at every report, not every 5 s
    today = dt.date.today()
    rows = [_row(today, f"Phan Thị {i}") for i in range(300)]
    rows[5][3] = "?"
    path = _write(tmp_path / "progress.csv", rows)

    result = CliRunner().invoke(cli, ["import-registry", str(path), "--batch-size", "100"])

    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) > 3
    assert all(re.fullmatch(_PROGRESS_LINE, line) for line in lines), lines
    assert lines[-1].startswith("importing: 100% of the file read, 300 rows (")
    assert lines[-1].endswith(" rows/s), 1 rejected, about 0 s left")
    assert "299 inserted, 0 updated, 0 unchanged, 1 rejected in 3 batches" in result.stdout
    _no_full_numbers(result.output, rows)

    monkeypatch.setattr(importer, "PROGRESS_LINE_EVERY", 3600.0)
    result = CliRunner().invoke(cli, ["import-registry", str(path)])
    assert result.exit_code == 0 and result.stderr == ""  # an import shorter than the interval: no line


_PROGRESS_LINE = (
    r"importing: \d{1,3}% of the file read, [\d,]+ rows \([\d,]+ rows/s\), [\d,]+ rejected"
    r"(, about \d+ (s|min \d\d s|h \d\d min) left)?"
)


def test_a_failure_is_reported_without_full_id_numbers(
    eid_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = dt.date.today()
    rows = [_row(today, "Đinh Thị Hoa"), _row(today, "Đinh Văn Nam")]
    real_audit_row = importer._audit_row

    def audit_row(now: dt.datetime, actor: Actor, batch_no: int, count: int, source: str) -> dict[str, Any]:
        if batch_no == 2:  # as a database error quoting the row would
            phone = "+84" + "".join(ch for ch in rows[1][5] if ch.isdigit())[-9:]
            raise RuntimeError(f"key (id_number)=({rows[1][0]}) conflicts; phone {phone}")
        return real_audit_row(now, actor, batch_no, count, source)

    monkeypatch.setattr(importer, "_audit_row", audit_row)
    path = _write(tmp_path / "fails.csv", rows)

    result = CliRunner().invoke(cli, ["import-registry", str(path), "--batch-size", "1"])

    assert result.exit_code == 1
    assert result.stderr.startswith("import stopped: RuntimeError: key (id_number)=(")
    assert f"({rows[1][0][:3]}*******{rows[1][0][-2:]})" in result.stderr
    assert "re-run the same file to finish" in result.stderr
    _no_full_numbers(result.output, rows)
    assert _names(eid_env, [r[0] for r in rows]) == {rows[0][0]: "Đinh Thị Hoa"}  # batch 1 only


def test_a_progress_bar_when_stderr_is_a_terminal(
    eid_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CliRunner's stderr, taken for a terminal: the command draws rich's bar there instead of lines.
    monkeypatch.setattr(typer.testing._NamedTextIOWrapper, "isatty", lambda self: True)
    monkeypatch.setattr(importer, "PROGRESS_BAR_EVERY", 0.0)
    today = dt.date.today()
    rows = [_row(today, f"Lâm Thị {i}") for i in range(250)]
    path = _write(tmp_path / "bar.csv", rows)

    result = CliRunner().invoke(cli, ["import-registry", str(path), "--batch-size", "100"])

    assert result.exit_code == 0, result.output
    assert "250 inserted, 0 updated, 0 unchanged, 0 rejected in 3 batches" in result.stdout
    assert "importing" in result.stderr and "rows/s" in result.stderr
    assert "importing: " not in result.stderr  # not the plain lines
    _no_full_numbers(result.output, rows)
