"""Prometheus metrics of one server (its own registry, so several apps in one process never mix)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Paths are labels only when they are routes of the app: any other path a client sends is "other", so a
# scan of random URLs cannot grow the label set without bound.
ROUTES = (
    "/",
    "/v1/predict",
    "/v1/attention",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/openapi.json",
)


class Metrics:
    """The server's counters, histograms and gauges.

    Attributes:
        requests: ``vitlab_requests_total{route, status}``.
        latency: ``vitlab_request_seconds{route}``, from the first byte of the request to the last of the reply.
        batch_size: ``vitlab_batch_size{model}``, inputs per forward pass.
        forward: ``vitlab_forward_seconds{model}``, time of each batched forward pass.
        queue_depth: ``vitlab_queue_depth{model}``, requests waiting for the model's thread.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vitlab_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "vitlab_request_seconds",
            "HTTP request latency in seconds",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "vitlab_batch_size",
            "Inputs per batched forward pass",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.forward = Histogram(
            "vitlab_forward_seconds",
            "Seconds per batched forward pass",
            ["model"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "vitlab_queue_depth", "Requests waiting for the model's inference thread", ["model"], registry=self.registry
        )

    def watch_queue(self, model: str, depth: Callable[[], float]) -> None:
        """Report ``depth()`` as the model's queue depth whenever the metrics are scraped."""
        self.queue_depth.labels(model=model).set_function(depth)

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        """A ``Batcher.on_batch`` callback recording the model's batch sizes and forward-pass times."""
        sizes, seconds = self.batch_size.labels(model=model), self.forward.labels(model=model)

        def observe(size: int, took: float) -> None:
            sizes.observe(size)
            seconds.observe(took)

        return observe

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware counting every HTTP reply by route and status, and timing it (outermost, so the 413s
    of the upload limit and the errors of the app are counted too)."""

    def __init__(self, app: Callable, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope.get("path", "") if scope.get("path", "") in ROUTES else "other"
        status = {"code": 500}  # an exception before the reply started is a 500 to the client
        start = time.perf_counter()

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.requests.labels(route=route, status=str(status["code"])).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - start)
