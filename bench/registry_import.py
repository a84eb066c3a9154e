"""Benchmark of the registry bulk import (`eid import-registry`) on SQLite and PostgreSQL.

Generates N synthetic registry records (realistic Vietnamese names, valid ID numbers whose
province / century-sex / year digits agree with the record, unique serials, ~20% with a mobile
number, ~10% minors with a guardian from an earlier row) into a temporary CSV or JSON-lines
file, creates a fresh scratch database per backend (an SQLite file in a temporary directory; a
new PostgreSQL database ``eid_bench_<random>``, dropped at the end), migrates it, then times
``import_registry`` over the whole file twice: the first import, then an idempotent re-run of
the same file (every row an upsert of an existing record, all found unchanged). It prints
figures; it asserts nothing about speed.

    .venv/bin/python bench/registry_import.py --rows 1000000 --backend both

The importer checks the ID numbers of a run for duplicates in memory up to a bound, then in a
temporary table (app/registry/importer.py); ``--claims-in-memory 0`` measures the table's way,
which files longer than the bound take after it.
"""

# ruff: noqa: E402 - sys.path is fixed before the other imports

from __future__ import annotations

import os
import sys

# Run as `python bench/registry_import.py`, this directory comes first on sys.path, where a
# sibling module (bench/token.py) would shadow the standard library's `token`: keep it off.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import argparse
import asyncio
import base64
import datetime as dt
import gc
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from app.core.audit import Actor
from app.core.config import Environment, Settings
from app.core.migrations import run_migrations
from app.registry import importer
from app.registry.idnumber import PROVINCES, Sex, make_id_number
from app.registry.importer import ImportReport, import_registry

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

FAMILY_NAMES = (
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô",
    "Dương", "Lý",
)  # fmt: skip
# Rough frequencies of the common family names (Nguyễn alone is about 38%).
FAMILY_WEIGHTS = (38, 11, 9.5, 7, 5, 4, 4.5, 3.9, 1.5, 2.1, 2, 1.4, 1.3, 1.3, 1, 0.5)
MIDDLE_MALE = ("Văn", "Hữu", "Đức", "Minh", "Quốc", "Thanh", "Công", "Xuân", "Ngọc", "Đình", "Gia", "Trọng")
MIDDLE_FEMALE = ("Thị", "Ngọc", "Thu", "Thanh", "Minh", "Kim", "Phương", "Hồng", "Bảo", "Diệu", "Mỹ", "Khánh")
GIVEN_MALE = (
    "An", "Anh", "Bảo", "Bình", "Cường", "Dũng", "Duy", "Đạt", "Hải", "Hiếu", "Hoàng", "Hùng", "Huy", "Khang",
    "Khoa", "Long", "Minh", "Nam", "Nghĩa", "Phong", "Phúc", "Quân", "Sơn", "Tài", "Thắng", "Thành", "Trung",
    "Tuấn", "Việt", "Vinh",
)  # fmt: skip
GIVEN_FEMALE = (
    "An", "Anh", "Bích Ngọc", "Châu", "Chi", "Dung", "Giang", "Hà", "Hằng", "Hạnh", "Hoa", "Hương", "Lan",
    "Linh", "Mai", "My", "Nga", "Ngân", "Ngọc", "Nhung", "Oanh", "Phương", "Quỳnh", "Thảo", "Thư", "Trang",
    "Trâm", "Tuyết", "Uyên", "Vy", "Yến",
)  # fmt: skip
STREETS = (
    "Tràng Tiền", "Hàng Bài", "Lê Lợi", "Trần Hưng Đạo", "Nguyễn Huệ", "Hai Bà Trưng", "Lý Thường Kiệt",
    "Điện Biên Phủ", "Võ Thị Sáu", "Phan Chu Trinh", "Quang Trung", "Hùng Vương", "Nguyễn Trãi", "Lê Duẩn",
)  # fmt: skip
WARDS = ("Phường 1", "Phường 3", "Phường Bến Nghé", "Phường Hàng Trống", "Xã Tân Phú", "Thị trấn Đông Anh")
PROVINCE_CODES = sorted(PROVINCES)
CSV_HEADER = "id_number,full_name,date_of_birth,sex,residence,phone,guardians\n"


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if ("," in value or '"' in value) else value


def generate(path: Path, rows: int, fmt: str, today: dt.date, seed: int) -> None:
    """N records: unique valid ID numbers, ~20% with a phone, ~10% minors with a guardian."""
    rnd = random.Random(seed)
    next_serial: dict[tuple[str, int, int], int] = {}
    adults: list[str] = []  # ID numbers of earlier adult rows, the guardians of later minors
    start = today.toordinal()
    oldest = dt.date(today.year - 90, 1, 1).toordinal()
    youngest_adult = dt.date(today.year - 18, 1, 1).toordinal()
    minor_oldest = dt.date(today.year - 13, 1, 1).toordinal()
    families = rnd.choices(FAMILY_NAMES, weights=FAMILY_WEIGHTS, k=rows)
    out: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            fh.write(CSV_HEADER)
        for i in range(rows):
            female = rnd.random() < 0.5
            sex = Sex.female if female else Sex.male
            minor = adults and rnd.random() < 0.10
            dob = dt.date.fromordinal(
                rnd.randint(minor_oldest, start - 30) if minor else rnd.randint(oldest, youngest_adult)
            )
            province = rnd.choice(PROVINCE_CODES)
            key = (province, 1 if female else 0, dob.year)
            serial = next_serial.get(key)
            if serial is None:
                serial = rnd.randrange(1_000_000)
            next_serial[key] = serial + 1  # unique per (province, digit 4, year): unique ID numbers
            id_number = make_id_number(province, sex, dob, serial)
            if female:
                name = f"{families[i]} {rnd.choice(MIDDLE_FEMALE)} {rnd.choice(GIVEN_FEMALE)}"
            else:
                name = f"{families[i]} {rnd.choice(MIDDLE_MALE)} {rnd.choice(GIVEN_MALE)}"
            residence = f"{rnd.randint(1, 399)} {rnd.choice(STREETS)}, {rnd.choice(WARDS)}, {PROVINCES[rnd.choice(PROVINCE_CODES)]}"
            phone = f"+84{rnd.choice('35789')}{rnd.randrange(100_000_000):08d}" if rnd.random() < 0.20 else ""
            guardians = ""
            if minor:
                guardians = f"{rnd.choice(adults)}:parent"
            elif len(adults) < 50_000:
                adults.append(id_number)
            else:
                adults[rnd.randrange(50_000)] = id_number
            if fmt == "csv":
                out.append(
                    f"{id_number},{name},{dob.isoformat()},{sex.value},{_csv_field(residence)},{phone},{guardians}\n"
                )
            else:
                record: dict[str, Any] = {
                    "id_number": id_number,
                    "full_name": name,
                    "date_of_birth": dob.isoformat(),
                    "sex": sex.value,
                    "residence": residence,
                }
                if phone:
                    record["phone"] = phone
                if guardians:
                    record["guardians"] = [{"id_number": guardians.split(":")[0], "relation": "parent"}]
                out.append(orjson.dumps(record).decode() + "\n")
            if len(out) >= 10_000:
                fh.write("".join(out))
                out.clear()
        fh.write("".join(out))


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _count(url: str) -> int:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.split(":///", 1)[1]) as db:
            return int(db.execute("SELECT count(*) FROM citizens").fetchone()[0])
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM citizens"))
    finally:
        await conn.close()


async def _timed_import(
    settings: Settings, data: Path, fmt: str, rejects: Path, batch_size: int
) -> tuple[float, ImportReport]:
    with data.open("rb") as fh:
        t0 = time.perf_counter()
        report = await import_registry(
            settings,
            fh,
            fmt=fmt,
            rejects_path=rejects,
            actor=Actor("admin", "bench"),
            now=dt.datetime.now(dt.UTC),
            today=dt.date.today(),
            batch_size=batch_size,
            source_name=data.name,
        )
        return time.perf_counter() - t0, report


def run_backend(backend: str, url: str, data: Path, fmt: str, rows: int, batch_size: int, tmp: Path) -> None:
    settings = Settings(
        database_url=url,
        secret_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        env=Environment.test,
        data_dir=tmp,
    )
    t0 = time.perf_counter()
    run_migrations(settings)
    print(f"[{backend}] migrated in {time.perf_counter() - t0:.1f} s", flush=True)
    for label in ("first import", "re-run (upsert)"):
        gc.collect()
        seconds, report = asyncio.run(_timed_import(settings, data, fmt, tmp / f"rejects-{backend}.csv", batch_size))
        print(
            f"[{backend}] {label:16s} {rows:>9,} rows in {seconds:7.2f} s = {rows / seconds:>9,.0f} rows/s "
            f"(inserted {report.inserted:,}, updated {report.updated:,}, unchanged {report.unchanged:,}, "
            f"rejected {report.rejected:,}, batches {report.batches})",
            flush=True,
        )
    print(f"[{backend}] citizens in the database: {asyncio.run(_count(url)):,}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="records to generate (default 1,000,000)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="records per transaction (default: the importer's)"
    )
    parser.add_argument("--format", dest="fmt", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL database to connect to for CREATE/DROP")
    parser.add_argument("--seed", type=int, default=20220215, help="random seed of the synthetic data")
    parser.add_argument(
        "--claims-in-memory",
        type=int,
        default=None,
        help="ID numbers checked for duplicates in memory before the run moves them to the database "
        "(default: the importer's; 0: in the database from the first batch, as for a long file)",
    )
    args = parser.parse_args(argv)
    batch_size: int = args.batch_size or import_registry.__kwdefaults__["batch_size"]
    if args.claims_in_memory is not None:
        importer._CLAIMS_IN_MEMORY = args.claims_in_memory

    with tempfile.TemporaryDirectory(prefix="eid-bench-") as tmpdir:
        tmp = Path(tmpdir)
        data = tmp / f"registry.{args.fmt}"
        t0 = time.perf_counter()
        generate(data, args.rows, args.fmt, dt.date.today(), args.seed)
        print(
            f"generated {args.rows:,} records ({data.stat().st_size / 1e6:.0f} MB {args.fmt}) in "
            f"{time.perf_counter() - t0:.1f} s; batch size {batch_size:,}; "
            f"duplicates checked in memory for the first {importer._CLAIMS_IN_MEMORY:,} ID numbers",
            flush=True,
        )
        backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
        for backend in backends:
            if backend == "sqlite":
                run_backend(
                    backend, f"sqlite+aiosqlite:///{tmp / 'bench.db'}", data, args.fmt, args.rows, batch_size, tmp
                )
                continue
            name = f"eid_bench_{secrets.token_hex(6)}"
            asyncio.run(_pg_admin(args.pg_url, f'CREATE DATABASE "{name}"'))
            try:
                run_backend(
                    backend, args.pg_url.rsplit("/", 1)[0] + "/" + name, data, args.fmt, args.rows, batch_size, tmp
                )
            finally:
                asyncio.run(_pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
