"""A real e-ID server for black-box tests: ``eid migrate``, ``eid seed-demo`` and ``eid serve``
run as subprocesses (uvicorn on a free local port, a fresh SQLite file), exactly as an operator
would start them. Tests then talk to it over TCP like any outside client.

Use it as a context manager; the server is stopped (SIGTERM, then SIGKILL) on the way out, also
when the test fails::

    with live_server(tmp_path) as server:
        cid, secret = server.create_client("Portal", "--redirect-uri", "...", "--approve")
        httpx.get(server.url("/readyz"))
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
DEMO_CITIZEN = "001090123456"  # Nguyễn Văn An, level 1 (app/demo/data/default-fixtures.yaml)
DEMO_PASSWORD = "demo-eid-citizen-2026"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    issuer: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        return self.issuer + path

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``python -m app.cli ARGS`` against the server's database; returns its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"eid {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def create_client(self, name: str, *args: str) -> tuple[str, str | None]:
        """``eid create-client``; returns the client_id and secret parsed from its output."""
        out = self.cli("create-client", name, *args)
        cid = re.search(r"^client_id: (\S+)$", out, re.MULTILINE)
        secret = re.search(r"^client_secret: (\S+)", out, re.MULTILINE)
        assert cid, out
        return cid.group(1), secret.group(1) if secret else None

    def log(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]


def _wait_ready(server: LiveServer, deadline: float) -> None:
    assert server.process is not None
    last = "no answer"
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                resp = http.get(server.url("/readyz"))
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text[:200]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.05)
    raise AssertionError(f"server not ready ({last}):\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # The server runs in its own session, so this signals only the process started here.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def live_server(
    tmp: Path,
    *,
    seed_demo: bool = True,
    startup_timeout: float = 20.0,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[LiveServer]:
    """Migrate a fresh SQLite database in ``tmp``, optionally seed the demo data, start
    ``eid serve`` on a free port and wait for /readyz; stop the server on exit."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    env.update(
        {
            "EID_ENV": "test",
            "EID_ISSUER": issuer,
            "EID_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'eid.db'}",
            "EID_DATA_DIR": str(tmp),
            "EID_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "EID_ARGON2_MEMORY_KIB": "1024",
            "EID_ARGON2_TIME_COST": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    server = LiveServer(issuer=issuer, env=env, log_path=tmp / "server.log")
    server.cli("migrate")
    if seed_demo:
        server.cli("seed-demo")
    with server.log_path.open("wb") as log:
        server.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(server, time.monotonic() + startup_timeout)
        yield server
    finally:
        _stop(server.process)


@contextlib.contextmanager
def live_cluster(
    tmp: Path,
    count: int,
    *,
    database_url: str,
    env: dict[str, str] | None = None,
    startup_timeout: float = 30.0,
    workers: int = 1,
) -> Iterator[tuple[LiveServer, ...]]:
    """``count`` processes of ``eid serve`` on one database (migrated and seeded with the demo
    data first), as replicas behind one issuer URL: each on its own port, with the same secret."""
    ports = [free_port() for _ in range(count)]
    issuer = f"http://127.0.0.1:{ports[0]}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    base.update(
        {
            "EID_ENV": "test",
            "EID_ISSUER": issuer,
            "EID_DATABASE_URL": database_url,
            "EID_DATA_DIR": str(tmp),
            "EID_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "EID_ARGON2_MEMORY_KIB": "1024",
            "EID_ARGON2_TIME_COST": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
    )
    servers = [
        LiveServer(issuer=f"http://127.0.0.1:{port}", env=base, log_path=tmp / f"server-{i}.log")
        for i, port in enumerate(ports)
    ]
    servers[0].cli("migrate")
    servers[0].cli("seed-demo")
    try:
        for server, port in zip(servers, ports, strict=True):
            with server.log_path.open("wb") as log:
                server.process = subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--workers", str(workers)],
                    cwd=ROOT, env=base, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        for server in servers:
            _wait_ready(server, time.monotonic() + startup_timeout)
        yield tuple(servers)
    finally:
        for server in servers:
            if server.process is not None:
                _stop(server.process)
