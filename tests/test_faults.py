"""Faults under load, against a real `eid serve --workers 2` on PostgreSQL and Redis (issue 14):
the database's connections terminated, the database refusing, Redis not answering. Every
answer is what it would be, or 503 with Retry-After; never 500; no connection is closed by the
server; nothing is half-written; each process recovers by itself; the logs (one JSON object per
line, from every worker) hold no ID number or phone.

Clients send a mix of the calls that answered 500 before: a staff member's session lookup, a
bank's identity check and introspection (the revocation check), a registration start (a
citizen read and rate limits), and registry writes (a commit, then the answer)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.registry.idnumber import Sex, make_id_number
from tests.conftest import BACKENDS, PG_URL, REDIS_URL, _create_pg_database, _drop_pg_database, _pg_dsn
from tests.faults import Answer, Load, Request, wait_until
from tests.oidc.live_server import DEMO_CITIZEN, LiveServer, free_port, live_cluster

pytestmark = pytest.mark.skipif("postgresql" not in BACKENDS, reason="faults of PostgreSQL and Redis")


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = _create_pg_database()
    yield url
    _drop_pg_database(url)


def _hostport(url: str, default: int) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.partition(":")
    return host, int(port or default)


def _tokens(server: LiveServer) -> tuple[str, str]:
    with httpx.Client(base_url=server.issuer, timeout=10) as http:
        staff = http.post("/staff/token", json={"username": "officer.demo", "password": "demo-eid-officer-2026"})
        bank = http.post(
            "/token", data={"grant_type": "client_credentials"}, auth=("demo-bank", "demo-bank-secret-2026")
        )
    assert staff.status_code == 200 and bank.status_code == 200, (staff.text, bank.text)
    return staff.json()["access_token"], bank.json()["access_token"]


class Writes:
    """Registry records written under load: each ID number with the answer it got."""

    def __init__(self) -> None:
        self.sent: dict[int, str] = {}
        self.serial = random.randrange(100_000, 400_000)
        self.lock = threading.Lock()

    def body(self, n: int) -> bytes:
        with self.lock:
            self.serial += 1
            id_number = make_id_number("001", Sex.female, dt.date(1991, 3, 4), self.serial)
            self.sent[n] = id_number
        return json.dumps({
            "id_number": id_number, "full_name": "Lê Thị Lỗi", "date_of_birth": "1991-03-04", "sex": "female",
            "residence": "2 Lý Thái Tổ, Hà Nội", "phone": f"+8491{self.serial % 10_000_000:07d}", "guardians": [],
        }).encode()  # fmt: skip


def mix(staff: str, bank: str, writes: Writes) -> list[Request]:
    staff_h = {"Authorization": f"Bearer {staff}"}
    bank_h = {"Authorization": f"Bearer {bank}", "Content-Type": "application/json"}
    basic = base64.b64encode(b"demo-bank:demo-bank-secret-2026").decode()
    form = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
    verify = json.dumps({"id_number": DEMO_CITIZEN, "full_name": "Nguyễn Văn An"}).encode()
    return [
        lambda n: ("staff", "GET", "/audit/events?limit=5", None, staff_h),
        lambda n: ("verify", "POST", "/verify/identity", verify, bank_h),
        lambda n: ("introspect", "POST", "/introspect", f"token={bank}".encode(), form),
        lambda n: (
            "register",
            "POST",
            "/accounts/registrations",
            json.dumps(
                {
                    "id_number": make_id_number("079", Sex.male, dt.date(1990, 1, 2), n % 900_000),
                    "full_name": "Không Có",
                    "date_of_birth": "1990-01-02",
                    "phone": "+84987654321",
                }
            ).encode(),
            {"Content-Type": "application/json"},
        ),
        lambda n: (
            "write",
            "PUT",
            "/registry/citizens",
            writes.body(n),
            {**staff_h, "Content-Type": "application/json"},
        ),
    ]


EXPECTED = {"staff": {200}, "verify": {200}, "introspect": {200}, "register": {202, 429}, "write": {200, 201}}


def assert_only_expected_or_503(load: Load) -> int:
    """Every answer is its route's, or a 503 with Retry-After; returns the number of 503s."""
    unavailable = 0
    for a in load.answers:
        if a.status in EXPECTED[a.kind]:
            continue
        assert a.status == 503, (a.kind, a.status, a.body[:300])
        assert a.headers.get("retry-after") and a.headers["content-type"] == "application/problem+json"
        assert a.json()["type"] == "urn:eid:problem:unavailable", a.body
        unavailable += 1
    assert load.closed_by_server == 0 and not load.transport_errors, (load.closed_by_server, load.transport_errors)
    return unavailable


async def _citizens(url: str, id_numbers: list[str]) -> set[str]:
    conn = await asyncpg.connect(_pg_dsn(url))
    try:
        rows = await conn.fetch("SELECT id_number FROM citizens WHERE id_number = ANY($1::text[])", id_numbers)
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'registry.create' AND actor_id = 'officer.demo'"
        )
    finally:
        await conn.close()
    found = {r["id_number"] for r in rows}
    assert audited == len(found)  # a record is never written without its audit row, nor the reverse
    return found


def assert_answers_are_true(load: Load, writes: Writes, url: str) -> None:
    """A write answered 2xx exists; one answered "nothing was done" does not; one answered "was
    saved" does."""
    answered: dict[str, Answer] = {}
    wrote = [a for a in load.answers if a.kind == "write"]
    for a in wrote:  # a 2xx answer echoes the record, and so its ID number
        if a.status in (200, 201):
            answered[a.json()["id_number"]] = a
    found = asyncio.run(_citizens(url, list(writes.sent.values())))
    assert set(answered) <= found
    saved_503 = sum(1 for a in wrote if a.status == 503 and "was saved" in a.json().get("detail", ""))
    nothing_503 = sum(1 for a in wrote if a.status == 503 and "was saved" not in a.json().get("detail", ""))
    # Records that exist but were not answered 2xx are exactly those answered "was saved" (or
    # whose client gave up, which this load never does).
    assert len(found) - len(answered) <= saved_503, (len(found), len(answered), saved_503, nothing_503)


def assert_logs_clean(server: LiveServer, secrets_: list[str]) -> list[dict[str, Any]]:
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line of every process: one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    text = "\n".join(lines)
    for secret in secrets_:
        assert secret not in text, secret
    assert not [r for r in records if r.get("status") == 500 or r["message"].startswith("unhandled")]
    access = [r for r in records if r["logger"] == "eid.access"]
    assert access and all(r["route"] != "-" or r["status"] == 404 for r in access)
    return records


async def _terminate(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(_pg_dsn(PG_URL))
    try:
        killed = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()
    return len(killed)


def test_terminated_database_connections_answer_503_and_every_process_recovers(pg_url: str, tmp_path: Path) -> None:
    env = {
        "EID_REDIS_URL": REDIS_URL,
        "EID_REDIS_PREFIX": f"eid-faults-{uuid.uuid4().hex[:8]}:",
        "EID_LOG_FORMAT": "json",
    }
    with live_cluster(tmp_path, 1, database_url=pg_url, env=env, workers=2) as (server,):
        staff, bank = _tokens(server)
        writes = Writes()
        load = Load(server_port(server), mix(staff, bank, writes)).start()
        try:
            time.sleep(0.5)
            killed = 0
            for _ in range(3):
                killed += asyncio.run(_terminate(pg_url))
                time.sleep(0.4)
            # Recovery without a restart: every kind of call answers normally again.
            recovered = wait_until(lambda: all_ok(server, staff, bank), seconds=5, why=LAST_FAILURE)
            time.sleep(0.3)
        finally:
            load.stop()
        assert killed >= 6, killed  # each time, both workers' connections were there to kill
        unavailable = assert_only_expected_or_503(load)
        assert len(load.answers) > 100
        assert_answers_are_true(load, writes, pg_url)
        records = assert_logs_clean(server, [DEMO_CITIZEN, *writes.sent.values(), "+84987654321"])
        print(f"\n{len(load.answers)} answers {load.by_status()}, {unavailable} × 503, recovered in {recovered:.2f} s")
        assert {r["status"] for r in records if r["logger"] == "eid.access"} <= {200, 201, 202, 429, 503}


LAST_FAILURE: list[str] = []


def all_ok(server: LiveServer, staff: str, bank: str) -> bool:
    with httpx.Client(base_url=server.issuer, timeout=5) as http:
        for _ in range(4):  # both workers, most likely
            answers = [
                http.get("/audit/events?limit=1", headers={"Authorization": f"Bearer {staff}"}),
                http.post(
                    "/verify/identity",
                    json={"id_number": DEMO_CITIZEN, "full_name": "X"},
                    headers={"Authorization": f"Bearer {bank}"},
                ),
                http.get("/readyz"),
            ]
            for a in answers:
                if a.status_code != 200:
                    LAST_FAILURE[:] = [f"{a.request.url.path} {a.status_code} {a.text[:300]}"]
                    return False
    return True


def server_port(server: LiveServer) -> int:
    return int(server.issuer.rsplit(":", 1)[1])


class RedisServer:
    """A Redis of this test's own (the suite's shared one is not ours to stop): paused with
    SIGSTOP (a partition: connections hang), stopped (connections refused), started again."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, seconds=10)

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)


async def _database_down(url: str, down: bool) -> None:
    """PostgreSQL restarting, for one database: its connections ended, new ones refused."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(_pg_dsn(PG_URL))
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
        if down:
            await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
    finally:
        await conn.close()


def test_database_and_redis_outages_answer_503_or_fall_back_and_readiness_says_so(pg_url: str, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    env = {"EID_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "EID_LOG_FORMAT": "json"}
    try:
        with live_cluster(tmp_path, 1, database_url=pg_url, env=env, workers=2) as (server,):
            staff, bank = _tokens(server)
            writes = Writes()
            ready = httpx.get(server.url("/readyz")).json()
            assert ready == {"status": "ready", "checks": {**ready["checks"], "redis": "ok"}}
            load = Load(server_port(server), mix(staff, bank, writes)).start()
            try:
                time.sleep(0.3)
                # Redis partitioned, then stopped: limits counted in the database, still ready.
                redis.pause()
                time.sleep(1.0)
                degraded = httpx.get(server.url("/readyz"), timeout=5)
                limited_paused = _registration_limit_holds(server)
                redis.resume()
                redis.stop()
                time.sleep(0.5)
                limited_stopped = _registration_limit_holds(server)
                redis.start()
                wait_until(lambda: httpx.get(server.url("/readyz")).json()["status"] == "ready", seconds=5)
                # PostgreSQL restarting: connections ended, new ones refused for a while.
                asyncio.run(_database_down(pg_url, True))
                time.sleep(0.3)
                down = httpx.get(server.url("/readyz"), timeout=5)
                time.sleep(1.2)
                asyncio.run(_database_down(pg_url, False))
                recovered = wait_until(lambda: all_ok(server, staff, bank), seconds=5, why=LAST_FAILURE)
                time.sleep(0.3)
            finally:
                load.stop()
                asyncio.run(_database_down(pg_url, False))
            assert degraded.status_code == 200 and degraded.json()["status"] == "degraded", degraded.text
            assert "rate limits counted in the database" in degraded.json()["checks"]["redis"]
            assert limited_paused and limited_stopped
            assert down.status_code == 503 and down.headers["retry-after"] == "5", down.text
            assert down.json()["checks"]["database"].startswith("does not answer")
            unavailable = assert_only_expected_or_503(load)
            assert unavailable > 0  # the database outage was felt, and answered 503
            assert_answers_are_true(load, writes, pg_url)
            assert_logs_clean(server, [DEMO_CITIZEN, *writes.sent.values(), "+84987654321"])
            print(
                f"\n{len(load.answers)} answers {load.by_status()}, {unavailable} × 503, recovered in {recovered:.2f} s"
            )
    finally:
        redis.stop()


def _registration_limit_holds(server: LiveServer) -> bool:
    """While Redis is down, a registration start is still limited per ID number (10 an hour):
    the database counts."""
    id_number = make_id_number("048", Sex.male, dt.date(1988, 8, 8), random.randrange(900_000))
    body = {"id_number": id_number, "full_name": "Không Có", "date_of_birth": "1988-08-08", "phone": "+84987654321"}
    with httpx.Client(base_url=server.issuer, timeout=10) as http:
        statuses = [http.post("/accounts/registrations", json=body).status_code for _ in range(14)]
    return statuses.count(202) <= 10 and 429 in statuses and 500 not in statuses
