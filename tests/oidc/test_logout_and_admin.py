"""RP-initiated and back-channel logout, consent withdrawal, and the client admin API."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx

from app.oidc.logout import deliver_logout_notifications
from app.oidc.models import LogoutNotification
from tests.oidc.flow import exchange, jwt_parts, make_client, pkce_pair, query, sign_in_and_consent
from tests.support import Harness


async def test_rp_initiated_logout_with_back_channel_notification(env: Harness) -> None:
    client_id, secret = await make_client(env, backchannel_logout_uri="https://portal.example.gov.vn/backchannel")
    c = await env.citizen()
    pw = await env.register_level1(c)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
        tokens = (await exchange(env.client, client_id, secret, result["code"], verifier)).json()
        sid = jwt_parts(tokens["id_token"])[1]["sid"]
        # An unregistered post-logout URI is refused with an error page, not followed.
        bad = await browser.get(
            "/logout", params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://evil.example/"}
        )
        assert bad.status_code == 400 and "location" not in bad.headers
        r = await browser.get(
            "/logout",
            params={
                "id_token_hint": tokens["id_token"],
                "post_logout_redirect_uri": "https://portal.example.gov.vn/bye",
                "state": "s1",
            },
        )
        assert r.status_code == 303
        assert r.headers["location"] == "https://portal.example.gov.vn/bye?state=s1"
        # The session is over: prompt=none now needs a login.
        again = await browser.get(
            "/authorize",
            params={
                "client_id": client_id,
                "redirect_uri": "https://portal.example.gov.vn/callback",
                "response_type": "code",
                "scope": "openid",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "prompt": "none",
            },
        )
        assert query(again.headers["location"])["error"] == "login_required"
    # The session's tokens are revoked.
    r = await env.client.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret or ""))
    assert r.json() == {"active": False}
    # The back-channel logout token is delivered by the worker.
    received: list[str] = []

    def portal(request: httpx.Request) -> httpx.Response:
        from urllib.parse import parse_qs

        received.append(parse_qs(request.content.decode())["logout_token"][0])
        return httpx.Response(200)

    # The app's own delivery worker may try first (the portal is unreachable from here), which
    # puts the next attempt a few seconds later, or be claiming the row at that moment: deliver
    # as of later, until it is this pass's turn.
    mine: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(portal)) as http:
        for _ in range(300):  # up to ~30 s
            later = env.ctx.clock.now() + dt.timedelta(minutes=10)
            await deliver_logout_notifications(env.ctx.sessionmaker, http, now=later)
            mine = [t for t in received if jwt_parts(t)[1].get("sid") == sid]
            if mine:
                break
            await asyncio.sleep(0.1)
    assert len(mine) == 1
    header, claims = jwt_parts(mine[0])
    assert header["typ"] == "logout+jwt"
    assert claims["aud"] == client_id and claims["sub"] == jwt_parts(tokens["id_token"])[1]["sub"]
    assert "http://schemas.openid.net/event/backchannel-logout" in claims["events"] and "nonce" not in claims


async def test_logout_without_hint_asks_first(env: Harness) -> None:
    client_id, _ = await make_client(env)
    c = await env.citizen()
    pw = await env.register_level1(c)
    _, challenge = pkce_pair()
    async with env.browser() as browser:
        await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
        page = await browser.get("/logout")
        assert page.status_code == 200 and 'action="/logout"' in page.text
        # Still signed in until the citizen confirms.
        r = await browser.get(
            "/authorize",
            params={
                "client_id": client_id,
                "redirect_uri": "https://portal.example.gov.vn/callback",
                "response_type": "code",
                "scope": "openid profile",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "prompt": "none",
            },
        )
        assert "code" in query(r.headers["location"])
        done = await browser.post("/logout", data={"confirm": "yes"})
        assert done.status_code == 200
        r = await browser.get(
            "/authorize",
            params={
                "client_id": client_id,
                "redirect_uri": "https://portal.example.gov.vn/callback",
                "response_type": "code",
                "scope": "openid profile",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "prompt": "none",
            },
        )
        assert query(r.headers["location"])["error"] == "login_required"
    forged = await env.client.get("/logout", params={"id_token_hint": "a.b.c"})
    assert forged.status_code == 400


async def test_citizen_withdraws_consent_and_the_tokens_stop(env: Harness) -> None:
    client_id, secret = await make_client(env)
    c = await env.citizen()
    pw = await env.register_level1(c)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    tokens = (await exchange(env.client, client_id, secret, result["code"], verifier)).json()
    session = (await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})).json()[
        "access_token"
    ]
    me = {"Authorization": f"Bearer {session}"}
    consents = (await env.client.get("/me/consents", headers=me)).json()
    assert [x["client_id"] for x in consents] == [client_id]
    assert (await env.client.delete(f"/me/consents/{consents[0]['id']}", headers=me)).status_code == 204
    assert (await env.client.get("/me/consents", headers=me)).json() == []
    assert (
        await env.client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    ).status_code == 401
    r = await env.client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(client_id, secret or ""),
    )
    assert r.json()["error"] == "invalid_grant"
    assert (await env.client.delete(f"/me/consents/{consents[0]['id']}", headers=me)).status_code == 404


async def test_admin_api_with_an_oauth_client_token(env: Harness) -> None:
    admin_id, admin_secret = await make_client(
        env,
        kind="admin",
        grant_types=["client_credentials"],
        scopes=["admin:clients"],
        redirect_uris=[],
        post_logout_redirect_uris=[],
    )
    token = (
        await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=(admin_id, admin_secret or ""))
    ).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    body = {
        "name": "Ngân hàng Thử",
        "kind": "bank",
        "grant_types": ["client_credentials"],
        "scopes": ["verify", "ekyc"],
    }
    r = await env.client.post("/admin/clients", json=body, headers=h)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "pending" and len(created["client_secret"]) >= 43
    assert (
        await env.count(
            "oauth_clients", "client_id = :c AND secret_hash = :s", c=created["client_id"], s=created["client_secret"]
        )
        == 0
    )
    # Pending clients cannot connect until approved.
    r = await env.client.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(created["client_id"], created["client_secret"])
    )
    assert r.status_code == 401
    r = await env.client.post(f"/admin/clients/{created['client_id']}/status", json={"status": "approved"}, headers=h)
    assert r.json()["status"] == "approved"
    r = await env.client.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(created["client_id"], created["client_secret"])
    )
    assert r.status_code == 200
    # A bank token lacks admin:clients; a citizen token is never a staff token.
    bank_token = r.json()["access_token"]
    assert (
        await env.client.get("/admin/clients", headers={"Authorization": f"Bearer {bank_token}"})
    ).status_code == 403
    bad = await env.client.post(
        "/admin/clients",
        json={
            **body,
            "redirect_uris": ["http://evil.example/cb"],
            "grant_types": ["authorization_code"],
            "scopes": ["openid"],
        },
        headers=h,
    )
    assert bad.status_code == 422
    assert (await env.client.post("/admin/clients", json=body)).status_code == 401


async def test_discovery_lists_what_is_supported(env: Harness) -> None:
    doc = (await env.client.get("/.well-known/openid-configuration")).json()
    iss = env.ctx.settings.issuer
    assert doc["issuer"] == iss and doc["jwks_uri"] == iss + "/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert doc["subject_types_supported"] == ["pairwise"]
    assert set(doc["acr_values_supported"]) == {"urn:eid:loa:1", "urn:eid:loa:2"}
    assert "implicit" not in doc["grant_types_supported"] and "password" not in doc["grant_types_supported"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    # Every advertised endpoint exists.
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
        "end_session_endpoint",
    ):
        path = doc[key].removeprefix(iss)
        r = await env.client.request("GET", path)
        assert r.status_code != 404, key
    assert (await env.client.get("/.well-known/oauth-authorization-server")).json() == doc


async def test_logout_delivery_holds_no_transaction_while_the_portal_answers(env: Harness) -> None:
    """A slow portal must not hold database locks (on SQLite: every other writer): the row is
    claimed and committed before the call, and its outcome recorded after it."""
    later = env.ctx.clock.now() + dt.timedelta(days=30)  # due only for this test's passes
    row_id = uuid.uuid4()
    async with env.ctx.sessionmaker() as session:
        session.add(
            LogoutNotification(
                id=row_id, client_id="portal-x", uri="https://portal-x.example/bc", logout_token="t",
                next_attempt_at=later, created_at=env.ctx.clock.now(),
            )
        )  # fmt: skip
        await session.commit()
    seen: list[int] = []
    answers = [500, 200]

    async def portal(request: httpx.Request) -> httpx.Response:
        if request.url.host != "portal-x.example":  # other tests' queued tokens: not delivered here
            return httpx.Response(503)
        # While the call is in flight, another transaction can write, and lock this very row.
        async with env.ctx.sessionmaker() as session, session.begin():
            row = await session.get(LogoutNotification, row_id, with_for_update={"nowait": True})
            assert row is not None
            seen.append(row.attempts)
        return httpx.Response(answers.pop(0))

    async with httpx.AsyncClient(transport=httpx.MockTransport(portal)) as http:
        assert await deliver_logout_notifications(env.ctx.sessionmaker, http, now=later) == 0
        async with env.ctx.sessionmaker() as session:
            row = await session.get(LogoutNotification, row_id)
            assert row is not None and (row.status, row.attempts) == ("queued", 1)
            retry_at = row.next_attempt_at
        assert retry_at > later  # backed off: not due again at once
        assert await deliver_logout_notifications(env.ctx.sessionmaker, http, now=later) == 0
        assert await deliver_logout_notifications(env.ctx.sessionmaker, http, now=retry_at) == 1
    assert seen == [1, 2]  # each attempt was counted and committed before the call
    async with env.ctx.sessionmaker() as session:
        row = await session.get(LogoutNotification, row_id)
        assert row is not None and (row.status, row.attempts) == ("sent", 2)
