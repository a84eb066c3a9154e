"""QR shares through HTTP: creation, offline verification, online one-time redemption, the
access log, revocation, and every way a share is refused."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jws

from app.sharing import qr, sdjwt
from app.sharing.verifier import ShareRejected, verify_share_offline
from tests.documents.support import agency, bearer, guardian_with_child, issue, licence, problem, signed_in, verifier
from tests.oidc.flow import jwt_parts
from tests.support import Harness


def disclosures(compact: str) -> list[list[Any]]:
    return [json.loads(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4))) for d in compact.split("~")[1:-1]]


async def share(env: Harness, token: str, **body: Any) -> Any:
    return await env.client.post("/me/shares", json=body, headers=bearer(token))


async def redeem(env: Harness, token: str, value: str) -> Any:
    return await env.client.post("/sharing/redeem", json={"token": value}, headers=bearer(token))


async def offline(env: Harness, compact: str, **kw: Any) -> Any:
    jwks = (await env.client.get("/jwks")).json()
    return await verify_share_offline(compact, jwks, now=env.ctx.clock.now(), issuer=env.ctx.settings.issuer, **kw)


async def log_rows(env: Harness, id_number: str) -> int:
    return await env.count("access_log", "id_number = :n AND channel = 'qr'", n=id_number)


async def test_a_share_discloses_only_what_was_chosen_and_verifies_offline(env: Harness) -> None:
    c, session = await signed_in(env, full_name="Trần Thị Bích Ngọc", age=30)
    r = await share(env, session, attributes=["name", "age_over_18"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["form"], body["qr_payload"], body["attributes"], body["omitted"]) == (
        "sd-jwt", body["sd_jwt"], ["age_over_18", "name"], [],
    )  # fmt: skip
    compact = body["sd_jwt"]
    header, payload = jwt_parts(compact.split("~")[0])
    assert (header["alg"], header["typ"]) == ("ES256", "vc+sd-jwt")
    assert (payload["_sd_alg"], len(payload["_sd"]), payload["jti"]) == ("sha-256", 8, body["id"])
    assert payload["exp"] - payload["iat"] == 300 and "aud" not in payload
    # The birth date is nowhere in the token: neither in clear nor in a disclosure.
    assert c["date_of_birth"] not in json.dumps([payload, disclosures(compact)])
    assert sorted(d[1] for d in disclosures(compact)) == ["age_over_18", "name"]

    verified = await offline(env, compact)
    assert verified.claims == {"name": "Trần Thị Bích Ngọc", "age_over_18": True}
    assert verified.share_id == body["id"] and verified.audience is None
    # A holder may drop a disclosure; what is left still verifies and discloses less.
    head, first, _second = compact.split("~")[:3]
    fewer = await offline(env, f"{head}~{first}~")
    assert len(fewer.claims) == 1


async def test_age_predicates_tell_the_threshold_only(env: Harness) -> None:
    _, session = await signed_in(env, age=16)
    r = await share(env, session, attributes=["age_over_18", "age_over_14", "gender"])
    verified = await offline(env, r.json()["sd_jwt"])
    assert verified.claims == {"age_over_18": False, "age_over_14": True, "gender": "male"}


async def test_redeem_once_logs_who_received_what_under_the_consent(env: Harness) -> None:
    c, session = await signed_in(env)
    body = (await share(env, session, attributes=["name", "address", "birthdate"], purpose="Mở tài khoản")).json()
    bank_id, bank = await verifier(env, name="Ngân hàng Đông Á")
    r = await redeem(env, bank, body["qr_payload"])
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["claims"] == {
        "name": c["full_name"], "birthdate": c["date_of_birth"], "address": {"formatted": c["residence"], "country": "VN"},
    }  # fmt: skip
    log = (await env.client.get("/me/access-log", headers=bearer(session))).json()["items"]
    [entry] = [e for e in log if e["channel"] == "qr"]
    assert (entry["recipient_id"], entry["recipient_name"], entry["legal_basis"], entry["consent_id"]) == (
        bank_id, "Ngân hàng Đông Á", "consent", body["consent_id"],
    )  # fmt: skip
    assert entry["categories"] == ["address", "birthdate", "name"]
    consents = (await env.client.get("/me/consents", headers=bearer(session))).json()
    assert any(
        x["id"] == body["consent_id"] and x["kind"] == "share" and x["purpose"] == "Mở tài khoản" for x in consents
    )

    # One-time: a second redemption, by anyone, is refused and discloses nothing more.
    again = await redeem(env, bank, body["qr_payload"])
    problem(again, 409, "share-redeemed")
    _, other_bank = await verifier(env)
    problem(await redeem(env, other_bank, body["qr_payload"]), 409, "share-redeemed")
    assert await log_rows(env, c["id_number"]) == 1
    [listed] = [
        s for s in (await env.client.get("/me/shares", headers=bearer(session))).json() if s["id"] == body["id"]
    ]
    assert (listed["status"], listed["redeemed_by"]) == ("redeemed", bank_id)


async def test_a_named_audience_only(env: Harness) -> None:
    c, session = await signed_in(env)
    bank_id, bank = await verifier(env)
    _, other = await verifier(env)
    problem(await share(env, session, attributes=["name"], audience="no-such-client"), 422, "share-audience-unknown")
    suspended_id, _ = await verifier(env, approved=False)
    problem(await share(env, session, attributes=["name"], audience=suspended_id), 422, "share-audience-unknown")
    assert await env.count("shares s JOIN accounts a ON a.id = s.account_id", "a.id_number = :n", n=c["id_number"]) == 0

    body = (await share(env, session, attributes=["name"], audience=bank_id)).json()
    assert body["audience"] == bank_id
    with pytest.raises(ShareRejected) as info:
        await offline(env, body["sd_jwt"])
    assert info.value.reason == "audience"
    assert (await offline(env, body["sd_jwt"], audience=bank_id)).claims == {"name": c["full_name"]}
    problem(await redeem(env, other, body["sd_jwt"]), 403, "share-audience")
    assert await log_rows(env, c["id_number"]) == 0
    assert (await redeem(env, bank, body["sd_jwt"])).status_code == 200
    assert await log_rows(env, c["id_number"]) == 1


async def test_revoking_a_share_or_its_consent_stops_redemption(env: Harness) -> None:
    c, session = await signed_in(env)
    _, bank = await verifier(env)
    first = (await share(env, session, attributes=["name"])).json()
    second = (await share(env, session, attributes=["gender"])).json()
    _, stranger = await signed_in(env)
    problem(await env.client.delete(f"/me/shares/{first['id']}", headers=bearer(stranger)), 404, "share-not-found")
    assert (await env.client.delete(f"/me/shares/{first['id']}", headers=bearer(session))).status_code == 204
    problem(await env.client.delete(f"/me/shares/{first['id']}", headers=bearer(session)), 404, "share-not-found")
    consents = {x["id"] for x in (await env.client.get("/me/consents", headers=bearer(session))).json()}
    assert first["consent_id"] not in consents and second["consent_id"] in consents
    problem(await redeem(env, bank, first["qr_payload"]), 410, "share-revoked")
    # Withdrawing the consent from the consent list has the same effect.
    assert (await env.client.delete(f"/me/consents/{second['consent_id']}", headers=bearer(session))).status_code == 204
    problem(await redeem(env, bank, second["qr_payload"]), 410, "share-revoked")
    assert await log_rows(env, c["id_number"]) == 0
    statuses = {s["id"]: s["status"] for s in (await env.client.get("/me/shares", headers=bearer(session))).json()}
    assert statuses == {first["id"]: "revoked", second["id"]: "revoked"}
    assert await env.count("audit_events", "action = 'share.redeem' AND outcome = 'revoked'") >= 2


async def test_lifetime_is_at_most_ten_minutes_and_expiry_is_enforced(env: Harness) -> None:
    c, session = await signed_in(env)
    problem(await share(env, session, attributes=["name"], lifetime_seconds=601), 422, "validation")
    problem(await share(env, session, attributes=["name"], lifetime_seconds=10), 422, "validation")
    assert (
        await env.count(
            "consents c JOIN accounts a ON a.id = c.account_id",
            "a.id_number = :n AND c.kind = 'share'",
            n=c["id_number"],
        )
        == 0
    )
    body = (await share(env, session, attributes=["name"], lifetime_seconds=600)).json()
    _, payload = jwt_parts(body["sd_jwt"].split("~")[0])
    assert payload["exp"] - payload["iat"] == 600
    env.ctx.clock.advance(dt.timedelta(seconds=601))
    _, bank = await verifier(env)
    problem(await redeem(env, bank, body["sd_jwt"]), 410, "share-expired")
    with pytest.raises(ShareRejected) as info:
        await offline(env, body["sd_jwt"])
    assert info.value.reason == "expired"
    assert await log_rows(env, c["id_number"]) == 0


async def test_forged_truncated_altered_and_oversized_tokens(env: Harness) -> None:
    c, session = await signed_in(env)
    _, bank = await verifier(env)
    compact = (await share(env, session, attributes=["name", "gender"])).json()["sd_jwt"]
    jwt, d1, d2, _ = compact.split("~")
    head, payload, sig = jwt.split(".")

    # Signed by someone else's key under the service's kid.
    kid = jwt_parts(jwt)[0]["kid"]
    rogue = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    claims = jwt_parts(jwt)[1]
    forged = jws.sign(
        json.dumps(claims).encode(), rogue.decode(), headers={"kid": kid, "typ": "vc+sd-jwt"}, algorithm="ES256"
    )
    tampered = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    _, access_token = await verifier(env)
    birthdate = sdjwt.make_disclosure("birthdate", "1990-01-01")
    cases = [
        (f"{forged}~{d1}~{d2}~", 400, "share-forged"),
        (f"{head}.{tampered}.{sig}~{d1}~{d2}~", 400, "share-forged"),
        (f"{head}.{payload}.{sig[:-4]}~{d1}~{d2}~", 400, "share-forged"),
        (f"{access_token}~", 400, "share-forged"),  # another of our JWTs is not a share
        (f"{jwt}~{d1}~{d2}", 400, "share-malformed"),  # the closing ~ cut off
        (f"{jwt}~{d1}~{d2[:-5]}~", 400, "share-malformed"),  # a disclosure cut short
        (f"{jwt}~{d1}~{birthdate}~", 400, "share-malformed"),  # a disclosure the issuer never signed
        (f"{jwt}~{d1}~{d1}~", 400, "share-malformed"),
        (f"{head}.{payload}~{d1}~", 400, "share-malformed"),
        (jwt, 400, "share-malformed"),  # not an SD-JWT at all
        ("hello", 400, "share-malformed"),
        ("eidshare:!!", 400, "share-malformed"),
        ("eidshare:AAAAAAAAAAAAAAAAAAAAAA", 404, "share-unknown"),
        (compact + "A" * 9000, 413, "share-too-large"),
    ]
    for value, status, slug in cases:
        problem(await redeem(env, bank, value), status, slug)
    problem(await env.client.post("/sharing/redeem", json={"token": ""}, headers=bearer(bank)), 422, "validation")
    problem(await env.client.post("/sharing/redeem", json={}, headers=bearer(bank)), 422, "validation")
    assert await log_rows(env, c["id_number"]) == 0
    assert (
        await env.count(
            "shares s JOIN accounts a ON a.id = s.account_id",
            "a.id_number = :n AND s.redeemed_at IS NOT NULL",
            n=c["id_number"],
        )
        == 0
    )
    # The intact token still works after all that.
    assert (await redeem(env, bank, compact)).json()["claims"] == {"name": c["full_name"], "gender": "male"}


async def test_only_approved_clients_redeem(env: Harness) -> None:
    c, session = await signed_in(env)
    compact = (await share(env, session, attributes=["name"])).json()["sd_jwt"]
    _, suspended = await verifier(env, approved=False)
    problem(await env.client.post("/sharing/redeem", json={"token": compact}), 401, "unauthenticated")
    problem(await redeem(env, session, compact), 401, "unauthenticated")
    problem(await redeem(env, suspended, compact), 401, "unauthenticated")
    assert await log_rows(env, c["id_number"]) == 0


async def test_a_large_share_becomes_a_reference_redeemed_online(env: Harness) -> None:
    c = await env.citizen()
    long_address = "Số 1 ngõ 2 ngách 3 đường Nguyễn Trãi, phường Thượng Đình, quận Thanh Xuân, Hà Nội. " * 5
    r = await env.client.put(
        "/registry/citizens", json={**c, "residence": long_address.strip()[:500]}, headers=env.staff()
    )
    assert r.status_code == 200, r.text
    password = await env.register_level1(c)
    session = (
        await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": password})
    ).json()["access_token"]
    _, agency_token = await agency(env, ["driving_licence"])
    doc = (await issue(env, agency_token, licence(c["id_number"]))).json()
    body = (
        await share(
            env, session, attributes=["name", "birthdate", "address", "gender", "age_over_18"], document_id=doc["id"]
        )
    ).json()
    assert len(body["sd_jwt"]) > qr.INLINE_MAX_BYTES
    assert (body["form"], body["qr_payload"]) == ("reference", f"eidshare:{body['id']}")
    _, bank = await verifier(env)
    r = await redeem(env, bank, body["qr_payload"])
    assert r.status_code == 200, r.text
    claims = r.json()["claims"]
    assert claims["address"]["formatted"] == long_address.strip()[:500]
    assert claims["document"]["number"] == doc["number"] and claims["document"]["status"] == "valid"
    problem(await redeem(env, bank, body["qr_payload"]), 409, "share-redeemed")


async def test_an_inline_share_is_not_redeemable_by_reference(env: Harness) -> None:
    _, session = await signed_in(env)
    body = (await share(env, session, attributes=["name"])).json()
    _, bank = await verifier(env)
    problem(await redeem(env, bank, f"eidshare:{body['id']}"), 404, "share-unknown")


async def test_the_qr_is_rendered_for_the_owner_only(env: Harness) -> None:
    _, session = await signed_in(env)
    body = (await share(env, session, attributes=["name"])).json()
    png = await env.client.get(body["qr_png"], headers=bearer(session))
    assert (png.status_code, png.headers["content-type"], png.headers["cache-control"]) == (
        200,
        "image/png",
        "no-store",
    )
    assert png.content == qr.render(body["qr_payload"], "png")  # the image encodes exactly the payload
    svg = await env.client.get(body["qr_svg"], headers=bearer(session))
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    _, stranger = await signed_in(env)
    problem(await env.client.get(body["qr_png"], headers=bearer(stranger)), 404, "share-not-found")
    problem(await env.client.get(body["qr_png"]), 401, "unauthenticated")
    problem(await env.client.get("/sharing/nope/qr.svg", headers=bearer(session)), 404, "share-not-found")
    assert (await env.client.delete(f"/me/shares/{body['id']}", headers=bearer(session))).status_code == 204
    problem(await env.client.get(body["qr_png"], headers=bearer(session)), 410, "share-revoked")


async def test_a_guardian_shares_for_a_dependent_and_photo_refs(env: Harness) -> None:
    parent, token, child, child_account = await guardian_with_child(env)
    _, bank = await verifier(env)
    body = (await share(env, token, attributes=["name", "age_over_14", "photo_ref"], **{"for": child_account})).json()
    # The child has no chip-card application of their own: no photo reference to share.
    assert (body["attributes"], body["omitted"]) == (["age_over_14", "name"], ["photo_ref"])
    r = await redeem(env, bank, body["qr_payload"])
    assert r.json()["claims"] == {"name": child["full_name"], "age_over_14": False}
    assert await log_rows(env, child["id_number"]) == 1
    assert await log_rows(env, parent["id_number"]) == 0
    listed = (await env.client.get("/me/shares", headers=bearer(token))).json()
    assert [s["for_account_id"] for s in listed] == [child_account]
    # The guardian's own card photo reference.
    own = (await share(env, token, attributes=["photo_ref"])).json()
    assert (await offline(env, own["sd_jwt"])).claims == {"photo_ref": "face:5e6f7a8b9c0d"}
    _, stranger = await signed_in(env)
    problem(await share(env, stranger, attributes=["name"], **{"for": child_account}), 404, "dependent-not-found")


async def test_sharing_a_document(env: Harness) -> None:
    c, session = await signed_in(env)
    _, agency_token = await agency(env, ["driving_licence"])
    doc = (await issue(env, agency_token, licence(c["id_number"]))).json()
    body = (await share(env, session, document_id=doc["id"])).json()
    assert body["attributes"] == ["document"]
    claims = (await offline(env, body["sd_jwt"])).claims
    assert claims["document"]["number"] == doc["number"] and "holder_id_number" not in claims["document"]
    _, other = await signed_in(env)
    problem(await share(env, other, document_id=doc["id"]), 404, "document-not-found")
    await env.client.post(f"/documents/{doc['id']}/suspend", json={"reason": "x"}, headers=bearer(agency_token))
    problem(await share(env, session, document_id=doc["id"]), 409, "document-not-presentable")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"attributes": []},
        {"attributes": ["id_number"]},
        {"attributes": ["name", "name"]},
        {"attributes": ["name"], "extra": 1},
        {"attributes": ["name"], "lifetime_seconds": "long"},
        {"attributes": ["name"], "for": "not-a-uuid"},
        {"attributes": ["name"], "audience": "bad client id!"},
    ],
)
async def test_bad_share_requests_write_nothing(env: Harness, body: dict[str, Any]) -> None:
    c, session = await signed_in(env)
    problem(await env.client.post("/me/shares", json=body, headers=bearer(session)), 422, "validation")
    assert (
        await env.count("consents c JOIN accounts a ON a.id = c.account_id", "a.id_number = :n", n=c["id_number"]) == 0
    )
    problem(await env.client.post("/me/shares", json={"attributes": ["name"]}), 401, "unauthenticated")


async def test_signing_when_the_key_cache_must_reload(env: Harness) -> None:
    """The key store reloads keys in a session of its own; on SQLite that must not wait on the
    request's transaction (it would hold BEGIN IMMEDIATE's lock for 15 seconds, then fail)."""
    c, session = await signed_in(env)
    _, agency_token = await agency(env, ["driving_licence"])
    doc = (await issue(env, agency_token, licence(c["id_number"]))).json()
    keys = env.ctx.keys
    keys._loaded_at = 0.0  # as if the cache TTL had just passed
    r = await share(env, session, attributes=["name"])
    assert r.status_code == 201, r.text
    keys._loaded_at = 0.0
    r = await env.client.post(f"/me/documents/{doc['id']}/presentation", headers=bearer(session))
    assert r.status_code == 200, r.text
