"""The operator's commands for relying parties and keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_SECRET


def eid(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    env |= {
        "EID_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'cli.db'}",
        "EID_SECRET_KEY": TEST_SECRET,
        "EID_ENV": "test",
        "EID_DATA_DIR": str(tmp),
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_create_client_and_rotate_keys(tmp_path: Path) -> None:
    assert eid(tmp_path, "migrate").returncode == 0
    out = eid(
        tmp_path,
        "create-client",
        "Cổng DVC",
        "--redirect-uri",
        "https://dvc.example.gov.vn/cb",
        "--scope",
        "openid",
        "--scope",
        "profile",
        "--approve",
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"client_id: portal-[0-9a-f]{16}", out.stdout)
    secret = re.search(r"client_secret: (\S+)", out.stdout)
    assert secret and len(secret.group(1)) >= 43
    bad = eid(tmp_path, "create-client", "Bad", "--redirect-uri", "http://evil.example/cb")
    assert bad.returncode == 2 and "https" in bad.stderr
    first = eid(tmp_path, "rotate-keys")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["RS256", "ES256"]
    assert "--help" not in first.stdout
    assert eid(tmp_path, "rotate-keys", "--help").returncode == 0
