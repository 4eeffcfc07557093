"""``vitlab serve`` as a real process on uvicorn: slow clients, uploads cut off as they arrive, SIGTERM, refusals."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from vitlab.cli import main

from .conftest import MNIST_VIT, ServerProcess


@pytest.fixture(scope="module")
def server():
    # A lone request waits 1.5 s for company, so one is surely in flight when SIGTERM comes.
    srv = ServerProcess(
        "--model", str(MNIST_VIT), "--max-upload-mb", "0.01", "--read-timeout", "1", "--max-wait-ms", "1500"
    )
    yield srv
    if srv.proc.poll() is None:
        srv.stop()


def _reply(sock: socket.socket) -> bytes:
    sock.settimeout(15)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_slow_client_times_out(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"\x89PNG" * 4)
        start = time.monotonic()
        reply = _reply(sock)  # and then nothing more is sent
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - start < 10


def test_upload_is_cut_off_as_it_arrives(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"\0" * 8192
        for _ in range(12):  # 96 KB, past the 10 KB limit and the multipart slack; the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = _reply(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert httpx.get(f"{server.url}/readyz").status_code == 200  # still serving


def test_sigterm_drains_in_flight_requests_then_exits_0(server: ServerProcess, digits) -> None:
    replies: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: replies.append(httpx.post(f"{server.url}/v1/predict", content=digits[0][0], timeout=30))
    )
    thread.start()
    time.sleep(0.5)  # the request is waiting in the batcher (1.5 s)
    assert server.stop() == 0
    thread.join(30)
    assert replies and replies[0].status_code == 200 and replies[0].json()["labels"][0] == str(digits[0][1])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_other_addresses_need_a_key_or_insecure(capsys, monkeypatch) -> None:
    assert main(["serve", "--model", str(MNIST_VIT), "--host", "0.0.0.0"]) == 2
    assert "--api-key-env VAR" in capsys.readouterr().err
    monkeypatch.delenv("VITLAB_TEST_KEY", raising=False)
    assert main(["serve", "--model", str(MNIST_VIT), "--host", "0.0.0.0", "--api-key-env", "VITLAB_TEST_KEY"]) == 2
    assert "VITLAB_TEST_KEY: the environment variable is unset or empty" in capsys.readouterr().err


def test_a_model_that_cannot_load_ends_the_server_with_one_line() -> None:
    cmd = [sys.executable, "-m", "vitlab.cli", "serve", "--model", "no_such_model_xyz", "--port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("vitlab serve: error: no_such_model_xyz: no such checkpoint file or directory")
    assert "Traceback" not in done.stderr
