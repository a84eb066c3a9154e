"""Sign-in, lockout after repeated failures, password change and reset, argon2id rehash."""

import datetime as dt

from sqlalchemy import select, text

from app.accounts.models import Account
from app.core.config import Settings
from app.core.passwords import PasswordHasher
from tests.support import Harness


async def sign_in(env: Harness, id_number: str, password: str) -> int:
    resp = await env.client.post("/accounts/sessions", json={"id_number": id_number, "password": password})
    return resp.status_code


async def test_lockout_after_five_failures_and_release_after_fifteen_minutes(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    for _ in range(5):
        resp = await env.client.post(
            "/accounts/sessions", json={"id_number": c["id_number"], "password": "wrong password 123"}
        )
        assert resp.status_code == 401
        assert resp.json()["type"] == "urn:eid:problem:login-failed"
    # Locked: the right password is refused too, and only its holder learns it is locked and until when.
    resp = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    assert resp.status_code == 403
    assert resp.json()["type"] == "urn:eid:problem:account-locked"
    until = dt.datetime.fromisoformat(resp.json()["locked_until"])
    assert dt.timedelta(minutes=14) < until - env.ctx.clock.now() <= dt.timedelta(minutes=15)
    # A wrong password during the lockout still gets the answer every wrong password gets.
    resp = await env.client.post(
        "/accounts/sessions", json={"id_number": c["id_number"], "password": "wrong again 456"}
    )
    assert (resp.status_code, resp.json()["type"]) == (401, "urn:eid:problem:login-failed")
    assert (
        await env.count(
            "audit_events",
            "action = 'account.lockout' AND target = :t",
            t=c["id_number"][:3] + "*******" + c["id_number"][-2:],
        )
        >= 1
    )
    env.ctx.clock.advance(dt.timedelta(minutes=14))
    assert await sign_in(env, c["id_number"], pw) == 403
    env.ctx.clock.advance(dt.timedelta(minutes=2))
    assert await sign_in(env, c["id_number"], pw) == 201
    assert "lockout" in await env.notices(c["phone"])  # the citizen was told


async def test_success_resets_the_failure_count(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    for _ in range(4):
        assert await sign_in(env, c["id_number"], "wrong password 123") == 401
    assert await sign_in(env, c["id_number"], pw) == 201
    for _ in range(4):
        assert await sign_in(env, c["id_number"], "wrong password 123") == 401
    assert await sign_in(env, c["id_number"], pw) == 201


async def test_unknown_id_number_answers_like_a_wrong_password(env: Harness) -> None:
    c = await env.citizen()
    await env.register_level1(c)
    unknown = c["id_number"][:-6] + "000000"
    a = await env.client.post(
        "/accounts/sessions", json={"id_number": c["id_number"], "password": "wrong password 123"}
    )
    b = await env.client.post("/accounts/sessions", json={"id_number": unknown, "password": "wrong password 123"})
    assert (a.status_code, a.json()) == (b.status_code, b.json())


async def test_weak_new_passwords_are_refused_without_spending_an_attempt(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    for weak in ["short", "123456789012345", "passwordpassword", c["id_number"] + "abcdef", "qwertyuiopasdfgh"]:
        resp = await env.client.post(
            "/accounts/password", json={"id_number": c["id_number"], "current_password": pw, "new_password": weak}
        )
        assert resp.status_code == 422, weak
        assert resp.json()["type"] == "urn:eid:problem:weak-password"
    # Five refusals did not lock the account.
    assert await sign_in(env, c["id_number"], pw) == 201


async def test_change_password_needs_the_current_one(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    resp = await env.client.post(
        "/accounts/password",
        json={
            "id_number": c["id_number"],
            "current_password": "not it at all 99",
            "new_password": "a brand new passphrase",
        },
    )
    assert resp.status_code == 401
    assert await sign_in(env, c["id_number"], pw) == 201
    assert await sign_in(env, c["id_number"], "a brand new passphrase") == 401


async def test_password_reset_by_sms_code(env: Harness) -> None:
    c = await env.citizen()
    await env.register_level1(c)
    # Lock the account out first: a reset also ends a lockout.
    for _ in range(5):
        await sign_in(env, c["id_number"], "wrong password 123")
    resp = await env.client.post("/accounts/password-resets", json={"id_number": c["id_number"], "phone": c["phone"]})
    assert resp.status_code == 202
    rid = resp.json()["id"]
    code = await env.last_otp(c["phone"])
    weak = await env.client.post(
        f"/accounts/password-resets/{rid}/complete", json={"code": code, "new_password": "short"}
    )
    assert weak.status_code == 422
    done = await env.client.post(
        f"/accounts/password-resets/{rid}/complete",
        json={"code": code, "new_password": "reset passphrase that is long"},
    )
    assert done.status_code == 204
    assert await sign_in(env, c["id_number"], "reset passphrase that is long") == 201
    again = await env.client.post(
        f"/accounts/password-resets/{rid}/complete", json={"code": code, "new_password": "another long passphrase"}
    )
    assert again.status_code == 400


async def test_password_reset_does_not_enumerate(env: Harness) -> None:
    c = await env.citizen()
    await env.register_level1(c)
    before = await env.count("sms_outbox", "phone = :p", p=c["phone"])
    wrong_phone = await env.client.post(
        "/accounts/password-resets", json={"id_number": c["id_number"], "phone": "+84999999999"}
    )
    unknown = await env.client.post(
        "/accounts/password-resets", json={"id_number": c["id_number"][:-6] + "000001", "phone": c["phone"]}
    )
    assert wrong_phone.status_code == unknown.status_code == 202
    assert wrong_phone.json()["message"] == unknown.json()["message"]
    assert await env.count("sms_outbox", "phone = :p", p=c["phone"]) == before
    r = await env.client.post(
        f"/accounts/password-resets/{unknown.json()['id']}/complete",
        json={"code": "123456", "new_password": "whatever long passphrase"},
    )
    assert r.status_code == 400


async def test_outdated_hash_parameters_are_upgraded_at_sign_in(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    # Store a hash made with other (older) argon2id parameters.
    old = PasswordHasher(Settings(argon2_memory_kib=512, argon2_time_cost=1))
    old_hash = await old.hash(pw)
    async with env.ctx.sessionmaker() as session:
        await session.execute(
            text("UPDATE accounts SET password_hash = :h WHERE id_number = :n"), {"h": old_hash, "n": c["id_number"]}
        )
        await session.commit()
    assert await sign_in(env, c["id_number"], pw) == 201
    async with env.ctx.sessionmaker() as session:
        stored = await session.scalar(select(Account.password_hash).where(Account.id_number == c["id_number"]))
    assert stored is not None and stored != old_hash
    assert stored.startswith("$argon2id$") and "m=1024" in stored


async def test_sign_out_ends_the_session(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    token = (await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})).json()[
        "access_token"
    ]
    h = {"Authorization": f"Bearer {token}"}
    assert (await env.client.get("/me", headers=h)).status_code == 200
    assert (await env.client.delete("/accounts/sessions/current", headers=h)).status_code == 204
    resp = await env.client.get("/me", headers=h)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert (await env.client.get("/me", headers={"Authorization": "Bearer forged"})).status_code == 401
    assert (await env.client.get("/me")).status_code == 401


async def test_session_expires(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    token = (await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})).json()[
        "access_token"
    ]
    env.ctx.clock.advance(dt.timedelta(minutes=61))
    assert (await env.client.get("/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401
