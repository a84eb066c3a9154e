"""Demo mode and the test kit: what portal and bank teams run in their own CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.demo.fixtures import FixturesInvalid, json_schema, parse_fixtures
from app.testing import EidLoginError, EidServer, start_demo_server
from tests.oidc.flow import jwt_parts
from tests.support import Harness

ROOT = Path(__file__).resolve().parents[2]


def test_schema_file_is_current() -> None:
    committed = json.loads((ROOT / "app" / "demo" / "fixtures.schema.json").read_text())
    assert committed == json_schema(), "run: eid demo-fixtures --schema > app/demo/fixtures.schema.json"


BAD = """\
citizens:
  - key: an
    id_number: "001090123455"
    full_name: Nguyễn Văn An
    date_of_birth: "1990-05-17"
    sex: female
    residence: Hà Nội
    phone: "12345"
    guardians: [nobody]
    account: {level: 1, password: "12345678"}
  - key: an
    id_number: "001090123455"
    full_name: Copy
    date_of_birth: "1990-05-17"
    sex: male
    residence: Hà Nội
clients:
  - client_id: p
    name: P
    kind: portal
    grant_types: [client_credentials]
    scopes: [verify]
"""


def test_bad_fixtures_give_one_line_precise_error_per_problem() -> None:
    with pytest.raises(FixturesInvalid) as info:
        parse_fixtures(BAD, "f.yaml")
    lines = str(info.value).splitlines()
    assert "f.yaml:3: citizens[0].id_number: Digit 4 does not match the sex and century of birth." in lines
    assert any(line.startswith("f.yaml:8: citizens[0].phone:") for line in lines)
    assert "f.yaml:9: citizens[0].guardians[0]: no citizen with key or ID number 'nobody' in this file" in lines
    assert any(line.startswith("f.yaml:10: citizens[0].account.password:") for line in lines)
    assert "f.yaml:11: citizens[1].key: repeats the key of citizens[0]" in lines
    assert "f.yaml:12: citizens[1].id_number: repeats the ID number of citizens[0]" in lines
    assert "f.yaml:18: clients[0].secret: client_secret_basic needs a secret (16+ characters)" in lines
    with pytest.raises(FixturesInvalid) as info:
        parse_fixtures("citizens:\n  - key: x\n    sex: other\n    extra: 1\n", "g.yaml")
    text = str(info.value)
    assert (
        "g.yaml:3: citizens[0].sex:" in text and "g.yaml:4: citizens[0].extra: Extra inputs are not permitted" in text
    )
    assert "g.yaml:2: citizens[0].id_number: Field required" in text
    with pytest.raises(FixturesInvalid, match=r"h.json:2: not valid YAML/JSON"):
        parse_fixtures('{"citizens": [\n  {"key": "a",, }]}', "h.json")


def eid_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


def test_demo_refuses_production_real_databases_and_foreign_directories(tmp_path: Path) -> None:
    r = eid_cli("serve", "--demo", "--port", "0", EID_ENV="production")
    assert r.returncode == 2 and "EID_ENV=production" in r.stderr
    r = eid_cli("serve", "--demo", "--port", "0", EID_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1/test")
    assert r.returncode == 2 and "unset EID_DATABASE_URL" in r.stderr
    (tmp_path / "precious.txt").write_text("keep me")
    r = eid_cli("serve", "--demo", "--port", "0", "--data", str(tmp_path))
    assert r.returncode == 2 and "not a demo data directory" in r.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    r = eid_cli("serve", "--demo", "--port", "0", "--fixtures", str(bad))
    assert r.returncode == 2 and f"{bad}:11: citizens[1].key" in r.stderr
    r = eid_cli("demo-fixtures")
    assert r.returncode == 0 and parse_fixtures(r.stdout).clients[0].client_id == "demo-portal"


async def test_demo_routes_do_not_exist_outside_demo_mode(env: Harness) -> None:
    for method, path in (("GET", "/_demo/outbox"), ("GET", "/_demo/clock"), ("POST", "/_demo/clock")):
        r = await env.client.request(method, path, json={"advance_seconds": 60} if method == "POST" else None)
        assert r.status_code in (404, 405), path
        assert "x-eid-demo" not in r.headers


def test_demo_server_end_to_end(eid_server: EidServer, eid_login, eid_outbox, eid_clock) -> None:  # type: ignore[no-untyped-def]
    http = eid_server.http
    r = http.get(eid_server.url("/readyz"))
    assert r.headers["x-eid-demo"] == "true"
    # A logged-in citizen through the real pages; tokens are signed with the published demo keys.
    tokens = eid_login("demo-portal", "an", scopes="openid profile phone")
    header, claims = jwt_parts(tokens["id_token"])
    assert header["kid"].startswith("demo-") and claims["acr"] == "urn:eid:loa:1" and claims["nonce"] == tokens["nonce"]
    info = http.get(eid_server.url("/userinfo"), headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert (info["name"], info["phone_number"]) == ("Nguyễn Văn An", "+84912345678")
    # Step-up refusal for a level-1 citizen; level 2 passes; a guardian acts for a dependent.
    with pytest.raises(EidLoginError) as refused:
        eid_login("demo-portal", "an", acr="urn:eid:loa:2")
    assert refused.value.error == "unmet_authentication_requirements"
    assert jwt_parts(eid_login("demo-portal", "ngoc", acr="urn:eid:loa:2")["id_token"])[1]["acr"] == "urn:eid:loa:2"
    kid = jwt_parts(eid_login("demo-portal", "ngoc", act_for="khoi")["id_token"])[1]
    assert "act" in kid
    # Locked and revoked accounts cannot sign in.
    for who in ("nam", "ha"):
        with pytest.raises(EidLoginError):
            eid_login("demo-portal", who)
    # Registration with the real OTP from the outbox; the clock expires codes without sleeping.
    hoa = eid_server.citizen("hoa")
    body = {
        "id_number": hoa.id_number,
        "full_name": hoa.full_name,
        "date_of_birth": hoa.date_of_birth.isoformat(),
        "phone": hoa.phone,
    }
    first = http.post(eid_server.url("/accounts/registrations"), json=body).json()
    code = next(m for m in eid_outbox(hoa.phone) if m["purpose"] == "registration_otp")["text"].split(": ")[1][:6]
    eid_clock.advance(301)
    late = http.post(eid_server.url(f"/accounts/registrations/{first['id']}/verify"), json={"code": code})
    assert late.status_code == 400
    second = http.post(eid_server.url("/accounts/registrations"), json=body).json()
    code = next(m for m in eid_outbox(hoa.phone) if m["purpose"] == "registration_otp")["text"].split(": ")[1][:6]
    assert (
        http.post(eid_server.url(f"/accounts/registrations/{second['id']}/verify"), json={"code": code}).status_code
        == 200
    )
    # A bank verifies an identity with its client_credentials token.
    bank = eid_server.client_credentials("demo-bank")
    r = http.post(
        eid_server.url("/verify/identity"),
        json={"id_number": "001090123456", "full_name": "Nguyễn Văn An"},
        headers={"Authorization": f"Bearer {bank['access_token']}"},
    )
    assert r.json()["result"] == "match"


def test_two_demo_runs_give_the_same_keys_and_subjects() -> None:
    subs, kids = [], []
    for _ in range(2):
        server = start_demo_server()
        try:
            token = server.login("demo-portal", "an")
            header, claims = jwt_parts(token["id_token"])
            subs.append(claims["sub"])
            kids.append(header["kid"])
            jwks = httpx.get(server.url("/jwks")).json()
        finally:
            server.stop()
    assert subs[0] == subs[1] and kids[0] == kids[1]
    assert {k["kid"] for k in jwks["keys"]} == {k for k in {kids[0]}} | {
        k["kid"] for k in jwks["keys"] if k["alg"] == "ES256"
    }


def test_the_container_command_line_without_docker(tmp_path: Path) -> None:
    """What `docker run … eid serve --demo --fixtures /fixtures.yaml` runs, through the image's entrypoint."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fixtures = tmp_path / "fixtures.yaml"
    fixtures.write_text((ROOT / "examples" / "portal-integration" / "eid-fixtures.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    args = [
        "sh",
        str(ROOT / "docker-entrypoint.sh"),
        "serve",
        "--demo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--fixtures",
        str(fixtures),
        "--issuer",
        f"http://127.0.0.1:{port}",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["issuer"] == f"http://127.0.0.1:{port}" and info["port"] == port
        for _ in range(100):
            try:
                if httpx.get(f"{info['issuer']}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        meta = httpx.get(f"{info['issuer']}/.well-known/openid-configuration").json()
        assert meta["issuer"] == info["issuer"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert proc.returncode == 0


def test_cli_reads_a_demo_instances_outbox(eid_server: EidServer, tmp_path: Path) -> None:
    an = eid_server.citizen("an")
    r = eid_server.http.post(
        eid_server.url("/accounts/password-resets"), json={"id_number": an.id_number, "phone": an.phone}
    )
    assert r.status_code == 202
    cli = eid_cli("outbox", "--demo", str(eid_server.data_dir), "--phone", an.phone)
    assert cli.returncode == 0, cli.stderr
    texts = [line.split("  ", 2)[2].split(None, 1)[1] for line in cli.stdout.strip().splitlines()]
    assert texts and texts == [m["text"] for m in eid_server.outbox(an.phone)]
    assert "Mã đặt lại mật khẩu" in texts[0]
    refused = eid_cli("outbox", "--demo", str(tmp_path))
    assert refused.returncode == 2 and "not a demo data directory" in refused.stderr
