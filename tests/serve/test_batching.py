"""Dynamic batching: concurrent requests share forward passes, and get what they would get alone."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from vitlab.infer import Predictor
from vitlab.serve import Batcher, QueueFullError, ServeConfig, ServedModel, create_app


def test_concurrent_inputs_share_forward_passes() -> None:
    calls: list[int] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return x.flatten(1).sum(1, keepdim=True) * 2

    batcher = Batcher(forward, max_batch=4, max_wait_ms=200, max_queue=16)
    try:
        inputs = [torch.full((1, 2, 2), float(i)) for i in range(10)]
        futures = [batcher.submit(x) for x in inputs]
        results = [f.result(10) for f in futures]
    finally:
        batcher.close()
    assert [row.item() for row, _ in results] == [8.0 * i for i in range(10)]
    assert sum(calls) == 10 and max(calls) == 4 and len(calls) < 10  # at most max_batch per pass
    assert batcher.stats.forward_passes == len(calls) and batcher.stats.largest_batch == 4
    assert all(info.size in calls and info.wait_s >= 0 for _, info in results)


def test_a_lone_input_waits_at_most_max_wait() -> None:
    batcher = Batcher(lambda x: x, max_batch=16, max_wait_ms=50)
    try:
        start = time.perf_counter()
        _, info = batcher.submit(torch.zeros(1)).result(10)
        assert info.size == 1 and time.perf_counter() - start < 2.0
    finally:
        batcher.close()


def test_queue_bound_failures_jobs_and_close() -> None:
    release = threading.Event()
    batcher = Batcher(lambda x: (release.wait(10), x)[1], max_batch=1, max_wait_ms=0, max_queue=2)
    first = batcher.submit(torch.zeros(1))
    for _ in range(100):  # the thread holds the first input
        if batcher.depth == 0:
            break
        time.sleep(0.01)
    queued = [batcher.submit(torch.ones(1)), batcher.submit_job(lambda: "job ran")]
    with pytest.raises(QueueFullError, match="2 requests are waiting already"):
        batcher.submit(torch.ones(1))
    release.set()
    assert first.result(10)[1].size == 1 and queued[1].result(10) == "job ran"
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(torch.ones(1))

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of memory")

    failing = Batcher(broken, max_batch=4, max_wait_ms=100)
    try:
        futures = [failing.submit(torch.zeros(1)) for _ in range(3)]
        for f in futures:  # every request of the batch hears of it; the thread goes on
            with pytest.raises(RuntimeError, match="out of memory"):
                f.result(10)
        assert failing.submit_job(lambda: 1).result(10) == 1
    finally:
        failing.close()


def test_close_finishes_what_is_queued() -> None:
    batcher = Batcher(lambda x: (time.sleep(0.05), x)[1], max_batch=2, max_wait_ms=0)
    futures = [batcher.submit(torch.full((1,), float(i))) for i in range(6)]
    batcher.close()
    assert [f.result(0)[0].item() for f in futures] == [0, 1, 2, 3, 4, 5]


def test_concurrent_requests_are_batched_and_equal_to_unbatched(mnist_predictor: Predictor, digits) -> None:
    n = len(digits)
    app = create_app([ServedModel("mnist", mnist_predictor)], ServeConfig(max_batch=16, max_wait_ms=300))
    with TestClient(app) as client:
        batcher = app.state.load_state["entries"]["mnist"].batcher
        before = batcher.stats.forward_passes
        with ThreadPoolExecutor(n) as pool:
            replies = list(pool.map(lambda d: client.post("/v1/predict?topk=10", content=d[0]).json(), digits))
        passes = batcher.stats.forward_passes - before
    assert passes < n, f"{n} concurrent requests took {passes} forward passes"
    assert max(r["timing"]["batch_size"] for r in replies) > 1
    for (data, label), reply in zip(digits, replies, strict=True):
        alone = mnist_predictor(Image.open(io.BytesIO(data)), topk=10)[0]  # one image, one forward pass
        assert reply["indices"] == alone.indices and reply["labels"] == alone.labels
        assert reply["probs"] == pytest.approx(alone.probs, abs=1e-5)
        assert reply["labels"][0] == str(label)
