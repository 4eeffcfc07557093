"""Inference speed: vitlab against timm and transformers, same weights, same threads, one process.

    python benchmarks/infer.py                       # Ti/16, S/16, B/16 at 224; batch 1 and 16; fp32/bf16/int8
    python benchmarks/infer.py --models vit_small_patch16_224 --batch 16 --modes int8

Contenders of a row run in alternation and the median of ``--rounds`` timings is kept. Prints img/s,
the ratio to timm fp32 and to timm in the same mode (timm bf16 = autocast, timm int8 = dynamic
quantization of its Linear layers), and the fraction of a matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse

import torch

from vitlab.infer.benchmark import MODES, bench_inference, format_rows, machine, matmul_peak

MODELS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timings per contender (median kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-peers", action="store_true", help="vitlab only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak (1024^3): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    first = True
    for name in args.models:
        for batch in args.batch:  # print each model/batch group as it finishes
            rows = bench_inference(name, batch, tuple(args.modes), args.rounds, with_peers=not args.no_peers)
            lines = format_rows(rows, peaks).splitlines()
            print("\n".join(lines if first else lines[1:]), flush=True)
            first = False


if __name__ == "__main__":
    main()
