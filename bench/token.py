"""Benchmark of the hot OAuth endpoints against a running server backed by PostgreSQL:
client_credentials grants/s (``POST /token``), introspection/s (``POST /introspect``),
userinfo/s (``GET /userinfo``) and identity checks/s (``POST /verify/identity``, a bank's
check of name and birth date against one of 10,000 registry records, in random order), each
with p50/p99 latency at 50 connections, next to a bare FastAPI endpoint (``GET /bench/bare``,
a small dict, first in the route table) served by the same processes in the same run. Targets
(from the issues): client_credentials >= 40% and introspection >= 50% of the bare endpoint's
rate; identity checks p99 < 20 ms. Two informational rows: the same bare route
placed last in the route table (the cost of FastAPI's routing through the app's routers), and
the introspection of the citizen's token (its grant and account are checked too).

What it does, cleaning up even on failure:

1. creates a scratch PostgreSQL database ``eid_bench_token_<random>`` and migrates it
   (``app.cli.run_migrations``);
2. seeds, with the app's own functions: the signing keys (``KeyStore.ensure``, so the server
   processes do not race to create them), a bank client (client_secret_basic,
   client_credentials, scope ``verify``), a resource-server client (``can_introspect_any``), a
   portal client (authorization_code), a citizen with an active level-1 account and the
   10,000 registry records the identity checks ask about;
3. starts ``--processes`` uvicorn processes (``bench/token_app.py``: ``create_app(Settings())``
   plus the bare route) that share the port with SO_REUSEPORT, and waits until each has run
   its lifespan and ``/readyz`` answers;
4. gets real tokens over HTTP: the bank's client_credentials token, and the citizen's
   ``openid profile`` access token through the real login flow (``/authorize``, the login and
   consent forms, the code exchange with PKCE), as ``tests/oidc/flow.py`` does;
5. checks each request once (status and body), then for each endpoint runs ``wrk`` for a
   warm-up (discarded) and a measured run; a Lua ``done`` hook reports requests, duration,
   latency percentiles and errors (any non-2xx answer or socket error is reported and fails
   the run);
6. prints a table (endpoint, req/s, p50, p99, CPU per request in the server processes and in
   this database's PostgreSQL backends, ratio to bare) and writes it as JSON to
   ``bench/results/token.json``, with the CPU share taken by other processes on the machine
   during each run (a large share means a noisy run: re-run, or use ``--rounds 3``).

No password hashing happens on the measured paths (client secrets are HMAC-hashed, tokens
are ES256 JWTs), so the server keeps the production argon2 parameters; the only argon2 work is
one hash at seeding and one verification at the single login. The server's rate limits cover
registration only, and the limiter is in memory (no ``EID_REDIS_URL``).

    .venv/bin/python bench/token.py                 # 10 s per endpoint after 2 s of warm-up
    .venv/bin/python bench/token.py --rounds 3      # the median of three rounds
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file shares its name with the standard library's ``token`` module (imported by
# tokenize, inspect, linecache...): keep bench/ itself off the import path.
_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit  # noqa: E402

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from app.core.config import Environment, Settings  # noqa: E402
from app.core.migrations import run_migrations  # noqa: E402

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "token.json"
REDIRECT = "https://portal.bench.example.gov.vn/callback"
CITIZEN_PASSWORD = "bench citizen passphrase 2026"
TARGETS = {"client_credentials": 0.40, "introspection": 0.50}
VERIFY_PEOPLE = 10_000  # distinct registry records the identity checks ask about

# wrk's ``done`` hook: one JSON line with everything the table needs (latencies in µs).
LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
    .. '"mean_us":%.1f,"max_us":%d,"non_2xx_3xx":%d,"connect_errors":%d,"read_errors":%d,'
    .. '"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    # Bodies that vary per request: ``body`` with ``{id_number}`` replaced by each of these in
    # turn, in an order each wrk thread shuffles with its own seed.
    id_numbers: tuple[str, ...] = ()

    def lua(self) -> str:
        lines = [f"wrk.method = {_lua_str(self.method)}"]
        if self.body is not None and not self.id_numbers:
            lines.append(f"wrk.body = {_lua_str(self.body)}")
        lines += [f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}" for k, v in self.headers.items()]
        if self.id_numbers:
            assert self.body is not None and self.body.count("{id_number}") == 1
            head, tail = self.body.split("{id_number}")
            lines += [
                "local ids = {" + ",".join(_lua_str(i) for i in self.id_numbers) + "}",
                "local threads = 0",
                "setup = function(thread) threads = threads + 1; thread:set('seed', threads * 7919) end",
                # Requests are built once per thread, in a random order, so that building them
                # does not take CPU from the server under load.
                "local reqs, n = {}, 0",
                "init = function(args)",
                "  math.randomseed(seed)",
                "  for i = #ids, 2, -1 do local j = math.random(i); ids[i], ids[j] = ids[j], ids[i] end",
                f"  for i, id in ipairs(ids) do reqs[i] = wrk.format(nil, nil, nil, {_lua_str(head)} .. id .."
                f" {_lua_str(tail)}) end",
                "end",
                "request = function() n = n % #reqs + 1; return reqs[n] end",
            ]
        return "\n".join(lines) + "\n" + LUA_DONE


def _lua_str(value: str) -> str:
    if not value.isascii():
        raise ValueError("wrk scripts take ASCII strings only")
    return json.dumps(value)  # a JSON string of ASCII characters is a valid Lua string literal


@dataclass
class Seeded:
    bank_id: str
    bank_secret: str
    rs_id: str
    rs_secret: str
    portal_id: str
    portal_secret: str
    id_number: str
    # Registry records (no account) that verify_identity asks about, one at random per call.
    others: tuple[str, ...]


# ---------------------------------------------------------------------------- database


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin_execute(pg_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(pg_url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(pg_url: str) -> tuple[str, str]:
    name = f"eid_bench_token_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin_execute(pg_url, f'CREATE DATABASE "{name}"'))
    return name, pg_url.rsplit("/", 1)[0] + "/" + name


def drop_database(pg_url: str, name: str) -> None:
    asyncio.run(_admin_execute(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def seed(settings: Settings) -> Seeded:
    """Keys, three clients, one citizen with an account and 10,000 registry records without one,
    through the app's own functions."""
    from app.accounts.models import Account, AccountStatus
    from app.clients.service import create_client
    from app.core.audit import Actor
    from app.core.crypto import Keyring
    from app.core.db import make_engine, make_sessionmaker
    from app.core.keys import KeyStore
    from app.core.passwords import PasswordHasher
    from app.registry.idnumber import PROVINCES, Sex, make_id_number
    from app.registry.models import Citizen

    engine = make_engine(settings)
    sessionmaker = make_sessionmaker(engine)
    keyring = Keyring(settings.master_secret())
    now = dt.datetime.now(dt.UTC)
    actor = Actor("admin", "bench")
    try:
        await KeyStore(sessionmaker, keyring.sealer, settings.cache_ttl_seconds).ensure(now)
        made: dict[str, tuple[str, str]] = {}
        specs: dict[str, dict[str, Any]] = {
            "bank": {"name": "Ngân hàng thử nghiệm", "kind": "bank", "redirect_uris": [],
                     "grant_types": ["client_credentials"], "scopes": ["verify"]},
            "rs": {"name": "Máy chủ tài nguyên thử nghiệm", "kind": "agency", "redirect_uris": [],
                   "grant_types": ["client_credentials"], "scopes": ["introspect"], "can_introspect_any": True},
            "portal": {"name": "Cổng dịch vụ công thử nghiệm", "kind": "portal", "redirect_uris": [REDIRECT],
                       "grant_types": ["authorization_code"], "scopes": ["openid", "profile"]},
        }  # fmt: skip
        for key, spec in specs.items():
            async with sessionmaker() as session:
                client, secret = await create_client(
                    session, keyring, auth_method="client_secret_basic", approved=True, actor=actor, now=now, **spec
                )
            assert secret is not None
            made[key] = (client.client_id, secret)
        dob = dt.date(1990, 5, 17)
        provinces = sorted(PROVINCES)
        id_number = make_id_number("001", Sex.male, dob, secrets.randbelow(1_000_000))
        password_hash = await PasswordHasher(settings).hash(CITIZEN_PASSWORD)
        async with sessionmaker() as session:
            session.add(
                Citizen(
                    id_number=id_number, full_name="Nguyễn Văn An", date_of_birth=dob, sex="male",
                    birth_province="001", residence="12 Phố Huế, Hai Bà Trưng, Hà Nội", phone="+84912345678",
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
            await session.flush()
            session.add(
                Account(
                    id=uuid.uuid4(), id_number=id_number, status=AccountStatus.active.value, level=1,
                    phone="+84912345678", password_hash=password_hash, must_change_password=False,
                    failed_logins=0, created_at=now, updated_at=now, password_changed_at=now,
                )
            )  # fmt: skip
            await session.commit()
        others = tuple(
            make_id_number(provinces[i % len(provinces)], Sex.male, dob, serial)
            for i, serial in enumerate(secrets.SystemRandom().sample(range(1_000_000), VERIFY_PEOPLE))
        )
        async with sessionmaker() as session:
            session.add_all(
                Citizen(
                    id_number=other, full_name="Nguyễn Văn An", date_of_birth=dob, sex="male",
                    birth_province=other[:3], residence="Hà Nội", created_at=now, updated_at=now,
                )
                for other in others if other != id_number
            )  # fmt: skip
            await session.commit()
    finally:
        await engine.dispose()
    return Seeded(*made["bank"], *made["rs"], *made["portal"], id_number, tuple(o for o in others if o != id_number))


# ---------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _pg_backends_cpu(db_name: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends connected to the scratch database, by pid
    (their command line names the database: ``postgres: 15/main: postgres <db> ...``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"postgres: ") and f" {db_name} ".encode() in cmdline:
            found[int(entry.name)] = _proc_cpu(int(entry.name))
    return found


def _machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine, all cores (from /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal, *_ = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    )
    return (user + nice + system + irq + softirq + steal) / _TICK


@dataclass
class CpuSnapshot:
    server: float
    postgres: dict[int, float]
    children: float  # reaped children: the wrk runs
    machine: float

    @classmethod
    def take(cls, servers: Servers, db_name: str) -> CpuSnapshot:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(servers.cpu_seconds(), _pg_backends_cpu(db_name), ru.ru_utime + ru.ru_stime, _machine_busy_seconds())

    def since(self, before: CpuSnapshot, requests: int) -> dict[str, float]:
        """CPU µs per request: server processes, our PostgreSQL backends, wrk, and the rest of
        the machine (other people's work: a large share means a noisy run)."""
        server = self.server - before.server
        postgres = sum(cpu - before.postgres.get(pid, 0.0) for pid, cpu in self.postgres.items())
        load = self.children - before.children
        other = max(self.machine - before.machine - server - postgres - load, 0.0)
        n = max(requests, 1)
        return {
            "server_cpu_us_per_request": server * 1e6 / n,
            "postgres_cpu_us_per_request": postgres * 1e6 / n,
            "wrk_cpu_us_per_request": load * 1e6 / n,
            "other_cpu_share": other / max(self.machine - before.machine, 1e-9),
        }


class Servers:
    """N uvicorn processes sharing one port with SO_REUSEPORT."""

    def __init__(self, n: int, port: int, env: dict[str, str], log_level: str, workdir: Path, module: str) -> None:
        self.n, self.port, self.env, self.log_level, self.workdir = n, port, env, log_level, workdir
        self.module = module
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, timeout: float = 60.0) -> None:
        ready_files = []
        for i in range(self.n):
            ready = self.workdir / f"ready.{i}"
            log = self.workdir / f"server.{i}.log"
            ready_files.append(ready)
            self.logs.append(log)
            with log.open("wb") as fh:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", self.module, "--port", str(self.port),
                         "--log-level", self.log_level, "--ready-file", str(ready)],
                        cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not all(f.exists() for f in ready_files):
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("servers did not start in time")
            time.sleep(0.1)
        with httpx.Client(base_url=self.base_url, timeout=5.0) as http:
            for _ in range(50):
                if http.get("/readyz").status_code == 200:
                    return
                time.sleep(0.2)
        raise RuntimeError("/readyz did not answer 200")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connections(self) -> list[int]:
        """Established connections to the port, per process (from /proc: Linux only)."""
        port = f":{self.port:04X}"
        established: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    if fields[1].endswith(port) and fields[3] == "01":
                        established.add(fields[9])  # the socket's inode
        counts = []
        for proc in self.procs:
            n = 0
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        n += target.startswith("socket:[") and target[8:-1] in established
            counts.append(n)
        return counts

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server processes so far (from /proc)."""
        return sum(_proc_cpu(proc.pid) for proc in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


# ---------------------------------------------------------------------------- tokens


def _basic(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: each part form-urlencoded, then base64.
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _hidden_fields(page: str) -> dict[str, str]:
    return {
        m.group(1): html.unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    }


def user_access_token(base_url: str, s: Seeded) -> str:
    """The citizen's ``openid profile`` access token, through the real pages and the code exchange."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    with httpx.Client(base_url=base_url, timeout=30.0) as browser:
        resp = browser.get(
            "/authorize",
            params={"client_id": s.portal_id, "redirect_uri": REDIRECT, "response_type": "code",
                    "scope": "openid profile", "state": "bench-state", "nonce": "bench-nonce",
                    "code_challenge": challenge, "code_challenge_method": "S256"},
        )  # fmt: skip
        for _ in range(8):
            if resp.status_code == 303 and resp.headers["location"].startswith(REDIRECT):
                break
            if resp.status_code == 303:
                resp = browser.get(resp.headers["location"])
                continue
            page, fields = resp.text, _hidden_fields(resp.text)
            if 'action="/login"' in page:
                resp = browser.post("/login", data={**fields, "id_number": s.id_number, "password": CITIZEN_PASSWORD})
            elif 'action="/consent"' in page:
                resp = browser.post("/consent", data={**fields, "decision": "allow"})
            else:
                raise RuntimeError(f"unexpected page in the login flow ({resp.status_code}): {page[:300]}")
        else:
            raise RuntimeError("the login flow did not reach the redirect")
        params = {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["location"]).query).items()}
        if "code" not in params:
            raise RuntimeError(f"no code in the redirect: {params}")
        resp = browser.post(
            "/token",
            data={"grant_type": "authorization_code", "code": params["code"], "code_verifier": verifier,
                  "redirect_uri": REDIRECT},
            headers={"Authorization": _basic(s.portal_id, s.portal_secret)},
        )  # fmt: skip
        resp.raise_for_status()
        token: str = resp.json()["access_token"]
        return token


def build_endpoints(base_url: str, s: Seeded) -> list[Endpoint]:
    form = "application/x-www-form-urlencoded"
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        resp = http.post(
            "/token",
            content="grant_type=client_credentials&scope=verify",
            headers={"Content-Type": form, "Authorization": _basic(s.bank_id, s.bank_secret)},
        )
        resp.raise_for_status()
        bank_token = resp.json()["access_token"]
    user_token = user_access_token(base_url, s)
    rs_auth = _basic(s.rs_id, s.rs_secret)
    return [
        Endpoint("bare", "GET", "/bench/bare"),
        Endpoint("bare_last_route", "GET", "/bench/bare-last"),
        Endpoint(
            "client_credentials",
            "POST",
            "/token",
            {"Content-Type": form, "Authorization": _basic(s.bank_id, s.bank_secret)},
            "grant_type=client_credentials&scope=verify",
        ),
        Endpoint(
            "introspection",
            "POST",
            "/introspect",
            {"Content-Type": form, "Authorization": rs_auth},
            urlencode({"token": bank_token, "token_type_hint": "access_token"}),
        ),
        Endpoint("userinfo", "GET", "/userinfo", {"Authorization": f"Bearer {user_token}"}),
        Endpoint(
            "verify_identity",
            "POST",
            "/verify/identity",
            {"Content-Type": "application/json", "Authorization": f"Bearer {bank_token}"},
            json.dumps({"id_number": "{id_number}", "full_name": "Nguyễn Văn An", "date_of_birth": "1990-05-17"}),
            id_numbers=s.others,
        ),
        Endpoint(
            "introspection_user_token",
            "POST",
            "/introspect",
            {"Content-Type": form, "Authorization": rs_auth},
            urlencode({"token": user_token, "token_type_hint": "access_token"}),
        ),
    ]


def check(base_url: str, ep: Endpoint) -> None:
    """One request, and its answer must be the real thing (not an error the load would hide)."""
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        content = ep.body.replace("{id_number}", ep.id_numbers[0]) if ep.id_numbers and ep.body else ep.body
        resp = http.request(ep.method, ep.path, headers=ep.headers, content=content)
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    ok = (
        resp.status_code == 200
        and {
            "bare": lambda: body.get("status") == "ok",
            "bare_last_route": lambda: body.get("status") == "ok",
            "client_credentials": lambda: body.get("token_type") == "Bearer" and body.get("access_token"),
            "introspection": lambda: body.get("active") is True,
            "introspection_user_token": lambda: body.get("active") is True and body.get("acr"),
            "userinfo": lambda: body.get("sub") and body.get("name"),
            "verify_identity": lambda: body.get("result") == "match",
        }[ep.name]()
    )
    if not ok:
        raise RuntimeError(f"{ep.name}: unexpected answer {resp.status_code} {resp.text[:300]}")


# ---------------------------------------------------------------------------- load


def run_wrk(
    base_url: str,
    ep: Endpoint,
    script: Path,
    *,
    seconds: float,
    connections: int,
    threads: int,
    servers: Servers | None = None,
) -> dict[str, Any]:
    """One wrk run; with ``servers``, also how its connections were spread over the processes
    (SO_REUSEPORT hashes them: an uneven split raises the busier process's latency)."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "5s",
           "-s", str(script), base_url + ep.path]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    split: list[int] = []
    if servers is not None:
        time.sleep(min(1.0, seconds / 2))
        split = servers.connections()
    try:
        stdout, stderr = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    match = re.search(r"^WRK_RESULT (\{.*\})$", stdout, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stdout}\n{stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if split:
        result["connections_per_process"] = split
    return result


def measure(
    servers: Servers, db_name: str, endpoints: list[Endpoint], scripts: dict[str, Path], args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {ep.name: [] for ep in endpoints}
    kw = {"connections": args.connections, "threads": args.threads}
    for rnd in range(args.rounds):
        for ep in endpoints:
            if args.warmup > 0:
                run_wrk(servers.base_url, ep, scripts[ep.name], seconds=args.warmup, **kw)
            spies = start_py_spy(servers, ep.name, args) if args.py_spy else []
            before = CpuSnapshot.take(servers, db_name)
            r = run_wrk(servers.base_url, ep, scripts[ep.name], seconds=args.duration, servers=servers, **kw)
            r |= CpuSnapshot.take(servers, db_name).since(before, r["requests"])
            for spy in spies:
                spy.wait(timeout=args.duration + 30)
            r["errors"] = sum(
                r[k] for k in ("non_2xx_3xx", "connect_errors", "read_errors", "write_errors", "timeouts")
            )
            runs[ep.name].append(r)
            print(
                f"  round {rnd + 1} {ep.name:<26} {r['rps']:>7.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms"
                f"  p99 {r['p99_us'] / 1000:6.2f} ms  CPU/req: server {r['server_cpu_us_per_request']:4.0f} µs,"
                f" postgres {r['postgres_cpu_us_per_request']:4.0f} µs, wrk {r['wrk_cpu_us_per_request']:3.0f} µs;"
                f" others {r['other_cpu_share']:.0%} of busy CPU"
                + (
                    f"; connections {'/'.join(map(str, r['connections_per_process']))}"
                    if r.get("connections_per_process")
                    else ""
                )
                + (f"  ERRORS {r['errors']}" if r["errors"] else ""),
                flush=True,
            )
    return runs


def start_py_spy(servers: Servers, name: str, args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """Sample each server process during the measured run (collapsed stacks, for flame graphs).
    py-spy takes CPU from the same two cores: figures of a profiled run are not the reference."""
    args.py_spy.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                args.py_spy_bin,
                "record",
                "--pid",
                str(proc.pid),
                "--duration",
                str(int(args.duration)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(args.py_spy / f"{name}.{i}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, proc in enumerate(servers.procs)
    ]


CPU_KEYS = ("server_cpu_us_per_request", "postgres_cpu_us_per_request", "wrk_cpu_us_per_request")


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per endpoint, the round with the median rate (its own latencies, not a mix of rounds), and
    the median over rounds of the CPU per request."""
    rows: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        ordered = sorted(results, key=lambda r: r["rps"])
        median = ordered[(len(ordered) - 1) // 2]
        rows[name] = {
            "rps": round(median["rps"], 1),
            "p50_ms": round(median["p50_us"] / 1000, 3),
            "p90_ms": round(median["p90_us"] / 1000, 3),
            "p99_ms": round(median["p99_us"] / 1000, 3),
            "max_ms": round(median["max_us"] / 1000, 3),
            "requests": median["requests"],
            **{k: round(statistics.median(r[k] for r in results), 1) for k in CPU_KEYS},
            "other_cpu_share": round(median["other_cpu_share"], 3),
            "errors": sum(r["errors"] for r in results),
            "rps_all_rounds": [round(r["rps"], 1) for r in results],
            "p99_ms_all_rounds": [round(r["p99_us"] / 1000, 3) for r in results],
            "connections_per_process_all_rounds": [r.get("connections_per_process") for r in results],
            "other_cpu_share_all_rounds": [round(r["other_cpu_share"], 3) for r in results],
        }
    bare, bare_cpu = rows["bare"]["rps"], sum(rows["bare"][k] for k in CPU_KEYS)
    for row in rows.values():
        row["ratio_to_bare"] = round(row["rps"] / bare, 3) if bare else None
        # What the rate ratio would be if CPU were the only limit: less sensitive to other load.
        row["cpu_ratio_to_bare"] = round(bare_cpu / max(sum(row[k] for k in CPU_KEYS), 1e-9), 3)
    return rows


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    print()
    print(
        f"{'endpoint':<26} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'app µs':>7} {'pg µs':>6}"
        f" {'× bare':>7} {'(CPU)':>6}  target"
    )
    for name, r in rows.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f">= {target:.2f}  {'met' if r['ratio_to_bare'] >= target else 'MISSED'}"
        print(
            f"{name:<26} {r['rps']:>7.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['server_cpu_us_per_request']:>7.0f}"
            f" {r['postgres_cpu_us_per_request']:>6.0f} {r['ratio_to_bare']:>7.3f} {r['cpu_ratio_to_bare']:>6.3f}  {verdict}"
        )
    print(
        "app µs / pg µs: CPU per request in the server processes / in this database's PostgreSQL backends;\n"
        "× bare: rate ratio; (CPU): the ratio CPU per request alone predicts (server + PostgreSQL + wrk)"
    )
    print()


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL database to connect to for CREATE/DROP")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per endpoint (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per endpoint (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections (default 50)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--processes", type=int, default=2, help="uvicorn processes sharing the port (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over all endpoints; the median is kept")
    parser.add_argument("--log-level", default="info", help="the server's log level (default info, as eid serve)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting to override, e.g. --set database_pool_size=25 (repeat)",
    )
    parser.add_argument(
        "--server-module",
        default="bench.token_app",
        help="module run as each server process (default bench.token_app; a variant may wrap it to try a change)",
    )
    parser.add_argument("--only", help="comma-separated endpoints to measure (bare is always measured)")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="also sample the servers with py-spy into DIR")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install -y wrk; `make bench` does it)", file=sys.stderr)
        return 2
    if args.py_spy:
        args.py_spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(args.py_spy_bin).exists():
            print("py-spy is not installed (.venv/bin/pip install py-spy)", file=sys.stderr)
            return 2

    load_at_start = [round(v, 2) for v in os.getloadavg()]
    workdir = Path(tempfile.mkdtemp(prefix="eid-bench-token-"))
    db_name: str | None = None
    servers: Servers | None = None
    try:
        db_name, db_url = create_database(args.pg_url)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
        env.update(
            EID_ENV=Environment.test.value,
            EID_DATABASE_URL=db_url,
            EID_SECRET_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            EID_ISSUER=f"http://127.0.0.1:{port}",
            EID_DATA_DIR=str(workdir / "data"),
            EID_ACCESS_TOKEN_TTL_SECONDS="86400",  # the tokens under load outlive any run
            EID_CLIENT_RATE_PER_MINUTE="1000000",  # measure the API, not the per-client limit
            PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        )
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--set {item!r}: expected NAME=VALUE")
            env["EID_" + name.upper().removeprefix("EID_")] = value
        settings = Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("EID_")})
        print(f"database {db_name}: migrating and seeding", flush=True)
        run_migrations(settings)
        seeded = asyncio.run(seed(settings))

        servers = Servers(args.processes, port, env, args.log_level, workdir, args.server_module)
        servers.start()
        print(f"{args.processes} uvicorn process(es) on {servers.base_url} (SO_REUSEPORT), log level {args.log_level}")
        endpoints = build_endpoints(servers.base_url, seeded)
        if args.only:
            wanted = {"bare", *args.only.split(",")}
            endpoints = [ep for ep in endpoints if ep.name in wanted]
        scripts: dict[str, Path] = {}
        for ep in endpoints:
            check(servers.base_url, ep)
            scripts[ep.name] = workdir / f"{ep.name}.lua"
            scripts[ep.name].write_text(ep.lua())
        print(
            f"wrk -t{args.threads} -c{args.connections}: {args.warmup:g} s warm-up + {args.duration:g} s per endpoint,"
            f" {args.rounds} round(s)",
            flush=True,
        )
        runs = measure(servers, db_name, endpoints, scripts, args)
        rows = summarise(runs)
        print_table(rows)
        met = {name: rows[name]["ratio_to_bare"] >= t for name, t in TARGETS.items() if name in rows}
        errors = sum(r["errors"] for r in rows.values())
        report = {
            "benchmark": "bench/token.py",
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_at_start": load_at_start,
            },
            "server": {
                "processes": args.processes,
                "mode": "uvicorn processes sharing the port with SO_REUSEPORT (uvloop, httptools)",
                "app": "app.main.create_app(Settings()) + GET /bench/bare, /bench/bare-last (bench/token_app.py)",
                "database": "PostgreSQL (scratch database, dropped after the run)",
                "log_level": args.log_level,
                "profiled_with_py_spy": bool(args.py_spy),
                "settings_overridden": args.set,
                "server_module": args.server_module,
            },
            "load": {
                "tool": "wrk",
                "threads": args.threads,
                "connections": args.connections,
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "rounds": args.rounds,
            },
            "endpoints": {
                "bare": "GET /bench/bare (FastAPI route returning a small dict, first in the route table)",
                "bare_last_route": "GET /bench/bare-last (the same route, last in the route table)",
                "client_credentials": "POST /token grant_type=client_credentials scope=verify, client_secret_basic",
                "introspection": "POST /introspect of the bank's client_credentials token, by a resource server",
                "userinfo": "GET /userinfo with a citizen's openid profile token (from the real login flow)",
                "verify_identity": f"POST /verify/identity (a bank's token; match on name and birth date of one of {VERIFY_PEOPLE:,} people at random; audited and access-logged)",
                "introspection_user_token": "POST /introspect of the citizen's token (grant and account checked)",
            },
            "results": rows,
            "targets": {name: {"min_ratio_to_bare": TARGETS[name], "met": ok} for name, ok in met.items()},
            "errors": errors,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"written to {args.output}")
        for name, ok in met.items():
            print(f"target {name} >= {TARGETS[name]:.0%} of bare: {'met' if ok else 'MISSED'}")
        if errors:
            print(f"{errors} requests failed under load: the figures are not valid", file=sys.stderr)
            return 1
        return 0
    finally:
        if servers is not None:
            servers.stop()
        if db_name is not None:
            drop_database(args.pg_url, db_name)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
