"""GET /metrics (app/core/metrics.py, app/core/scrape.py): refused without the metrics scope, and
each series present and moving after the action it counts, read through HTTP as Prometheus reads
it. The series are per process and the test apps of both backends share this one: tests compare
a scrape after an action with one before it."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
import time
from typing import Any

import anyio.to_thread
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.metrics import measured_pool
from app.core.passwords import PasswordHasher
from tests.core.test_authenticator import client_token
from tests.oidc.flow import form_fields, make_client, pkce_pair, sign_in_and_consent
from tests.support import Harness

Key = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """One answer of GET /metrics, parsed: sample name and labels -> value."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.samples: dict[Key, float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when absent (a child not made yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def label_values(self) -> set[str]:
        return {value for _, labels in self.samples for _, value in labels}


async def metrics_reader(env: Harness) -> dict[str, str]:
    """A monitoring system's token: client_credentials with the metrics scope."""
    client_id, secret = await make_client(
        env, name="Prometheus", kind="admin", grant_types=["client_credentials"], redirect_uris=[],
        post_logout_redirect_uris=[], scopes=["metrics"],
    )  # fmt: skip
    resp = await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "metrics"
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


async def scrape(env: Harness, headers: dict[str, str]) -> Scrape:
    resp = await env.client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Scrape(resp.text)


async def test_metrics_are_refused_without_the_metrics_scope(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    session = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    citizen = {"Authorization": f"Bearer {session.json()['access_token']}"}
    _, bank = await client_token(env, scopes=["verify", "introspect"])
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer not-a-token"}, 401),
        ({"Authorization": "Basic cHJvbWV0aGV1czpzZWNyZXQ="}, 401),
        (citizen, 401),
        (env.staff(), 401),  # officers with every staff scope: the metrics are a client's scope
        (bank, 403),
    ):
        resp = await env.client.get("/metrics", headers=headers)
        assert resp.status_code == status, (headers, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        assert "eid_" not in resp.text
    assert (await env.client.get("/metrics", headers=await metrics_reader(env))).status_code == 200


async def test_requests_are_counted_by_route_template_and_status_never_by_path(env: Harness) -> None:
    reader = await metrics_reader(env)
    c = await env.citizen()
    before = await scrape(env, reader)
    assert (await env.client.get(f"/registry/citizens/{c['id_number']}", headers=env.staff())).status_code == 200
    assert (await env.client.get(f"/nothing/here/{c['id_number']}")).status_code == 404
    assert (await env.client.request("BREW", f"/nothing/{c['phone']}")).status_code == 404
    assert (await env.client.post("/introspect", data={"token": "x"})).status_code == 401  # a hot route
    too_big = b"x" * (env.ctx.settings.max_body_bytes + 1)
    assert (await env.client.post("/token", content=too_big)).status_code == 413  # refused before the endpoint
    assert (await env.client.delete("/healthz")).status_code == 405
    after = await scrape(env, reader)

    def moved(method: str, route: str, status: str) -> float:
        labels = {"method": method, "route": route, "status": status}
        count = after("eid_http_requests_total", **labels) - before("eid_http_requests_total", **labels)
        timed = after("eid_http_request_duration_seconds_count", **labels) - before(
            "eid_http_request_duration_seconds_count", **labels
        )
        assert timed == count, labels
        return count

    assert moved("GET", "/registry/citizens/{id_number}", "200") == 1
    assert moved("GET", "unmatched", "404") == 1
    assert moved("other", "unmatched", "404") == 1
    assert moved("POST", "/introspect", "401") == 1
    assert moved("POST", "/token", "413") == 1
    assert moved("DELETE", "/healthz", "405") == 1
    assert moved("GET", "/metrics", "200") == 1  # the scrape before this one
    labels = {"method": "GET", "route": "/registry/citizens/{id_number}", "status": "200"}
    assert after("eid_http_request_duration_seconds_sum", **labels) > before(
        "eid_http_request_duration_seconds_sum", **labels
    )
    assert after("eid_http_request_duration_seconds_bucket", le="+Inf", **labels) == after(
        "eid_http_requests_total", **labels
    )
    # No label value holds a raw path, an ID number, a phone number or a token.
    values = after.label_values()
    assert not [v for v in values if re.search(r"\d{9}|/nothing", v)], values


async def test_sign_ins_are_counted_by_who_where_and_result(env: Harness) -> None:
    reader = await metrics_reader(env)
    c = await env.citizen()
    pw = await env.register_level1(c)
    stranger = await env.citizen()  # in the registry, without an account
    before = await scrape(env, reader)
    for id_number, password in (
        (c["id_number"], pw),
        (c["id_number"], "not the password at all"),
        (stranger["id_number"], "not the password at all"),
    ):
        await env.client.post("/accounts/sessions", json={"id_number": id_number, "password": password})
    await env.client.post("/staff/token", json={"username": "admin.test", "password": "wrong password for staff"})
    await env.client.post("/staff/token", json={"username": "nobody.here", "password": "wrong password for staff"})
    await env.relogin()
    # The OpenID login form: a malformed attempt, then a good one.
    client_id, _ = await make_client(env)
    _, challenge = pkce_pair()
    async with env.browser() as browser:
        page = await browser.get("/authorize", follow_redirects=True, params={
            "client_id": client_id, "redirect_uri": "https://portal.example.gov.vn/callback", "response_type": "code",
            "scope": "openid", "state": "s", "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256",
        })  # fmt: skip
        fields = form_fields(page.text)
        assert 'action="/login"' in page.text, page.text[:300]
        r = await browser.post("/login", data={**fields, "id_number": "12", "password": "x"})
        assert r.status_code == 401
    async with env.browser() as browser:
        await sign_in_and_consent(browser, client_id, challenge, c["id_number"], pw)
    after = await scrape(env, reader)

    def moved(subject: str, channel: str, result: str) -> float:
        labels = {"subject": subject, "channel": channel, "result": result}
        return after("eid_sign_ins_total", **labels) - before("eid_sign_ins_total", **labels)

    assert moved("citizen", "api", "ok") == 1
    assert moved("citizen", "api", "wrong_password") == 1
    assert moved("citizen", "api", "unknown_id") == 1
    assert moved("citizen", "page", "malformed") == 1
    assert moved("citizen", "page", "ok") == 1
    assert moved("staff", "api", "wrong_password") == 1
    assert moved("staff", "api", "unknown_user") == 1
    assert moved("staff", "api", "ok") == 1
    # Each attempt cost one argon2id verification (the malformed one too, for equal timing).
    assert after("eid_argon2_duration_seconds_count") - before("eid_argon2_duration_seconds_count") >= 8


async def test_tokens_introspections_and_checks_are_counted_by_result(env: Harness) -> None:
    reader = await metrics_reader(env)
    c = await env.citizen()
    before = await scrape(env, reader)
    client_id, secret = await make_client(
        env, name="Ngân hàng", kind="bank", grant_types=["client_credentials"], redirect_uris=[],
        post_logout_redirect_uris=[], scopes=["verify"],
    )  # fmt: skip
    auth = (client_id, secret or "")
    token = (await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=auth)).json()
    refused = await env.client.post("/token", data={"grant_type": "client_credentials", "scope": "ekyc"}, auth=auth)
    assert refused.status_code == 400  # no token issued
    for value, active in ((token["access_token"], True), ("not.a.token", False), ("opaque", False)):
        r = await env.client.post("/introspect", data={"token": value}, auth=auth)
        assert r.json()["active"] is active
    bank = {"Authorization": f"Bearer {token['access_token']}"}
    for name in (c["full_name"], "Trần Văn Khác"):
        body = {"id_number": c["id_number"], "full_name": name, "date_of_birth": c["date_of_birth"]}
        assert (await env.client.post("/verify/identity", json=body, headers=bank)).status_code == 200
    body = {"type": "driving_licence", "number": "001234567890"}
    assert (await env.client.post("/verify/documents", json=body, headers=bank)).status_code == 200
    after = await scrape(env, reader)

    def moved(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert moved("eid_tokens_issued_total", grant="client_credentials") == 1
    assert moved("eid_tokens_issued_total", grant="authorization_code") == 0
    assert after.has("eid_tokens_issued_total", grant="refresh_token")
    assert moved("eid_introspections_total", result="active") == 1
    assert moved("eid_introspections_total", result="inactive") == 2
    assert moved("eid_verify_calls_total", check="identity", result="match") == 1
    assert moved("eid_verify_calls_total", check="identity", result="no_match") == 1
    assert moved("eid_verify_calls_total", check="document", result="unknown") == 1


async def test_outbox_depth_and_oldest_age(env: Harness) -> None:
    reader = await metrics_reader(env)
    c = await env.citizen()
    before = await scrape(env, reader)
    body = {k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}
    assert (await env.client.post("/accounts/registrations", json=body)).status_code == 202
    after = await scrape(env, reader)
    # The outbox gateway of the tests keeps every SMS queued: the code is one more.
    assert after("eid_outbox_queued", outbox="sms") - before("eid_outbox_queued", outbox="sms") == 1
    assert after.has("eid_outbox_queued", outbox="email")
    assert after.has("eid_outbox_queued", outbox="backchannel_logout")
    assert after.has("eid_outbox_oldest_age_seconds", outbox="backchannel_logout")
    env.ctx.clock.advance(dt.timedelta(seconds=300))  # the scraper's token lives 10 minutes
    later = await scrape(env, reader)
    assert later("eid_outbox_oldest_age_seconds", outbox="sms") >= 300


async def test_otps_sent_by_purpose(env: Harness) -> None:
    reader = await metrics_reader(env)
    c = await env.citizen()
    stranger = await env.citizen(phone=None)
    before = await scrape(env, reader)
    for who in (c, stranger):  # a code for the first; the registry links no phone to the second
        body = {k: who[k] for k in ("id_number", "full_name", "date_of_birth")} | {"phone": c["phone"]}
        assert (await env.client.post("/accounts/registrations", json=body)).status_code == 202
    after = await scrape(env, reader)
    assert (
        after("eid_otps_sent_total", purpose="registration") - before("eid_otps_sent_total", purpose="registration")
        == 1
    )
    await env.register_level1(c)
    middle = await scrape(env, reader)
    reset = await env.client.post("/accounts/password-resets", json={"id_number": c["id_number"], "phone": c["phone"]})
    assert reset.status_code == 202
    last = await scrape(env, reader)
    assert (
        last("eid_otps_sent_total", purpose="password_reset") - middle("eid_otps_sent_total", purpose="password_reset")
        == 1
    )


async def test_database_connections_in_use(env: Harness) -> None:
    reader = await metrics_reader(env)
    # Three connections held (on SQLite from the read-only engine: the main one's transactions
    # take the write lock, one at a time).
    pool = "reader" if env.backend == "sqlite" else "main"
    maker = env.ctx.reader
    async with maker() as a, maker() as b, maker() as c:
        for session in (a, b, c):
            await session.execute(text("SELECT 1"))
        held = (await scrape(env, reader))("eid_db_pool_connections_in_use", pool=pool)
        assert held >= 3
    for _ in range(20):  # a background task (logout delivery) may hold one for a moment
        released = (await scrape(env, reader))("eid_db_pool_connections_in_use", pool=pool)
        if released <= held - 3:
            break
        await asyncio.sleep(0.05)
    assert released <= held - 3
    expected = env.ctx.settings.database_pool_size if pool == "main" else 15  # SQLite: SQLAlchemy's 5 + 10
    assert (await scrape(env, reader))("eid_db_pool_connections_max", pool=pool) == expected


async def test_database_pool_waits_and_timeouts(env: Harness) -> None:
    reader = await metrics_reader(env)
    # A pool of one connection that gives up after 0.3 s, measured as the app's are.
    url = env.ctx.settings.database_url
    engine = create_async_engine(url, poolclass=measured_pool("test"), pool_size=1, max_overflow=0, pool_timeout=0.3)
    try:
        before = await scrape(env, reader)
        holder = await engine.connect()
        await holder.execute(text("SELECT 1"))

        async def waiter() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0.1)
        await holder.close()  # the waiter gets it
        await waiting
        held = await engine.connect()
        with pytest.raises(Exception, match="QueuePool limit"):
            await waiter()  # nobody gives it back in time
        await held.close()
        after = await scrape(env, reader)
    finally:
        await engine.dispose()

    def moved(name: str) -> float:
        return after(name, pool="test") - before(name, pool="test")

    assert moved("eid_db_pool_wait_seconds_count") == 2
    assert moved("eid_db_pool_wait_seconds_sum") >= 0.35
    assert moved("eid_db_pool_timeouts_total") == 1
    assert after("eid_db_pool_connections_max", pool="test") == 1


async def test_argon2_calls_waiting_for_a_thread_and_running(env: Harness) -> None:
    reader = await metrics_reader(env)
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    release = threading.Event()
    before = await scrape(env, reader)
    limiter.total_tokens = 1  # one worker thread: the second call waits for the first
    try:
        first = asyncio.create_task(PasswordHasher._in_thread(release.wait, 10))
        second = asyncio.create_task(PasswordHasher._in_thread(time.sleep, 0))
        await asyncio.sleep(0.2)
        during = await scrape(env, reader)
    finally:
        release.set()
        limiter.total_tokens = tokens
    await first
    await second
    after = await scrape(env, reader)
    assert during("eid_argon2_queue_depth") - before("eid_argon2_queue_depth") == 1
    assert during("eid_argon2_running") - before("eid_argon2_running") == 1
    assert after("eid_argon2_queue_depth") == before("eid_argon2_queue_depth")
    assert after("eid_argon2_running") == before("eid_argon2_running")
    assert after("eid_argon2_wait_seconds_count") - before("eid_argon2_wait_seconds_count") == 2
    assert after("eid_argon2_wait_seconds_sum") - before("eid_argon2_wait_seconds_sum") >= 0.2
    assert after("eid_argon2_duration_seconds_sum") - before("eid_argon2_duration_seconds_sum") >= 0.2


async def test_cache_hits_and_misses(env: Harness) -> None:
    reader = await metrics_reader(env)
    client_id, secret = await make_client(
        env, name="Bên thử", kind="bank", grant_types=["client_credentials"], redirect_uris=[],
        post_logout_redirect_uris=[], scopes=["introspect"],
    )  # fmt: skip
    auth = (client_id, secret or "")
    before = await scrape(env, reader)
    token = (await env.client.post("/token", data={"grant_type": "client_credentials"}, auth=auth)).json()
    for _ in range(2):
        r = await env.client.post("/introspect", data={"token": token["access_token"]}, auth=auth)
        assert r.json()["active"] is True
    after = await scrape(env, reader)

    def moved(cache: str, result: str) -> float:
        labels: dict[str, Any] = {"cache": cache, "result": result}
        return after("eid_cache_lookups_total", **labels) - before("eid_cache_lookups_total", **labels)

    # The new client: a miss at /token, then hits at both introspections (and the scrape's).
    assert moved("clients", "miss") >= 1
    assert moved("clients", "hit") >= 2
    # Its token: verified once, then remembered (the scraper's token is a hit each time).
    assert moved("verified_tokens", "miss") == 1
    assert moved("verified_tokens", "hit") >= 2
    if env.backend == "postgresql":  # live tokens are remembered while LISTENing (app/oidc/livecheck.py)
        assert moved("live_tokens", "hit") >= 2
    else:  # SQLite: one process, asked every time
        assert moved("live_tokens", "miss") >= 3 and moved("live_tokens", "hit") == 0
    assert after.has("eid_cache_lookups_total", cache="client_jwks", result="hit")
    assert after("eid_worker_processes") == 1
