"""Unforgeable accounts: someone who knows a citizen's ID number, name and date of birth (printed
on many papers) cannot get their account. Each attack is tried through HTTP, with what was
written checked."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from app.accounts.router import REGISTRATION_SENT
from app.core.clock import Clock
from app.core.notify import TEXTS, Notice, render
from app.core.sms import sms_segments
from app.core.subscribers import HttpSubscriberCheck, Subscription
from app.main import create_app
from app.registry.idnumber import Sex
from tests.conftest import make_settings
from tests.support import Harness, new_phone


def start_body(c: dict[str, Any], **over: object) -> dict[str, Any]:
    return {**{k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}, **over}


async def sign_in(env: Harness, id_number: str, password: str) -> dict[str, str]:
    resp = await env.client.post("/accounts/sessions", json={"id_number": id_number, "password": password})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


async def register(env: Harness, body: dict[str, Any]) -> tuple[str, str]:
    """Start a registration and return (challenge ID, code)."""
    resp = await env.client.post("/accounts/registrations", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"], await env.last_otp(body["phone"])


async def refused_reason(env: Harness, challenge_id: str) -> str | None:
    from sqlalchemy import text

    async with env.ctx.sessionmaker() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT detail FROM audit_events WHERE action = 'account.registration.start' ORDER BY id DESC LIMIT 50"
                )
            )
        ).all()
    for (detail,) in rows:
        detail = json.loads(detail) if isinstance(detail, str) else detail
        if detail.get("challenge") == challenge_id:
            return detail.get("reason")
    raise AssertionError("no audit row for the challenge")


# --- proofing at self-registration -----------------------------------------------------------


async def test_a_typed_phone_proves_nothing_when_the_registry_has_none(env: Harness) -> None:
    c = await env.citizen(phone=None)
    attacker_phone = new_phone()
    resp = await env.client.post("/accounts/registrations", json=start_body(c, phone=attacker_phone))
    # The answer every caller gets, which tells them to register in person if no code comes.
    assert resp.status_code == 202
    assert resp.json()["message"] == REGISTRATION_SENT
    assert "in person" in REGISTRATION_SENT
    assert await env.outbox(attacker_phone) == []
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 0
    assert await refused_reason(env, resp.json()["id"]) == "phone_unconfirmed"
    # The challenge cannot be completed with any code.
    r = await env.client.post(f"/accounts/registrations/{resp.json()['id']}/verify", json={"code": "000000"})
    assert r.status_code == 400
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 0


async def test_a_phone_the_operator_confirms_registers_at_level_1(env: Harness) -> None:
    c = await env.citizen(phone=None)
    phone = new_phone()
    env.subscribers.add(c["id_number"], phone)
    rid, code = await register(env, start_body(c, phone=phone))
    resp = await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": code})
    assert resp.status_code == 200, resp.text
    assert resp.json()["level"] == 1
    account = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    assert account["phone"] == phone
    assert (
        await env.count("audit_events", "action = 'account.register' AND CAST(detail AS TEXT) LIKE '%operator%'") >= 1
    )


async def test_the_operator_confirms_only_its_own_pairs(env: Harness) -> None:
    c, other = await env.citizen(phone=None), await env.citizen(phone=None)
    phone = new_phone()
    env.subscribers.add(other["id_number"], phone)  # the phone belongs to someone else
    resp = await env.client.post("/accounts/registrations", json=start_body(c, phone=phone))
    assert resp.json()["message"] == REGISTRATION_SENT
    assert await env.outbox(phone) == []


class _Gateway(BaseHTTPRequestHandler):
    """An operator gateway: confirms +84... numbers ending in 0, fails with 503 for ones ending in 9."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Gateway.calls.append({**body, "auth": self.headers.get("authorization")})
        if body["phone"].endswith("9"):
            self.send_response(503)
            self.end_headers()
            return
        answer = json.dumps({"match": body["phone"].endswith("0")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Gateway.calls.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/subscribers"
    server.shutdown()


async def test_http_subscriber_check_answers_retries_and_fails_closed(gateway: str) -> None:
    check = HttpSubscriberCheck(gateway, "gw-token", timeout=1.0, retries=2)
    try:
        assert await check.check("001099012345", "+84912345670") is Subscription.confirmed
        assert await check.check("001099012345", "+84912345671") is Subscription.not_confirmed
        assert _Gateway.calls[0] == {"id_number": "001099012345", "phone": "+84912345670", "auth": "Bearer gw-token"}
        before = len(_Gateway.calls)
        assert await check.check("001099012345", "+84912345679") is Subscription.unavailable
        assert len(_Gateway.calls) - before == 3  # the first try and two retries
    finally:
        await check.close()
    # Nothing listening: unavailable, not an exception.
    down = HttpSubscriberCheck("http://127.0.0.1:9/none", None, timeout=0.5, retries=1)
    try:
        assert await down.check("001099012345", "+84912345670") is Subscription.unavailable
    finally:
        await down.close()


async def test_registration_through_the_operator_gateway(
    env: Harness, gateway: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The app configured with EID_SUBSCRIBER_CHECK=http: a confirmed phone gets a code; when the
    gateway is down the answer is the same as for everyone, nothing is sent, and the audit says why."""
    url = str(env.app.state.engine.url.render_as_string(hide_password=False))
    settings = make_settings(
        url, env.backend, tmp_path_factory.mktemp("gw"), subscriber_check="http", subscriber_check_url=gateway,
        subscriber_check_retries=1, subscriber_check_timeout_seconds=1.0,
    )  # fmt: skip
    app = create_app(settings, clock=Clock())
    c = await env.citizen(phone=None)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http,
    ):
        ok = "+8491234" + f"{int(c['id_number'][-4:]) % 1000:03d}" + "0"
        resp = await http.post("/accounts/registrations", json=start_body(c, phone=ok))
        assert resp.status_code == 202
        assert await env.last_otp(ok)
        down = ok[:-1] + "9"
        resp = await http.post("/accounts/registrations", json=start_body(c, phone=down))
        assert (resp.status_code, resp.json()["message"]) == (202, REGISTRATION_SENT)
        assert await env.outbox(down) == []
        assert await refused_reason(env, resp.json()["id"]) == "subscriber_check_unavailable"


# --- a dependent who reaches 14 --------------------------------------------------------------


async def _guardian_with_dependent(env: Harness, *, child_phone: str | None = None) -> dict[str, Any]:
    from tests.accounts.test_assisted_registration import approve_all, submit

    today = env.ctx.clock.today()
    parent = await env.citizen(age=45)
    dob = today.replace(year=today.year - 14) - dt.timedelta(days=3)  # 14 since three days
    child = await env.citizen(date_of_birth=dob, phone=child_phone, guardians=[parent["id_number"]], sex=Sex.female)
    # Linked while the child was under 14.
    env.ctx.clock.advance(dt.timedelta(days=-5))
    try:
        reg = (await submit(env, parent, dependents=[child["id_number"]])).json()
        assert (await approve_all(env, reg["id"], parent)).status_code == 200
    finally:
        env.ctx.clock.advance(dt.timedelta(days=5))
    await env.relogin()
    initial = await env.last_password(parent["phone"])
    new = "guardian passphrase 2026 long"
    r = await env.client.post(
        "/accounts/password", json={"id_number": parent["id_number"], "current_password": initial, "new_password": new}
    )
    assert r.status_code == 204, r.text
    kid = (await env.client.get(f"/accounts/by-id-number/{child['id_number']}", headers=env.staff())).json()
    assert kid["level"] == 2 and kid["guardian_account_id"] is not None
    return {"parent": parent, "child": child, "kid": kid, "parent_password": new}


async def test_a_dependent_cannot_be_claimed_with_any_phone(env: Harness) -> None:
    fam = await _guardian_with_dependent(env)
    attacker = new_phone()
    resp = await env.client.post("/accounts/registrations", json=start_body(fam["child"], phone=attacker))
    assert (resp.status_code, resp.json()["message"]) == (202, REGISTRATION_SENT)
    assert await env.outbox(attacker) == []
    kid = (await env.client.get(f"/accounts/by-id-number/{fam['child']['id_number']}", headers=env.staff())).json()
    assert kid == fam["kid"]  # nothing changed


async def test_the_guardian_approves_the_claim_which_starts_at_level_1(env: Harness) -> None:
    fam = await _guardian_with_dependent(env)
    child, kid = fam["child"], fam["kid"]
    guardian = await sign_in(env, fam["parent"]["id_number"], fam["parent_password"])
    phone = new_phone()
    # Nobody else can approve: another citizen, or for a dependent that is not theirs.
    stranger = await env.citizen()
    stranger_pw = await env.register_level1(stranger)
    other = await sign_in(env, stranger["id_number"], stranger_pw)
    r = await env.client.post(f"/me/dependents/{kid['id']}/claim-approval", json={"phone": phone}, headers=other)
    assert (r.status_code, r.json()["type"]) == (404, "urn:eid:problem:account-not-found")
    approvals = await env.count("claim_approvals")
    r = await env.client.post(f"/me/dependents/{kid['id']}/claim-approval", json={"phone": phone}, headers=guardian)
    assert r.status_code == 201, r.text
    assert await env.count("claim_approvals") == approvals + 1

    rid, code = await register(env, start_body(child, phone=phone))
    r = await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": code})
    assert r.status_code == 200, r.text
    assert r.json()["level"] == 1
    now_kid = (await env.client.get(f"/accounts/by-id-number/{child['id_number']}", headers=env.staff())).json()
    assert (now_kid["id"], now_kid["level"], now_kid["guardian_account_id"], now_kid["phone"]) == (
        kid["id"], 1, None, phone,
    )  # fmt: skip
    # The guardian was told by SMS and sees it; the child is no longer their dependent.
    assert "dependent_claimed" in await env.notices(fam["parent"]["phone"])
    notes = (await env.client.get("/me/notifications", headers=guardian)).json()
    assert notes[0]["kind"] == "dependent_claimed" and child["full_name"] in notes[0]["message"]
    assert (await env.client.get("/me/dependents", headers=guardian)).json() == []
    # The approval was used: the same phone cannot claim again (the account is the child's now).
    resp = await env.client.post("/accounts/registrations", json=start_body(child, phone=phone))
    assert resp.status_code == 202
    assert len([m for m in await env.outbox(phone) if m["purpose"] == "registration_otp"]) == 1


async def test_a_claim_with_the_registry_phone_also_starts_at_level_1(env: Harness) -> None:
    phone = new_phone()
    fam = await _guardian_with_dependent(env, child_phone=phone)
    rid, code = await register(env, start_body(fam["child"]))
    r = await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": code})
    assert (r.status_code, r.json()["level"]) == (200, 1)
    assert "dependent_claimed" in await env.notices(fam["parent"]["phone"])


async def test_no_claim_approval_before_14(env: Harness) -> None:
    from tests.accounts.test_assisted_registration import approve_all, submit

    parent = await env.citizen(age=40)
    child = await env.citizen(age=10, phone=None, guardians=[parent["id_number"]])
    reg = (await submit(env, parent, dependents=[child["id_number"]])).json()
    assert (await approve_all(env, reg["id"], parent)).status_code == 200
    initial = await env.last_password(parent["phone"])
    pw = "guardian passphrase 2026 long"
    await env.client.post(
        "/accounts/password", json={"id_number": parent["id_number"], "current_password": initial, "new_password": pw}
    )
    guardian = await sign_in(env, parent["id_number"], pw)
    kid = (await env.client.get(f"/accounts/by-id-number/{child['id_number']}", headers=env.staff())).json()
    r = await env.client.post(
        f"/me/dependents/{kid['id']}/claim-approval", json={"phone": new_phone()}, headers=guardian
    )
    assert (r.status_code, r.json()["type"]) == (409, "urn:eid:problem:claim-not-allowed")


# --- OTP guessing -----------------------------------------------------------------------------


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_wrong_codes_count_across_challenges_then_registration_and_reset_wait(env: Harness) -> None:
    c = await env.citizen()
    for _ in range(2):  # two challenges, five wrong codes each: ten in all
        rid, code = await register(env, start_body(c))
        for _ in range(5):
            r = await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": wrong(code)})
            assert r.status_code == 400
    sent_before = await env.count("sms_outbox", "phone = :p", p=c["phone"])
    challenges_before = await env.count("otp_challenges")
    resp = await env.client.post("/accounts/registrations", json=start_body(c))
    assert (resp.status_code, resp.json()["type"]) == (429, "urn:eid:problem:otp-locked")
    assert 23 * 3600 < int(resp.headers["retry-after"]) <= 24 * 3600 + 1
    resp = await env.client.post("/accounts/password-resets", json={"id_number": c["id_number"], "phone": c["phone"]})
    assert resp.status_code == 429
    # Refused before anything is written: no new challenge or code; the citizen was told once.
    assert await env.count("sms_outbox", "phone = :p", p=c["phone"]) == sent_before
    assert await env.count("otp_challenges") == challenges_before
    assert (await env.notices(c["phone"])).count("otp_locked") == 1
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 0
    env.ctx.clock.advance(dt.timedelta(hours=24, minutes=1))
    rid, code = await register(env, start_body(c))
    assert (await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": code})).status_code == 200


async def test_a_new_challenge_ends_the_earlier_one(env: Harness) -> None:
    c = await env.citizen()
    first, first_code = await register(env, start_body(c))
    await register(env, start_body(c))
    r = await env.client.post(f"/accounts/registrations/{first}/verify", json={"code": first_code})
    assert r.status_code == 400
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 0


async def test_wrong_codes_count_per_phone_across_id_numbers(env: Harness) -> None:
    phone = new_phone()
    people = [await env.citizen(phone=None) for _ in range(2)]
    for person in people:
        env.subscribers.add(person["id_number"], phone)
    for person in people:
        rid, code = await register(env, start_body(person, phone=phone))
        for _ in range(5):
            await env.client.post(f"/accounts/registrations/{rid}/verify", json={"code": wrong(code)})
    third = await env.citizen(phone=None)
    env.subscribers.add(third["id_number"], phone)
    resp = await env.client.post("/accounts/registrations", json=start_body(third, phone=phone))
    assert (resp.status_code, resp.json()["type"]) == (429, "urn:eid:problem:otp-locked")


async def test_the_lock_looks_the_same_for_an_id_number_nobody_has(env: Harness) -> None:
    c = await env.citizen()
    unknown = start_body(c, id_number=c["id_number"][:-6] + "999991", phone=new_phone())
    for _ in range(2):
        resp = await env.client.post("/accounts/registrations", json=unknown)
        for _ in range(5):
            r = await env.client.post(f"/accounts/registrations/{resp.json()['id']}/verify", json={"code": "123456"})
            assert r.status_code == 400
    resp = await env.client.post("/accounts/registrations", json={**unknown, "phone": new_phone()})
    assert (resp.status_code, resp.json()["type"]) == (429, "urn:eid:problem:otp-locked")


# --- re-issue after revocation ---------------------------------------------------------------


async def test_an_officer_reissues_a_revoked_account_in_person(env: Harness) -> None:
    from tests.accounts.test_assisted_registration import approve_all, submit

    c = await env.citizen()
    old_pw = await env.register_level1(c)
    old = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    r = await env.client.post(f"/accounts/{old['id']}/revoke", json={"reason": "stolen identity"}, headers=env.staff())
    assert r.json()["status"] == "revoked"
    audit_before = await env.count(
        "audit_events", "target = :t", t=c["id_number"][:3] + "*******" + c["id_number"][-2:]
    )

    reg = (await submit(env, c)).json()
    assert reg["status"] == "submitted"
    assert (await approve_all(env, reg["id"], c)).status_code == 200
    new = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    assert new["id"] != old["id"] and (new["status"], new["level"]) == ("active", 2)
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 2
    assert await env.count("accounts", "id_number = :n AND status = 'revoked'", n=c["id_number"]) == 1
    # The old account's trail stays; the re-issue is audited; the citizen is told.
    assert (
        await env.count("audit_events", "target = :t", t=c["id_number"][:3] + "*******" + c["id_number"][-2:])
        > audit_before
    )
    assert await env.count("audit_events", "action = 'account.reissue'") >= 1
    assert "account_reissued" in await env.notices(c["phone"])
    # New credentials: the old password is refused, the new one works once changed.
    r = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": old_pw})
    assert r.status_code == 401
    initial = await env.last_password(c["phone"])
    new_pw = "a brand new passphrase 2026"
    r = await env.client.post(
        "/accounts/password", json={"id_number": c["id_number"], "current_password": initial, "new_password": new_pw}
    )
    assert r.status_code == 204, r.text
    headers = await sign_in(env, c["id_number"], new_pw)
    assert (await env.client.get("/me", headers=headers)).json()["account_id"] == new["id"]


# --- notifications ---------------------------------------------------------------------------


LONGEST = {"time": "23:59 31/12/2099", "until": "23:59 31/12/2099", "reason": "x" * 500, "bank": "Ngân hàng " * 30,
           "binding": "B" * 64, "name": "Nguyễn Thị " * 30, "phone": "+84******123"}  # fmt: skip


@pytest.mark.parametrize("kind", list(Notice))
def test_every_notice_is_short_vietnamese_and_carries_no_link(kind: Notice) -> None:
    text = render(kind, LONGEST, "vi", bounded=True)
    assert sms_segments(text) <= 2, (len(text), text)
    assert any(ch in text for ch in "ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ"), text
    assert "http" not in text and "www." not in text
    assert set(TEXTS[kind]) == {"vi", "en"}


def test_sms_segments_count_ucs2_and_gsm() -> None:
    assert sms_segments("a" * 160) == 1 and sms_segments("a" * 161) == 2
    assert sms_segments("ạ" * 70) == 1 and sms_segments("ạ" * 71) == 2 and sms_segments("ạ" * 135) == 3


async def test_notices_are_rate_limited_per_phone_but_all_recorded(env: Harness) -> None:
    c = await env.citizen()
    await env.register_level1(c)
    account = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    base = f"/accounts/{account['id']}"
    for _ in range(5):  # ten changes within the hour
        await env.client.post(f"{base}/lock", json={"reason": "test"}, headers=env.staff())
        await env.client.post(f"{base}/unlock", json={"reason": "test"}, headers=env.staff())
    sent = [n for n in await env.notices(c["phone"]) if n.startswith("account_")]
    assert len(sent) == env.ctx.settings.notify_sms_per_hour - 1  # one went to the password change
    assert await env.count("notifications", "kind LIKE 'account_%'") >= 10


async def test_an_officer_recorded_email_gets_the_notice_too(env: Harness) -> None:
    from tests.accounts.test_assisted_registration import approve_all, submit

    c = await env.citizen()
    email = f"c{c['id_number']}@example.vn"
    reg = (await submit(env, c, email=email)).json()
    assert (await approve_all(env, reg["id"], c)).status_code == 200
    account = (await env.client.get(f"/accounts/by-id-number/{c['id_number']}", headers=env.staff())).json()
    await env.client.post(f"/accounts/{account['id']}/lock", json={"reason": "kiểm tra"}, headers=env.staff())
    assert await env.count("email_outbox", "address = :a AND purpose = 'notice_account_locked'", a=email) == 1


async def test_a_bank_request_is_announced_with_its_name_and_binding_message(env: Harness) -> None:
    from tests.verify.test_verify_and_ekyc import bank

    c = await env.citizen()
    await env.register_level1(c)
    _, headers = await bank(env)
    r = await env.client.post(
        "/verify/ekyc-requests",
        json={"id_number": c["id_number"], "claims": ["name"], "purpose": "Mở tài khoản", "binding_message": "TK-2026"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    texts = [m["text"] for m in await env.outbox(c["phone"]) if m["purpose"] == "notice_ekyc_request"]
    assert texts and "TK-2026" in texts[0]
    # For an ID number with no account, nothing is sent anywhere, and the bank sees the same answer.
    other = await env.citizen()
    r2 = await env.client.post(
        "/verify/ekyc-requests",
        json={"id_number": other["id_number"], "claims": ["name"], "purpose": "Mở tài khoản", "binding_message": "TK"},
        headers=headers,
    )
    assert r2.status_code == 201 and sorted(r2.json()) == sorted(r.json())
    assert await env.outbox(other["phone"]) == []


def test_dates_in_messages_are_vietnam_time() -> None:
    from app.core.notify import local_time

    assert local_time(dt.datetime(2026, 12, 4, 17, 5, tzinfo=dt.UTC)) == "00:05 05/12/2026"
