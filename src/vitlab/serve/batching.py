"""Dynamic batching: concurrent requests for one model grouped into one forward pass, on one thread per model.

A request puts its preprocessed input (C, H, W) on a bounded queue and gets a future. The model's inference
thread takes the first waiting input, then keeps taking inputs until it holds ``max_batch`` of them or
``max_wait_ms`` has passed since the first, stacks them, runs the forward pass once and hands each request its
row. Inputs already waiting are taken at once, so under load batches fill without waiting; a lone request
waits at most ``max_wait_ms``.

The same thread also runs one-off jobs (an attention map, whose method and layers differ per request), so a
model is only ever used by its own thread: no locks around PyTorch, and the cores are not oversubscribed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The model's queue holds ``max_queue`` requests already; the caller should answer 503 and retry later."""


@dataclass
class _Item:
    future: Future
    x: torch.Tensor | None = None  # an input to batch, or
    job: Callable[[], Any] | None = None  # a one-off call to run alone
    queued: float = field(default_factory=time.perf_counter)


_STOP = object()


@dataclass(frozen=True)
class BatchInfo:
    """How one input was served: the size of its batch and where its time went.

    Attributes:
        size: Inputs in the forward pass that served it.
        wait_s: Seconds from queueing to the start of that forward pass.
        forward_s: Seconds the forward pass took.
    """

    size: int
    wait_s: float
    forward_s: float


@dataclass
class BatchStats:
    """What a batcher has done so far (read without a lock: counters only grow).

    Attributes:
        forward_passes: Batched forward passes run.
        items: Inputs served by them.
        jobs: One-off jobs run.
        largest_batch: The largest batch so far.
    """

    forward_passes: int = 0
    items: int = 0
    jobs: int = 0
    largest_batch: int = 0


class Batcher:
    """One model's inference thread and its bounded request queue.

    Args:
        forward: Batch (B, C, H, W) -> outputs (B, ...); called only on the batcher's thread.
        max_batch: Most inputs in one forward pass (1 turns batching off).
        max_wait_ms: How long the first input of a batch waits for company.
        max_queue: Most requests waiting (not counting the batch being run); more raise :class:`QueueFullError`.
        name: For the thread's name and log lines.
        on_batch: Called with ``(batch_size, seconds)`` after each forward pass (metrics).

    Example:
        >>> batcher = Batcher(predictor.probabilities, max_batch=16, max_wait_ms=5)
        >>> probs, info = await batcher.infer(predictor.preprocess("cat.jpg"))  # (num_classes,)
        >>> batcher.close()
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 64,
        name: str = "model",
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(
                f"max_batch and max_queue must be >= 1 and max_wait_ms >= 0; got {max_batch}, {max_queue}, "
                f"{max_wait_ms}"
            )
        self.forward, self.name, self.on_batch = forward, name, on_batch
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.stats = BatchStats()
        self._queue: queue.Queue = queue.Queue()  # unbounded: the bound is checked in submit, under _lock
        self._lock = threading.Lock()
        self._waiting = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"vitlab-batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting in the queue now."""
        return self._waiting

    def _put(self, item: _Item) -> Future:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: the batcher is closed")
            if self._waiting >= self.max_queue:
                raise QueueFullError(f"{self.name}: {self._waiting} requests are waiting already; try again shortly")
            self._waiting += 1
            self._queue.put(item)
        return item.future

    def submit(self, x: torch.Tensor) -> Future:
        """Queue one input (C, H, W); the future resolves to ``(output row, BatchInfo)``.

        Raises:
            QueueFullError: ``max_queue`` requests are waiting.
        """
        return self._put(_Item(Future(), x=x))

    def submit_job(self, job: Callable[[], Any]) -> Future:
        """Queue a call to run alone on the model's thread (between batches); the future resolves to its result.

        Raises:
            QueueFullError: ``max_queue`` requests are waiting.
        """
        return self._put(_Item(Future(), job=job))

    async def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, BatchInfo]:
        """``submit`` for asyncio callers: await ``(output row, BatchInfo)`` without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(x))

    async def run_job(self, job: Callable[[], Any]) -> Any:
        """``submit_job`` for asyncio callers."""
        return await asyncio.wrap_future(self.submit_job(job))

    def _take(self, block: bool, timeout: float | None = None) -> Any:
        item = self._queue.get(block=block, timeout=timeout)
        if item is not _STOP:
            with self._lock:
                self._waiting -= 1
        return item

    def _run(self) -> None:
        pending: _Item | None = None  # a job met while gathering a batch runs right after it
        while True:
            item = pending or self._take(block=True)
            pending = None
            if item is _STOP:
                return
            if item.job is not None:
                self._run_job(item)
                continue
            batch = [item]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                try:  # past the deadline, only inputs already waiting join the batch
                    nxt = self._take(block=True, timeout=left) if left > 0 else self._take(block=False)
                except queue.Empty:
                    break
                if nxt is _STOP or nxt.job is not None:
                    pending = nxt
                    break
                batch.append(nxt)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Item]) -> None:
        live = [it for it in batch if it.future.set_running_or_notify_cancel()]
        if not live:
            return
        start = time.perf_counter()
        try:
            out = self.forward(torch.stack([it.x for it in live]))  # (B, C, H, W) -> (B, ...)
        except Exception as err:  # hand the failure to every waiting request; the thread goes on
            log.exception("%s: forward pass of %d failed", self.name, len(live))
            for it in live:
                it.future.set_exception(err)
            return
        seconds = time.perf_counter() - start
        st = self.stats
        st.forward_passes += 1
        st.items += len(live)
        st.largest_batch = max(st.largest_batch, len(live))
        if self.on_batch is not None:
            self.on_batch(len(live), seconds)
        for it, row in zip(live, out, strict=True):
            it.future.set_result((row, BatchInfo(len(live), start - it.queued, seconds)))

    def _run_job(self, item: _Item) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            result = item.job()  # type: ignore[misc]
        except Exception as err:
            item.future.set_exception(err)
        else:
            item.future.set_result(result)
        self.stats.jobs += 1

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new requests, finish the queued ones, and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
