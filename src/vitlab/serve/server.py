"""Running the app on uvicorn: who may listen where, a socket bound up front, and a clean SIGTERM."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from typing import Any

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to listen beyond loopback without an API key, unless ``insecure`` says so explicitly.

    Raises:
        ValueError: ``host`` is not loopback, no API key is set and ``insecure`` is False.
    """
    if is_loopback(host) or api_key or insecure:
        return
    raise ValueError(
        f"--host {host} is reachable from other machines: set an API key with --api-key-env VAR "
        "(the key read from the environment variable VAR), or pass --insecure to serve without one"
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port, see ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(
    app: Any,
    sock: socket.socket,
    *,
    log_level: str = "info",
    graceful_timeout_s: float = 30.0,
    limit_concurrency: int | None = None,
) -> Any:
    """Serve ``app`` on ``sock`` until SIGINT or SIGTERM; returns the uvicorn server (``should_exit`` etc.).

    SIGTERM stops accepting connections, lets the requests in flight finish (at most ``graceful_timeout_s``),
    runs the app's shutdown (the batchers finish what they hold), and returns normally, so the process can
    exit 0. uvicorn re-raises the signal it caught once it has shut down; with the default SIGTERM action that
    would kill the process (exit 143), so a handler that only records it is installed for the duration.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout_s,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=5,
        server_header=False,
    )
    server = uvicorn.Server(config)
    app.state.stop_server = lambda: setattr(server, "should_exit", True)
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, _frame: received.append(sig))
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return server
