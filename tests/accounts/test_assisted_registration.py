"""Level-2 officer-assisted registration, dependents under 14, and the account lifecycle."""

import asyncio
import datetime as dt
from typing import Any

from app.registry.idnumber import Sex
from tests.support import Harness, new_phone

CARD = {
    "ethnicity": "Kinh",
    "religion": "Không",
    "hometown": "Nam Định",
    "permanent_address": "1 Tràng Tiền, Hoàn Kiếm, Hà Nội",
    "relatives": [{"relation": "mother", "full_name": "Phạm Thị Lan"}],
    "biometrics": {
        "face_template_id": "face:9f8e7d6c5b4a",
        "fingerprint_template_ids": ["fp:0001aa11", "fp:0002bb22"],
        "enrolled_at": "2026-11-30T03:00:00Z",
        "enrollment_station": "CA-HN-HK-01",
    },
}


def card_for(c: dict[str, Any]) -> dict[str, Any]:
    return {**CARD, "full_name": c["full_name"], "date_of_birth": c["date_of_birth"]}


async def submit(env: Harness, c: dict[str, Any], **over: Any) -> Any:
    body = {"id_number": c["id_number"], "phone": c["phone"] or new_phone(), "email": "citizen@example.vn"}
    body.update(over)
    return await env.client.post("/officer-registrations", json=body, headers=env.staff())


async def approve_all(env: Harness, reg_id: str, c: dict[str, Any]) -> Any:
    r = await env.client.put(f"/officer-registrations/{reg_id}/card-application", json=card_for(c), headers=env.staff())
    assert r.status_code == 200, r.text
    return await env.client.post(f"/officer-registrations/{reg_id}/approve", json={}, headers=env.staff())


async def test_three_steps_create_a_level_2_account_with_dependents(env: Harness) -> None:
    parent = await env.citizen(full_name="Trần Văn Bố", age=40)
    child = await env.citizen(full_name="Trần Bé Con", age=8, phone=None, guardians=[parent["id_number"]])
    resp = await submit(
        env, parent, dependents=[child["id_number"]],
        documents=[{"type": "driving_licence", "number": "012345678901"}, {"type": "health_insurance", "number": "DN4797914123456"}],
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    reg = resp.json()
    assert reg["status"] == "submitted"
    assert {d["type"] for d in reg["documents"]} == {"driving_licence", "health_insurance"}

    # Approving before the card application is attached is out of order.
    early = await env.client.post(f"/officer-registrations/{reg['id']}/approve", json={}, headers=env.staff())
    assert early.status_code == 409
    assert early.json()["type"] == "urn:eid:problem:registration-step"

    r = await env.client.put(
        f"/officer-registrations/{reg['id']}/card-application", json=card_for(parent), headers=env.staff()
    )
    assert r.status_code == 200
    assert r.json()["status"] == "card_attached"
    assert r.json()["card_application"]["biometrics"]["face_template_id"] == "face:9f8e7d6c5b4a"
    # Attaching again is a repeated step.
    again = await env.client.put(
        f"/officer-registrations/{reg['id']}/card-application", json=card_for(parent), headers=env.staff()
    )
    assert again.status_code == 409

    done = await env.client.post(
        f"/officer-registrations/{reg['id']}/approve", json={"reason": "documents checked"}, headers=env.staff()
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "approved"
    twice = await env.client.post(f"/officer-registrations/{reg['id']}/approve", json={}, headers=env.staff())
    assert twice.status_code == 409

    acct = (await env.client.get(f"/accounts/by-id-number/{parent['id_number']}", headers=env.staff())).json()
    assert (acct["level"], acct["status"], acct["must_change_password"], acct["email"]) == (
        2,
        "active",
        True,
        "citizen@example.vn",
    )
    kid = (await env.client.get(f"/accounts/by-id-number/{child['id_number']}", headers=env.staff())).json()
    assert kid["guardian_account_id"] == acct["id"]

    # The initial password arrives by SMS and must be changed; then the guardian sees the child.
    initial = await env.last_password(parent["phone"])
    new = "parent passphrase long enough"
    r = await env.client.post(
        "/accounts/password", json={"id_number": parent["id_number"], "current_password": initial, "new_password": new}
    )
    assert r.status_code == 204
    token = (
        await env.client.post("/accounts/sessions", json={"id_number": parent["id_number"], "password": new})
    ).json()["access_token"]
    deps = await env.client.get("/me/dependents", headers={"Authorization": f"Bearer {token}"})
    assert [d["id_number"] for d in deps.json()] == [child["id_number"]]
    # A dependent's account has no password of its own.
    assert (
        await env.client.post("/accounts/sessions", json={"id_number": child["id_number"], "password": new})
    ).status_code == 401


async def test_level_1_account_is_upgraded_and_keeps_its_password(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    reg = (await submit(env, c)).json()
    r = await approve_all(env, reg["id"], c)
    assert r.status_code == 200
    acct = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    assert acct["level"] == 2
    assert acct["must_change_password"] is False
    assert (
        await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    ).status_code == 201


async def test_dependents_must_be_registry_wards_under_14(env: Harness) -> None:
    parent = await env.citizen(age=40)
    stranger_child = await env.citizen(age=6, phone=None)
    teen = await env.citizen(age=15, guardians=[parent["id_number"]])
    resp = await submit(env, parent, dependents=[stranger_child["id_number"], teen["id_number"]])
    assert resp.status_code == 422
    problems = {p["id_number"]: p["problem"] for p in resp.json()["dependents"]}
    assert problems == {
        stranger_child["id_number"]: "not a registry ward of this citizen",
        teen["id_number"]: "is 14 or older: registers on their own",
    }
    assert await env.count("officer_registrations", "id_number = :n", n=parent["id_number"]) == 0


async def test_one_open_registration_per_citizen_even_under_a_race(env: Harness) -> None:
    c = await env.citizen()
    results = await asyncio.gather(submit(env, c), submit(env, c), submit(env, c))
    assert sorted(r.status_code for r in results) == [201, 409, 409]
    assert await env.count("officer_registrations", "id_number = :n", n=c["id_number"]) == 1


async def test_reject_with_reason_then_a_new_request_is_allowed(env: Harness) -> None:
    c = await env.citizen()
    reg = (await submit(env, c)).json()
    no_reason = await env.client.post(f"/officer-registrations/{reg['id']}/reject", json={}, headers=env.staff())
    assert no_reason.status_code == 422
    r = await env.client.post(
        f"/officer-registrations/{reg['id']}/reject", json={"reason": "photo unclear"}, headers=env.staff()
    )
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["reason"]) == ("rejected", "photo unclear")
    assert (
        await env.client.post(f"/officer-registrations/{reg['id']}/approve", json={}, headers=env.staff())
    ).status_code == 409
    assert (await submit(env, c)).status_code == 201
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 0


async def test_card_application_must_match_the_registry_and_carry_references_only(env: Harness) -> None:
    c = await env.citizen()
    reg = (await submit(env, c)).json()
    wrong = {**card_for(c), "full_name": "Người Khác"}
    r = await env.client.put(f"/officer-registrations/{reg['id']}/card-application", json=wrong, headers=env.staff())
    assert r.status_code == 422
    assert r.json()["fields"] == ["full_name"]
    raw = {**card_for(c), "biometrics": {**CARD["biometrics"], "face_image": "iVBORw0KGgo..."}}
    r = await env.client.put(f"/officer-registrations/{reg['id']}/card-application", json=raw, headers=env.staff())
    assert r.status_code == 422
    blob = {**card_for(c), "biometrics": {**CARD["biometrics"], "face_template_id": "A" * 4000}}
    r = await env.client.put(f"/officer-registrations/{reg['id']}/card-application", json=blob, headers=env.staff())
    assert r.status_code == 422
    state = (await env.client.get(f"/officer-registrations/{reg['id']}", headers=env.staff())).json()
    assert (state["status"], state["card_application"]) == ("submitted", None)


async def test_minor_cannot_register_themselves_and_at_14_needs_a_linked_phone(env: Harness) -> None:
    today = env.ctx.clock.today()
    parent = await env.citizen(age=45)
    dob = today.replace(year=today.year - 14) + dt.timedelta(days=3)  # turns 14 in 3 days
    child = await env.citizen(date_of_birth=dob, phone=None, guardians=[parent["id_number"]], sex=Sex.female)
    reg = (await submit(env, parent, dependents=[child["id_number"]])).json()
    assert (await approve_all(env, reg["id"], parent)).status_code == 200

    child_phone = new_phone()
    body = {
        "id_number": child["id_number"],
        "full_name": child["full_name"],
        "date_of_birth": child["date_of_birth"],
        "phone": child_phone,
    }
    await env.client.post("/accounts/registrations", json=body)
    assert await env.outbox(child_phone) == []  # 13: no code sent
    env.ctx.clock.advance(dt.timedelta(days=3))
    await env.relogin()
    # 14 now, but a phone nothing links to the citizen gets no code (tests/accounts/test_account_security.py
    # has the claim with the guardian's approval).
    resp = await env.client.post("/accounts/registrations", json=body)
    assert resp.status_code == 202
    assert await env.outbox(child_phone) == []
    kid = (await env.client.get(f"/accounts/by-id-number/{child['id_number']}", headers=env.staff())).json()
    assert kid["guardian_account_id"] is not None
    # The guardian link stays visible in the registry.
    rec = (await env.client.get(f"/registry/citizens/{child['id_number']}", headers=env.staff())).json()
    assert rec["guardians"] == [{"id_number": parent["id_number"], "relation": "parent"}]


async def test_lock_unlock_revoke_lifecycle(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    acct = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    base = f"/accounts/{acct['id']}"
    assert (await env.client.post(f"{base}/lock", json={}, headers=env.staff())).status_code == 422  # reason required
    r = await env.client.post(f"{base}/lock", json={"reason": "reported stolen phone"}, headers=env.staff())
    assert r.json()["status"] == "locked"
    r = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    assert (r.status_code, r.json()["type"]) == (403, "urn:eid:problem:account-locked")
    r = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": "not the password"})
    assert (r.status_code, r.json()["type"]) == (401, "urn:eid:problem:login-failed")
    assert (await env.client.post(f"{base}/lock", json={"reason": "again"}, headers=env.staff())).status_code == 409
    r = await env.client.post(f"{base}/unlock", json={"reason": "citizen came in person"}, headers=env.staff())
    assert r.json()["status"] == "active"
    assert (
        await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    ).status_code == 201
    r = await env.client.post(f"{base}/revoke", json={"reason": "deceased"}, headers=env.staff())
    assert r.json()["status"] == "revoked"
    for action in ("lock", "unlock", "revoke"):
        r = await env.client.post(f"{base}/{action}", json={"reason": "x"}, headers=env.staff())
        assert r.status_code == 409
        assert r.json()["current_status"] == "revoked"
    r = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    assert (r.status_code, r.json()["type"]) == (403, "urn:eid:problem:account-locked")
    assert (await env.notices(c["phone"]))[:3] == ["account_revoked", "account_unlocked", "account_locked"]
    # Every change is audited with actor and reason.
    rows = (await env.client.get("/audit/events", params={"id_number": c["id_number"]}, headers=env.staff())).json()[
        "items"
    ]
    changes = [
        (e["action"], e["actor_id"], (e["detail"] or {}).get("reason"))
        for e in rows
        if e["action"] in ("account.lock", "account.unlock", "account.revoke")
    ]
    assert changes == [
        ("account.revoke", "admin.test", "deceased"),
        ("account.unlock", "admin.test", "citizen came in person"),
        ("account.lock", "admin.test", "reported stolen phone"),
    ]
    # A revoked account cannot be registered again by the citizen (re-issue is in person only:
    # tests/accounts/test_account_security.py).
    codes_before = await env.count("sms_outbox", "phone = :p AND purpose = 'registration_otp'", p=c["phone"])
    body = {k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}
    assert (await env.client.post("/accounts/registrations", json=body)).status_code == 202
    assert await env.count("sms_outbox", "phone = :p AND purpose = 'registration_otp'", p=c["phone"]) == codes_before
