"""Level-1 self-registration: registry match, OTP by SMS, initial password, no enumeration."""

import asyncio
import datetime as dt

from app.accounts.router import REGISTRATION_SENT as GENERIC
from app.registry.idnumber import Sex
from tests.support import Harness, new_phone, years_ago


def start_body(c: dict, **over: object) -> dict:
    body = {k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}
    body.update(over)
    return body


async def test_full_registration_flow(env: Harness) -> None:
    c = await env.citizen(full_name="Trần Thị Bích Ngọc", sex=Sex.female, age=25)
    # Name matching ignores case, NFC form and extra spaces; the phone may be national form.
    resp = await env.client.post(
        "/accounts/registrations",
        json=start_body(c, full_name="  trần  THỊ bích ngọc ", phone="0" + c["phone"][3:]),
    )
    assert resp.status_code == 202
    assert resp.json()["message"] == GENERIC
    code = await env.last_otp(c["phone"])
    resp = await env.client.post(f"/accounts/registrations/{resp.json()['id']}/verify", json={"code": code})
    assert resp.status_code == 200, resp.text
    assert resp.json()["level"] == 1

    initial = await env.last_password(c["phone"])
    # First sign-in with the SMS password is refused until it is changed.
    resp = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": initial})
    assert resp.status_code == 403
    assert resp.json()["type"] == "urn:eid:problem:password-change-required"

    new = "my own long passphrase 2026"
    resp = await env.client.post(
        "/accounts/password", json={"id_number": c["id_number"], "current_password": initial, "new_password": new}
    )
    assert resp.status_code == 204
    resp = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": new})
    assert resp.status_code == 201
    token = resp.json()["access_token"]
    me = await env.client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["id_number"] == c["id_number"]
    assert me.json()["level"] == 1
    assert me.json()["phone"] == c["phone"]
    # The old password no longer works.
    resp = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": initial})
    assert resp.status_code == 401


async def test_no_enumeration_all_refusals_look_the_same(env: Harness) -> None:
    registered = await env.citizen()
    await env.register_level1(registered)
    mismatch = await env.citizen(full_name="Lê Văn Đúng")
    minor = await env.citizen(age=13)
    other_phone = await env.citizen()

    cases = {
        "unknown": {**start_body(mismatch), "id_number": mismatch["id_number"][:-6] + "999999"},
        "mismatch_name": start_body(mismatch, full_name="Lê Văn Sai"),
        "mismatch_dob": start_body(
            mismatch,
            date_of_birth=(dt.date.fromisoformat(mismatch["date_of_birth"]) - dt.timedelta(days=1)).isoformat(),
        ),
        "under_14": start_body(minor),
        "already_registered": start_body(registered),
        "phone_not_in_registry": start_body(other_phone, phone=new_phone()),
    }
    before = await env.count("sms_outbox")
    answers = {}
    for name, body in cases.items():
        resp = await env.client.post("/accounts/registrations", json=body)
        answers[name] = (resp.status_code, tuple(sorted(resp.json())), resp.json()["message"])
    assert set(answers.values()) == {(202, ("expires_at", "id", "message"), GENERIC)}, answers
    assert await env.count("sms_outbox") == before  # no SMS for any of them
    # The real reasons are in the audit trail.
    reasons = await env.count(
        "audit_events", "action = 'account.registration.start' AND outcome = 'refused' AND at >= :t",
        t=env.ctx.clock.now() - dt.timedelta(minutes=1),
    )  # fmt: skip
    assert reasons >= len(cases)


async def test_refused_registration_cannot_be_verified(env: Harness) -> None:
    c = await env.citizen()
    resp = await env.client.post("/accounts/registrations", json=start_body(c, full_name="Someone Else"))
    for code in ("000000", "123456"):
        r = await env.client.post(f"/accounts/registrations/{resp.json()['id']}/verify", json={"code": code})
        assert r.status_code == 400
        assert r.json()["type"] == "urn:eid:problem:otp-invalid"
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 0


async def test_wrong_code_five_tries_then_dead(env: Harness) -> None:
    c = await env.citizen()
    resp = await env.client.post("/accounts/registrations", json=start_body(c))
    rid = resp.json()["id"]
    code = await env.last_otp(c["phone"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        r = await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": wrong})
        assert r.status_code == 400
    # The right code no longer works after 5 wrong tries.
    r = await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": code})
    assert r.status_code == 400
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 0


async def test_code_expires_after_five_minutes(env: Harness) -> None:
    c = await env.citizen()
    resp = await env.client.post("/accounts/registrations", json=start_body(c))
    code = await env.last_otp(c["phone"])
    env.ctx.clock.advance(dt.timedelta(minutes=5, seconds=1))
    r = await env.client.post(f"/accounts/registrations/{resp.json()['id']}/verify", json={"code": code})
    assert r.status_code == 400
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 0


async def test_code_is_single_use(env: Harness) -> None:
    c = await env.citizen()
    resp = await env.client.post("/accounts/registrations", json=start_body(c))
    rid = resp.json()["id"]
    code = await env.last_otp(c["phone"])
    assert (await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": code})).status_code == 200
    again = await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": code})
    assert again.status_code == 400
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 1


async def test_otp_is_stored_hashed(env: Harness) -> None:
    c = await env.citizen()
    resp = await env.client.post("/accounts/registrations", json=start_body(c))
    code = await env.last_otp(c["phone"])
    assert resp.status_code == 202
    assert await env.count("otp_challenges", "code_hash LIKE :c", c=f"%{code}%") == 0
    assert await env.count("sms_outbox", "body_sealed LIKE :c", c=f"%{code}%") == 0


async def test_duplicate_registration_race_makes_one_account(env: Harness) -> None:
    c = await env.citizen()
    first = (await env.client.post("/accounts/registrations", json=start_body(c))).json()["id"]
    code1 = await env.last_otp(c["phone"])
    second = (await env.client.post("/accounts/registrations", json=start_body(c))).json()["id"]
    code2 = await env.last_otp(c["phone"])
    # The second challenge ended the first: only its code works.
    results = await asyncio.gather(
        env.client.post(f"/accounts/registrations/{first}/verify", json={"code": code1}),
        env.client.post(f"/accounts/registrations/{second}/verify", json={"code": code2}),
    )
    assert [r.status_code for r in results] == [400, 200], [r.text for r in results]
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 1


async def test_one_code_verified_twice_at_once_makes_one_account(env: Harness) -> None:
    c = await env.citizen()
    rid = (await env.client.post("/accounts/registrations", json=start_body(c))).json()["id"]
    code = await env.last_otp(c["phone"])
    results = await asyncio.gather(
        *(env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": code}) for _ in range(3))
    )
    assert sorted(r.status_code for r in results) == [200, 400, 400], [r.text for r in results]
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 1


async def test_fourteenth_birthday_is_the_day(env: Harness) -> None:
    today = env.ctx.clock.today()
    turning = await env.citizen(date_of_birth=years_ago(today, 14))
    tomorrow = await env.citizen(date_of_birth=years_ago(today, 14) + dt.timedelta(days=1))
    before = await env.count("sms_outbox", "phone = :p", p=tomorrow["phone"])
    await env.client.post("/accounts/registrations", json=start_body(tomorrow))
    assert await env.count("sms_outbox", "phone = :p", p=tomorrow["phone"]) == before
    await env.client.post("/accounts/registrations", json=start_body(turning))
    assert await env.last_otp(turning["phone"])


async def test_registry_phone_must_match_when_recorded(env: Harness) -> None:
    c = await env.citizen()
    other = new_phone()
    resp = await env.client.post("/accounts/registrations", json=start_body(c, phone=other))
    assert resp.status_code == 202
    assert await env.outbox(other) == []
