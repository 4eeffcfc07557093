"""``vitlab serve --model CKPT|NAME``: an HTTP API and a web page for models, with dynamic batching."""

from __future__ import annotations

import argparse
import sys

from ._common import add_precision


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP: a web page, a JSON API, attention overlays, metrics",
        description=(
            "Serve one or more models on FastAPI/uvicorn: GET / is a web page (pick a model, drop an image, see "
            "top-k and the attention rollout); POST /v1/predict and /v1/attention take an image (raw body or "
            "multipart); GET /v1/models, /healthz, /readyz, /metrics (Prometheus), /docs (OpenAPI). Concurrent "
            "requests for a model are batched into one forward pass. Listens on loopback unless told otherwise; "
            "another address needs --api-key-env or --insecure. SIGTERM finishes the requests in flight, then "
            "exits 0."
        ),
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="CKPT|NAME",
        help="checkpoint (any format vitlab reads) or model name; repeat to serve several; NAME=CKPT names it",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add_precision(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-batch", type=int, default=16, help="most images per forward pass (default 16; 1: off)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits to be batched (5)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload; 413 beyond (default 10)")
    p.add_argument("--workers-queue", type=int, default=64, help="requests waiting per model before 503 (default 64)")
    p.add_argument("--read-timeout", type=float, default=30.0, help="seconds to send a request body (408 beyond)")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=None,
        help="require the API key held by environment variable VAR (Authorization: Bearer KEY)",
    )
    p.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without an API key (anyone may call)"
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"), help="uvicorn's")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    try:
        from .. import serve
    except ImportError as err:
        raise ValueError(f"serve needs the serve extra ({err.name} is missing): pip install 'vitlab[serve]'") from None

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env {args.api_key_env}: the environment variable is unset or empty")
    serve.check_exposure(args.host, api_key, args.insecure)
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    for spec in args.model:
        serve.model_spec(spec)  # a name unusable in URLs is refused before anything loads
    config = serve.ServeConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_upload_mb=args.max_upload_mb,
        max_queue=args.workers_queue,
        read_timeout_s=args.read_timeout,
        api_key=api_key,
    )
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="vitlab serve: %(message)s")
    failure: list[BaseException] = []

    def stop(err: BaseException) -> None:
        failure.append(err)
        app.state.stop_server()

    app = serve.create_app(
        lambda: serve.load_models(args.model, args.precision, args.device), config, on_load_error=stop
    )
    sock = serve.bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"vitlab serve: listening on http://{shown}:{port} (models loading)", file=sys.stderr, flush=True)
    serve.run(
        app,
        sock,
        log_level=args.log_level,
        limit_concurrency=max(256, 4 * args.workers_queue * len(args.model)),
    )
    if failure:
        raise ValueError(str(failure[0]))
    return 0
