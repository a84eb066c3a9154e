import datetime as dt

from app.maintenance import purge_expired
from tests.support import Harness


async def test_purge_removes_only_what_expired(env: Harness) -> None:
    c = await env.citizen()
    body = {k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}
    fresh = (await env.client.post("/accounts/registrations", json=body)).json()["id"]
    audit_before = await env.count("audit_events")
    async with env.ctx.sessionmaker() as session:
        counts = await purge_expired(session, env.ctx.clock.now() + dt.timedelta(days=2))
    assert counts["otp_challenges"] >= 1
    assert await env.count("audit_events") == audit_before  # never purged
    fresh_hex = fresh.replace("-", "") if env.backend == "sqlite" else fresh
    assert await env.count("otp_challenges", "id = :i", i=fresh_hex) == 0
    await env.relogin()  # the purge two days ahead also removed the admin's session
    c2 = await env.citizen()
    body2 = {k: c2[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}
    kept = (await env.client.post("/accounts/registrations", json=body2)).json()["id"]
    async with env.ctx.sessionmaker() as session:
        await purge_expired(session, env.ctx.clock.now())
    kept_hex = kept.replace("-", "") if env.backend == "sqlite" else kept
    assert await env.count("otp_challenges", "id = :i", i=kept_hex) == 1
