"""Two `eid serve` processes on one PostgreSQL database, as replicas behind a load balancer:
what one process does, the other knows at once (revocations, ended sessions, rate limits).

Each test starts real servers as subprocesses (tests/oidc/live_server.py), so nothing is shared
but the database (and Redis when a test says so)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import BACKENDS, _create_pg_database, _drop_pg_database
from tests.oidc.flow import form_fields, pkce_pair
from tests.oidc.live_server import DEMO_CITIZEN, DEMO_PASSWORD, ROOT, LiveServer, live_cluster

pytestmark = pytest.mark.skipif("postgresql" not in BACKENDS, reason="two processes share PostgreSQL")


class _Receiver(BaseHTTPRequestHandler):
    """A portal: its redirect URI and its back-channel logout URI."""

    logouts: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        _Receiver.logouts.append(parse_qs(body).get("logout_token", [""])[0])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def portal() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.logouts.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = _create_pg_database()
    yield url
    _drop_pg_database(url)


def _sign_in(server: LiveServer, client_id: str, redirect: str) -> tuple[str, str]:
    """The code flow through the real pages of ``server``; returns (code, verifier)."""
    verifier, challenge = pkce_pair()
    with httpx.Client(base_url=server.issuer, timeout=10) as browser:
        resp = browser.get("/authorize", params={
            "client_id": client_id, "redirect_uri": redirect, "response_type": "code", "scope": "openid profile",
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s", "nonce": "n",
        })  # fmt: skip
        for _ in range(6):
            if resp.status_code == 303 and resp.headers["location"].startswith(redirect):
                return parse_qs(urlsplit(resp.headers["location"]).query)["code"][0], verifier
            if resp.status_code == 303:
                resp = browser.get(resp.headers["location"])
                continue
            fields = form_fields(resp.text)
            if 'action="/login"' in resp.text:
                resp = browser.post("/login", data={**fields, "id_number": DEMO_CITIZEN, "password": DEMO_PASSWORD})
            elif 'action="/consent"' in resp.text:
                resp = browser.post("/consent", data={**fields, "decision": "allow"})
            else:
                raise AssertionError(resp.text[:500])
    raise AssertionError("no code")


def _until(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def _portal_tokens(a: LiveServer, portal: str) -> tuple[str, str, dict[str, Any]]:
    client_id, secret = a.create_client(
        "Cổng thử nghiệm", "--redirect-uri", f"{portal}/cb", "--backchannel-logout-uri", f"{portal}/bc",
        "--grant", "authorization_code", "--grant", "refresh_token", "--approve",
    )  # fmt: skip
    assert secret
    code, verifier = _sign_in(a, client_id, f"{portal}/cb")
    tokens = httpx.post(
        a.url("/token"), auth=(client_id, secret),
        data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": f"{portal}/cb"},
    ).json()  # fmt: skip
    assert "refresh_token" in tokens, tokens
    return client_id, secret, tokens


def test_a_password_change_on_one_process_ends_everything_on_the_other(
    tmp_path: Path, pg_url: str, portal: str
) -> None:
    with live_cluster(tmp_path, 2, database_url=pg_url) as (a, b):
        client_id, secret, tokens = _portal_tokens(a, portal)

        def active() -> bool:
            answer = httpx.post(b.url("/introspect"), data={"token": tokens["access_token"]}, auth=(client_id, secret))
            return bool(answer.json()["active"])

        assert active() and active()  # B has checked it, and now holds it in its cache
        r = httpx.post(a.url("/accounts/password"), json={
            "id_number": DEMO_CITIZEN, "current_password": DEMO_PASSWORD, "new_password": "a new demo passphrase 2027",
        })  # fmt: skip
        assert r.status_code == 204, r.text
        committed = time.monotonic()
        # Inactive on the other process within a second of the commit, and never active again.
        assert _until(lambda: not active(), 1.0), "B still reports the token active a second after the commit"
        assert time.monotonic() - committed < 1.5
        assert not active()
        r = httpx.post(b.url("/token"), auth=(client_id, secret),
                       data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})  # fmt: skip
        assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")
        r = httpx.get(b.url("/userinfo"), headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert r.status_code == 401
        # The portal hears of it by back-channel (delivered by either process's worker).
        assert _until(lambda: len(_Receiver.logouts) >= 1, 15.0), a.log_tail() + b.log_tail()
        header, payload = (json.loads(_b64(part)) for part in _Receiver.logouts[0].split(".")[:2])
        assert header["typ"] == "logout+jwt" and payload["aud"] == client_id and "sid" in payload


def test_an_officer_lock_on_one_process_ends_tokens_on_the_other(tmp_path: Path, pg_url: str, portal: str) -> None:
    with live_cluster(tmp_path, 2, database_url=pg_url) as (a, b):
        client_id, secret, tokens = _portal_tokens(b, portal)

        def active() -> bool:
            answer = httpx.post(a.url("/introspect"), data={"token": tokens["access_token"]}, auth=(client_id, secret))
            return bool(answer.json()["active"])

        assert active() and active()
        staff = httpx.post(
            b.url("/staff/token"), json={"username": "officer.demo", "password": "demo-eid-officer-2026"}
        )
        headers = {"Authorization": f"Bearer {staff.json()['access_token']}"}
        account = httpx.get(b.url(f"/accounts/by-id-number/{DEMO_CITIZEN}"), headers=headers).json()
        r = httpx.post(b.url(f"/accounts/{account['id']}/lock"), json={"reason": "báo mất"}, headers=headers)
        assert r.status_code == 200, r.text
        assert _until(lambda: not active(), 1.0)
        r = httpx.post(a.url("/token"), auth=(client_id, secret),
                       data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})  # fmt: skip
        assert r.status_code == 400


@pytest.mark.parametrize("store", ["database", "redis"])
def test_rate_limits_are_shared_by_both_processes(tmp_path: Path, pg_url: str, store: str) -> None:
    env = {"EID_REGISTRATION_RATE_PER_HOUR": "4", "EID_RATE_LIMITS": store}
    if store == "redis":
        env |= {"EID_REDIS_URL": os.environ.get("EID_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
                "EID_REDIS_PREFIX": f"eid-2p-{os.getpid()}-{time.monotonic_ns()}:"}  # fmt: skip
    with live_cluster(tmp_path, 2, database_url=pg_url, env=env) as (a, b):
        body = {"id_number": "048201456789", "full_name": "Lê Hoàng Nam", "date_of_birth": "2001-08-30",
                "phone": "+84356789012"}  # fmt: skip
        answers = [
            httpx.post((a if i % 2 else b).url("/accounts/registrations"), json=body).status_code for i in range(8)
        ]
        # Four in the hour for this phone and ID number, whichever process answers: not four each.
        assert answers.count(202) == 4 and answers.count(429) == 4, answers


def test_more_than_one_worker_is_refused_on_in_memory_limits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    env |= {"EID_RATE_LIMITS": "memory", "EID_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
            "EID_DATA_DIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "EID_RATE_LIMITS=memory" in done.stderr


def _b64(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
