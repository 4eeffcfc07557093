"""Fixtures of the serve tests: the example MNIST ViT, loaded once, and digits as PNG bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlab.infer import Predictor

ROOT = Path(__file__).resolve().parents[2]
MNIST_VIT = ROOT / "examples" / "mnist_vit.safetensors"


@pytest.fixture(scope="session")
def mnist_predictor() -> Predictor:
    """The example checkpoint's predictor (fp32, CPU); read-only in the tests."""
    return Predictor.from_pretrained(MNIST_VIT)


@pytest.fixture(scope="session")
def digits(mnist: Path) -> list[tuple[bytes, int]]:
    """Eight test digits as PNG bytes with their labels."""
    data = np.load(mnist)
    out = []
    for img, label in zip(data["x_test"][:8], data["y_test"][:8], strict=True):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append((buf.getvalue(), int(label)))
    return out


class ServerProcess:
    """``vitlab serve`` in a subprocess on a free loopback port (``--port 0``, the port read from its first line)."""

    def __init__(self, *args: str, timeout: float = 60.0) -> None:
        import re
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "vitlab.cli", "serve", "--port", "0", "--log-level", "warning", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"the server did not start: {line}{self.proc.stderr.read()}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited: {self.proc.stderr.read()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server was not ready within {timeout} s")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status (killed, and the test fails, if it does not exit in time)."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("the server did not exit after SIGTERM") from None
        finally:
            self.proc.stderr.close()
