"""Interoperability: a third-party OpenID Connect client library, Authlib, signs a citizen in
against the real server.

What this proves (black box, over TCP, nothing imported from ``app``):

- ``eid migrate``, ``eid seed-demo``, ``eid create-client`` and ``eid serve`` (uvicorn) start a
  working provider from environment variables alone;
- a relying party configured with nothing but the issuer URL and its client credentials finds
  every endpoint through discovery, and Authlib's OpenID Provider metadata validators (Discovery
  1.0, RP-Initiated Logout, RFC 8414) accept the document;
- the authorization code flow with PKCE S256 works end to end through the real login and
  consent pages, driven like a browser without JavaScript (cookies kept, hidden fields posted);
- Authlib's token requests (``client_secret_basic``) are accepted, and the ID token verifies
  against the published JWKS with Authlib's OIDC claim rules (iss, aud, azp, exp, iat, nonce) plus
  ``acr=urn:eid:loa:1``;
- UserInfo answers Authlib's bearer requests with the registry's name and birthdate, for the same
  ``sub`` as the ID token;
- refresh tokens rotate under Authlib's ``refresh_token``, and replaying the old one fails with
  ``invalid_grant`` (and revokes the family);
- RP-Initiated Logout at ``end_session_endpoint`` with ``id_token_hint`` ends the browser session.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc import discovery, rpinitiated
from authlib.oidc.core import CodeIDToken, UserInfo
from authlib.oidc.discovery.well_known import get_well_known_url

# Authlib 1.9 verifies ID tokens with joserfc (its JOSE engine; ``authlib.jose`` is deprecated):
# the imports below are exactly what Authlib's own OpenID client uses (AsyncOpenIDMixin).
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from tests.oidc.live_server import DEMO_CITIZEN, DEMO_PASSWORD, LiveServer, free_port, live_server

LOA1 = "urn:eid:loa:1"


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server for the module, stopped at its end (also after failures)."""
    tmp: Path = tmp_path_factory.mktemp("interop-authlib")
    with live_server(tmp) as srv:
        yield srv


@pytest.fixture
def server(running_server: LiveServer) -> Iterator[tuple[LiveServer, str]]:
    """The server, and the origin of a portal (nothing listens there) that owns the redirect URIs.
    The server's log lines of the test are printed afterwards: pytest shows them if it failed."""
    start = len(running_server.log())
    yield running_server, f"http://127.0.0.1:{free_port()}"
    print(f"--- server log ---\n{running_server.log()[start:]}")


# --- a browser without JavaScript -------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, value)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (name, value) of submit buttons


class FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._open = Form(action=a.get("action", ""), method=a.get("method", "get").lower())
            self.forms.append(self._open)
        elif self._open is not None and tag == "input" and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind == "submit":
                self._open.buttons.append((a["name"], a.get("value", "")))
            else:
                self._open.fields.append((kind, a["name"], a.get("value", "")))
        elif self._open is not None and tag == "button" and a.get("type", "submit").lower() == "submit":
            self._open.buttons.append((a.get("name", ""), a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def only_form(page: httpx.Response) -> Form:
    assert page.status_code == 200, f"{page.status_code}: {page.text[:500]}"
    assert page.headers["content-type"].startswith("text/html"), page.headers["content-type"]
    parser = FormParser()
    parser.feed(page.text)
    assert len(parser.forms) == 1, page.text[:1000]
    return parser.forms[0]


async def submit(
    browser: httpx.AsyncClient, page: httpx.Response, fill: dict[str, str], button: str | None = None
) -> httpx.Response:
    """Submit the page's form as a browser would: its fields (hidden ones as they are, the
    visible ones filled in) plus the name/value of the clicked submit button."""
    form = only_form(page)
    assert form.method == "post"
    data = {name: fill.get(name, value) for kind, name, value in form.fields if kind != "checkbox"}
    missing = set(fill) - set(data)
    assert not missing, f"no such field: {missing}"
    named = [(n, v) for n, v in form.buttons if n]
    if button is not None:
        chosen = [(n, v) for n, v in named if v == button]
        assert len(chosen) == 1, form.buttons
        data[chosen[0][0]] = chosen[0][1]
    action = urljoin(str(page.url), form.action)
    assert urlsplit(action).netloc == urlsplit(str(page.url)).netloc, action  # the form posts back to the provider
    return await browser.post(action, data=data)


async def sign_in(browser: httpx.AsyncClient, authorization_url: str, redirect_uri: str) -> tuple[str, list[str]]:
    """Open the authorization URL, follow the provider's pages to the redirect back to the client
    and return that Location (nothing listens at the redirect URI) and the forms submitted."""
    resp = await browser.get(authorization_url)
    pages: list[str] = []
    for _ in range(10):
        if resp.is_redirect:
            location = urljoin(str(resp.url), resp.headers["location"])
            if location.startswith(redirect_uri + "?"):
                return location, pages
            resp = await browser.get(location)
            continue
        form = only_form(resp)
        pages.append(form.action)
        if form.action.endswith("/login"):
            resp = await submit(browser, resp, {"id_number": DEMO_CITIZEN, "password": DEMO_PASSWORD})
        elif form.action.endswith("/consent"):
            resp = await submit(browser, resp, {}, button="allow")
        else:
            raise AssertionError(f"unexpected page posting to {form.action}: {resp.text[:500]}")
    raise AssertionError(f"no redirect to the client after {pages}")


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# --- the relying party -------------------------------------------------------------------------


async def verify_id_token(
    rp: AsyncOAuth2Client, meta: dict[str, Any], id_token: str, params: dict[str, Any]
) -> CodeIDToken:
    """Verify as Authlib's OpenID client does: keys from jwks_uri, algorithms from discovery,
    claims by authlib.oidc.core.CodeIDToken (issuer and audience as essential values)."""
    jwks = (await rp.request("GET", meta["jwks_uri"], withhold_token=True)).raise_for_status().json()
    decoded = jwt.decode(
        id_token,
        KeySet.import_key_set(jwks),
        registry=JWSRegistry(algorithms=meta["id_token_signing_alg_values_supported"], strict_check_header=False),
    )
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {
            "iss": {"essential": True, "value": meta["issuer"]},
            "aud": {"essential": True, "value": rp.client_id},
            "sub": {"essential": True},
            "acr": {"essential": True, "value": LOA1},
        },
        {"client_id": rp.client_id, **params},
    )
    claims.validate(leeway=5)
    return claims


async def test_authlib_relying_party_signs_in_over_http(server: tuple[LiveServer, str]) -> None:
    srv, portal = server
    redirect_uri, bye = f"{portal}/callback", f"{portal}/bye"
    client_id, client_secret = srv.create_client(
        "Portal", "--redirect-uri", redirect_uri, "--post-logout-redirect-uri", bye,
        "--scope", "openid", "--scope", "profile", "--scope", "phone",
        "--grant", "authorization_code", "--grant", "refresh_token", "--approve",
    )  # fmt: skip
    assert client_secret

    # Everything below knows only the issuer URL and the client credentials.
    issuer = srv.issuer
    async with (
        AsyncOAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method="client_secret_basic",
            scope="openid profile phone",
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=10.0,
        ) as rp,
        httpx.AsyncClient(follow_redirects=False, timeout=10.0) as browser,
    ):
        # Discovery (OIDC Discovery §4): same issuer, valid by Authlib's metadata models.
        resp = await rp.request("GET", get_well_known_url(issuer, external=True), withhold_token=True)
        assert resp.status_code == 200, resp.text
        meta = resp.json()
        assert meta["issuer"] == issuer
        discovery.OpenIDProviderMetadata(meta).validate(metadata_classes=[rpinitiated.OpenIDProviderMetadata])
        assert "code" in meta["response_types_supported"]
        assert "S256" in meta["code_challenge_methods_supported"]
        assert "client_secret_basic" in meta["token_endpoint_auth_methods_supported"]

        # 1. Authorization request, built by Authlib (state, nonce, PKCE S256 challenge).
        code_verifier, nonce = generate_token(48), generate_token(20)
        authorization_url, state = rp.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=code_verifier, nonce=nonce
        )
        sent = query(authorization_url)
        assert sent["code_challenge_method"] == "S256" and sent["code_challenge"]
        assert sent["scope"] == "openid profile phone" and sent["nonce"] == nonce

        # 2. The citizen signs in and consents on the provider's pages.
        location, pages = await sign_in(browser, authorization_url, redirect_uri)
        assert [urlsplit(p).path for p in pages] == ["/login", "/consent"]
        back = query(location)
        assert back["state"] == state
        assert back["iss"] == issuer  # RFC 9207, which Authlib does not check itself
        assert "eid_session" in browser.cookies

        # 3. Code exchange by Authlib (it checks state against the authorization response).
        token = await rp.fetch_token(
            meta["token_endpoint"], authorization_response=location, state=state, code_verifier=code_verifier
        )
        assert token["token_type"].lower() == "bearer"
        assert {"access_token", "id_token", "refresh_token", "expires_in", "expires_at"} <= set(token)
        assert set(token["scope"].split()) == {"openid", "profile", "phone"}

        # 4. The ID token.
        id_claims = await verify_id_token(
            rp, meta, token["id_token"], {"nonce": nonce, "access_token": token["access_token"]}
        )
        now = time.time()
        assert id_claims["iss"] == issuer and id_claims["aud"] == client_id and id_claims["azp"] == client_id
        assert id_claims["nonce"] == nonce
        assert id_claims["acr"] == LOA1 and id_claims["acr"] in meta["acr_values_supported"]
        assert now - 60 < id_claims["iat"] <= now + 5 < id_claims["exp"]
        assert now - 60 < id_claims["auth_time"] <= now + 5
        assert id_claims["amr"] == ["pwd"]
        assert id_claims["sid"]
        assert id_claims.header["alg"] in meta["id_token_signing_alg_values_supported"]
        with pytest.raises(InvalidClaimError, match="nonce"):
            await verify_id_token(rp, meta, token["id_token"], {"nonce": "another-nonce"})

        # 5. UserInfo through Authlib's bearer auth; the claims come from the registry.
        resp = await rp.get(meta["userinfo_endpoint"])
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        info = UserInfo(resp.json())
        assert info["sub"] == id_claims["sub"]  # OIDC Core §5.3.2
        assert info.name == "Nguyễn Văn An"
        assert info.birthdate == "1990-05-17"
        assert dt.date.fromisoformat(info.birthdate) == dt.date(1990, 5, 17)
        assert (info.family_name, info.middle_name, info.given_name) == ("Nguyễn", "Văn", "An")
        assert info.phone_number == "+84912345678" and info.phone_number_verified is True
        # Only standard claims, each belonging to a granted scope (Authlib's OIDC Core §5.4 mapping).
        assert info.filter("profile phone") == {k: v for k, v in info.items() if k != "sub"}

        # 6. Refresh with Authlib: the refresh token rotates.
        first = dict(token)
        refreshed = await rp.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != first["refresh_token"]
        assert refreshed["access_token"] != first["access_token"]
        assert rp.token["refresh_token"] == refreshed["refresh_token"]
        assert set(refreshed["scope"].split()) == {"openid", "profile", "phone"}
        # OIDC Core §12.2: same iss, sub, aud, azp and auth_time as the original ID token.
        again = await verify_id_token(rp, meta, refreshed["id_token"], {"access_token": refreshed["access_token"]})
        for claim in ("iss", "sub", "aud", "azp", "auth_time", "acr", "sid"):
            assert again[claim] == id_claims[claim], claim
        resp = await rp.get(meta["userinfo_endpoint"])
        assert resp.status_code == 200 and resp.json()["sub"] == id_claims["sub"], resp.text

        # The old refresh token is spent: invalid_grant (RFC 6749 §5.2) ...
        with pytest.raises(OAuthError) as replay:
            await rp.refresh_token(meta["token_endpoint"], refresh_token=first["refresh_token"])
        assert replay.value.error == "invalid_grant"
        # ... and its replay revoked the family (RFC 9700 §4.14.2): the new tokens die with it.
        with pytest.raises(OAuthError) as family:
            await rp.refresh_token(meta["token_endpoint"], refresh_token=refreshed["refresh_token"])
        assert family.value.error == "invalid_grant"
        assert rp.token["access_token"] == refreshed["access_token"]
        resp = await rp.get(meta["userinfo_endpoint"])
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_token", resp.text
        assert 'error="invalid_token"' in resp.headers.get("www-authenticate", ""), resp.headers

        # 7. RP-Initiated Logout: the browser is sent to end_session_endpoint with id_token_hint.
        logout_state = generate_token(16)
        logout_url = add_params_to_uri(
            meta["end_session_endpoint"],
            [("id_token_hint", first["id_token"]), ("post_logout_redirect_uri", bye), ("state", logout_state)],
        )
        resp = await browser.get(logout_url)
        assert resp.is_redirect, resp.text[:500]
        assert resp.headers["location"] == f"{bye}?state={logout_state}"
        assert "eid_session" not in browser.cookies
        # Signed out: a silent authorization request now needs a login.
        again_url, again_state = rp.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=generate_token(48), nonce=generate_token(20), prompt="none"
        )
        resp = await browser.get(again_url)
        assert resp.is_redirect, resp.text[:500]
        silent = query(resp.headers["location"])
        assert silent["error"] == "login_required" and silent["state"] == again_state


async def test_authlib_accepts_the_metadata_as_rfc8414(server: tuple[LiveServer, str]) -> None:
    srv, _ = server
    async with httpx.AsyncClient(timeout=10.0) as http:
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
            resp = await http.get(srv.url(path))
            assert resp.status_code == 200, resp.text
            AuthorizationServerMetadata(resp.json()).validate()
