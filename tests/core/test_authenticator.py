"""One authenticator for every domain (app/core/auth.py): the same policy for every caller."""

from __future__ import annotations

from typing import Any

from tests.oidc.flow import make_client
from tests.support import Harness


async def client_token(env: Harness, **kw: Any) -> tuple[str, dict[str, str]]:
    client_id, secret = await make_client(
        env, name="Bên thử", kind="bank", grant_types=["client_credentials"], redirect_uris=[],
        post_logout_redirect_uris=[], **kw,
    )  # fmt: skip
    resp = await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
    assert resp.status_code == 200, resp.text
    return client_id, {"Authorization": f"Bearer {resp.json()['access_token']}"}


CLIENT_APIS = (
    ("POST", "/verify/identity", {"id_number": "001099012345", "full_name": "Nguyễn Văn A"}),
    ("GET", "/documents/status?type=driving_licence&number=001234567890", None),
    ("POST", "/sharing/redeem", {"token": "eidshare:00000000-0000-0000-0000-000000000000"}),
    ("GET", "/admin/clients", None),
)


async def call(env: Harness, method: str, path: str, body: Any, headers: dict[str, str]) -> int:
    resp = await env.client.request(method, path, json=body, headers=headers)
    return resp.status_code


async def test_a_suspended_client_is_refused_by_every_client_api(env: Harness) -> None:
    client_id, headers = await client_token(env, scopes=["verify", "ekyc", "documents:issue", "admin:clients"])
    for method, path, body in CLIENT_APIS:
        assert await call(env, method, path, body, headers) not in (401, 403), path
    r = await env.client.post(f"/admin/clients/{client_id}/status", json={"status": "suspended"}, headers=env.staff())
    assert r.status_code == 200, r.text
    for method, path, body in CLIENT_APIS:
        assert await call(env, method, path, body, headers) == 401, path


async def test_every_client_api_counts_against_the_same_per_client_limit(env: Harness) -> None:
    _, headers = await client_token(env, scopes=["verify", "admin:clients"])
    limit = env.ctx.settings.client_rate_per_minute
    env.ctx.settings.client_rate_per_minute = 4
    try:
        answers = [await call(env, m, p, b, headers) for m, p, b in CLIENT_APIS * 2]
    finally:
        env.ctx.settings.client_rate_per_minute = limit
    # Four calls in the minute, wherever they went; then 429 everywhere.
    assert 429 not in answers[:4] and answers[4:] == [429] * 4, answers


async def test_each_api_takes_only_its_kind_of_caller(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    session = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    citizen = {"Authorization": f"Bearer {session.json()['access_token']}"}
    _, client = await client_token(env, scopes=["verify"])
    assert (await env.client.get("/me", headers=citizen)).status_code == 200
    assert (await env.client.get("/me", headers=client)).status_code == 401
    assert (await env.client.get("/me", headers=env.staff())).status_code == 401
    body = {"id_number": c["id_number"], "full_name": c["full_name"]}
    assert (await env.client.post("/verify/identity", json=body, headers=citizen)).status_code == 401
    assert (await env.client.post("/verify/identity", json=body, headers=env.staff())).status_code == 401
    r = await env.client.get(f"/registry/citizens/{c['id_number']}", headers=client)
    assert (r.status_code, r.json()["type"]) == (403, "urn:eid:problem:forbidden")  # a client, without the scope
    assert (await env.client.get(f"/registry/citizens/{c['id_number']}", headers=citizen)).status_code == 401
