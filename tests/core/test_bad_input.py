"""Bad input never gives a 500 and never writes anything."""

import json

import pytest

from tests.support import Harness

VALID = {
    "id_number": "001090123456",
    "full_name": "Nguyễn Văn An",
    "date_of_birth": "1990-05-17",
    "phone": "+84912345678",
}


async def assert_nothing_written(env: Harness, before: dict[str, int]) -> None:
    for table, n in before.items():
        assert await env.count(table) == n, table


async def snapshot(env: Harness) -> dict[str, int]:
    return {t: await env.count(t) for t in ("otp_challenges", "sms_outbox", "accounts", "citizens")}


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        (b'{"id_number": "0010', 400, "malformed-json"),
        (b"\xff\xfe{not utf8}", 400, "malformed-json"),
        (b"[]", 422, "validation"),
        (b"null", 422, "validation"),
        (json.dumps({**VALID, "extra": 1}).encode(), 422, "validation"),
        (json.dumps({**VALID, "date_of_birth": "1990-13-45"}).encode(), 422, "validation"),
        (json.dumps({**VALID, "date_of_birth": "0001-01-01"}).encode(), 422, "validation"),
        (json.dumps({**VALID, "date_of_birth": "2999-01-01"}).encode(), 422, "validation"),
        (json.dumps({**VALID, "id_number": "00109012345X"}).encode(), 422, "validation"),
        (json.dumps({**VALID, "id_number": 1090123456}).encode(), 422, "validation"),
        (json.dumps({**VALID, "full_name": "Nguyễn\u0000An"}).encode(), 422, "validation"),
        (
            b'{"id_number": "001090123456", "full_name": "\\ud800", "date_of_birth": "1990-05-17", "phone": "+84912345678"}',
            422,
            "validation",
        ),
        (json.dumps({**VALID, "full_name": "x" * 5000}).encode(), 422, "validation"),
        (json.dumps({**VALID, "phone": "+1 202 555 0100"}).encode(), 422, "validation"),
        (json.dumps({k: v for k, v in VALID.items() if k != "phone"}).encode(), 422, "validation"),
    ],
)
async def test_bad_registration_bodies(env: Harness, body: bytes, status: int, problem: str) -> None:
    before = await snapshot(env)
    resp = await env.client.post("/accounts/registrations", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"] == f"urn:eid:problem:{problem}"
    assert "Traceback" not in resp.text
    await assert_nothing_written(env, before)


async def test_validation_errors_name_the_fields_but_never_echo_values(env: Harness) -> None:
    secret_name = "Bí Mật Tuyệt Đối"
    resp = await env.client.post(
        "/accounts/registrations", json={**VALID, "full_name": secret_name + "\u0000", "phone": "12"}
    )
    assert resp.status_code == 422
    fields = {e["field"] for e in resp.json()["errors"]}
    assert fields == {"full_name", "phone"}
    assert secret_name not in resp.text


async def test_wrong_content_type_is_415(env: Harness) -> None:
    before = await snapshot(env)
    resp = await env.client.post(
        "/accounts/registrations", content=json.dumps(VALID), headers={"content-type": "text/plain"}
    )
    assert resp.status_code == 415
    assert resp.json()["type"] == "urn:eid:problem:unsupported-media-type"
    resp = await env.client.post("/accounts/registrations", data={"id_number": "001090123456"})
    assert resp.status_code == 415
    await assert_nothing_written(env, before)


async def test_oversized_body_is_413_with_and_without_content_length(env: Harness) -> None:
    before = await snapshot(env)
    big = json.dumps({**VALID, "full_name": "a" * (1024 * 1024 + 10)}).encode()
    resp = await env.client.post("/accounts/registrations", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["type"] == "urn:eid:problem:payload-too-large"

    async def chunks():  # no Content-Length: the limit is counted while streaming
        for _ in range(20):
            yield b"a" * 65536

    resp = await env.client.post(
        "/accounts/registrations", content=chunks(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413
    await assert_nothing_written(env, before)


async def test_bad_path_and_query_parameters(env: Harness) -> None:
    assert (
        await env.client.post("/accounts/registrations/not-a-uuid/verify", json={"code": "123456"})
    ).status_code == 422
    r = await env.client.post(
        "/accounts/registrations/00000000-0000-0000-0000-000000000000/verify", json={"code": "12345a"}
    )
    assert r.status_code == 422
    r = await env.client.post(
        "/accounts/registrations/00000000-0000-0000-0000-000000000000/verify", json={"code": "123456"}
    )
    assert (r.status_code, r.json()["type"]) == (400, "urn:eid:problem:otp-invalid")
    r = await env.client.get("/registry/citizens/12345", headers=env.staff())
    assert r.status_code == 422
    r = await env.client.get("/audit/events", params={"limit": 100000}, headers=env.staff())
    assert r.status_code == 422
    assert (await env.client.delete("/accounts/registrations")).status_code == 405
