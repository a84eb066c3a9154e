"""`eid import-registry`: the command around app.registry.importer (both backends)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import Settings, get_settings
from app.core.db import make_engine
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


def test_import_registry_command(eid_env: Settings, tmp_path: Path) -> None:
    today = dt.date.today()
    rows = [_row(today, "Lý Thị Hạnh"), _row(today, "Võ Thị Yến"), _row(today, "Đặng Thị Oanh")]
    rows[1][3] = "unknown"
    path = tmp_path / "registry.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([list(FIELDS), *rows])

    result = CliRunner().invoke(cli, ["import-registry", str(path), "--batch-size", "1"])

    assert result.exit_code == 0, result.output
    assert "2 records imported in 2 batches, 1 rejected" in result.output
    rejects = path.with_name("registry.csv.rejects.csv")
    assert f"rejected rows: {rejects}" in result.output
    assert rejects.read_text(encoding="utf-8").splitlines() == ["line,reason", "3,sex: must be male or female"]
    assert _names(eid_env, [r[0] for r in rows]) == {rows[0][0]: "Lý Thị Hạnh", rows[2][0]: "Đặng Thị Oanh"}


def test_import_registry_command_reports_a_bad_file(eid_env: Settings, tmp_path: Path) -> None:
    row = _row(dt.date.today(), "Hồ Thị Xuân")
    path = tmp_path / "registry.jsonl"
    path.write_text(json.dumps({"id_number": row[0], "full_name": "x"}) + "\n", encoding="utf-8")
    bad_header = tmp_path / "no-sex.csv"
    bad_header.write_text("id_number,full_name,date_of_birth,residence\n", encoding="utf-8")

    result = CliRunner().invoke(cli, ["import-registry", str(bad_header)])
    assert result.exit_code == 1
    assert "import stopped: ValueError: the CSV header lacks: sex" in result.output

    result = CliRunner().invoke(cli, ["import-registry", str(path)])  # JSON lines, from the suffix
    assert result.exit_code == 0, result.output
    assert "0 records imported in 0 batches, 1 rejected" in result.output
    assert _names(eid_env, [row[0]]) == {}
