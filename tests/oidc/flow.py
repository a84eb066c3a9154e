"""Drive the OpenID Connect flow through the real pages, as a browser without JavaScript would."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from app.clients.service import create_client
from app.core.audit import Actor
from tests.support import Harness

REDIRECT = "https://portal.example.gov.vn/callback"


async def make_client(env: Harness, **kw: Any) -> tuple[str, str | None]:
    args: dict[str, Any] = {
        "name": "Cổng dịch vụ công thử nghiệm",
        "kind": "portal",
        "redirect_uris": [REDIRECT],
        "post_logout_redirect_uris": ["https://portal.example.gov.vn/bye"],
        "grant_types": ["authorization_code", "refresh_token"],
        "scopes": ["openid", "profile", "phone", "email", "address"],
        "approved": True,
    }
    args.update(kw)
    async with env.ctx.sessionmaker() as session:
        client, secret = await create_client(
            session, env.ctx.keyring, actor=Actor("admin", "test"), now=env.ctx.clock.now(), **args
        )
    return client.client_id, secret


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def form_fields(page: str) -> dict[str, str]:
    fields = {
        m.group(1): html.unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    }
    return fields


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def authorize(browser: httpx.AsyncClient, client_id: str, challenge: str, **params: str) -> httpx.Response:
    q = {"client_id": client_id, "redirect_uri": REDIRECT, "response_type": "code", "scope": "openid profile", "state": "st-123",
         "nonce": "n-456", "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip
    q.update(params)
    return await browser.get("/authorize", params=q)


async def sign_in_and_consent(
    browser: httpx.AsyncClient,
    client_id: str,
    challenge: str,
    id_number: str,
    password: str,
    *,
    subject: str | None = None,
    **params: str,
) -> dict[str, str]:
    """Follow the pages to the redirect back to the client; returns its query parameters."""
    resp = await authorize(browser, client_id, challenge, **params)
    steps = 0
    while steps < 8:
        steps += 1
        if resp.status_code == 303 and resp.headers["location"].startswith(REDIRECT):
            return query(resp.headers["location"])
        if resp.status_code == 303:
            resp = await browser.get(resp.headers["location"])
            continue
        page = resp.text
        fields = form_fields(page)
        if 'action="/login"' in page:
            resp = await browser.post("/login", data={**fields, "id_number": id_number, "password": password})
        elif 'action="/authorize/subject"' in page:
            resp = await browser.post("/authorize/subject", data={**fields, "subject": subject or "self"})
        elif 'action="/consent"' in page:
            resp = await browser.post("/consent", data={**fields, "decision": "allow"})
        else:
            raise AssertionError(f"unexpected page {resp.status_code}: {page[:500]}")
    raise AssertionError("too many steps")


async def exchange(
    client: httpx.AsyncClient,
    client_id: str,
    secret: str | None,
    code: str,
    verifier: str,
    redirect_uri: str = REDIRECT,
) -> httpx.Response:
    return await client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
        },
        auth=(client_id, secret or ""),
    )


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import json

    def dec(seg: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))

    h, p, _ = token.split(".")
    return dec(h), dec(p)
