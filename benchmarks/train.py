"""Training-step speed: vitlab against timm and transformers, same weights, same threads, one process.

    python benchmarks/train.py                        # ViT-S/16, batch 32, fp32 and bf16 autocast
    python benchmarks/train.py --model vit_tiny_patch16_224 --batch 64

A step is forward, cross-entropy, backward and AdamW. Steps of all contenders run in alternation and
the median of ``--rounds`` is kept. Prints img/s and the ratio to timm in fp32 and in the same precision.
"""

from __future__ import annotations

import argparse

import torch

from vitlab.infer.benchmark import interleaved, machine, peers, train_contenders
from vitlab.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    torch.manual_seed(0)
    model = create_model(args.model)
    steps = train_contenders(args.model, args.batch, peers(model, args.model), model)
    seconds = interleaved(steps, args.rounds, min_seconds=0.0)
    print(f"{'model':<24} {'batch':>5} {'contender':<22} {'img/s':>7} {'x timm fp32':>11} {'x timm same':>11}")
    for name, s in seconds.items():
        precision = name.rsplit(" ", 1)[1]
        ips = args.batch / s
        ref = args.batch / seconds["timm fp32"] if "timm fp32" in seconds else None
        same = args.batch / seconds[f"timm {precision}"] if f"timm {precision}" in seconds else None
        r1 = f"{ips / ref:.2f}x" if ref else "-"
        r2 = f"{ips / same:.2f}x" if same else "-"
        print(f"{args.model:<24} {args.batch:>5} {name:<22} {ips:>7.2f} {r1:>11} {r2:>11}")


if __name__ == "__main__":
    main()
