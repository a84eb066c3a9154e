"""Classes of bad input answer 4xx, never 500, whatever the route (issue 14).

Each class is tested at the layer that refuses it for every route, and through the routes
where it was found:
- NUL characters: the query string and path (app/core/http.py NoNul), JSON bodies
  (app/core/schemas.py StrictModel), forms (the form readers), credentials decoded from a
  header or a JWT, and, last, any statement parameter (app/core/db.py UnstorableText).
- Integers beyond the columns' 64 bits (the OpenAPI bounds, tests/test_input_bounds.py).
- Values of the wrong JSON type: a date is a ``YYYY-MM-DD`` string and nothing else.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import text

from app.core.db import UnstorableText
from app.core.schemas import MAX_BIGINT, StrictModel
from app.main import create_app
from app.registry.idnumber import Sex
from tests.oidc.flow import make_client
from tests.support import Harness
from tests.verify.test_verify_and_ekyc import bank, citizen_session

PORTAL = {
    "name": "Cổng thử",
    "kind": "portal",
    "redirect_uris": ["https://portal.example/cb"],
    "grant_types": ["authorization_code"],
    "scopes": ["openid"],
}


def is_problem(resp: Any, status: int) -> bool:
    return resp.status_code == status and resp.headers["content-type"] == "application/problem+json"


# --- NUL characters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/authorize?client_id=a%00b&response_type=code&scope=openid&redirect_uri=https://x",
        "/audit/events?action=a%00b",
        "/me/access-log?recipient=a%00b",
        "/documents/status?type=driving_licence&number=0012%0034567890",
        "/registry/citizens/00109%0001234",
        "/logout?client_id=%00",
    ],
)
async def test_nul_in_a_query_or_path_is_400_for_every_route(env: Harness, path: str) -> None:
    # Whoever asks, and before any credential is looked at: nothing reaches a lookup.
    for headers in ({}, env.staff()):
        resp = await env.client.get(path, headers=headers)
        assert is_problem(resp, 400), (path, resp.status_code, resp.text)
        assert resp.json()["type"] == "urn:eid:problem:bad-request"


async def test_nul_in_json_bodies_is_422_naming_the_field(env: Harness) -> None:
    resp = await env.client.post("/staff/token", json={"username": "admin\u0000.test", "password": "x" * 12})
    assert is_problem(resp, 422), resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["username"]
    resp = await env.client.post(
        "/admin/clients",
        headers=env.staff(),
        json={**PORTAL, "name": "Cổng\u0000 thử"},
    )
    assert is_problem(resp, 422), resp.text
    assert "name" in {e["field"] for e in resp.json()["errors"]}
    # Inside nested values too (a list of strings).
    resp = await env.client.post(
        "/admin/clients",
        headers=env.staff(),
        json={**PORTAL, "redirect_uris": ["https://portal.example/\u0000"]},
    )
    assert is_problem(resp, 422), resp.text
    assert await env.count("oauth_clients", "name = :n", n="Cổng thử") == 0


def test_every_request_body_is_a_strict_model() -> None:
    """Every JSON body the API takes is parsed by a StrictModel, so the NUL and type rules above
    hold for all of them: one route added with a plain BaseModel would escape both."""
    app = create_app()
    doc = app.openapi()
    loose = []
    for route in app.routes:
        body = getattr(getattr(route, "body_field", None), "type_", None)
        if body is not None and isinstance(body, type) and not issubclass(body, StrictModel):
            loose.append((route.path, body.__name__))  # type: ignore[attr-defined]
    assert loose == []
    # The hot routes parse their bodies themselves; the document names those models.
    assert doc["paths"]["/verify/identity"]["post"]["requestBody"]


async def test_nul_in_forms_and_credentials_is_an_oauth_error(env: Harness) -> None:
    client_id, secret = await make_client(
        env, name="Bên thử", kind="bank", grant_types=["client_credentials"], redirect_uris=[],
        post_logout_redirect_uris=[],
    )  # fmt: skip
    # A form field.
    resp = await env.client.post(
        "/token", data={"grant_type": "client_credentials", "scope": "a\x00b"}, auth=(client_id, secret or "")
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request", resp.text
    # A client ID inside Basic credentials (a header, base64: no parser sees the NUL).
    basic = base64.b64encode(b"demo\x00bank:secret").decode()
    for path in ("/token", "/introspect", "/revoke"):
        resp = await env.client.post(
            path, data={"grant_type": "client_credentials", "token": "x"}, headers={"Authorization": f"Basic {basic}"}
        )
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_client", (path, resp.text)
    # A client ID posted in the form.
    resp = await env.client.post("/token", data={"grant_type": "client_credentials", "client_id": "a\x00b"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request", resp.text


async def test_the_database_layer_refuses_a_nul_from_any_path(env: Harness) -> None:
    """The last line: a statement parameter holding a NUL never reaches the database, on either
    backend (SQLite would store it; PostgreSQL refuses it with an error)."""
    async with env.ctx.sessionmaker() as session:
        with pytest.raises(UnstorableText):
            await session.execute(text("SELECT count(*) FROM oauth_clients WHERE client_id = :c"), {"c": "a\x00b"})
        with pytest.raises(UnstorableText):
            await session.execute(
                text("SELECT count(*) FROM oauth_clients WHERE client_id = :c"), {"c": json.dumps("a\x00b")}
            )
        assert (
            await session.execute(text("SELECT count(*) FROM oauth_clients WHERE client_id = :c"), {"c": "ab"})
        ).scalar() == 0


# --- Integers beyond 64 bits ---------------------------------------------------------------------


async def test_integers_past_the_columns_are_422(env: Harness) -> None:
    citizen = await env.citizen()
    mine = await citizen_session(env, citizen, await env.register_level1(citizen))
    for path, headers in (
        (f"/audit/events?before_id={MAX_BIGINT + 1}", env.staff()),
        (f"/me/access-log?before_id={MAX_BIGINT + 1}", mine),
        ("/audit/events?before_id=0", env.staff()),
        (f"/audit/events?before_id={'9' * 400}", env.staff()),
    ):
        resp = await env.client.get(path, headers=headers)
        assert is_problem(resp, 422), (path, resp.text)
    ok = await env.client.get(f"/audit/events?before_id={MAX_BIGINT}", headers=env.staff())
    assert ok.status_code == 200, ok.text


# --- JSON types ----------------------------------------------------------------------------------


async def test_a_date_is_a_date_string_and_nothing_else(env: Harness) -> None:
    _, h = await bank(env)
    c = await env.citizen(sex=Sex.female, age=36)
    born = dt.date.fromisoformat(c["date_of_birth"])
    epoch = int(dt.datetime.combine(born, dt.time(), tzinfo=dt.UTC).timestamp())
    base = {"id_number": c["id_number"], "full_name": c["full_name"]}
    for lax in (epoch, f"{born.isoformat()}T00:00:00", f"{born.isoformat()}T00:00:00Z", born.strftime("%Y%m%d"), True):
        resp = await env.client.post("/verify/identity", headers=h, json={**base, "date_of_birth": lax})
        assert is_problem(resp, 422), (lax, resp.text)
        assert [e["field"] for e in resp.json()["errors"]] == ["date_of_birth"]
    resp = await env.client.post("/verify/identity", headers=h, json={**base, "date_of_birth": born.isoformat()})
    assert resp.status_code == 200 and resp.json()["attributes"]["date_of_birth"]["match"] is True, resp.text


async def test_numbers_and_booleans_are_not_strings(env: Harness) -> None:
    resp = await env.client.post(
        "/admin/clients",
        headers=env.staff(),
        json={**PORTAL, "grant_types": ["authorization_code"], "scopes": ["openid"], "approved": "true"},
    )
    assert is_problem(resp, 422), resp.text
    assert "approved" in {e["field"] for e in resp.json()["errors"]}
