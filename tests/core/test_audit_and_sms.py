"""The audit trail is append-only; SMS go through the outbox and the webhook worker."""

import datetime as dt

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.core.sms import WebhookGateway, deliver_pending, queue_sms, read_outbox
from tests.support import Harness, new_phone


async def test_audit_rows_cannot_be_changed_or_deleted(env: Harness) -> None:
    await env.citizen()  # writes at least one audit row
    async with env.ctx.sessionmaker() as session:
        for stmt in ("UPDATE audit_events SET outcome = 'forged'", "DELETE FROM audit_events"):
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(stmt))
            await session.rollback()
    assert await env.count("audit_events", "outcome = 'forged'") == 0
    assert await env.count("audit_events") > 0


async def test_audit_api_pages_newest_first(env: Harness) -> None:
    for _ in range(3):
        await env.citizen()
    page = (await env.client.get("/audit/events", params={"limit": 2}, headers=env.staff())).json()
    assert len(page["items"]) == 2
    assert page["items"][0]["id"] > page["items"][1]["id"]
    nxt = (
        await env.client.get(
            "/audit/events", params={"limit": 2, "before_id": page["next_before_id"]}, headers=env.staff()
        )
    ).json()
    assert nxt["items"][0]["id"] < page["items"][1]["id"]


async def test_audit_rows_carry_the_request_id(env: Harness) -> None:
    c = await env.citizen()
    await env.client.get(
        f"/registry/citizens/{c['id_number']}", headers={**env.staff(), "X-Request-ID": "trace-abc-123"}
    )
    assert await env.count("audit_events", "request_id = 'trace-abc-123' AND action = 'registry.read'") == 1


async def test_outbox_bodies_are_sealed_and_readable_with_the_key(env: Harness) -> None:
    phone = new_phone()
    async with env.ctx.sessionmaker() as session:
        queue_sms(session, env.ctx.keyring, phone=phone, text="secret 424242", purpose="test", now=env.ctx.clock.now())
        await session.commit()
    assert await env.count("sms_outbox", "phone = :p AND body_sealed LIKE '%424242%'", p=phone) == 0
    assert (await env.outbox(phone))[0]["text"] == "secret 424242"


async def test_webhook_worker_delivers_retries_and_forgets_the_secret(env: Harness) -> None:
    phone = new_phone()
    calls: list[dict] = []
    failures = {"left": 2}

    def gateway(request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content)
        if body["to"] != phone:
            return httpx.Response(200)
        calls.append({"auth": request.headers.get("authorization"), **body})
        if failures["left"]:
            failures["left"] -= 1
            return httpx.Response(503)
        return httpx.Response(202)

    sender = WebhookGateway(
        "https://sms.example/send", "tok", client=httpx.AsyncClient(transport=httpx.MockTransport(gateway))
    )
    async with env.ctx.sessionmaker() as session:
        queue_sms(session, env.ctx.keyring, phone=phone, text="OTP 111222", purpose="test", now=env.ctx.clock.now())
        await session.commit()
    now = env.ctx.clock.now()
    for step in range(6):
        await deliver_pending(
            env.ctx.sessionmaker, sender, env.ctx.keyring, now=now + dt.timedelta(seconds=30 * step), max_attempts=5
        )
    assert [c["text"] for c in calls] == ["OTP 111222"] * 3
    assert calls[0]["auth"] == "Bearer tok"
    assert await env.count("sms_outbox", "phone = :p AND status = 'sent' AND attempts = 3", p=phone) == 1
    async with env.ctx.sessionmaker() as session:
        assert (await read_outbox(session, env.ctx.keyring, phone=phone))[0]["text"] == "[delivered]"


async def test_webhook_gives_up_after_max_attempts(env: Harness) -> None:
    phone = new_phone()
    sender = WebhookGateway(
        "https://sms.example/send",
        None,
        client=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
    )
    async with env.ctx.sessionmaker() as session:
        queue_sms(session, env.ctx.keyring, phone=phone, text="x", purpose="test", now=env.ctx.clock.now())
        await session.commit()
    now = env.ctx.clock.now()
    for step in range(5):
        await deliver_pending(
            env.ctx.sessionmaker, sender, env.ctx.keyring, now=now + dt.timedelta(hours=step), max_attempts=3
        )
    assert await env.count("sms_outbox", "phone = :p AND status = 'failed' AND attempts = 3", p=phone) == 1
