"""The authorization code + PKCE flow through the real login and consent pages."""

from __future__ import annotations

import datetime as dt

from jose import jwt

from app.registry.idnumber import Sex
from tests.oidc.flow import (
    REDIRECT,
    authorize,
    exchange,
    form_fields,
    jwt_parts,
    make_client,
    pkce_pair,
    query,
    sign_in_and_consent,
)
from tests.support import Harness


async def level1_citizen(env: Harness, **kw: object) -> tuple[dict, str]:
    c = await env.citizen(**kw)  # type: ignore[arg-type]
    return c, await env.register_level1(c)


async def test_full_flow_tokens_userinfo_and_jwks(env: Harness) -> None:
    client_id, secret = await make_client(env)
    c, pw = await level1_citizen(env, full_name="Phạm Thị Thu Hà", sex=Sex.female)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(
            browser, client_id, challenge, c["id_number"], pw, scope="openid profile phone address"
        )
    assert result["state"] == "st-123"
    assert result["iss"] == env.ctx.settings.issuer  # RFC 9207
    resp = await exchange(env.client, client_id, secret, result["code"], verifier)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    tokens = resp.json()
    assert set(tokens) >= {"access_token", "id_token", "refresh_token", "expires_in", "token_type"}
    assert tokens["token_type"] == "Bearer"

    jwks = (await env.client.get("/jwks")).json()
    header, _ = jwt_parts(tokens["id_token"])
    assert header["alg"] == "RS256"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        tokens["id_token"], key, algorithms=["RS256"], audience=client_id, issuer=env.ctx.settings.issuer
    )
    assert claims["nonce"] == "n-456"
    assert claims["acr"] == "urn:eid:loa:1"
    assert claims["amr"] == ["pwd"]
    assert claims["sid"] and claims["auth_time"] <= claims["iat"]
    assert claims["sub"] != c["id_number"] and len(claims["sub"]) == 43  # pairwise, never the ID number
    assert all(not k.get("d") for k in jwks["keys"])  # public keys only

    info = await env.client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200
    body = info.json()
    assert body["sub"] == claims["sub"]
    assert (body["name"], body["family_name"], body["middle_name"], body["given_name"]) == (
        "Phạm Thị Thu Hà",
        "Phạm",
        "Thị Thu",
        "Hà",
    )
    assert body["birthdate"] == c["date_of_birth"] and body["gender"] == "female"
    assert body["phone_number"] == c["phone"] and body["phone_number_verified"] is True
    assert body["address"] == {"formatted": c["residence"], "country": "VN"}
    assert "national_id" not in body and "email" not in body
    # POST works too, and the disclosure is audited.
    post = await env.client.post("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert post.json() == body
    assert (
        await env.count(
            "audit_events",
            "action = 'oidc.userinfo' AND target = :t",
            t=c["id_number"][:3] + "*******" + c["id_number"][-2:],
        )
        == 2
    )


async def test_pairwise_subjects_differ_between_sectors(env: Harness) -> None:
    a, sa = await make_client(env, sector_identifier="tax.example.gov.vn")
    b, sb = await make_client(env, sector_identifier="health.example.gov.vn")
    c, pw = await level1_citizen(env)
    subs = []
    async with env.browser() as browser:
        for cid, secret in ((a, sa), (b, sb)):
            verifier, challenge = pkce_pair()
            result = await sign_in_and_consent(browser, cid, challenge, c["id_number"], pw)
            tokens = (await exchange(env.client, cid, secret, result["code"], verifier)).json()
            subs.append(jwt_parts(tokens["id_token"])[1]["sub"])
    assert subs[0] != subs[1]


async def test_remembered_consent_and_prompt_none(env: Harness) -> None:
    client_id, _ = await make_client(env)
    c, pw = await level1_citizen(env)
    async with env.browser() as browser:
        _, challenge = pkce_pair()
        await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
        # Signed in and consented: prompt=none comes straight back with a code.
        resp = await authorize(browser, client_id, challenge, prompt="none")
        assert resp.status_code == 303
        assert "code" in query(resp.headers["location"])
        # A wider scope needs consent again: prompt=none cannot show it.
        resp = await authorize(browser, client_id, challenge, prompt="none", scope="openid profile email")
        assert query(resp.headers["location"])["error"] == "consent_required"
    async with env.browser() as fresh:
        resp = await authorize(fresh, client_id, challenge, prompt="none")
        assert query(resp.headers["location"])["error"] == "login_required"


async def test_login_page_languages_and_generic_failure(env: Harness) -> None:
    client_id, _ = await make_client(env)
    c, pw = await level1_citizen(env)
    _, challenge = pkce_pair()
    async with env.browser() as browser:
        vi = await browser.get((await authorize(browser, client_id, challenge)).headers["location"])
        assert '<html lang="vi">' in vi.text and "Số định danh cá nhân" in vi.text
        en = await browser.get(
            (await authorize(browser, client_id, challenge, ui_locales="en-US vi")).headers["location"]
        )
        assert '<html lang="en">' in en.text and "Personal ID number" in en.text
        assert en.headers["x-frame-options"] == "DENY"
        fields = form_fields(en.text)
        wrong = await browser.post(
            "/login", data={**fields, "id_number": c["id_number"], "password": "not the password"}
        )
        unknown = await browser.post(
            "/login", data={**fields, "id_number": c["id_number"][:-6] + "000000", "password": "not the password"}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert (
            "The ID number or password is wrong" in wrong.text and "The ID number or password is wrong" in unknown.text
        )
        # No CSRF token, no sign-in.
        resp = await browser.post("/login", data={"req": fields["req"], "id_number": c["id_number"], "password": pw})
        assert resp.status_code == 403
        assert "eid_session" not in browser.cookies


async def test_first_login_forces_the_password_change(env: Harness) -> None:
    client_id, secret = await make_client(env)
    c = await env.citizen()
    resp = await env.client.post(
        "/accounts/registrations", json={k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}
    )
    code = await env.last_otp(c["phone"])
    await env.client.post(f"/accounts/registrations/{resp.json()['id']}/verify", json={"code": code})
    initial = await env.last_password(c["phone"])
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        r = await authorize(browser, client_id, challenge)
        page = await browser.get(r.headers["location"])
        r = await browser.post(
            "/login", data={**form_fields(page.text), "id_number": c["id_number"], "password": initial}
        )
        assert r.status_code == 303 and r.headers["location"].startswith("/login/password")
        page = await browser.get(r.headers["location"])
        weak = await browser.post(
            "/login/password", data={**form_fields(page.text), "current_password": initial, "new_password": "short"}
        )
        assert weak.status_code == 400
        r = await browser.post(
            "/login/password",
            data={**form_fields(weak.text), "current_password": initial, "new_password": "my chosen passphrase ok"},
        )
        assert r.status_code == 200 and 'action="/consent"' in r.text
        r = await browser.post("/consent", data={**form_fields(r.text), "decision": "allow"})
        tokens = await exchange(env.client, client_id, secret, query(r.headers["location"])["code"], verifier)
        assert tokens.status_code == 200


async def test_consent_denied_redirects_access_denied(env: Harness) -> None:
    client_id, _ = await make_client(env)
    c, pw = await level1_citizen(env)
    _, challenge = pkce_pair()
    async with env.browser() as browser:
        r = await authorize(browser, client_id, challenge)
        page = await browser.get(r.headers["location"])
        r = await browser.post("/login", data={**form_fields(page.text), "id_number": c["id_number"], "password": pw})
        r = await browser.post("/consent", data={**form_fields(r.text), "decision": "deny"})
        assert query(r.headers["location"]) == {
            "error": "access_denied",
            "error_description": "The citizen denied the request.",
            "state": "st-123",
            "iss": env.ctx.settings.issuer,
        }


async def test_unregistered_redirect_uri_and_unknown_client_never_redirect(env: Harness) -> None:
    client_id, _ = await make_client(env)
    _, challenge = pkce_pair()
    async with env.browser() as browser:
        r = await authorize(browser, client_id, challenge, redirect_uri="https://evil.example/cb")
        assert r.status_code == 400 and "location" not in r.headers
        r = await authorize(browser, client_id, challenge, redirect_uri=REDIRECT + "/extra")
        assert r.status_code == 400 and "location" not in r.headers
        r = await authorize(browser, "no-such-client", challenge)
        assert r.status_code == 400 and "location" not in r.headers
        pending, _ = await make_client(env, approved=False)
        r = await authorize(browser, pending, challenge)
        assert r.status_code == 400 and "location" not in r.headers


async def test_redirectable_request_errors(env: Harness) -> None:
    client_id, _ = await make_client(env)
    _, challenge = pkce_pair()
    async with env.browser() as browser:
        cases = [
            ({"code_challenge_method": "plain"}, "invalid_request"),
            ({"code_challenge": ""}, "invalid_request"),
            ({"response_type": "token"}, "unsupported_response_type"),
            ({"scope": "profile"}, "invalid_scope"),
            ({"scope": "openid national_id"}, "invalid_scope"),
            ({"prompt": "none login"}, "invalid_request"),
            ({"request": "eyJ..."}, "request_not_supported"),
        ]
        for params, error in cases:
            r = await authorize(browser, client_id, challenge, **params)
            assert r.status_code == 303, params
            q = query(r.headers["location"])
            assert (q["error"], q["state"], q["iss"]) == (error, "st-123", env.ctx.settings.issuer), params


async def test_step_up_refused_for_level_1_and_allowed_for_level_2(env: Harness) -> None:
    client_id, secret = await make_client(env)
    c, pw = await level1_citizen(env)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(
            browser, client_id, challenge, c["id_number"], pw, acr_values="urn:eid:loa:2"
        )
    assert result["error"] == "unmet_authentication_requirements"
    assert "code" not in result
    # Upgrade the same citizen to level 2 at the office; now the portal gets loa:2.
    from tests.accounts.test_assisted_registration import approve_all, submit

    reg = (await submit(env, c)).json()
    assert (await approve_all(env, reg["id"], c)).status_code == 200
    async with env.browser() as browser:
        result = await sign_in_and_consent(
            browser, client_id, challenge, c["id_number"], pw, acr_values="urn:eid:loa:2"
        )
    tokens = (await exchange(env.client, client_id, secret, result["code"], verifier)).json()
    assert jwt_parts(tokens["id_token"])[1]["acr"] == "urn:eid:loa:2"


async def test_guardian_acts_for_a_dependent(env: Harness) -> None:
    from tests.accounts.test_assisted_registration import approve_all, submit

    client_id, secret = await make_client(env, sector_identifier="school.example.gov.vn")
    parent = await env.citizen(full_name="Đặng Văn Cha", age=42)
    child = await env.citizen(
        full_name="Đặng Thị Con", age=9, sex=Sex.female, phone=None, guardians=[parent["id_number"]]
    )
    reg = (await submit(env, parent, dependents=[child["id_number"]])).json()
    assert (await approve_all(env, reg["id"], parent)).status_code == 200
    initial = await env.last_password(parent["phone"])
    await env.client.post(
        "/accounts/password",
        json={"id_number": parent["id_number"], "current_password": initial, "new_password": "guardian passphrase 123"},
    )
    kid_account = (await env.client.get(f"/accounts/by-id-number/{child['id_number']}", headers=env.staff())).json()
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(
            browser, client_id, challenge, parent["id_number"], "guardian passphrase 123", subject=kid_account["id"]
        )
        tokens = (await exchange(env.client, client_id, secret, result["code"], verifier)).json()
        child_claims = jwt_parts(tokens["id_token"])[1]
        v2, c2 = pkce_pair()
        self_result = await sign_in_and_consent(
            browser, client_id, c2, parent["id_number"], "guardian passphrase 123", subject="self"
        )
        self_tokens = (await exchange(env.client, client_id, secret, self_result["code"], v2)).json()
    parent_claims = jwt_parts(self_tokens["id_token"])[1]
    assert child_claims["act"] == {"sub": parent_claims["sub"]}
    assert child_claims["sub"] != parent_claims["sub"]
    assert "act" not in parent_claims
    info = (await env.client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})).json()
    assert info["name"] == "Đặng Thị Con" and info["act"] == {"sub": parent_claims["sub"]}


async def test_locked_accounts_get_no_tokens(env: Harness) -> None:
    client_id, secret = await make_client(env)
    c, pw = await level1_citizen(env)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    acct = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    await env.client.post(f"/accounts/{acct['id']}/lock", json={"reason": "fraud report"}, headers=env.staff())
    resp = await exchange(env.client, client_id, secret, result["code"], verifier)
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_grant")


async def test_national_id_claim_only_for_approved_clients(env: Harness) -> None:
    client_id, secret = await make_client(env, scopes=["openid", "profile", "national_id"])
    c, pw = await level1_citizen(env)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(
            browser, client_id, challenge, c["id_number"], pw, scope="openid national_id"
        )
    tokens = (await exchange(env.client, client_id, secret, result["code"], verifier)).json()
    info = (await env.client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})).json()
    assert info["national_id"] == c["id_number"]
    assert info["sub"] != c["id_number"]


async def test_codes_expire_after_sixty_seconds(env: Harness) -> None:
    client_id, secret = await make_client(env)
    c, pw = await level1_citizen(env)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    env.ctx.clock.advance(dt.timedelta(seconds=61))
    resp = await exchange(env.client, client_id, secret, result["code"], verifier)
    assert resp.json()["error"] == "invalid_grant"


async def test_prompt_login_and_max_age_force_a_new_sign_in(env: Harness) -> None:
    client_id, _ = await make_client(env)
    c, pw = await level1_citizen(env)
    _, challenge = pkce_pair()
    async with env.browser() as browser:
        await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
        r = await authorize(browser, client_id, challenge, prompt="login")
        assert r.headers["location"].startswith("/login?")
        r = await authorize(browser, client_id, challenge, max_age="3600")
        assert "code" in query(r.headers["location"])
        env.ctx.clock.advance(dt.timedelta(seconds=120))
        r = await authorize(browser, client_id, challenge, max_age="60")
        assert r.headers["location"].startswith("/login?")
        r = await authorize(browser, client_id, challenge, max_age="60", prompt="none")
        assert query(r.headers["location"])["error"] == "login_required"


async def test_es256_id_tokens_for_clients_that_choose_it(env: Harness) -> None:
    client_id, secret = await make_client(env, id_token_alg="ES256")
    c, pw = await level1_citizen(env)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    tokens = (await exchange(env.client, client_id, secret, result["code"], verifier)).json()
    header, _ = jwt_parts(tokens["id_token"])
    assert header["alg"] == "ES256"
    jwks = (await env.client.get("/jwks")).json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert key["kty"] == "EC" and key["crv"] == "P-256"
    jwt.decode(
        tokens["id_token"],
        key,
        algorithms=["ES256"],
        audience=client_id,
        issuer=env.ctx.settings.issuer,
        access_token=tokens["access_token"],
    )


async def test_login_session_cookie_flags(env: Harness) -> None:
    client_id, _ = await make_client(env)
    c, pw = await level1_citizen(env)
    _, challenge = pkce_pair()
    async with env.browser() as browser:
        r = await authorize(browser, client_id, challenge)
        page = await browser.get(r.headers["location"])
        r = await browser.post("/login", data={**form_fields(page.text), "id_number": c["id_number"], "password": pw})
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("eid_session=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # the test issuer is http; https issuers get Secure
        # A tampered cookie is no session.
        browser.cookies.set("eid_session", browser.cookies["eid_session"][:-2] + "xx")
        r = await authorize(browser, client_id, challenge, prompt="none")
        assert query(r.headers["location"])["error"] == "login_required"
