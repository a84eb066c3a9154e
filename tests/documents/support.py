"""Helpers the documents and sharing tests share: agencies, verifiers, signed-in citizens and
guardians with a dependent, all made through the HTTP API where the API offers it."""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any

from tests.oidc.flow import make_client
from tests.support import Harness, new_phone

_licences = itertools.count(random.randint(0, 10**9))


def licence_number() -> str:
    return f"{next(_licences) % 10**12:012d}"


def health_number() -> str:
    return f"DN479{next(_licences) % 10**10:010d}"


def problem(resp: Any, status: int, slug: str) -> None:
    """An RFC 9457 answer of this status and problem type."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"] == f"urn:eid:problem:{slug}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def client_token(env: Harness, client_id: str, secret: str | None, scope: str | None = None) -> str:
    data = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
    r = await env.client.post("/token", data=data, auth=(client_id, secret or ""))
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def agency(
    env: Harness, types: list[str], *, scopes: list[str] | None = None, name: str = "Cục Cảnh sát giao thông"
) -> tuple[str, str]:
    """An approved agency client allowed the given types; returns (client_id, access token)."""
    client_id, secret = await make_client(
        env, name=name, kind="agency", grant_types=["client_credentials"], scopes=scopes or ["documents:issue"],
        redirect_uris=[], post_logout_redirect_uris=[],
    )  # fmt: skip
    if types:
        r = await env.client.put(
            f"/admin/clients/{client_id}/document-types", json={"types": types}, headers=env.staff()
        )
        assert r.status_code == 200, r.text
    return client_id, await client_token(env, client_id, secret)


async def verifier(env: Harness, *, name: str = "Ngân hàng thử nghiệm", approved: bool = True) -> tuple[str, str]:
    client_id, secret = await make_client(
        env, name=name, kind="bank", grant_types=["client_credentials"], scopes=["verify"], redirect_uris=[],
        post_logout_redirect_uris=[], approved=True,
    )  # fmt: skip
    token = await client_token(env, client_id, secret)
    if not approved:
        r = await env.client.post(
            f"/admin/clients/{client_id}/status", json={"status": "suspended"}, headers=env.staff()
        )
        assert r.status_code == 200, r.text
    return client_id, token


async def signed_in(env: Harness, **citizen: Any) -> tuple[dict[str, Any], str]:
    """A level-1 citizen with their own password, signed in; returns (registry record, session token)."""
    c = await env.citizen(**citizen)
    password = await env.register_level1(c)
    r = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": password})
    assert r.status_code == 201, r.text
    return c, r.json()["access_token"]


async def sign_in_again(env: Harness, citizen: dict[str, Any]) -> str:
    """A new session (after the clock moved past the last one's end)."""
    r = await env.client.post(
        "/accounts/sessions", json={"id_number": citizen["id_number"], "password": "a long passphrase for tests"}
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["access_token"]
    return token


CARD = {
    "permanent_address": "1 Tràng Tiền, Hoàn Kiếm, Hà Nội",
    "biometrics": {
        "face_template_id": "face:5e6f7a8b9c0d",
        "fingerprint_template_ids": ["fp:0001aa11"],
        "enrolled_at": "2026-11-30T03:00:00Z",
        "enrollment_station": "CA-HN-HK-01",
    },
}


async def guardian_with_child(
    env: Harness, *, documents: list[dict[str, str]] | None = None
) -> tuple[dict[str, Any], str, dict[str, Any], str]:
    """A level-2 parent (officer-assisted, with a card photo reference) and a dependent under 14;
    returns (parent, parent's session token, child, child's account ID)."""
    parent = await env.citizen(full_name="Lê Văn Bố", age=38)
    child = await env.citizen(full_name="Lê Bé Na", age=9, phone=None, guardians=[parent["id_number"]])
    body = {"id_number": parent["id_number"], "phone": parent["phone"] or new_phone(),
            "dependents": [child["id_number"]], "documents": documents or []}  # fmt: skip
    reg = await env.client.post("/officer-registrations", json=body, headers=env.staff())
    assert reg.status_code == 201, reg.text
    reg_id = reg.json()["id"]
    card = {**CARD, "full_name": parent["full_name"], "date_of_birth": parent["date_of_birth"]}
    r = await env.client.put(f"/officer-registrations/{reg_id}/card-application", json=card, headers=env.staff())
    assert r.status_code == 200, r.text
    r = await env.client.post(f"/officer-registrations/{reg_id}/approve", json={}, headers=env.staff())
    assert r.status_code == 200, r.text
    initial = await env.last_password(body["phone"])
    new = "guardian passphrase long enough"
    r = await env.client.post(
        "/accounts/password",
        json={"id_number": parent["id_number"], "current_password": initial, "new_password": new},
    )
    assert r.status_code == 204, r.text
    r = await env.client.post("/accounts/sessions", json={"id_number": parent["id_number"], "password": new})
    token = r.json()["access_token"]
    deps = (await env.client.get("/me/dependents", headers=bearer(token))).json()
    return parent, token, child, deps[0]["account_id"]


def licence(holder: str, **over: Any) -> dict[str, Any]:
    body = {"type": "driving_licence", "number": licence_number(), "holder_id_number": holder, "category": "B",
            "issued_on": "2024-03-01", "expires_on": "2034-03-01"}  # fmt: skip
    body.update(over)
    return body


async def issue(env: Harness, token: str, body: dict[str, Any], key: str | None = None) -> Any:
    return await env.client.post(
        "/documents", json=body, headers={**bearer(token), "Idempotency-Key": key or str(uuid.uuid4())}
    )
