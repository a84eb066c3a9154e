"""Issuing agencies: who may write, idempotent writes, the document lifecycle, audit."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.core.privacy import mask_id_number
from tests.documents.support import (
    agency,
    bearer,
    guardian_with_child,
    health_number,
    issue,
    licence,
    licence_number,
    problem,
    signed_in,
)
from tests.support import Harness


async def docs_numbered(env: Harness, number: str) -> int:
    return await env.count("documents", "number = :n", n=number)


async def test_an_agency_issues_a_licence_the_citizen_sees_it(env: Harness) -> None:
    client_id, token = await agency(env, ["driving_licence"])
    c, session = await signed_in(env)
    body = licence(c["id_number"], category="A1")
    r = await issue(env, token, body)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["type"], doc["number"], doc["holder_id_number"], doc["category"]) == (
        "driving_licence", body["number"], c["id_number"], "A1",
    )  # fmt: skip
    assert (doc["status"], doc["effective_status"], doc["issuer_client_id"]) == ("valid", "valid", client_id)
    assert "idempotent-replayed" not in r.headers

    mine = await env.client.get("/me/documents", headers=bearer(session))
    assert mine.status_code == 200
    [seen] = mine.json()
    assert (seen["id"], seen["status"], seen["issuer"]) == (
        doc["id"], "valid", {"client_id": client_id, "name": "Cục Cảnh sát giao thông"},
    )  # fmt: skip
    assert await env.count("audit_events", "action = 'document.create' AND actor_id = :c", c=client_id) == 1


async def test_same_key_same_body_replays_and_writes_once(env: Harness) -> None:
    _, token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    body = licence(c["id_number"])
    key = str(uuid.uuid4())
    first = await issue(env, token, body, key)
    # The same JSON with another key order and spacing is the same request.
    again = await env.client.post(
        "/documents",
        content=("{ " + ", ".join(f'"{k}": "{body[k]}"' for k in reversed(list(body))) + " }").encode(),
        headers={**bearer(token), "Idempotency-Key": f'"{key}"', "content-type": "application/json"},
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await docs_numbered(env, body["number"]) == 1
    assert (
        await env.count("audit_events", "action = 'document.create' AND target = :t", t=mask_id_number(c["id_number"]))
        == 1
    )


async def test_same_key_different_body_is_refused_and_writes_nothing(env: Harness) -> None:
    _, token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    key = str(uuid.uuid4())
    assert (await issue(env, token, licence(c["id_number"]), key)).status_code == 201
    other = licence(c["id_number"])
    r = await issue(env, token, other, key)
    problem(r, 422, "idempotency-key-reused")
    assert await docs_numbered(env, other["number"]) == 0


async def test_keys_are_scoped_per_client(env: Harness) -> None:
    _, token_a = await agency(env, ["driving_licence"])
    _, token_b = await agency(env, ["driving_licence"])
    c = await env.citizen()
    key = "shared-key-0001"
    a = await issue(env, token_a, licence(c["id_number"]), key)
    b = await issue(env, token_b, licence(c["id_number"]), key)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_concurrent_retries_with_one_key_write_once(env: Harness) -> None:
    _, token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    body = licence(c["id_number"])
    key = str(uuid.uuid4())
    results = await asyncio.gather(*(issue(env, token, body, key) for _ in range(3)))
    assert [r.status_code for r in results] == [201, 201, 201], [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert await docs_numbered(env, body["number"]) == 1


@pytest.mark.parametrize(
    ("key", "slug"),
    [(None, "idempotency-key-missing"), ("", "idempotency-key-missing"), ("x" * 256, "idempotency-key-invalid"),
     ("has space", "idempotency-key-invalid"), ('"', "idempotency-key-invalid")],
)  # fmt: skip
async def test_create_needs_a_well_formed_key(env: Harness, key: str | None, slug: str) -> None:
    _, token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    body = licence(c["id_number"])
    headers = bearer(token) | ({"Idempotency-Key": key} if key is not None else {})
    r = await env.client.post("/documents", json=body, headers=headers)
    problem(r, 400, slug)
    assert await docs_numbered(env, body["number"]) == 0


async def test_callers_that_may_not_issue(env: Harness) -> None:
    c, session = await signed_in(env)
    body = licence(c["id_number"])
    # No token, a citizen's session, a client without the scope, a suspended agency.
    problem(await env.client.post("/documents", json=body, headers={"Idempotency-Key": "k1"}), 401, "unauthenticated")
    problem(await issue(env, session, body), 401, "unauthenticated")
    _, verify_only = await agency(env, [], scopes=["verify"])
    problem(await issue(env, verify_only, body), 403, "forbidden")
    suspended_id, suspended = await agency(env, ["driving_licence"])
    r = await env.client.post(
        f"/admin/clients/{suspended_id}/status", json={"status": "suspended"}, headers=env.staff()
    )
    assert r.status_code == 200
    problem(await issue(env, suspended, body), 401, "unauthenticated")
    assert await docs_numbered(env, body["number"]) == 0


async def test_an_agency_issues_only_its_types_and_the_refusal_is_audited(env: Harness) -> None:
    client_id, token = await agency(env, ["health_insurance"])
    c = await env.citizen()
    body = licence(c["id_number"])
    r = await issue(env, token, body)
    problem(r, 403, "document-type-not-allowed")
    assert r.json()["type"] == "urn:eid:problem:document-type-not-allowed"
    assert await docs_numbered(env, body["number"]) == 0
    assert (
        await env.count(
            "audit_events", "action = 'document.create' AND outcome = 'type_not_allowed' AND actor_id = :c", c=client_id
        )
        == 1
    )
    granted = await env.client.get(f"/admin/clients/{client_id}/document-types", headers=env.staff())
    assert granted.json() == {"client_id": client_id, "types": ["health_insurance"]}


@pytest.mark.parametrize(
    ("over", "status", "slug"),
    [
        ({"number": "12345"}, 422, "validation"),
        ({"category": None}, 422, "validation"),
        ({"category": "Z9"}, 422, "validation"),
        ({"expires_on": "2020-01-01"}, 422, "validation"),
        ({"holder_id_number": "0010901234"}, 422, "validation"),
        ({"issued_on": "2999-01-01", "expires_on": None}, 422, "document-invalid"),
        ({"extra": 1}, 422, "validation"),
    ],
)
async def test_bad_documents_are_refused(env: Harness, over: dict[str, object], status: int, slug: str) -> None:
    _, token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    body = licence(c["id_number"], **over)
    problem(await issue(env, token, body), status, slug)
    assert await env.count("documents", "holder_id_number = :h", h=c["id_number"]) == 0


async def test_the_holder_must_be_in_the_registry_and_numbers_are_unique(env: Harness) -> None:
    _, token = await agency(env, ["driving_licence", "health_insurance"])
    body = licence("001099999998")
    problem(await issue(env, token, body), 422, "document-holder-unknown")
    assert await docs_numbered(env, body["number"]) == 0
    c = await env.citizen()
    body = licence(c["id_number"])
    assert (await issue(env, token, body)).status_code == 201
    other = await env.citizen()
    problem(await issue(env, token, {**body, "holder_id_number": other["id_number"]}), 409, "document-exists")
    assert await docs_numbered(env, body["number"]) == 1
    # Health insurance carries no category; the number format is checked per type.
    bad = {
        "type": "health_insurance",
        "number": "DN47979141234",
        "holder_id_number": c["id_number"],
        "issued_on": "2025-01-01",
    }
    problem(await issue(env, token, bad), 422, "validation")
    ok = {**bad, "number": health_number().lower()}  # numbers are stored upper-case
    r = await issue(env, token, ok)
    assert r.status_code == 201, r.text
    assert (r.json()["number"], r.json()["category"]) == (ok["number"].upper(), None)


async def test_issuing_confirms_the_citizens_declaration(env: Harness) -> None:
    number = licence_number()
    parent, _, _, _ = await guardian_with_child(env, documents=[{"type": "driving_licence", "number": number}])
    assert await env.count("declared_documents", "number = :n AND status = 'declared'", n=number) == 1
    _, token = await agency(env, ["driving_licence"])
    assert (await issue(env, token, licence(parent["id_number"], number=number))).status_code == 201
    assert await env.count("declared_documents", "number = :n AND status = 'confirmed'", n=number) == 1


async def test_lifecycle_suspend_reinstate_revoke(env: Harness) -> None:
    client_id, token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    doc = (await issue(env, token, licence(c["id_number"]))).json()
    url = f"/documents/{doc['id']}"
    h = bearer(token)

    key = str(uuid.uuid4())
    s1 = await env.client.post(f"{url}/suspend", json={"reason": "điểm trừ hết"}, headers={**h, "Idempotency-Key": key})
    assert (s1.status_code, s1.json()["status"], s1.json()["status_reason"]) == (200, "suspended", "điểm trừ hết")
    # A retry with the key is answered again; without it, it is a second suspension: refused.
    s2 = await env.client.post(f"{url}/suspend", json={"reason": "điểm trừ hết"}, headers={**h, "Idempotency-Key": key})
    assert (s2.status_code, s2.headers["idempotent-replayed"], s2.json()) == (200, "true", s1.json())
    problem(await env.client.post(f"{url}/suspend", json={"reason": "again"}, headers=h), 409, "document-state")
    problem(await env.client.post(f"{url}/suspend", json={}, headers=h), 422, "validation")

    r = await env.client.post(f"{url}/reinstate", json={}, headers=h)
    assert (r.status_code, r.json()["status"]) == (200, "valid")
    problem(await env.client.post(f"{url}/reinstate", json={}, headers=h), 409, "document-state")

    r = await env.client.patch(url, json={"expires_on": "2040-01-01", "category": "C"}, headers=h)
    assert (r.status_code, r.json()["expires_on"], r.json()["category"]) == (200, "2040-01-01", "C")
    problem(await env.client.patch(url, json={}, headers=h), 422, "validation")
    problem(await env.client.patch(url, json={"category": "Q"}, headers=h), 422, "document-invalid")
    problem(await env.client.patch(url, json={"expires_on": "2000-01-01"}, headers=h), 422, "document-invalid")
    problem(await env.client.patch(url, json={"number": "1"}, headers=h), 422, "validation")

    r = await env.client.post(f"{url}/revoke", json={"reason": "thu hồi"}, headers=h)
    assert (r.status_code, r.json()["status"]) == (200, "revoked")
    for path, body in (
        (f"{url}/reinstate", {}),
        (f"{url}/suspend", {"reason": "x"}),
        (f"{url}/revoke", {"reason": "x"}),
    ):
        problem(await env.client.post(path, json=body, headers=h), 409, "document-state")
    problem(await env.client.patch(url, json={"category": "B"}, headers=h), 409, "document-state")

    actions = {"document.create", "document.suspend", "document.reinstate", "document.update", "document.revoke"}
    for action in actions:
        assert (
            await env.count("audit_events", "action = :a AND actor_id = :c AND outcome = 'ok'", a=action, c=client_id)
            == 1
        )


async def test_other_agencies_cannot_touch_a_document(env: Harness) -> None:
    _, token = await agency(env, ["driving_licence"])
    _, rival = await agency(env, ["driving_licence"])
    c = await env.citizen()
    doc = (await issue(env, token, licence(c["id_number"]))).json()
    for path in ("suspend", "revoke"):
        problem(
            await env.client.post(f"/documents/{doc['id']}/{path}", json={"reason": "x"}, headers=bearer(rival)),
            404,
            "document-not-found",
        )
    problem(
        await env.client.patch(f"/documents/{uuid.uuid4()}", json={"category": "B"}, headers=bearer(token)),
        404,
        "document-not-found",
    )
    r = await env.client.get("/me/documents", headers=bearer((await signed_in(env))[1]))
    assert r.json() == []
    assert await env.count("documents", "holder_id_number = :h AND status = 'valid'", h=c["id_number"]) == 1


async def test_admin_grants_types_only_to_agencies(env: Harness) -> None:
    bank_id, _ = await agency(env, [], scopes=["verify"])
    r = await env.client.put(
        f"/admin/clients/{bank_id}/document-types", json={"types": ["driving_licence"]}, headers=env.staff()
    )
    problem(r, 422, "not-an-agency")
    problem(
        await env.client.put("/admin/clients/nobody/document-types", json={"types": []}, headers=env.staff()),
        404,
        "client-not-found",
    )
    problem(
        await env.client.put(
            f"/admin/clients/{bank_id}/document-types", json={"types": ["passport"]}, headers=env.staff()
        ),
        422,
        "validation",
    )
    problem(await env.client.get(f"/admin/clients/{bank_id}/document-types"), 401, "unauthenticated")


async def test_concurrent_retries_of_a_transition_answer_alike(env: Harness) -> None:
    _, token = await agency(env, ["driving_licence"])
    c = await env.citizen()
    doc = (await issue(env, token, licence(c["id_number"]))).json()
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    results = await asyncio.gather(
        *(env.client.post(f"/documents/{doc['id']}/suspend", json={"reason": "x"}, headers=headers) for _ in range(3))
    )
    assert [r.status_code for r in results] == [200, 200, 200], [r.text for r in results]
    assert len({r.text for r in results}) == 1
    assert (
        await env.count("audit_events", "action = 'document.suspend' AND target = :t", t=mask_id_number(c["id_number"]))
        == 1
    )
