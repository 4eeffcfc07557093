"""Load test of ``vitlab serve``: throughput and latency at 1, 4, 16 and 64 concurrent clients, bounded.

Starts ``vitlab serve`` on 127.0.0.1 (a free port) as a subprocess, waits for ``/readyz``, then for each
concurrency level sends a fixed number of ``POST /v1/predict`` requests (the same photo as a raw body) from
that many concurrent clients, and prints requests/s, p50/p95/p99 latency, errors (must be 0) and the server's
RSS before and after. Then it starts a second server with ``--max-batch 1`` and measures the same level of 16
clients without batching, and prints the batched / unbatched throughput ratio.

Every level is bounded in requests and in time (``--level-timeout``); what has not finished by then counts as
errors. The clients share one process and one event loop (httpx), so they take little CPU from the server.

    python benchmarks/serve_load.py                         # vit_tiny_patch16_224, fp32, the README table
    python benchmarks/serve_load.py --quick                 # CI: 200 requests at 16 clients, no unbatched run
    python benchmarks/serve_load.py --out benchmarks/results/serve_cpu2.txt
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "fixtures" / "photos" / "chelsea.png"


@dataclass
class Level:
    """One concurrency level's result."""

    clients: int
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    mean_batch: float

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


class Server:
    """``vitlab serve`` in a subprocess on a free loopback port; stopped with SIGTERM (which must exit 0)."""

    def __init__(self, model: str, precision: str, max_batch: int, max_wait_ms: float, queue: int) -> None:
        cmd = [
            sys.executable,
            "-m",
            "vitlab.cli",
            "serve",
            "--model",
            model,
            "--precision",
            precision,
            "--port",
            "0",
            "--max-batch",
            str(max_batch),
            "--max-wait-ms",
            str(max_wait_ms),
            "--workers-queue",
            str(queue),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stderr.readline()  # "vitlab serve: listening on http://127.0.0.1:PORT ..."
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {line}{self.proc.stderr.read()}")
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready within {timeout:.0f} s")

    def rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024

    def stop(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError("the server did not exit within a minute of SIGTERM") from None
        if self.proc.stderr:
            self.proc.stderr.close()
        return code


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _run_level(url: str, body: bytes, clients: int, requests: int, timeout: float) -> Level:
    latencies: list[float] = []
    errors = 0
    left = requests
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        metrics = (await client.get("/metrics")).text
        passes0 = _metric(metrics, "vitlab_batch_size_count")
        items0 = _metric(metrics, "vitlab_batch_size_sum")

        async def worker() -> None:
            nonlocal left, errors
            while left > 0:
                left -= 1
                start = time.perf_counter()
                try:
                    resp = await client.post("/v1/predict?topk=5", content=body)
                    ok = resp.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        start = time.perf_counter()
        tasks = [asyncio.create_task(worker()) for _ in range(clients)]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        seconds = time.perf_counter() - start
        errors += max(left, 0) + len(pending)  # what never ran or never finished
        metrics = (await client.get("/metrics")).text
        passes = _metric(metrics, "vitlab_batch_size_count") - passes0
        items = _metric(metrics, "vitlab_batch_size_sum") - items0
    return Level(clients, requests, seconds, latencies, errors, items / passes if passes else 0.0)


def measure(
    body: bytes,
    model: str,
    precision: str,
    levels: list[int],
    requests: int,
    max_batch: int,
    max_wait_ms: float,
    level_timeout: float,
    warmup: int = 16,
) -> tuple[list[Level], float, float, int]:
    """Run the levels against a fresh server; returns (levels, RSS before, RSS after in MB, exit status)."""
    server = Server(model, precision, max_batch, max_wait_ms, queue=max(64, max(levels)))
    try:
        server.wait_ready()
        asyncio.run(_run_level(server.url, body, 4, warmup, level_timeout))  # first passes are slow
        before = server.rss_mb()
        results = [asyncio.run(_run_level(server.url, body, c, requests, level_timeout)) for c in levels]
        after = server.rss_mb()
    finally:
        code = server.stop()
    return results, before, after, code


def table(results: list[Level]) -> list[str]:
    lines = [
        f"{'clients':>7} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'mean batch':>10}"
    ]
    for r in results:
        lines.append(
            f"{r.clients:>7} {r.requests:>8} {r.throughput:>8.1f} {1000 * r.percentile(50):>8.1f} "
            f"{1000 * r.percentile(95):>8.1f} {1000 * r.percentile(99):>8.1f} {r.errors:>6} {r.mean_batch:>10.1f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_tiny_patch16_224", help="checkpoint or model name (random weights)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    p.add_argument("--image", default=str(PHOTO), help="the image every request sends (default: chelsea.png)")
    p.add_argument("--clients", default="1,4,16,64", help="concurrency levels (comma-separated)")
    p.add_argument("--requests", type=int, default=256, help="requests per level")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--level-timeout", type=float, default=240.0, help="seconds a level may take")
    p.add_argument("--quick", action="store_true", help="CI: 200 requests at 16 clients, no unbatched run")
    p.add_argument("--out", default=None, help="also write the report here")
    args = p.parse_args(argv)
    levels = [16] if args.quick else [int(c) for c in args.clients.split(",")]
    requests = 200 if args.quick else args.requests
    torch_threads = os.environ.get("OMP_NUM_THREADS", "default")
    body = Path(args.image).read_bytes()
    lines = [
        f"vitlab serve load test: {Path(args.model).name}, {args.precision}, POST /v1/predict of "
        f"{Path(args.image).name} ({len(body) / 1024:.1f} KB) as a raw body, topk 5",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs (server and clients share them), "
        f"OMP_NUM_THREADS={torch_threads}; server: --max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}",
        "",
    ]
    results, before, after, code = measure(
        body, args.model, args.precision, levels, requests, args.max_batch, args.max_wait_ms, args.level_timeout
    )
    lines += table(results)
    lines += ["", f"server RSS: {before:.0f} MB before the levels, {after:.0f} MB after; SIGTERM exit status: {code}"]
    errors = sum(r.errors for r in results) + (code != 0)
    if not args.quick and 16 in levels:
        unbatched, _, _, code1 = measure(body, args.model, args.precision, [16], requests, 1, 0.0, args.level_timeout)
        errors += unbatched[0].errors + (code1 != 0)
        batched = next(r for r in results if r.clients == 16)
        ratio = batched.throughput / unbatched[0].throughput if unbatched[0].throughput else float("nan")
        lines += [
            "",
            "16 clients without batching (--max-batch 1):",
            *table(unbatched),
            "",
            f"batched / unbatched throughput at 16 clients: {ratio:.2f}x",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
