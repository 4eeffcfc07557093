"""The bounded load test of ``benchmarks/serve_load.py`` in CI: 200 requests at 16 clients, 0 errors."""

from __future__ import annotations

import subprocess
import sys

from .conftest import MNIST_VIT, ROOT


def test_200_requests_without_an_error() -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--quick", "--model", str(MNIST_VIT)]
    cmd += ["--level-timeout", "60"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("16 ")]
    assert len(rows) == 1
    clients, requests, _, _, _, _, errors, mean_batch = rows[0]
    assert (clients, requests, errors) == ("16", "200", "0")
    assert float(mean_batch) > 1  # 16 clients at once are batched
    assert "SIGTERM exit status: 0" in done.stdout
