"""Start a demo e-ID server in a subprocess and drive it over HTTP, like a relying party and a
citizen's browser would. No backdoor: logins go through the real login and consent pages."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx

from app.demo.fixtures import Fixtures, load_fixtures


class EidLoginError(Exception):
    """The provider sent the browser back with an error (e.g. unmet_authentication_requirements)."""

    def __init__(self, error: str, description: str | None, params: dict[str, str]) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.params = params


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}, "radios": []})
        elif self.forms and tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind == "hidden":
                self.forms[-1]["fields"][a["name"]] = a.get("value", "")
            elif kind == "radio":
                self.forms[-1]["radios"].append(a.get("value", ""))


def _form(resp: httpx.Response) -> dict[str, Any]:
    parser = _Forms()
    parser.feed(resp.text)
    if len(parser.forms) != 1:
        raise AssertionError(f"expected one form on the page ({resp.status_code}): {resp.text[:400]}")
    return parser.forms[0]


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@dataclass
class EidServer:
    """A running demo instance and what it was seeded with."""

    issuer: str
    port: int
    pid: int
    fixtures: Fixtures
    data_dir: Path | None = None
    process: subprocess.Popen[str] | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    # --- seeded data ---------------------------------------------------------------------

    def citizen(self, key: str) -> Any:
        """A seeded citizen by key (e.g. "an") or ID number; its account holds the password."""
        for c in self.fixtures.citizens:
            if key in (c.key, c.id_number):
                return c
        raise KeyError(f"no citizen {key!r} in the fixtures")

    def client(self, client_id: str) -> Any:
        for c in self.fixtures.clients:
            if c.client_id == client_id:
                return c
        raise KeyError(f"no client {client_id!r} in the fixtures")

    def url(self, path: str = "") -> str:
        return self.issuer + path

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.http.get(self.url("/.well-known/openid-configuration")).raise_for_status().json()
        return meta

    # --- demo controls -------------------------------------------------------------------

    def outbox(self, phone: str | None = None) -> list[dict[str, str]]:
        params = {"phone": phone} if phone else {}
        messages: list[dict[str, str]] = (
            self.http.get(self.url("/_demo/outbox"), params=params).raise_for_status().json()
        )
        return messages

    def advance_clock(self, seconds: int) -> None:
        self.http.post(self.url("/_demo/clock"), json={"advance_seconds": seconds}).raise_for_status()

    def reset_clock(self) -> None:
        self.http.post(self.url("/_demo/clock"), json={"reset": True}).raise_for_status()

    # --- relying-party helpers -----------------------------------------------------------

    def client_credentials(self, client_id: str, scope: str | None = None) -> dict[str, Any]:
        c = self.client(client_id)
        data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
        token: dict[str, Any] = (
            self.http.post(self.url("/token"), data=data, auth=(client_id, c.secret or "")).raise_for_status().json()
        )
        return token

    def authorize(
        self,
        authorization_url: str,
        citizen: str,
        *,
        password: str | None = None,
        act_for: str | None = None,
        consent: bool = True,
        redirect_uri: str | None = None,
    ) -> str:
        """Follow the provider's pages from an authorization URL (built by your own client
        library) as ``citizen`` would in a browser; returns the URL the browser is sent back to."""
        person = self.citizen(citizen)
        secret = password or (person.account.password if person.account else None)
        target = redirect_uri or parse_qs(urlsplit(authorization_url).query).get("redirect_uri", [""])[0]
        dependent = self.citizen(act_for).id_number if act_for else None
        with httpx.Client(timeout=10.0) as browser:
            resp = browser.get(authorization_url)
            for _ in range(10):
                if resp.is_redirect:
                    location = urljoin(str(resp.url), resp.headers["location"])
                    if target and location.startswith(target):
                        return location
                    resp = browser.get(location)
                    continue
                if resp.status_code == 401 and "/login" in str(resp.url):
                    raise EidLoginError("login_failed", "wrong ID number or password", {})
                if resp.status_code == 403 and "/login" in str(resp.url):
                    raise EidLoginError("account_locked", "the account is locked or revoked", {})
                form = _form(resp)
                action = urljoin(str(resp.url), form["action"])
                data = dict(form["fields"])
                if form["action"] == "/login":
                    data |= {"id_number": person.id_number, "password": secret or ""}
                elif form["action"] == "/authorize/subject":
                    data["subject"] = "self" if dependent is None else self._dependent_account(form, dependent)
                elif form["action"] == "/consent":
                    data["decision"] = "allow" if consent else "deny"
                elif form["action"] == "/login/password":
                    raise AssertionError("the citizen must change their password first (must_change_password)")
                resp = browser.post(action, data=data)
        raise AssertionError("the provider did not send the browser back to the client")

    @staticmethod
    def _dependent_account(form: dict[str, Any], id_number: str) -> str:
        # Demo accounts have stable IDs (app/demo/seed.py), so the choice is known in advance.
        account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"eid-demo:{id_number}"))
        if account_id not in form["radios"]:
            raise AssertionError(f"{id_number} is not a dependent of this citizen")
        return account_id

    def login(
        self,
        client_id: str,
        citizen: str,
        *,
        scopes: str = "openid profile",
        acr: str | None = None,
        act_for: str | None = None,
        password: str | None = None,
    ) -> dict[str, Any]:
        """The authorization code + PKCE flow through the real pages; returns the token response.
        Raises EidLoginError when the provider answers with an error (e.g. a step-up refusal)."""
        c = self.client(client_id)
        if not c.redirect_uris:
            raise AssertionError(f"client {client_id} has no redirect URI")
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        params = {"client_id": client_id, "redirect_uri": c.redirect_uris[0], "response_type": "code", "scope": scopes,
                  "state": state, "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip
        if acr:
            params["acr_values"] = acr
        back = self.authorize(
            self.url("/authorize?" + urlencode(params)),
            citizen,
            act_for=act_for,
            password=password,
            redirect_uri=c.redirect_uris[0],
        )
        answer = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
        if answer.get("state") != state:
            raise AssertionError("state mismatch")
        if "error" in answer:
            raise EidLoginError(answer["error"], answer.get("error_description"), answer)
        form = {
            "grant_type": "authorization_code",
            "code": answer["code"],
            "code_verifier": verifier,
            "redirect_uri": c.redirect_uris[0],
        }
        if c.auth_method == "client_secret_basic":
            resp = self.http.post(self.url("/token"), data=form, auth=(client_id, str(c.secret or "")))
        else:
            form["client_id"] = client_id
            if c.auth_method == "client_secret_post":
                form["client_secret"] = str(c.secret or "")
            resp = self.http.post(self.url("/token"), data=form)
        token: dict[str, Any] = resp.raise_for_status().json()
        token["nonce"] = nonce
        return token

    def stop(self) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_demo_server(
    fixtures: Path | None = None, *, timeout: float = 30.0, extra_args: tuple[str, ...] = ()
) -> EidServer:
    """Start ``eid serve --demo`` on a free port and wait until it is ready."""
    loaded, _ = load_fixtures(fixtures)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    args = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--demo",
        "--port",
        "0",
        *(["--fixtures", str(fixtures)] if fixtures else []),
        *extra_args,
    ]
    proc = subprocess.Popen(  # noqa: S603 - our own CLI, arguments we built
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first:
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait()
        raise RuntimeError(f"eid serve --demo did not start: {err.strip()}")
    info = json.loads(first)
    server = EidServer(
        issuer=info["issuer"],
        port=info["port"],
        pid=info["pid"],
        fixtures=loaded,
        data_dir=Path(info["data_dir"]),
        process=proc,
    )
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if server.http.get(server.url("/readyz"), timeout=1.0).status_code == 200:
                return server
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("eid serve --demo did not become ready")
        time.sleep(0.05)


@contextlib.contextmanager
def demo_server(fixtures: Path | None = None) -> Iterator[EidServer]:
    server = start_demo_server(fixtures)
    try:
        yield server
    finally:
        server.stop()
