"""Attention kernels on this machine: fused SDPA against plain batched matmuls, per dtype and shape.

    python benchmarks/attention.py [--threads N]

vitlab's ``attention_kernel`` rule (``layers/attention.py``) comes from this table: the printed
``matmul/sdpa`` speed ratio above 1 means the plain matmul route is faster.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from vitlab.infer.benchmark import interleaved, machine
from vitlab.layers import attention_kernel, matmul_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    head = f"{'dtype':<9} {'B':>3} {'heads':>5} {'T':>4}  {'sdpa GF/s':>9} {'matmul GF/s':>11} {'matmul/sdpa':>11}"
    print(head + "  vitlab uses")
    for dtype in (torch.float32, torch.bfloat16):
        for B, h in ((1, 3), (1, 12), (16, 6), (16, 12)):
            T, d = 197, 64
            q, k, v = (torch.randn(B, h, T, d, dtype=dtype) for _ in range(3))
            with torch.inference_mode():
                t = interleaved(
                    {
                        "sdpa": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
                        "matmul": lambda q=q, k=k, v=v, d=d: matmul_attention(q, k, v, d**-0.5),
                    },
                    args.rounds,
                )
            flops = 4 * B * h * T * T * d
            name = str(dtype).removeprefix("torch.")
            print(
                f"{name:<9} {B:>3} {h:>5} {T:>4}  {flops / t['sdpa'] / 1e9:>9.0f} {flops / t['matmul'] / 1e9:>11.0f} "
                f"{t['sdpa'] / t['matmul']:>11.2f}  {attention_kernel(q)}"
            )


if __name__ == "__main__":
    main()
