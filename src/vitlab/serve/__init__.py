"""``vitlab serve``: an HTTP API and a web page for any model, with dynamic batching.

``app`` builds the FastAPI app from loaded predictors; ``batching`` groups concurrent requests into one
forward pass per model; ``metrics`` is the Prometheus side; ``server`` runs it on uvicorn. Importing this
package needs the ``serve`` extra (``pip install 'vitlab[serve]'``).
"""

from __future__ import annotations

from .app import ServeConfig, ServedModel, create_app, describe_preprocessing, load_models, model_spec
from .batching import Batcher, BatchInfo, BatchStats, QueueFullError
from .server import bind, check_exposure, is_loopback, run

__all__ = [
    "BatchInfo",
    "BatchStats",
    "Batcher",
    "QueueFullError",
    "ServeConfig",
    "ServedModel",
    "bind",
    "check_exposure",
    "create_app",
    "describe_preprocessing",
    "is_loopback",
    "load_models",
    "model_spec",
    "run",
]
