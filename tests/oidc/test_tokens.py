"""Token endpoint, refresh rotation, revocation, introspection, client authentication and
tampered JWTs."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jws
from jose import jwt as jose_jwt

from tests.oidc.flow import exchange, jwt_parts, make_client, pkce_pair, sign_in_and_consent
from tests.support import Harness


async def logged_in_tokens(env: Harness, **client_kw: Any) -> tuple[str, str | None, dict[str, Any]]:
    client_id, secret = await make_client(env, **client_kw)
    c = await env.citizen()
    pw = await env.register_level1(c)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    resp = await exchange(env.client, client_id, secret, result["code"], verifier)
    assert resp.status_code == 200, resp.text
    return client_id, secret, resp.json()


async def introspect(env: Harness, client_id: str, secret: str | None, token: str) -> dict[str, Any]:
    resp = await env.client.post("/introspect", data={"token": token}, auth=(client_id, secret or ""))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def refresh(env: Harness, client_id: str, secret: str | None, token: str) -> Any:
    return await env.client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=(client_id, secret or "")
    )


async def test_refresh_rotates_and_reuse_revokes_the_family(env: Harness) -> None:
    client_id, secret, tokens = await logged_in_tokens(env)
    first = await refresh(env, client_id, secret, tokens["refresh_token"])
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert (await introspect(env, client_id, secret, rotated["access_token"]))["active"] is True
    # The old refresh token comes back: everything of the family dies.
    replay = await refresh(env, client_id, secret, tokens["refresh_token"])
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    assert (await refresh(env, client_id, secret, rotated["refresh_token"])).json()["error"] == "invalid_grant"
    for token in (tokens["access_token"], rotated["access_token"], rotated["refresh_token"]):
        assert (await introspect(env, client_id, secret, token)) == {"active": False}
    assert (
        await env.client.get("/userinfo", headers={"Authorization": f"Bearer {rotated['access_token']}"})
    ).status_code == 401


async def test_refresh_cannot_widen_scope(env: Harness) -> None:
    client_id, secret, tokens = await logged_in_tokens(env)
    resp = await env.client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "openid profile email"},
        auth=(client_id, secret or ""),
    )
    assert resp.json()["error"] == "invalid_scope"
    narrower = await env.client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "openid"},
        auth=(client_id, secret or ""),
    )
    assert narrower.status_code == 200 and narrower.json()["scope"] == "openid"


async def test_code_reuse_fails_and_revokes_its_tokens(env: Harness) -> None:
    client_id, secret = await make_client(env)
    c = await env.citizen()
    pw = await env.register_level1(c)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    tokens = (await exchange(env.client, client_id, secret, result["code"], verifier)).json()
    again = await exchange(env.client, client_id, secret, result["code"], verifier)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is False
    assert (await refresh(env, client_id, secret, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_wrong_pkce_verifier_and_redirect_uri(env: Harness) -> None:
    client_id, secret = await make_client(env)
    c = await env.citizen()
    pw = await env.register_level1(c)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
        other_verifier, _ = pkce_pair()
        bad = await exchange(env.client, client_id, secret, result["code"], other_verifier)
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_grant")
        # The code is spent by the failed attempt.
        assert (await exchange(env.client, client_id, secret, result["code"], verifier)).json()[
            "error"
        ] == "invalid_grant"
        _, challenge2 = pkce_pair()
        verifier2 = "x" * 43
        result2 = await sign_in_and_consent(browser, client_id, challenge2, c["id_number"], pw)
        assert (
            await exchange(
                env.client,
                client_id,
                secret,
                result2["code"],
                verifier2,
                redirect_uri="https://portal.example.gov.vn/other",
            )
        ).json()["error"] == "invalid_grant"
    missing = await env.client.post(
        "/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": "y"},
        auth=(client_id, secret or ""),
    )
    assert missing.json()["error"] == "invalid_request"


async def test_client_authentication_errors(env: Harness) -> None:
    client_id, secret = await make_client(
        env,
        grant_types=["client_credentials"],
        scopes=["verify"],
        kind="bank",
        redirect_uris=[],
        post_logout_redirect_uris=[],
    )
    good = await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
    assert good.status_code == 200
    for auth in ((client_id, "wrong-secret"), ("nobody", "x")):
        r = await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=auth)
        assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
        assert r.headers["www-authenticate"].startswith("Basic")
        assert r.headers["cache-control"] == "no-store"
    # client_secret_basic clients may not post their secret instead.
    r = await env.client.post(
        "/token", data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    )
    assert r.status_code == 401
    r = await env.client.post("/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 401
    r = await env.client.post(
        "/token",
        content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=(client_id, secret or ""),
    )
    assert r.json()["error"] == "invalid_request"
    r = await env.client.post("/token", json={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
    assert r.json()["error"] == "invalid_request"
    r = await env.client.post("/token", data={"grant_type": "password"}, auth=(client_id, secret or ""))
    assert r.json()["error"] == "unsupported_grant_type"
    r = await env.client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": "x"}, auth=(client_id, secret or "")
    )
    assert r.json()["error"] == "unauthorized_client"


async def test_client_secret_post(env: Harness) -> None:
    client_id, secret = await make_client(
        env,
        grant_types=["client_credentials"],
        scopes=["verify", "ekyc"],
        kind="bank",
        redirect_uris=[],
        post_logout_redirect_uris=[],
        auth_method="client_secret_post",
    )
    r = await env.client.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": "verify"},
    )
    assert r.status_code == 200 and r.json()["scope"] == "verify"
    assert (
        await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
    ).status_code == 401


async def test_client_credentials_scopes_and_token_shape(env: Harness) -> None:
    client_id, secret = await make_client(
        env,
        grant_types=["client_credentials"],
        scopes=["verify", "ekyc"],
        kind="bank",
        redirect_uris=[],
        post_logout_redirect_uris=[],
    )
    r = await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
    body = r.json()
    assert body["scope"] == "ekyc verify" and "refresh_token" not in body
    header, claims = jwt_parts(body["access_token"])
    assert (header["alg"], header["typ"]) == ("ES256", "at+jwt")
    assert claims["sub"] == claims["client_id"] == client_id and claims["jti"]
    r = await env.client.post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "verify admin:clients"},
        auth=(client_id, secret or ""),
    )
    assert r.json()["error"] == "invalid_scope"
    # Resource servers verify offline with the JWKS.
    jwks = (await env.client.get("/jwks")).json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert (
        jose_jwt.decode(body["access_token"], key, algorithms=["ES256"], audience=env.ctx.settings.issuer)["scope"]
        == "ekyc verify"
    )


async def test_public_clients_need_pkce_and_cannot_use_client_credentials(env: Harness) -> None:
    from app.core.errors import InvalidInput

    try:
        await make_client(env, auth_method="none", grant_types=["client_credentials"], scopes=["verify"])
    except InvalidInput:
        pass
    else:
        raise AssertionError("a public client got client_credentials")
    client_id, _ = await make_client(env, auth_method="none")
    c = await env.citizen()
    pw = await env.register_level1(c)
    verifier, challenge = pkce_pair()
    async with env.browser() as browser:
        result = await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    r = await env.client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result["code"],
            "code_verifier": verifier,
            "redirect_uri": "https://portal.example.gov.vn/callback",
            "client_id": client_id,
        },
    )
    assert r.status_code == 200, r.text


async def test_revocation(env: Harness) -> None:
    client_id, secret, tokens = await logged_in_tokens(env)
    r = await env.client.post("/revoke", data={"token": tokens["access_token"]}, auth=(client_id, secret or ""))
    assert r.status_code == 200
    assert (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is False
    assert (await refresh(env, client_id, secret, tokens["refresh_token"])).status_code == 200  # the grant lives on
    r = await env.client.post("/revoke", data={"token": "garbage"}, auth=(client_id, secret or ""))
    assert r.status_code == 200  # RFC 7009 §2.2
    r = await env.client.post("/revoke", data={"token": tokens["access_token"]}, auth=(client_id, "wrong"))
    assert r.status_code == 401


async def test_revoking_a_refresh_token_ends_the_grant(env: Harness) -> None:
    client_id, secret, tokens = await logged_in_tokens(env)
    await env.client.post(
        "/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(client_id, secret or ""),
    )
    assert (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is False
    assert (await refresh(env, client_id, secret, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_introspection_of_other_clients_tokens(env: Harness) -> None:
    client_id, secret, tokens = await logged_in_tokens(env)
    other, other_secret = await make_client(
        env,
        grant_types=["client_credentials"],
        scopes=["verify"],
        kind="bank",
        redirect_uris=[],
        post_logout_redirect_uris=[],
    )
    assert (await introspect(env, other, other_secret, tokens["access_token"])) == {"active": False}
    rs, rs_secret = await make_client(
        env,
        grant_types=["client_credentials"],
        scopes=["introspect"],
        kind="agency",
        redirect_uris=[],
        post_logout_redirect_uris=[],
        can_introspect_any=True,
    )
    body = await introspect(env, rs, rs_secret, tokens["access_token"])
    assert body["active"] is True and body["client_id"] == client_id and body["acr"] == "urn:eid:loa:1"
    own = await introspect(env, client_id, secret, tokens["refresh_token"])
    assert own["active"] is True and own["token_type"] == "refresh_token"


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")  # noqa: E731
    signing_input = f"{enc(header)}.{enc(claims)}"
    sig = sign(signing_input.encode()) if sign else b""
    return signing_input + "." + base64.urlsafe_b64encode(sig).decode().rstrip("=")


async def test_tampered_tokens_are_rejected_everywhere(env: Harness) -> None:
    client_id, secret, tokens = await logged_in_tokens(env)
    header, claims = jwt_parts(tokens["access_token"])
    jwks = (await env.client.get("/jwks")).json()
    rsa_pub = next(k for k in jwks["keys"] if k["kty"] == "RSA")
    import hashlib
    import hmac as hm

    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_pem = attacker.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    forged = {
        "alg none": forge({**header, "alg": "none"}, claims),
        "HS256 with public key": forge(
            {**header, "alg": "HS256", "kid": rsa_pub["kid"]},
            claims,
            lambda m: hm.new(json.dumps(rsa_pub).encode(), m, hashlib.sha256).digest(),
        ),
        "unknown kid": jws.sign(
            json.dumps(claims).encode(),
            jwk.construct(attacker_pem, "ES256"),
            headers={"kid": "attacker", "typ": "at+jwt"},
            algorithm="ES256",
        ),
        "jku header": jws.sign(
            json.dumps(claims).encode(),
            jwk.construct(attacker_pem, "ES256"),
            headers={"kid": header["kid"], "jku": "https://evil.example/jwks", "typ": "at+jwt"},
            algorithm="ES256",
        ),
        "signature swap": tokens["access_token"].rsplit(".", 1)[0] + "." + tokens["id_token"].rsplit(".", 1)[1],
        "payload edit": tokens["access_token"].split(".")[0]
        + "."
        + base64.urlsafe_b64encode(json.dumps({**claims, "scope": "openid profile national_id"}).encode())
        .decode()
        .rstrip("=")
        + "."
        + tokens["access_token"].split(".")[2],
        "id token as access token": tokens["id_token"],
        "truncated": tokens["access_token"][:-10],
        "garbage": "a.b.c",
        "huge": "a" * 20000 + ".b.c",
    }
    for name, token in forged.items():
        r = await env.client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, name
        assert r.json()["error"] == "invalid_token", name
        assert 'error="invalid_token"' in r.headers["www-authenticate"], name
        if name != "huge":  # over the form-field limit: invalid_request instead
            assert (await introspect(env, client_id, secret, token)) == {"active": False}, name


async def test_expired_and_wrong_issuer_tokens(env: Harness) -> None:
    client_id, secret, tokens = await logged_in_tokens(env)
    env.ctx.clock.advance(dt.timedelta(seconds=env.ctx.settings.access_token_ttl_seconds + 1))
    assert (
        await env.client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    ).status_code == 401
    assert (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is False
    assert (await env.client.get("/userinfo")).status_code == 401


async def test_private_key_jwt_and_replay(env: Harness) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = jwk.construct(pem, "ES256").public_key().to_dict()
    client_id, _ = await make_client(
        env,
        grant_types=["client_credentials"],
        scopes=["verify"],
        kind="bank",
        redirect_uris=[],
        post_logout_redirect_uris=[],
        auth_method="private_key_jwt",
        jwks={"keys": [{**public, "kid": "bank-1", "use": "sig"}]},
    )
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": env.ctx.settings.issuer + "/token",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 120,
    }
    assertion = jose_jwt.encode(claims, pem, algorithm="ES256", headers={"kid": "bank-1"})
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    ok = await env.client.post("/token", data=form)
    assert ok.status_code == 200, ok.text
    replay = await env.client.post("/token", data=form)
    assert (replay.status_code, replay.json()["error"]) == (401, "invalid_client")
    assert "already used" in replay.json()["error_description"]
    for bad in (
        {**claims, "jti": uuid.uuid4().hex, "aud": "https://elsewhere"},
        {**claims, "jti": uuid.uuid4().hex, "exp": now - 60},
        {**claims, "jti": uuid.uuid4().hex, "exp": now + 3600},
        {k: v for k, v in claims.items() if k != "jti"},
    ):
        token = jose_jwt.encode(bad, pem, algorithm="ES256", headers={"kid": "bank-1"})
        r = await env.client.post("/token", data={**form, "client_assertion": token})
        assert r.status_code == 401, bad
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    wrong_key = jose_jwt.encode(
        {**claims, "jti": uuid.uuid4().hex}, other, algorithm="ES256", headers={"kid": "bank-1"}
    )
    assert (await env.client.post("/token", data={**form, "client_assertion": wrong_key})).status_code == 401


async def test_key_rotation_old_tokens_still_verify(env: Harness) -> None:
    from app.core.keys import rotate_keys

    _, _, before = await logged_in_tokens(env)
    old_kid = jwt_parts(before["access_token"])[0]["kid"]
    async with env.ctx.sessionmaker() as session:
        new_keys = await rotate_keys(
            session,
            env.ctx.keyring.sealer,
            env.ctx.clock.now(),
            lead=dt.timedelta(minutes=10),
            longest_jwt=dt.timedelta(minutes=10),
        )
    await env.ctx.keys.reload()
    new_kids = {k.kid for k in new_keys}
    published = {k["kid"] for k in (await env.client.get("/jwks")).json()["keys"]}
    assert new_kids <= published and old_kid in published  # published before use
    env.ctx.clock.advance(dt.timedelta(minutes=9, seconds=58))
    _, _, signed_before = await logged_in_tokens(env)
    assert jwt_parts(signed_before["access_token"])[0]["kid"] == old_kid  # not used during the lead time
    env.ctx.clock.advance(dt.timedelta(seconds=3))
    _, _, signed_after = await logged_in_tokens(env)
    assert jwt_parts(signed_after["access_token"])[0]["kid"] in new_kids
    assert jwt_parts(signed_after["id_token"])[0]["kid"] in new_kids
    # Both verify: the old key is retired from signing but still published.
    for tokens in (signed_before, signed_after):
        r = await env.client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert r.status_code == 200
    env.ctx.clock.advance(dt.timedelta(minutes=10))
    published = {k["kid"] for k in (await env.client.get("/jwks")).json()["keys"]}
    assert old_kid not in published and new_kids <= published
    await env.relogin()


async def test_a_token_verified_before_still_expires(env: Harness) -> None:
    client_id, secret, tokens = await logged_in_tokens(env)
    h = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await env.client.get("/userinfo", headers=h)).status_code == 200  # verified, and remembered
    assert (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is True
    env.ctx.clock.advance(dt.timedelta(seconds=env.ctx.settings.access_token_ttl_seconds))
    assert (await env.client.get("/userinfo", headers=h)).status_code == 401
    assert (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is False


async def test_caches_reload_while_a_request_holds_its_transaction(env: Harness) -> None:
    """On SQLite every writing transaction holds the write lock; a key or client reload in the
    middle of a code exchange must not wait on it (it reads through a read-only connection)."""
    keys, clients = env.ctx.keys, env.provider.clients
    saved = (keys._ttl, clients._ttl)
    keys._ttl = clients._ttl = 0.0  # reload on every use
    try:
        client_id, secret, tokens = await logged_in_tokens(env)
        r = await refresh(env, client_id, secret, tokens["refresh_token"])
        assert r.status_code == 200, r.text
    finally:
        keys._ttl, clients._ttl = saved


async def test_revocation_by_another_replica_reaches_the_live_cache(env: Harness) -> None:
    """Another process revokes (here: a raw insert on its own connection); NOTIFY makes this
    process forget the cached 'live' answer. SQLite (one process) never caches."""
    import asyncio

    import asyncpg

    live = env.provider.live
    if env.backend == "sqlite":
        assert live.caching is False
        return
    assert live.caching is True
    client_id, secret, tokens = await logged_in_tokens(env)
    assert (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is True  # now cached
    jti = jwt_parts(tokens["access_token"])[1]["jti"]
    other_replica = await asyncpg.connect(
        env.ctx.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        await other_replica.execute(
            "INSERT INTO oauth_revoked_tokens (jti, expires_at) VALUES ($1, now() + interval '1 hour')", jti
        )
    finally:
        await other_replica.close()
    for _ in range(200):  # the notification arrives within milliseconds; bounded wait
        if (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is False:
            break
        await asyncio.sleep(0.01)
    assert (await introspect(env, client_id, secret, tokens["access_token"]))["active"] is False
