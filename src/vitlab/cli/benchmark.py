"""``vitlab benchmark --model NAME``: inference speed on this machine, next to timm and transformers."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="images per second of a model on this machine, fp32/bf16/int8, next to timm and transformers",
        description=(
            "Time a named model (random weights) at each precision and batch size, interleaved with timm and "
            "transformers holding the same weights when they are installed, and print img/s, the ratio to timm "
            "and the fraction of this machine's matmul peak. The same code as benchmarks/infer.py."
        ),
    )
    p.add_argument("--model", required=True, help="a name from `vitlab models`")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="batch sizes (default 1 16)")
    p.add_argument("--precision", nargs="+", choices=("fp32", "bf16", "int8"), default=["fp32", "bf16", "int8"])
    p.add_argument("--rounds", type=int, default=5, help="interleaved timings per contender; the median is kept")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-peers", action="store_true", help="time vitlab only")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..infer.benchmark import bench_inference, format_rows, machine, matmul_peak
    from ..models import get_config

    get_config(args.model)  # an unknown name fails here, with suggestions, before any timing
    if args.rounds < 1 or min(args.batch) < 1:
        raise ValueError("--rounds and --batch must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak (1024^3): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    rows = []
    for batch in args.batch:
        rows += bench_inference(args.model, batch, tuple(args.precision), args.rounds, with_peers=not args.no_peers)
    print(format_rows(rows, peaks))
    return 0
