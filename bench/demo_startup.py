"""How long `eid serve --demo` takes from process start to a ready server (GET /readyz 200).

Prints the figures; asserts nothing. Run: .venv/bin/python bench/demo_startup.py [runs]
"""

from __future__ import annotations

import os
import sys

# bench/token.py would shadow the standard library's `token` module.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402


def one_run() -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EID_")}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        announced = time.perf_counter() - started
        while True:
            try:
                if httpx.get(f"{info['issuer']}/readyz", timeout=1.0).status_code == 200:
                    return announced, time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    results = [one_run() for _ in range(runs)]
    ready = [r[1] for r in results]
    print(f"eid serve --demo, {runs} runs: first line after {statistics.median(r[0] for r in results):.2f} s (median); "
          f"ready after median {statistics.median(ready):.2f} s, min {min(ready):.2f} s, max {max(ready):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
