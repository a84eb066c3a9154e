"""The holder's side (list, guardians, presentations, userinfo) and the verifier's (status)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from jose import jwt as jose_jwt

from app.core.privacy import mask_id_number
from app.documents.presentation import PresentationRejected, key_lookup_from_jwks, verify_presentation
from app.documents.service import document_status
from tests.documents.support import (
    agency,
    bearer,
    guardian_with_child,
    issue,
    licence,
    problem,
    sign_in_again,
    signed_in,
    verifier,
)
from tests.oidc.flow import exchange, make_client, pkce_pair, sign_in_and_consent
from tests.support import Harness


async def test_a_guardian_sees_a_dependents_documents_with_for(env: Harness) -> None:
    _, token, child, child_account = await guardian_with_child(env)
    _, agency_token = await agency(env, ["health_insurance"], name="Bảo hiểm xã hội Việt Nam")
    card = {"type": "health_insurance", "number": f"TE179{uuid.uuid4().int % 10**10:010d}",
            "holder_id_number": child["id_number"], "issued_on": "2025-01-01", "expires_on": "2030-12-31"}  # fmt: skip
    assert (await issue(env, agency_token, card)).status_code == 201
    own = await env.client.get("/me/documents", headers=bearer(token))
    assert own.json() == []
    theirs = await env.client.get("/me/documents", params={"for": child_account}, headers=bearer(token))
    assert theirs.status_code == 200
    assert [(d["type"], d["number"], d["holder_id_number"]) for d in theirs.json()] == [
        ("health_insurance", card["number"], child["id_number"])
    ]
    # Someone else's account, or no account at all, is not a dependent.
    _, stranger_token = await signed_in(env)
    r = await env.client.get("/me/documents", params={"for": child_account}, headers=bearer(stranger_token))
    problem(r, 404, "dependent-not-found")
    problem(
        await env.client.get("/me/documents", params={"for": str(uuid.uuid4())}, headers=bearer(token)),
        404,
        "dependent-not-found",
    )
    problem(await env.client.get("/me/documents", params={"for": "nope"}, headers=bearer(token)), 422, "validation")
    problem(await env.client.get("/me/documents"), 401, "unauthenticated")


async def test_expiry_is_derived_from_the_clock(env: Harness) -> None:
    _, agency_token = await agency(env, ["driving_licence"])
    c, session = await signed_in(env)
    today = env.ctx.clock.today()
    body = licence(c["id_number"], issued_on=(today - dt.timedelta(days=400)).isoformat(),
                   expires_on=(today + dt.timedelta(days=1)).isoformat())  # fmt: skip
    assert (await issue(env, agency_token, body)).status_code == 201
    async with env.ctx.sessionmaker() as s:
        assert await document_status(s, "driving_licence", body["number"], None, today) == "valid"
        # Valid through the expiry date itself, expired the day after.
        assert (
            await document_status(s, "driving_licence", body["number"], None, today + dt.timedelta(days=1)) == "valid"
        )
        assert (
            await document_status(s, "driving_licence", body["number"], None, today + dt.timedelta(days=2)) == "expired"
        )
    env.ctx.clock.advance(dt.timedelta(days=2))
    session = await sign_in_again(env, c)
    [doc] = (await env.client.get("/me/documents", headers=bearer(session))).json()
    assert doc["status"] == "expired"
    problem(
        await env.client.post(f"/me/documents/{doc['id']}/presentation", headers=bearer(session)),
        409,
        "document-not-presentable",
    )


async def test_document_status_for_the_verify_api(env: Harness) -> None:
    _, agency_token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    body = licence(c["id_number"])
    doc = (await issue(env, agency_token, body)).json()
    today = env.ctx.clock.today()
    async with env.ctx.sessionmaker() as s:
        assert await document_status(s, "driving_licence", body["number"], c["id_number"], today) == "valid"
        assert await document_status(s, "driving_licence", f" {body['number']} ", None, today) == "valid"
        # Someone else's ID number, another type, a malformed number, an unknown type: unknown.
        assert await document_status(s, "driving_licence", body["number"], "001099012345", today) == "unknown"
        assert await document_status(s, "social_insurance", body["number"][:10], None, today) == "unknown"
        assert await document_status(s, "driving_licence", "12", None, today) == "unknown"
        assert await document_status(s, "passport", body["number"], None, today) == "unknown"
    await env.client.post(f"/documents/{doc['id']}/suspend", json={"reason": "x"}, headers=bearer(agency_token))
    async with env.ctx.sessionmaker() as s:
        assert await document_status(s, "driving_licence", body["number"], None, today) == "suspended"
    await env.client.post(f"/documents/{doc['id']}/revoke", json={"reason": "x"}, headers=bearer(agency_token))
    async with env.ctx.sessionmaker() as s:
        assert await document_status(s, "driving_licence", body["number"], None, today) == "revoked"


async def test_online_status_check_is_for_approved_clients_and_logged(env: Harness) -> None:
    _, agency_token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    body = licence(c["id_number"])
    assert (await issue(env, agency_token, body)).status_code == 201
    bank_id, bank = await verifier(env)
    q = {"type": "driving_licence", "number": body["number"]}
    r = await env.client.get("/documents/status", params=q, headers=bearer(bank))
    assert r.status_code == 200
    assert r.json() == {"type": "driving_licence", "number": body["number"], "status": "valid",
                        "checked_on": env.ctx.clock.today().isoformat()}  # fmt: skip
    assert (
        await env.client.get(
            "/documents/status", params={**q, "holder_id_number": "001099012345"}, headers=bearer(bank)
        )
    ).json()["status"] == "unknown"
    assert (
        await env.client.get("/documents/status", params={**q, "number": "000000000001"}, headers=bearer(bank))
    ).json()["status"] == "unknown"
    # The holder sees who checked.
    assert (
        await env.count(
            "access_log",
            "id_number = :n AND channel = 'document-status' AND recipient_id = :c",
            n=c["id_number"],
            c=bank_id,
        )
        == 1
    )
    problem(await env.client.get("/documents/status", params=q), 401, "unauthenticated")
    problem(
        await env.client.get("/documents/status", params={**q, "type": "passport"}, headers=bearer(bank)),
        422,
        "validation",
    )
    _, suspended = await verifier(env, approved=False)
    problem(await env.client.get("/documents/status", params=q, headers=bearer(suspended)), 401, "unauthenticated")
    assert await env.count("access_log", "id_number = :n", n=c["id_number"]) == 1


async def test_a_presentation_verifies_offline_with_the_jwks(env: Harness) -> None:
    _, agency_token = await agency(env, ["driving_licence"])
    c, session = await signed_in(env, full_name="Hoàng Thị Lan")
    body = licence(c["id_number"])
    doc = (await issue(env, agency_token, body)).json()
    r = await env.client.post(f"/me/documents/{doc['id']}/presentation", headers=bearer(session))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["typ"], out["expires_in"]) == ("document+jwt", 180)
    token = out["presentation"]
    jwks = (await env.client.get("/jwks")).json()
    header = jose_jwt.get_unverified_header(token)
    assert (header["alg"], header["typ"]) == ("ES256", "document+jwt")
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jose_jwt.decode(token, key, algorithms=["ES256"], issuer=env.ctx.settings.issuer)
    assert claims["holder"] == {"name": "Hoàng Thị Lan", "birthdate": c["date_of_birth"]}
    assert claims["document"] == {
        "type": "driving_licence", "number": body["number"], "category": "B", "issued_on": "2024-03-01",
        "expires_on": "2034-03-01", "status": "valid", "issuer": {"id": doc["issuer_client_id"], "name": "Cục Cảnh sát giao thông"},
    }  # fmt: skip
    assert claims["exp"] - claims["iat"] == 180 and "national_id" not in claims
    now = env.ctx.clock.now()
    verified = await verify_presentation(token, key_lookup_from_jwks(jwks), now=now, issuer=env.ctx.settings.issuer)
    assert verified["jti"] == claims["jti"]
    assert (
        await env.count(
            "audit_events",
            "action = 'document.present' AND outcome = 'ok' AND target = :t",
            t=mask_id_number(c["id_number"]),
        )
        == 1
    )


async def test_presentations_refused_forged_expired_truncated_oversized(env: Harness) -> None:
    _, agency_token = await agency(env, ["driving_licence"])
    c, session = await signed_in(env)
    doc = (await issue(env, agency_token, licence(c["id_number"]))).json()
    token = (await env.client.post(f"/me/documents/{doc['id']}/presentation", headers=bearer(session))).json()[
        "presentation"
    ]
    jwks = (await env.client.get("/jwks")).json()
    keys, now, iss = key_lookup_from_jwks(jwks), env.ctx.clock.now(), env.ctx.settings.issuer
    head, payload, sig = token.split(".")

    async def reason(candidate: str, at: dt.datetime = now) -> str:
        with pytest.raises(PresentationRejected) as info:
            await verify_presentation(candidate, keys, now=at, issuer=iss)
        return info.value.reason

    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    assert await reason(f"{head}.{tampered}.{sig}") == "forged"
    assert await reason(f"{head}.{payload}.{sig[:-6]}") == "forged"
    assert await reason(f"{head}.{payload}") == "malformed"
    assert await reason(token + "A" * 5000) == "too-large"
    assert await reason(token, now + dt.timedelta(minutes=3, seconds=1)) == "expired"
    # Another of the service's JWTs (a client access token) is not a presentation.
    _, access_token = await verifier(env)
    assert await reason(access_token) == "forged"
    # Someone else's document cannot be presented; a suspended one neither.
    _, other = await signed_in(env)
    problem(
        await env.client.post(f"/me/documents/{doc['id']}/presentation", headers=bearer(other)),
        404,
        "document-not-found",
    )
    await env.client.post(f"/documents/{doc['id']}/suspend", json={"reason": "x"}, headers=bearer(agency_token))
    r = await env.client.post(f"/me/documents/{doc['id']}/presentation", headers=bearer(session))
    problem(r, 409, "document-not-presentable")
    assert r.json()["document_status"] == "suspended"


async def test_a_guardian_presents_a_dependents_document(env: Harness) -> None:
    _, token, child, _ = await guardian_with_child(env)
    _, agency_token = await agency(env, ["driving_licence"])
    doc = (await issue(env, agency_token, licence(child["id_number"], category="A1"))).json()
    r = await env.client.post(f"/me/documents/{doc['id']}/presentation", headers=bearer(token))
    assert r.status_code == 200
    claims = jose_jwt.get_unverified_claims(r.json()["presentation"])
    assert claims["holder"]["name"] == child["full_name"]


async def test_userinfo_documents_claim(env: Harness) -> None:
    client_id, secret = await make_client(env, scopes=["openid", "profile", "documents"])
    _, agency_token = await agency(env, ["driving_licence", "health_insurance"])
    c = await env.citizen()
    password = await env.register_level1(c)
    lic = licence(c["id_number"], expires_on=None)
    kept = (await issue(env, agency_token, lic)).json()
    gone = (await issue(env, agency_token, licence(c["id_number"]))).json()
    await env.client.post(f"/documents/{gone['id']}/revoke", json={"reason": "x"}, headers=bearer(agency_token))
    verifier_code, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(
            browser, client_id, challenge, c["id_number"], password, scope="openid documents"
        )
    tokens = (await exchange(env.client, client_id, secret, result["code"], verifier_code)).json()
    info = await env.client.get("/userinfo", headers=bearer(tokens["access_token"]))
    assert info.status_code == 200, info.text
    body = info.json()
    assert body["documents"] == [
        {"type": "driving_licence", "number": kept["number"], "status": "valid", "expires": None}
    ]
    assert "name" not in body
    assert (
        await env.count(
            "access_log", "id_number = :n AND channel = 'userinfo' AND recipient_id = :c", n=c["id_number"], c=client_id
        )
        == 1
    )
