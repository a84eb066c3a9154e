from tests.support import Harness


async def test_healthz_and_readyz(env: Harness) -> None:
    assert (await env.client.get("/healthz")).json() == {"status": "ok"}
    resp = await env.client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready"}
    assert resp.headers["x-request-id"]


async def test_unknown_route_is_problem_json(env: Harness) -> None:
    resp = await env.client.get("/no-such-thing")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"] == "urn:eid:problem:not-found"
