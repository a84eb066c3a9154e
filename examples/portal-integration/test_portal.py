"""The portal's own integration tests, against a real e-ID demo instance (no network)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from portal import create_portal
from starlette.testclient import TestClient

BASE = "http://127.0.0.1:8080"


@pytest.fixture
def portal(eid_server):  # type: ignore[no-untyped-def]
    client = eid_server.client("demo-portal")
    app = create_portal(eid_server.issuer, client.client_id, client.secret, base_url=BASE)
    with TestClient(app, base_url=BASE, follow_redirects=False) as browser:
        yield browser


def come_back(portal: TestClient, url: str) -> httpx.Response:
    """The e-ID pages sent the browser back to the portal: let the portal handle it."""
    parts = urlsplit(url)
    return portal.get(f"{parts.path}?{parts.query}")


def test_sign_in_and_the_form_is_prefilled(portal: TestClient, eid_server) -> None:  # type: ignore[no-untyped-def]
    start = portal.get("/login")
    assert start.status_code in (302, 303) and start.headers["location"].startswith(eid_server.issuer + "/authorize")
    back = eid_server.authorize(start.headers["location"], "an")
    assert come_back(portal, back).headers["location"] == "/form"
    form = portal.get("/form").text
    assert 'value="Nguyễn Văn An"' in form
    assert 'value="1990-05-17"' in form and 'value="+84912345678"' in form
    assert 'value="12 Phố Huế, Hai Bà Trưng, Hà Nội"' in form


def test_level_2_service_refuses_a_level_1_citizen(portal: TestClient, eid_server) -> None:  # type: ignore[no-untyped-def]
    start = portal.get("/level2/login")
    assert "acr_values=urn%3Aeid%3Aloa%3A2" in start.headers["location"]
    refused = come_back(portal, eid_server.authorize(start.headers["location"], "an"))
    assert refused.status_code == 403 and "mức 2" in refused.text


def test_level_2_citizen_gets_in(portal: TestClient, eid_server) -> None:  # type: ignore[no-untyped-def]
    start = portal.get("/level2/login")
    assert come_back(portal, eid_server.authorize(start.headers["location"], "ngoc")).headers["location"] == "/level2"
    assert portal.get("/level2").status_code == 200


def test_logout_goes_through_e_id(portal: TestClient, eid_server) -> None:  # type: ignore[no-untyped-def]
    start = portal.get("/login")
    come_back(portal, eid_server.authorize(start.headers["location"], "an"))
    out = portal.get("/logout")
    assert out.headers["location"].startswith(eid_server.issuer + "/logout?id_token_hint=")
    ended = httpx.get(out.headers["location"])
    assert ended.status_code == 303 and ended.headers["location"] == BASE + "/"
    assert portal.get("/form").headers["location"] == "/login"


def test_bank_verifies_an_identity(eid_server) -> None:  # type: ignore[no-untyped-def]
    token = eid_server.client_credentials("demo-bank", scope="verify")["access_token"]
    answer = httpx.post(
        eid_server.url("/verify/identity"),
        json={"id_number": "079185234567", "full_name": "Trần Thị Bích Ngọc", "date_of_birth": "1985-11-02"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert answer["result"] == "match" and answer["assurance_level"] == 2
    wrong = httpx.post(
        eid_server.url("/verify/identity"),
        json={"id_number": "079185234567", "date_of_birth": "1985-11-03"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert wrong["result"] == "no_match"


def test_expired_session_shows_login_again(eid_login, eid_clock, eid_server) -> None:  # type: ignore[no-untyped-def]
    tokens = eid_login("demo-portal", "an")
    eid_clock.advance(601)  # past the access token's 10 minutes
    r = httpx.get(eid_server.url("/userinfo"), headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
