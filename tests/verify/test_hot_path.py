"""The identity check is a bank's hot path: its body is parsed by hand and, on PostgreSQL, its
registry reads and its audit/access-log writes are batched across concurrent calls. Same
answers as any other route, one answer per call, and never an answer whose rows were not
recorded."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from app.core.batching import Batcher
from app.core.privacy import mask_id_number
from app.registry.idnumber import Sex
from app.verify.service import IdentityChecks
from tests.support import Harness
from tests.verify.test_verify_and_ekyc import bank


async def test_concurrent_checks_each_get_their_own_answer_and_rows(env: Harness) -> None:
    env.ctx.clock.advance(dt.timedelta(days=3))  # rows carry the service's time, not the database's
    await env.relogin()
    client_id, h = await bank(env)
    people = [await env.citizen(full_name=f"Trần Văn Số {i}", sex=Sex.male) for i in range(4)]
    unknown = people[0]["id_number"][:-6] + "000000"
    asks: list[tuple[dict[str, Any], str]] = []
    for i in range(30):
        c = people[i % 4]
        if i % 3 == 0:
            asks.append(({"id_number": c["id_number"], "full_name": c["full_name"]}, "match"))
        elif i % 3 == 1:
            asks.append(({"id_number": c["id_number"], "full_name": people[(i + 1) % 4]["full_name"]}, "no_match"))
        else:
            asks.append(({"id_number": unknown, "full_name": c["full_name"]}, "no_match"))
    started = env.ctx.clock.now()
    answers = await asyncio.gather(
        *(
            env.client.post("/verify/identity", json=b, headers={**h, "X-Request-ID": f"check-{n}"})
            for n, (b, _) in enumerate(asks)
        )
    )
    ended = env.ctx.clock.now()
    for (body, expected), answer in zip(asks, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == expected, body
    # One audit row per call, one access-log row per call about a person who exists.
    audited = "action = 'verify.identity' AND actor_id = :c"
    assert await env.count("audit_events", audited, c=client_id) == 30
    assert await env.count("access_log", "channel = 'verify' AND recipient_id = :c", c=client_id) == 20
    for k, c in enumerate(people):
        expected = sum(1 for i in range(30) if i % 4 == k and i % 3 != 2)
        logged = "recipient_id = :c AND id_number = :i"
        assert await env.count("access_log", logged, c=client_id, i=c["id_number"]) == expected
    assert await env.count("access_log", "id_number = :i", i=unknown) == 0
    within = "recipient_id = :c AND at >= :a AND at <= :b"
    assert await env.count("access_log", within, c=client_id, a=started, b=ended) == 20
    within = "actor_id = :c AND at >= :a AND at <= :b"
    assert await env.count("audit_events", within, c=client_id, a=started, b=ended) == 30
    # Each call's rows carry its own request ID, target and outcome (rows of a batch are not mixed up).
    for n, (body, expected) in enumerate(asks):
        assert answers[n].headers["x-request-id"] == f"check-{n}"
        own = "request_id = :r AND target = :t AND outcome = :o AND action = 'verify.identity'"
        assert (
            await env.count("audit_events", own, r=f"check-{n}", t=mask_id_number(body["id_number"]), o=expected) == 1
        )
        logged = 0 if body["id_number"] == unknown else 1
        assert (
            await env.count("access_log", "request_id = :r AND id_number = :i", r=f"check-{n}", i=body["id_number"])
            == logged
        )


@contextlib.asynccontextmanager
async def refusing_access_rows_of(env: Harness, client_id: str) -> AsyncIterator[None]:
    """While inside, the database refuses this client's access-log rows (a trigger)."""
    assert "'" not in client_id
    if env.backend == "postgresql":
        create = [
            "CREATE FUNCTION eid_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.recipient_id = '{client_id}' THEN RAISE EXCEPTION 'refused by test'; END IF;"
            " RETURN NEW; END $$",
            "CREATE TRIGGER eid_test_refuse BEFORE INSERT ON access_log FOR EACH ROW EXECUTE FUNCTION eid_test_refuse()",
        ]
        drop = ["DROP TRIGGER eid_test_refuse ON access_log", "DROP FUNCTION eid_test_refuse()"]
    else:
        create = [
            "CREATE TRIGGER eid_test_refuse BEFORE INSERT ON access_log"
            f" WHEN NEW.recipient_id = '{client_id}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        ]
        drop = ["DROP TRIGGER eid_test_refuse"]
    await _run_sql(env, create)
    try:
        yield
    finally:
        await _run_sql(env, drop)


async def _run_sql(env: Harness, statements: list[str]) -> None:
    async with env.ctx.sessionmaker() as session:
        for statement in statements:
            await session.execute(text(statement))
        await session.commit()


async def test_userinfo_that_cannot_be_recorded_is_not_answered(env: Harness) -> None:
    from tests.oidc.test_tokens import logged_in_tokens

    client_id, _, tokens = await logged_in_tokens(env)
    h = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with refusing_access_rows_of(env, client_id):
        refused = await env.client.get("/userinfo", headers=h)
    assert refused.status_code == 503 and refused.json()["type"] == "urn:eid:problem:unavailable"
    assert "name" not in refused.json()
    assert await env.count("audit_events", "action = 'oidc.userinfo' AND actor_id = :c", c=client_id) == 0
    again = await env.client.get("/userinfo", headers=h)
    assert again.status_code == 200 and again.json()["sub"]
    assert await env.count("audit_events", "action = 'oidc.userinfo' AND actor_id = :c", c=client_id) == 1


async def test_a_refused_userinfo_row_fails_only_its_own_call(env: Harness) -> None:
    from tests.oidc.test_tokens import logged_in_tokens

    a_id, _, a_tokens = await logged_in_tokens(env)
    b_id, _, b_tokens = await logged_in_tokens(env)
    a_h = {"Authorization": f"Bearer {a_tokens['access_token']}"}
    b_h = {"Authorization": f"Bearer {b_tokens['access_token']}"}
    async with refusing_access_rows_of(env, a_id):
        answers = await asyncio.gather(
            env.client.get("/userinfo", headers=a_h), *(env.client.get("/userinfo", headers=b_h) for _ in range(6))
        )
    assert answers[0].status_code == 503 and answers[0].json()["type"] == "urn:eid:problem:unavailable"
    assert [a.status_code for a in answers[1:]] == [200] * 6
    userinfo = "action = 'oidc.userinfo' AND actor_id = :c"
    assert await env.count("audit_events", userinfo, c=a_id) == 0
    assert await env.count("audit_events", userinfo, c=b_id) == 6
    assert await env.count("access_log", "channel = 'userinfo' AND recipient_id = :c", c=b_id) == 6


async def test_a_call_that_cannot_be_recorded_is_not_answered(env: Harness) -> None:
    """When its access-log row cannot be written, the call answers 503 and leaves no row at
    all (not even its audit row): the batch is one statement."""
    client_id, h = await bank(env)
    c = await env.citizen()
    body = {"id_number": c["id_number"], "full_name": c["full_name"]}
    async with refusing_access_rows_of(env, client_id):
        refused = await env.client.post("/verify/identity", json=body, headers=h)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:eid:problem:unavailable" and "result" not in refused.json()
    assert refused.headers["retry-after"] == "1"
    assert await env.count("audit_events", "actor_id = :c", c=client_id) == 0
    assert await env.count("access_log", "recipient_id = :c", c=client_id) == 0
    # The next call is recorded and answered again.
    again = await env.client.post("/verify/identity", json=body, headers=h)
    assert again.status_code == 200 and again.json()["result"] == "match"
    assert await env.count("audit_events", "actor_id = :c", c=client_id) == 1


VALID = {"id_number": "001090123456", "full_name": "Nguyễn Văn An", "date_of_birth": "1990-05-17"}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "problem"),
    [
        (b'{"id_number": "0010', "application/json", 400, "malformed-json"),
        (b"\xff\xfe{not utf8}", "application/json", 400, "malformed-json"),
        (b"", "application/json", 422, "validation"),
        (b"[]", "application/json", 422, "validation"),
        (b"null", "application/json", 422, "validation"),
        (json.dumps({**VALID, "extra": 1}).encode(), "application/json", 422, "validation"),
        (json.dumps({**VALID, "date_of_birth": "1990-13-45"}).encode(), "application/json", 422, "validation"),
        (json.dumps({**VALID, "id_number": 1090123456}).encode(), "application/json", 422, "validation"),
        (json.dumps({**VALID, "sex": "unknown"}).encode(), "application/json", 422, "validation"),
        (json.dumps({**VALID, "match": "fuzzy"}).encode(), "application/json", 422, "validation"),
        (b'{"id_number": "001090123456", "full_name": "\\ud800"}', "application/json", 422, "validation"),
        (json.dumps(VALID).encode(), "text/plain", 415, "unsupported-media-type"),
        (b"   ", "application/json", 400, "malformed-json"),
        (b"[" * 100_000, "application/json", 400, "malformed-json"),
        (b'{"id_number": ' + b"1" * 5000 + b"}", "application/json", 400, "malformed-json"),
    ],
)
async def test_bad_bodies_get_the_same_problems_as_elsewhere(
    env: Harness, body: bytes, content_type: str, status: int, problem: str
) -> None:
    _, h = await bank(env)
    before = await env.count("audit_events", "action = 'verify.identity'")
    resp = await env.client.post("/verify/identity", content=body, headers={**h, "content-type": content_type})
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"] == f"urn:eid:problem:{problem}"
    assert "Nguyễn" not in resp.text  # never echoed
    assert await env.count("audit_events", "action = 'verify.identity'") == before


async def test_bad_bodies_name_the_fields(env: Harness) -> None:
    _, h = await bank(env)
    resp = await env.client.post("/verify/identity", json={**VALID, "phone": "12", "extra": 1}, headers=h)
    assert resp.status_code == 422
    assert {e["field"] for e in resp.json()["errors"]} == {"phone", "extra"}


async def test_the_caller_is_checked_before_the_body_is_read(env: Harness) -> None:
    resp = await env.client.post("/verify/identity", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")


# The batching primitive itself (no database): how items are grouped and answered.


async def test_batcher_groups_what_arrives_during_a_round_trip() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await release.wait()
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher("test", run, lambda: RuntimeError("down"))
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
    assert batches == [[1], [2, 3, 4, 5, 6]]


async def test_batcher_fails_every_caller_of_a_failed_batch_and_recovers() -> None:
    calls = 0

    async def run(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("connection lost")
        return items

    batcher: Batcher[int, int] = Batcher("test", run, lambda: RuntimeError("down"))
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert await batcher.submit(3) == 3


async def test_a_caller_that_goes_away_does_not_cancel_its_batch() -> None:
    written: list[int] = []
    release = asyncio.Event()

    async def run(items: list[int]) -> list[None]:
        await release.wait()
        written.extend(items)
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher("test", run, lambda: RuntimeError("down"))
    leaving = asyncio.ensure_future(batcher.submit(1))
    staying = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    leaving.cancel()
    release.set()
    await staying
    await batcher.close()
    assert written == [1, 2]


async def test_other_methods_are_405_problems(env: Harness) -> None:
    _, h = await bank(env)
    resp = await env.client.get("/verify/identity", headers=h)
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert resp.json()["type"] == "urn:eid:problem:method-not-allowed"


async def test_checks_recover_when_their_database_connection_is_lost(env: Harness) -> None:
    """PostgreSQL only (the batched path has its own connection): after the connection drops,
    a check in flight answers 503 (its rows may not be recorded) and the next ones reconnect."""
    if env.backend == "sqlite":
        assert env.ctx.extension(IdentityChecks) is None  # one process, checks go through the ORM
        return
    client_id, h = await bank(env)
    c = await env.citizen()
    body = {"id_number": c["id_number"], "full_name": c["full_name"]}
    assert (await env.client.post("/verify/identity", json=body, headers=h)).status_code == 200
    async with env.ctx.sessionmaker() as session:
        killed = await session.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'eid-identity-checks' AND datname = current_database()"
            )
        )
    assert killed == 1
    statuses = [(await env.client.post("/verify/identity", json=body, headers=h)).status_code for _ in range(3)]
    assert statuses[-1] == 200 and set(statuses) <= {200, 503} and statuses.count(503) <= 1, statuses
    assert await env.count("audit_events", "actor_id = :c", c=client_id) == 1 + statuses.count(200)


async def test_a_refused_row_fails_only_its_own_call(env: Harness) -> None:
    """Bank A's access-log rows are refused while bank B's calls share its batches: A's call
    answers 503 with no row; every call of B is answered and recorded."""
    a_id, a_h = await bank(env)
    b_id, b_h = await bank(env)
    c = await env.citizen()
    body = {"id_number": c["id_number"], "full_name": c["full_name"]}
    async with refusing_access_rows_of(env, a_id):
        answers = await asyncio.gather(
            env.client.post("/verify/identity", json=body, headers=a_h),
            *(env.client.post("/verify/identity", json=body, headers=b_h) for _ in range(9)),
        )
    assert answers[0].status_code == 503, answers[0].text
    assert [a.status_code for a in answers[1:]] == [200] * 9
    assert all(a.json()["result"] == "match" for a in answers[1:])
    assert await env.count("audit_events", "actor_id = :c", c=a_id) == 0
    assert await env.count("access_log", "recipient_id = :c", c=a_id) == 0
    assert await env.count("audit_events", "actor_id = :c", c=b_id) == 9
    assert await env.count("access_log", "recipient_id = :c", c=b_id) == 9


async def test_batcher_answers_an_error_to_one_caller_only() -> None:
    async def run(items: list[int]) -> list[int | Exception]:
        return [ValueError(f"item {i}") if i == 2 else i for i in items]

    batcher: Batcher[int, int] = Batcher("test", run, lambda: RuntimeError("down"))
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3)), return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError)


async def test_hot_path_connections_plan_their_statements_once(env: Harness) -> None:
    """PostgreSQL only: the raw connections of the hot paths use generic plans (app/core/db.py
    RAW_SERVER_SETTINGS), or PostgreSQL would plan the journal's statement again in most calls."""
    if env.backend == "sqlite":
        assert env.ctx.raw_pool is None
        return
    _, h = await bank(env)
    c = await env.citizen()
    body = {"id_number": c["id_number"], "full_name": c["full_name"]}
    assert (await env.client.post("/verify/identity", json=body, headers=h)).status_code == 200
    identity_checks = env.ctx.extension(IdentityChecks)
    assert identity_checks is not None
    checks = identity_checks._conn  # the checks' own connection (earlier tests used it too)
    plans = "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE 'WITH audit%'"
    before = tuple(await checks.fetchrow(plans))
    for _ in range(8):  # past the five custom plans PostgreSQL tries first
        assert (await env.client.post("/verify/identity", json=body, headers=h)).status_code == 200
    after = tuple(await checks.fetchrow(plans))
    # One statement reads a call's record, the next commits its rows (sequential calls: 2 each).
    assert (after[0] - before[0], after[1]) == (16, 0)
    assert await env.ctx.raw_pool.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
