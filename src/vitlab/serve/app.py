"""The HTTP API and the web page: a FastAPI app serving already-built predictors through per-model batchers.

Routes: ``GET /`` (the page), ``POST /v1/predict``, ``POST /v1/attention``, ``GET /v1/models``,
``GET /healthz``, ``GET /readyz``, ``GET /metrics``, ``GET /docs``. Errors are JSON ``{"error": "one line"}``.

What a request can never do: name a file on the server (an upload goes to a temporary file whose name the
server makes; the client's file name is only echoed back as the record's ``source``), grow past the upload
limit (bytes are counted as they arrive), hold a connection forever while sending its body (read timeout), or
queue without bound (503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data import ImageError, load_image
from ..infer import Prediction, Predictor
from ..viz import METHODS, attention_maps
from ..viz.render import figure_png, model_view, overlay, panel_figure
from ..weights import Preprocessing
from .batching import Batcher, QueueFullError
from .metrics import Metrics, MetricsMiddleware

log = logging.getLogger(__name__)

# Smallest side of a single-map overlay PNG: a 28x28 MNIST input is drawn 8x, with nearest-neighbour pixels.
OVERLAY_MIN_SIDE = 224
# Room for the multipart envelope (boundaries, part headers) on top of the upload limit.
MULTIPART_SLACK = 64 * 1024


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of a server.

    Attributes:
        max_batch: Most inputs per forward pass (1 turns batching off).
        max_wait_ms: How long a lone request waits for others to batch with.
        max_upload_mb: Largest accepted upload (413 beyond), counted as bytes arrive.
        max_queue: Requests that may wait per model before 503.
        read_timeout_s: Time a client has to send its whole request body (408 beyond).
        api_key: When set, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer KEY`` (or ``X-API-Key``).
        decode_threads: Threads decoding uploads and drawing overlays, off the event loop.
        retry_after_s: The ``Retry-After`` of a 503.
    """

    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_upload_mb: float = 10.0
    max_queue: int = 64
    read_timeout_s: float = 30.0
    api_key: str | None = None
    decode_threads: int = 2
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.decode_threads < 1:
            raise ValueError("max_batch, max_queue and decode_threads must be >= 1")
        for name in ("max_wait_ms", "max_upload_mb", "read_timeout_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (value == 0 and name != "max_wait_ms"):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("the API key is empty")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass
class ServedModel:
    """A model the server answers for: its name in the API and the predictor that runs it."""

    name: str
    predictor: Predictor


def model_spec(spec: str) -> tuple[str, str]:
    """``--model`` value -> (API name, checkpoint or model name).

    An existing path is served under its file stem (``examples/mnist_vit.safetensors`` -> ``mnist_vit``); a model
    name under itself; ``NAME=CKPT`` under NAME.
    """
    if not Path(spec).exists() and "=" in spec:
        name, _, target = spec.partition("=")
    else:
        target = spec
        name = Path(spec).stem if Path(spec).exists() else spec
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise ValueError(f"--model {spec}: {name!r} cannot name a model in URLs; use --model NAME=CKPT")
    return name, target


def load_models(
    specs: Sequence[str], precision: str = "fp32", device: str = "cpu", **load_kwargs: Any
) -> list[ServedModel]:
    """Build one predictor per ``--model`` value (see :func:`model_spec`), through the loader ``predict`` uses.

    Raises:
        ValueError: two models would share a name, or a checkpoint cannot be loaded.
    """
    served: list[ServedModel] = []
    for spec in specs:
        name, target = model_spec(spec)
        if any(s.name == name for s in served):
            raise ValueError(f"two models are named {name!r}; name them apart with --model NAME=CKPT")
        served.append(ServedModel(name, Predictor.from_pretrained(target, device, precision, **load_kwargs)))
    return served


def describe_preprocessing(pre: Preprocessing) -> str:
    """The preprocessing in words, as ``vitlab predict --verbose`` states it."""
    c, h, w = pre.input_size
    colour = "grayscale" if c == 1 else "RGB"
    return (
        f"{colour} (transparency on white), resize the shorter side to {int(h / pre.crop_pct)} px "
        f"({pre.interpolation}), centre-crop {h}x{w}, scale to [0, 1], subtract mean "
        f"{', '.join(f'{m:g}' for m in pre.mean)} and divide by std {', '.join(f'{s:g}' for s in pre.std)}"
    )


def _model_record(s: ServedModel) -> dict[str, Any]:
    p = s.predictor
    model, pre = p.model, p.preprocessing
    return {
        "name": s.name,
        "architecture": model.architecture,
        "description": model.cfg.describe(),
        "num_classes": model.cfg.num_classes,
        "classes": p.class_names,
        "input_shape": list(model.input_shape),
        "precision": p.precision,
        "device": str(p.device),
        "preprocessing": {**asdict(pre), "description": describe_preprocessing(pre)},
        "attention": {"supported": model.supports_attention, "note": model.attention_note},
    }


class _Entry:
    """One served model with its batcher and its listing."""

    def __init__(self, served: ServedModel, config: ServeConfig, metrics: Metrics) -> None:
        self.served, self.predictor = served, served.predictor
        self.batcher = Batcher(
            self.predictor.probabilities,
            config.max_batch,
            config.max_wait_ms,
            config.max_queue,
            served.name,
            on_batch=metrics.batch_observer(served.name),
        )
        metrics.watch_queue(served.name, lambda: self.batcher.depth)
        self.record = _model_record(served)
        # One pass at load, so the first request does not pay for oneDNN's first-call set-up (~0.5 s).
        self.predictor.probabilities(torch.zeros(1, *self.predictor.preprocessing.input_size))


# ---------------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An answer other than 200: status, one line, and optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class UploadTooLargeError(Exception):
    """Raised from ``receive`` when a body passes the limit."""


class BodyLimitMiddleware:
    """ASGI middleware refusing bodies over ``limit`` bytes with 413: at once when ``Content-Length`` says so,
    otherwise as soon as the bytes received pass it (chunked uploads, or a lying header)."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the upload is larger than the limit of {self.limit / 1024 / 1024:.3g} MB"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _error(413, message, {"Connection": "close"})(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> dict:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:
                    raise UploadTooLargeError(message)
            return msg

        async def note_start(msg: dict) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, note_start)
        except UploadTooLargeError as err:  # escaped the route (it normally answers itself)
            if not started:
                await _error(413, str(err), {"Connection": "close"})(scope, receive, send)


# ---------------------------------------------------------------------------------------------------- uploads

_UNSAFE = re.compile(r"[^\w .,()+-]")


def _display_name(filename: str | None) -> str:
    """The client's file name, only to echo back: its last component, printable, at most 100 characters."""
    if not filename:
        return "upload"
    name = re.split(r"[/\\]", filename)[-1]
    name = _UNSAFE.sub("_", name).strip()[:100]
    return name or "upload"


async def _receive_upload(request: Request, config: ServeConfig) -> tuple[Path, str]:
    """Spool the request's image (raw body, or the one file of a multipart form) to a temporary file.

    Returns:
        ``(temporary path, display name)``; the caller deletes the file.
    """
    fd, name = tempfile.mkstemp(prefix="vitlab-serve-", suffix=".upload")
    tmp = Path(name)
    source = "upload"
    try:
        with os.fdopen(fd, "wb") as f:

            async def read() -> None:
                nonlocal source
                if request.headers.get("content-type", "").startswith("multipart/form-data"):
                    form = await request.form(max_files=1, max_fields=8)
                    try:
                        uploads = [v for v in form.values() if isinstance(v, UploadFile)]
                        if not uploads:
                            raise ApiError(422, "the multipart form has no file; send the image as file=@IMAGE")
                        source = _display_name(uploads[0].filename)
                        size = 0
                        while chunk := await uploads[0].read(1 << 20):
                            size += len(chunk)
                            if size > config.max_upload_bytes:
                                raise UploadTooLargeError(
                                    f"the upload is larger than the limit of {config.max_upload_mb:g} MB"
                                )
                            f.write(chunk)
                    finally:
                        await form.close()
                else:
                    async for chunk in request.stream():
                        f.write(chunk)

            try:
                await asyncio.wait_for(read(), config.read_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(
                    408, f"the request body did not arrive within {config.read_timeout_s:g} s", {"Connection": "close"}
                ) from None
            except UploadTooLargeError as err:
                raise ApiError(413, str(err), {"Connection": "close"}) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, source


def _decode(path: Path, source: str, predictor: Predictor) -> torch.Tensor:
    """Decode with ``predict``'s rules and preprocess -> (C, H, W); an :class:`ApiError` with predict's reason.

    Not an image is 415; empty, truncated, corrupt, a decompression bomb or an absurd shape is 422.
    """
    try:
        return predictor.transform(load_image(path, predictor.mode))
    except ImageError as err:
        reason = str(err).replace(str(path), source, 1)  # the server's temporary name is none of the client's business
        raise ApiError(415 if "not an image" in reason else 422, reason) from None


# ---------------------------------------------------------------------------------------------------- parameters


def _parse_layers(text: str | None) -> list[int] | str | None:
    if text is None or text == "all":
        return text
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise ApiError(422, f"layer: expected 'all' or block numbers like -1 or 0,5,11; got {text!r}") from None


def _parse_head(text: str) -> int | str:
    if text in ("mean", "all", "max", "min"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ApiError(422, f"head: expected a head number, mean, all, max or min; got {text!r}") from None


def _record(source: str, probs: torch.Tensor, k: int, predictor: Predictor) -> Prediction:
    """Top-k of one probability row as ``vitlab predict`` records it."""
    if not torch.isfinite(probs).all():
        raise ApiError(500, f"{source}: the model gave non-finite (NaN or inf) probabilities")
    values, idx = probs.topk(min(k, probs.numel()))
    indices = idx.tolist()
    return Prediction(
        source, indices, [predictor.class_names[i] for i in indices], [round(v, 6) for v in values.tolist()]
    )


def _overlay_png(x: torch.Tensor, grid_map: torch.Tensor, pre: Preprocessing, alpha: float) -> bytes:
    """One map over the model's view of the image, at least :data:`OVERLAY_MIN_SIDE` pixels a side, as PNG."""
    from PIL import Image

    view = model_view(x, pre)  # (H, W, 3) uint8
    scale = max(1, math.ceil(OVERLAY_MIN_SIDE / min(view.shape[:2])))
    view = view.repeat(scale, 0).repeat(scale, 1)  # nearest-neighbour, so small inputs stay crisp
    pixels = (overlay(view, grid_map, alpha) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- the app

_PAGE = resources.files(__package__).joinpath("static", "index.html")


def create_app(
    models: Sequence[ServedModel] | Callable[[], Sequence[ServedModel]],
    config: ServeConfig | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The FastAPI app serving ``models``.

    Args:
        models: Built models, or a function building them: it runs in a thread once the server is up, so
            ``/healthz`` answers at once and ``/readyz`` says 503 until it returns (the CLI's way).
        config: Limits and batching.
        on_load_error: Called with the exception when the loading function fails (the CLI stops the server).

    Returns:
        The app; ``app.state.models`` maps each name to its entry once loaded, ``app.state.metrics`` holds
        the Prometheus metrics.
    """
    config = config or ServeConfig()
    metrics = Metrics()
    state: dict[str, Any] = {"entries": None, "error": None}
    pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="vitlab-decode")

    def install(served: Sequence[ServedModel]) -> None:
        names = [s.name for s in served]
        if not served or len(set(names)) != len(names):
            raise ValueError(f"serve needs one or more models with distinct names, got {names}")
        state["entries"] = {s.name: _Entry(s, config, metrics) for s in served}
        log.info("serving %s", ", ".join(names))

    def load_in_background(loader: Callable[[], Sequence[ServedModel]]) -> None:
        try:
            install(loader())
        except BaseException as err:  # reported; the callback stops the server
            state["error"] = err
            log.error("loading failed: %s", err)
            if on_load_error is not None:
                on_load_error(err)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        if callable(models):
            threading.Thread(target=load_in_background, args=(models,), name="vitlab-load", daemon=True).start()
        else:
            install(models)
        try:
            yield
        finally:  # uvicorn has drained the requests in flight; let the batchers finish what they hold
            for entry in (state["entries"] or {}).values():
                entry.batcher.close()
            pool.shutdown(wait=True)

    app = FastAPI(
        title="vitlab serve",
        version=_version(),
        description='Image classification and attention maps of vitlab models. Errors are `{"error": "..."}`.',
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.config = config
    app.state.load_state = state
    app.add_middleware(BodyLimitMiddleware, limit=config.max_upload_bytes + MULTIPART_SLACK)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    def entries() -> dict[str, _Entry]:
        if state["entries"] is None:
            why = f"loading failed: {state['error']}" if state["error"] else "the models are still loading"
            raise ApiError(503, why, {"Retry-After": str(config.retry_after_s)})
        return state["entries"]

    def authorise(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("x-api-key", "")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip()
        # compare_digest takes time independent of where the strings differ
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise ApiError(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})

    def entry_for(name: str | None) -> _Entry:
        served = entries()
        if name is None:
            if len(served) == 1:
                return next(iter(served.values()))
            raise ApiError(422, f"name the model: model=one of {', '.join(served)}")
        if name not in served:
            raise ApiError(404, f"unknown model {name[:100]!r}; served: {', '.join(served)}")
        return served[name]

    async def upload_tensor(request: Request, entry: _Entry) -> tuple[torch.Tensor, str, float]:
        start = time.perf_counter()
        tmp, source = await _receive_upload(request, config)
        try:
            loop = asyncio.get_running_loop()
            x = await loop.run_in_executor(pool, _decode, tmp, source, entry.predictor)
        finally:
            tmp.unlink(missing_ok=True)
        return x, source, time.perf_counter() - start

    upload_body = {
        "requestBody": {
            "required": True,
            "description": "The image: a raw body (any Content-Type) or a multipart form with one file.",
            "content": {
                "image/*": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
            },
        }
    }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_PAGE.read_text(encoding="utf-8"))

    @app.get("/healthz", summary="Liveness: the process answers; says whether the models are loaded")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "ready": state["entries"] is not None}

    @app.get("/readyz", summary="Readiness: 200 once every model is loaded, 503 before")
    async def readyz() -> dict[str, Any]:
        return {"status": "ready", "models": list(entries())}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_route(request: Request) -> Response:
        authorise(request)
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/v1/models", summary="Each model's name, architecture, classes and preprocessing")
    async def list_models(request: Request) -> dict[str, Any]:
        authorise(request)
        return {"models": [e.record for e in entries().values()]}

    @app.post("/v1/predict", summary="Top-k classes of one image", openapi_extra=upload_body)
    async def predict(
        request: Request,
        model: str | None = Query(None, description="a served model's name (optional when one is served)"),
        topk: int = Query(5, ge=1, le=1000, description="classes to return"),
    ) -> dict[str, Any]:
        """The record of ``vitlab predict --format json`` plus ``model`` and ``timing`` (milliseconds)."""
        authorise(request)
        entry = entry_for(model)
        x, source, decode_s = await upload_tensor(request, entry)
        try:
            probs, info = await entry.batcher.infer(x)
        except QueueFullError as err:
            raise ApiError(503, str(err), {"Retry-After": str(config.retry_after_s)}) from None
        record = _record(source, probs, topk, entry.predictor).to_dict()
        del record["error"]  # as predict's json writes a good record
        record["model"] = entry.served.name
        record["timing"] = {
            "receive_decode_ms": round(1000 * decode_s, 3),
            "queue_ms": round(1000 * info.wait_s, 3),
            "forward_ms": round(1000 * info.forward_s, 3),
            "batch_size": info.size,
        }
        return record

    @app.post(
        "/v1/attention",
        summary="Attention map or rollout of one image, as a PNG overlay",
        openapi_extra=upload_body,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def attention(
        request: Request,
        model: str | None = Query(None, description="a served model's name (optional when one is served)"),
        method: str = Query("raw", description="raw or rollout (as vitlab attention --method)"),
        layer: str | None = Query(None, description="blocks: -1, 0,5,11 or all (default -1 raw, all rollout)"),
        head: str = Query("mean", description="raw: a head number, mean or all; rollout: mean, max or min"),
        discard_ratio: float = Query(0.0, ge=0.0, lt=1.0, description="rollout: drop each query's weakest share"),
        alpha: float = Query(0.5, ge=0.0, le=1.0, description="heat-map opacity; 1 gives the heat map alone"),
    ) -> Response:
        """One map: the overlay on the model's view of the image. Several (layers, ``head=all``): the panels
        ``vitlab attention`` draws. The ``X-Vitlab-Description`` header says what is shown."""
        authorise(request)
        entry = entry_for(model)
        if method not in METHODS:
            raise ApiError(422, f"method must be one of {', '.join(METHODS)}, got {method[:50]!r}")
        layers = _parse_layers(layer)
        heads = _parse_head(head)
        net = entry.predictor.model
        if not net.supports_attention:
            raise ApiError(
                422,
                f"{entry.served.name}: the {net.architecture!r} model has no global attention map: "
                f"{net.attention_note}",
            )
        every = layers == "all" or (layers is None and method == "rollout")
        chosen = None if every else layers or [-1]
        x, source, _ = await upload_tensor(request, entry)
        device = entry.predictor.device

        def run() -> Any:
            return attention_maps(net, x[None].to(device), method, chosen, heads, discard_ratio)

        try:
            result = await entry.batcher.run_job(run)
        except QueueFullError as err:
            raise ApiError(503, str(err), {"Retry-After": str(config.retry_after_s)}) from None
        except ValueError as err:  # a block or head out of range, a fusion rollout cannot use
            raise ApiError(422, str(err)) from None

        def draw() -> bytes:
            maps = result.maps[0].cpu()
            pre = entry.predictor.preprocessing
            if len(maps) == 1:
                return _overlay_png(x, maps[0], pre, alpha)
            per_row = net.cfg.num_heads if heads == "all" else None
            return figure_png(panel_figure(model_view(x, pre), maps, result.titles, source, alpha, per_row))

        png = await asyncio.get_running_loop().run_in_executor(pool, draw)
        description = result.description.encode("ascii", "replace").decode()
        return Response(png, media_type="image/png", headers={"X-Vitlab-Description": description})

    return app


def _version() -> str:
    from .. import __version__

    return __version__
