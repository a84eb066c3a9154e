"""Credentials change, sessions end: after a password change or reset, an officer's lock or
revocation, or an officer's phone change, every other session of the citizen ends, their refresh
tokens and the access tokens minted under them are refused at once, and the portals that asked
for it are told by back-channel logout. (Across two server processes: tests/test_two_processes.py.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.oidc.flow import exchange, jwt_parts, make_client, pkce_pair, sign_in_and_consent
from tests.support import Harness, new_phone

BACKCHANNEL = "https://portal.example.gov.vn/backchannel"


async def _signed_in_everywhere(env: Harness) -> dict[str, Any]:
    """A citizen with an app session and a portal's tokens (with a refresh token)."""
    c = await env.citizen()
    pw = await env.register_level1(c)
    client_id, secret = await make_client(env, backchannel_logout_uri=BACKCHANNEL)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    tokens = (await exchange(env.client, client_id, secret, result["code"], verifier)).json()
    session = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    account = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    return {"citizen": c, "password": pw, "client_id": client_id, "secret": secret, "tokens": tokens,
            "app": {"Authorization": f"Bearer {session.json()['access_token']}"}, "account": account}  # fmt: skip


async def _change_password(env: Harness, who: dict[str, Any]) -> None:
    r = await env.client.post(
        "/accounts/password",
        json={"id_number": who["citizen"]["id_number"], "current_password": who["password"], "new_password": "another long passphrase 77"},
    )  # fmt: skip
    assert r.status_code == 204, r.text


async def _reset_password(env: Harness, who: dict[str, Any]) -> None:
    c = who["citizen"]
    r = await env.client.post("/accounts/password-resets", json={"id_number": c["id_number"], "phone": c["phone"]})
    code = await env.last_otp(c["phone"])
    r = await env.client.post(
        f"/accounts/password-resets/{r.json()['id']}/complete",
        json={"code": code, "new_password": "reset long passphrase 88"},
    )
    assert r.status_code == 204, r.text


def _officer(action: str, **body: Any) -> Callable[[Harness, dict[str, Any]], Awaitable[None]]:
    async def act(env: Harness, who: dict[str, Any]) -> None:
        base = f"/accounts/{who['account']['id']}"
        if action == "phone":
            r = await env.client.put(
                f"{base}/phone", json={"phone": new_phone(), "reason": "đổi SIM"}, headers=env.staff()
            )
        else:
            r = await env.client.post(f"{base}/{action}", json={"reason": "kiểm tra"}, headers=env.staff())
        assert r.status_code == 200, r.text

    return act


CHANGES = {
    "password_change": (_change_password, "password_changed"),
    "password_reset": (_reset_password, "password_reset"),
    "lock": (_officer("lock"), "account_locked"),
    "revoke": (_officer("revoke"), "account_revoked"),
    "phone_change": (_officer("phone"), "phone_changed"),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_every_session_and_token_ends(env: Harness, change: str) -> None:
    who = await _signed_in_everywhere(env)
    cid, secret, tokens = who["client_id"], who["secret"], who["tokens"]
    intro = await env.client.post("/introspect", data={"token": tokens["access_token"]}, auth=(cid, secret or ""))
    assert intro.json()["active"] is True
    assert (await env.client.get("/me", headers=who["app"])).status_code == 200
    logouts_before = await env.count("oauth_logout_outbox", "client_id = :c", c=cid)

    act, notice = CHANGES[change]
    await act(env, who)

    assert (await env.client.get("/me", headers=who["app"])).status_code == 401
    intro = await env.client.post("/introspect", data={"token": tokens["access_token"]}, auth=(cid, secret or ""))
    assert intro.json() == {"active": False}
    r = await env.client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 401
    r = await env.client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(cid, secret or ""),
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")
    # The portal is told, with the session it knows (sid) and its pairwise subject.
    assert await env.count("oauth_logout_outbox", "client_id = :c", c=cid) == logouts_before + 1
    assert notice in await env.notices(who["citizen"]["phone"])
    _, id_claims = jwt_parts(tokens["id_token"])
    from sqlalchemy import text

    async with env.ctx.sessionmaker() as session:
        token = await session.scalar(
            text("SELECT logout_token FROM oauth_logout_outbox WHERE client_id = :c ORDER BY created_at DESC"),
            {"c": cid},
        )
    _, logout = jwt_parts(token)
    assert (logout["sub"], logout["sid"], logout["aud"]) == (id_claims["sub"], id_claims["sid"], cid)


async def test_a_phone_change_tells_the_old_and_the_new_phone(env: Harness) -> None:
    who = await _signed_in_everywhere(env)
    new = new_phone()
    r = await env.client.put(
        f"/accounts/{who['account']['id']}/phone", json={"phone": new, "reason": "đổi SIM"}, headers=env.staff()
    )
    assert r.status_code == 200 and r.json()["phone"] == new
    assert "phone_changed" in await env.notices(who["citizen"]["phone"])
    assert "phone_changed" in await env.notices(new)
    # A reset now needs the new phone.
    r = await env.client.post(
        "/accounts/password-resets", json={"id_number": who["citizen"]["id_number"], "phone": who["citizen"]["phone"]}
    )
    assert r.status_code == 202
    assert [m for m in await env.outbox(who["citizen"]["phone"]) if m["purpose"] == "password_reset_otp"] == []
    assert await env.count("audit_events", "action = 'account.phone.change'") >= 1


async def test_unlock_ends_nothing(env: Harness) -> None:
    who = await _signed_in_everywhere(env)
    base = f"/accounts/{who['account']['id']}"
    # Unlocking an active account (it also ends a lockout) keeps its sessions.
    r = await env.client.post(f"{base}/unlock", json={"reason": "kiểm tra"}, headers=env.staff())
    assert r.status_code == 200
    assert (await env.client.get("/me", headers=who["app"])).status_code == 200
