"""The registry's officer API: scope-protected, validating, audited."""

import datetime as dt

from app.registry.idnumber import Sex, make_id_number
from tests.support import Harness


async def officer_token(env: Harness, username: str, scopes: list[str]) -> str:
    from app.admin.service import create_staff

    async with env.ctx.sessionmaker() as session:
        await create_staff(
            session, env.ctx, username=username, display_name=username, password="officer password long", scopes=scopes
        )
    resp = await env.client.post("/staff/token", json={"username": username, "password": "officer password long"})
    assert resp.status_code == 200
    return resp.json()["access_token"]


async def test_create_read_and_correct_a_record(env: Harness) -> None:
    c = await env.citizen(full_name="Hoàng Thị Thu", sex=Sex.female, age=33)
    r = await env.client.get(f"/registry/citizens/{c['id_number']}", headers=env.staff())
    assert r.status_code == 200
    rec = r.json()
    assert (rec["full_name"], rec["sex"], rec["date_of_birth"], rec["phone"]) == (
        "Hoàng Thị Thu",
        "female",
        c["date_of_birth"],
        c["phone"],
    )
    assert rec["birth_province"] == c["id_number"][:3]
    corrected = {**c, "residence": "99 Nguyễn Huệ, Quận 1, TP. Hồ Chí Minh"}
    r = await env.client.put("/registry/citizens", json=corrected, headers=env.staff())
    assert r.status_code == 200
    assert r.json()["residence"] == "99 Nguyễn Huệ, Quận 1, TP. Hồ Chí Minh"


async def test_invalid_id_numbers_say_which_rule_failed_to_officers(env: Harness) -> None:
    dob = dt.date(1995, 4, 4)
    body = {"id_number": make_id_number("001", Sex.male, dob, 424242), "full_name": "Đỗ Văn Sai", "date_of_birth": dob.isoformat(),
            "sex": "female", "residence": "Hà Nội"}  # fmt: skip
    before = await env.count("citizens")
    r = await env.client.put("/registry/citizens", json=body, headers=env.staff())
    assert r.status_code == 422
    assert r.json()["type"] == "urn:eid:problem:invalid-id-number"
    assert [x["rule"] for x in r.json()["rules"]] == ["century-sex"]
    r = await env.client.put(
        "/registry/citizens", json={**body, "sex": "male", "date_of_birth": "1996-04-04"}, headers=env.staff()
    )
    assert [x["rule"] for x in r.json()["rules"]] == ["birth-year"]
    r = await env.client.put(
        "/registry/citizens",
        json={**body, "sex": "male", "id_number": "003" + body["id_number"][3:]},
        headers=env.staff(),
    )
    assert [x["rule"] for x in r.json()["rules"]] == ["province"]
    assert await env.count("citizens") == before


async def test_scopes_are_enforced(env: Harness) -> None:
    c = await env.citizen()
    reader = await officer_token(env, "reader.only", ["officer:registry"])
    r = await env.client.get(f"/registry/citizens/{c['id_number']}", headers=env.staff(reader))
    assert r.status_code == 200
    r = await env.client.put("/registry/citizens", json=c, headers=env.staff(reader))
    assert r.status_code == 403
    assert r.json()["required_scope"] == "admin:registry"
    r = await env.client.get("/audit/events", headers=env.staff(reader))
    assert r.status_code == 403
    r = await env.client.get(f"/registry/citizens/{c['id_number']}")
    assert r.status_code == 401
    r = await env.client.get(f"/registry/citizens/{c['id_number']}", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


async def test_unknown_record_is_404_for_officers_and_reads_are_audited(env: Harness) -> None:
    c = await env.citizen()
    missing = c["id_number"][:-6] + "000000"
    r = await env.client.get(f"/registry/citizens/{missing}", headers=env.staff())
    assert (r.status_code, r.json()["type"]) == (404, "urn:eid:problem:citizen-not-found")
    await env.client.get(f"/registry/citizens/{c['id_number']}", headers=env.staff())
    events = (
        await env.client.get(
            "/audit/events", params={"id_number": c["id_number"], "action": "registry.read"}, headers=env.staff()
        )
    ).json()["items"]
    assert events and events[0]["actor_id"] == "admin.test"
    assert events[0]["target"] == c["id_number"][:3] + "*******" + c["id_number"][-2:]


async def test_staff_sign_in_lockout_and_expiry(env: Harness) -> None:
    await officer_token(env, "locky", ["officer:registry"])
    for _ in range(5):
        r = await env.client.post("/staff/token", json={"username": "locky", "password": "wrong password"})
        assert r.status_code == 401
    r = await env.client.post("/staff/token", json={"username": "locky", "password": "officer password long"})
    assert r.status_code == 401
    r = await env.client.post("/staff/token", json={"username": "nobody", "password": "officer password long"})
    assert r.status_code == 401
    env.ctx.clock.advance(dt.timedelta(minutes=16))
    r = await env.client.post("/staff/token", json={"username": "locky", "password": "officer password long"})
    assert r.status_code == 200
    token = r.json()["access_token"]
    env.ctx.clock.advance(dt.timedelta(hours=9))
    assert (await env.client.get("/audit/events", headers=env.staff(token))).status_code == 401


async def test_a_guardian_must_be_in_the_registry_and_the_record_keeps_the_importers_rules(env: Harness) -> None:
    """One validator for a record (app/registry/rules.py): the API refuses what the importer refuses."""
    parent = await env.citizen(age=40)
    child = await env.citizen(age=8, guardians=[parent["id_number"]])
    assert (await env.client.get(f"/registry/citizens/{child['id_number']}", headers=env.staff())).status_code == 200
    nobody = parent["id_number"][:-6] + "999990"
    body = {**child, "guardians": [{"id_number": nobody, "relation": "parent"}]}
    r = await env.client.put("/registry/citizens", json=body, headers=env.staff())
    assert (r.status_code, r.json()["type"]) == (422, "urn:eid:problem:validation")
    assert nobody not in r.text  # masked
    got = (await env.client.get(f"/registry/citizens/{child['id_number']}", headers=env.staff())).json()
    assert got["guardians"] == [{"id_number": parent["id_number"], "relation": "parent"}]  # nothing changed
    # Born after today (Vietnam's date), though the ID number's digits fit: refused as the importer refuses it.
    today = env.ctx.clock.today()
    future = {**child, "date_of_birth": (today + dt.timedelta(days=1)).isoformat(), "guardians": []}
    r = await env.client.put("/registry/citizens", json=future, headers=env.staff())
    assert r.status_code == 422
