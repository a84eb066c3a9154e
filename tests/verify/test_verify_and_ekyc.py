"""Banks verify identities (match yes/no, nothing leaked) and run e-KYC with consent."""

from __future__ import annotations

import datetime as dt
from typing import Any

from jose import jwt

from app.registry.idnumber import Sex
from tests.oidc.flow import jwt_parts, make_client
from tests.support import Harness


async def bank(env: Harness, scopes: tuple[str, ...] = ("verify", "ekyc")) -> tuple[str, dict[str, str]]:
    client_id, secret = await make_client(
        env,
        name="Ngân hàng Thử",
        kind="bank",
        grant_types=["client_credentials"],
        scopes=list(scopes),
        redirect_uris=[],
        post_logout_redirect_uris=[],
    )
    token = (
        await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
    ).json()["access_token"]
    return client_id, {"Authorization": f"Bearer {token}"}


async def citizen_session(env: Harness, c: dict[str, Any], pw: str) -> dict[str, str]:
    token = (await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})).json()[
        "access_token"
    ]
    return {"Authorization": f"Bearer {token}"}


async def test_identity_match_per_attribute_without_data(env: Harness) -> None:
    _, h = await bank(env)
    c = await env.citizen(full_name="Nguyễn Thị Minh Khai", sex=Sex.female, age=35)
    await env.register_level1(c)
    body = {
        "id_number": c["id_number"],
        "full_name": "  NGUYỄN thị minh   khai",
        "date_of_birth": c["date_of_birth"],
        "sex": "female",
        "phone": c["phone"],
    }
    r = await env.client.post("/verify/identity", json=body, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["result"] == "match"
    assert all(a["match"] for a in out["attributes"].values())
    assert (out["assurance_level"], out["account_status"]) == (1, "active")
    assert c["residence"] not in r.text and "Khai" not in r.text  # no registry value comes back

    wrong = await env.client.post("/verify/identity", json={**body, "date_of_birth": "1970-01-01"}, headers=h)
    out = wrong.json()
    assert (
        out["result"] == "no_match"
        and out["attributes"]["date_of_birth"]["match"] is False
        and out["attributes"]["full_name"]["match"] is True
    )
    assert out["assurance_level"] is None and out["account_status"] is None


async def test_unknown_id_is_a_normal_no_match(env: Harness) -> None:
    _, h = await bank(env)
    c = await env.citizen()
    unknown = c["id_number"][:-6] + "000000"
    r = await env.client.post("/verify/identity", json={"id_number": unknown, "full_name": c["full_name"]}, headers=h)
    assert r.status_code == 200
    assert r.json() == {
        "result": "no_match",
        "attributes": {"full_name": {"match": False, "score": None}},
        "assurance_level": None,
        "account_status": None,
    }
    r = await env.client.post("/verify/identity", json={"id_number": unknown}, headers=h)
    assert r.status_code == 422


async def test_partial_matching_scores(env: Harness) -> None:
    _, h = await bank(env)
    c = await env.citizen(full_name="Trần Văn Đức", age=40)
    r = await env.client.post(
        "/verify/identity",
        json={"id_number": c["id_number"], "full_name": "Tran Van Duc", "match": "partial"},
        headers=h,
    )
    out = r.json()
    assert out["result"] == "partial"
    assert out["attributes"]["full_name"] == {"match": False, "score": 1.0}
    r = await env.client.post(
        "/verify/identity", json={"id_number": c["id_number"], "full_name": "Lê Thị Hoa", "match": "partial"}, headers=h
    )
    assert r.json()["result"] == "no_match" and r.json()["attributes"]["full_name"]["score"] < 0.8


async def test_verify_needs_an_approved_client_with_scope(env: Harness) -> None:
    c = await env.citizen()
    body = {"id_number": c["id_number"], "full_name": c["full_name"]}
    assert (await env.client.post("/verify/identity", json=body)).status_code == 401
    _, portal_h = await bank(env, scopes=("documents:issue",))
    r = await env.client.post("/verify/identity", json=body, headers=portal_h)
    assert (r.status_code, r.json()["type"]) == (403, "urn:eid:problem:forbidden")
    assert (
        await env.client.post("/verify/identity", json=body, headers={"Authorization": "Bearer a.b.c"})
    ).status_code == 401


async def test_verify_is_rate_limited_per_client(env: Harness) -> None:
    _, h = await bank(env)
    c = await env.citizen()
    limit = env.ctx.settings.client_rate_per_minute
    env.ctx.settings.client_rate_per_minute = 3
    try:
        codes = [
            (
                await env.client.post("/verify/identity", json={"id_number": c["id_number"], "sex": "male"}, headers=h)
            ).status_code
            for _ in range(4)
        ]
    finally:
        env.ctx.settings.client_rate_per_minute = limit
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    _, other = await bank(env)
    assert (
        await env.client.post("/verify/identity", json={"id_number": c["id_number"], "sex": "male"}, headers=other)
    ).status_code == 200


async def test_ekyc_with_consent_end_to_end(env: Harness) -> None:
    client_id, h = await bank(env)
    c = await env.citizen(full_name="Võ Thị Sáu", sex=Sex.female, age=28)
    pw = await env.register_level1(c)
    r = await env.client.post(
        "/verify/ekyc-requests",
        json={
            "id_number": c["id_number"],
            "claims": ["name", "birthdate", "address", "assurance_level"],
            "purpose": "Mở tài khoản thanh toán",
            "binding_message": "TK-2026",
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["status"] == "pending"
    pending = await env.client.get(f"/verify/ekyc-requests/{req['id']}/result", headers=h)
    assert (pending.status_code, pending.json()["type"]) == (409, "urn:eid:problem:ekyc-pending")

    me = await citizen_session(env, c, pw)
    waiting = (await env.client.get("/me/ekyc-requests", headers=me)).json()
    assert [(w["id"], w["client_name"], w["binding_message"]) for w in waiting] == [
        (req["id"], "Ngân hàng Thử", "TK-2026")
    ]
    assert (await env.client.post(f"/me/ekyc-requests/{req['id']}/approve", headers=me)).status_code == 204
    assert (
        await env.client.post(f"/me/ekyc-requests/{req['id']}/deny", headers=me)
    ).status_code == 410  # answered once

    assert (await env.client.get(f"/verify/ekyc-requests/{req['id']}", headers=h)).json()["status"] == "approved"
    result = await env.client.get(f"/verify/ekyc-requests/{req['id']}/result", headers=h)
    assert result.status_code == 200
    token = result.json()["result"]
    header, _ = jwt_parts(token)
    assert header["typ"] == "ekyc+jwt"
    key = next(k for k in (await env.client.get("/jwks")).json()["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(token, key, algorithms=["ES256"], audience=client_id, issuer=env.ctx.settings.issuer)
    assert claims["ekyc_request"] == req["id"]
    assert claims["claims"] == {
        "name": "Võ Thị Sáu",
        "birthdate": c["date_of_birth"],
        "address": {"formatted": c["residence"], "country": "VN"},
        "assurance_level": "urn:eid:loa:1",
    }

    # The citizen sees the consent and who received what.
    consents = (await env.client.get("/me/consents", headers=me)).json()
    ekyc = [x for x in consents if x["kind"] == "ekyc"]
    assert ekyc and ekyc[0]["client_id"] == client_id and ekyc[0]["purpose"] == "Mở tài khoản thanh toán"
    log = (await env.client.get("/me/access-log", headers=me)).json()["items"]
    assert log[0]["channel"] == "ekyc" and log[0]["recipient_id"] == client_id and log[0]["legal_basis"] == "consent"
    assert log[0]["consent_id"] == ekyc[0]["id"]
    assert set(log[0]["categories"]) == {"name", "birthdate", "address", "assurance_level"}
    # Withdrawing the consent stops further disclosure.
    assert (await env.client.delete(f"/me/consents/{ekyc[0]['id']}", headers=me)).status_code == 204
    again = await env.client.get(f"/verify/ekyc-requests/{req['id']}/result", headers=h)
    assert (again.status_code, again.json()["type"]) == (403, "urn:eid:problem:ekyc-denied")


async def test_ekyc_denied_expired_and_foreign_requests(env: Harness) -> None:
    _, h = await bank(env)
    _, other_bank = await bank(env)
    c = await env.citizen()
    pw = await env.register_level1(c)
    me = await citizen_session(env, c, pw)
    body = {"id_number": c["id_number"], "claims": ["name"], "purpose": "Vay tiêu dùng"}
    denied = (await env.client.post("/verify/ekyc-requests", json=body, headers=h)).json()
    await env.client.post(f"/me/ekyc-requests/{denied['id']}/deny", headers=me)
    r = await env.client.get(f"/verify/ekyc-requests/{denied['id']}/result", headers=h)
    assert (r.status_code, r.json()["type"]) == (403, "urn:eid:problem:ekyc-denied")
    # Another bank cannot see or fetch this request.
    assert (await env.client.get(f"/verify/ekyc-requests/{denied['id']}", headers=other_bank)).status_code == 404
    late = (await env.client.post("/verify/ekyc-requests", json=body, headers=h)).json()
    env.ctx.clock.advance(dt.timedelta(minutes=11))
    me = await citizen_session(env, c, pw)
    _, h = await bank(env)
    assert (await env.client.post(f"/me/ekyc-requests/{late['id']}/approve", headers=me)).status_code in (404, 410)
    # Unknown ID numbers are accepted like any other and simply never approved.
    unknown = await env.client.post(
        "/verify/ekyc-requests", json={**body, "id_number": c["id_number"][:-6] + "000000"}, headers=h
    )
    assert unknown.status_code == 201
    bad = await env.client.post("/verify/ekyc-requests", json={**body, "claims": ["password"]}, headers=h)
    assert bad.status_code == 422
    # A citizen cannot answer someone else's request.
    other = await env.citizen()
    other_pw = await env.register_level1(other)
    foreign = (
        await env.client.post("/verify/ekyc-requests", json={**body, "id_number": other["id_number"]}, headers=h)
    ).json()
    assert (await env.client.post(f"/me/ekyc-requests/{foreign['id']}/approve", headers=me)).status_code == 404
    assert other_pw


async def test_access_log_records_userinfo_verify_and_officer_reads(env: Harness) -> None:
    client_id, h = await bank(env)
    c = await env.citizen()
    pw = await env.register_level1(c)
    await env.client.post("/verify/identity", json={"id_number": c["id_number"], "sex": "male"}, headers=h)
    await env.client.get(f"/registry/citizens/{c['id_number']}", headers=env.staff())
    me = await citizen_session(env, c, pw)
    page = (await env.client.get("/me/access-log", params={"limit": 1}, headers=me)).json()
    assert len(page["items"]) == 1 and page["next_before_id"] is not None
    first = page["items"][0]
    assert (first["channel"], first["recipient_type"], first["legal_basis"]) == ("registry", "officer", "law")
    older = (await env.client.get("/me/access-log", params={"before_id": page["next_before_id"]}, headers=me)).json()[
        "items"
    ]
    assert (
        older[0]["channel"] == "verify"
        and older[0]["recipient_id"] == client_id
        and older[0]["categories"] == ["match:sex"]
    )
    # Nobody else's entries.
    other = await env.citizen()
    other_pw = await env.register_level1(other)
    assert (await env.client.get("/me/access-log", headers=await citizen_session(env, other, other_pw))).json()[
        "items"
    ] == []


async def test_document_validity_check_for_banks(env: Harness) -> None:
    from tests.documents.support import agency, issue, licence

    _, agency_token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    other = await env.citizen()
    valid = (await issue(env, agency_token, licence(c["id_number"]))).json()
    old = (
        await issue(env, agency_token, licence(c["id_number"], issued_on="2010-01-01", expires_on="2020-01-01"))
    ).json()
    _, h = await bank(env)

    async def ask(number: str, **kw: str) -> Any:
        return await env.client.post(
            "/verify/documents", json={"type": "driving_licence", "number": number, **kw}, headers=h
        )

    assert (await ask(valid["number"])).json() == {"status": "valid"}
    assert (await ask(valid["number"], holder_id_number=c["id_number"])).json() == {"status": "valid"}
    assert (await ask(valid["number"], holder_id_number=other["id_number"])).json() == {"status": "unknown"}
    assert (await ask(old["number"])).json() == {"status": "expired"}
    assert (await ask("999999999999")).json() == {"status": "unknown"}
    assert (
        await env.client.post("/verify/documents", json={"type": "passport", "number": "x"}, headers=h)
    ).status_code == 422
    assert (
        await env.client.post("/verify/documents", json={"type": "driving_licence", "number": valid["number"]})
    ).status_code == 401
    pw = await env.register_level1(c)
    log = (await env.client.get("/me/access-log", headers=await citizen_session(env, c, pw))).json()["items"]
    assert any(e["channel"] == "verify" and e["categories"] == ["document_status:driving_licence"] for e in log)
