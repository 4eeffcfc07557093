"""Inference speed: vitlab against the fastest peer in the same mode, same weights, same threads, one process.

    python benchmarks/infer.py                       # Ti/16, S/16, B/16 at 224; batch 1 and 16; fp32/bf16/int8
    python benchmarks/infer.py --models vit_tiny_patch16_224 --batch 1 --rounds 2

Peers in each mode: timm and transformers as users run them (fp32 eager, bf16 autocast, int8 dynamic
quantization of every Linear), and timm as a speed-minded user runs it: ``torch.compile`` with inductor
freezing in the same precision, ``.bfloat16()`` weights, and vitlab's own int8 recipe (eager and
compiled). Contenders of a row run in alternation and the median of ``--rounds`` timings is kept.
Prints img/s, the ratio to the fastest peer in the same mode, the cross-mode ratio to timm fp32, the
fraction of the mode's own matmul peak, and the largest logit difference from eager fp32 vitlab.

First, the accuracy of each int8 recipe on real data: the shipped MNIST model
(``examples/mnist_vit.safetensors``, which timm's VisionTransformer loads as is) on the 10,000 test digits.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from vitlab.infer.benchmark import (
    MODES,
    bench_inference,
    format_rows,
    int8_all_linear,
    int8_matmul_peaks,
    int8_vitlab_recipe,
    machine,
    matmul_peak,
)
from vitlab.infer.precision import for_inference
from vitlab.weights import load_checkpoint

MODELS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")
ROOT = Path(__file__).resolve().parents[1]
MNIST_MODEL = ROOT / "examples" / "mnist_vit.safetensors"
MNIST_DATA = Path(os.environ.get("VITLAB_DATA_DIR", ROOT.parent / "shared" / "data")) / "mnist.npz"


@torch.inference_mode()
def int8_accuracy(data: Path = MNIST_DATA, batch: int = 500) -> str:
    """Test accuracy and top-1 agreement with fp32 of each int8 recipe, vitlab's and timm's, on MNIST."""
    import timm.models.vision_transformer as tvit

    from vitlab.weights.timm import timm_kwargs

    loaded = load_checkpoint(MNIST_MODEL)
    model, pre = loaded.model.eval(), loaded.preprocessing
    timm_model = tvit.VisionTransformer(**timm_kwargs(model.cfg)).eval()
    timm_model.load_state_dict(model.state_dict())
    arrays = np.load(data)
    mean, std = torch.tensor(pre.mean).view(1, -1, 1, 1), torch.tensor(pre.std).view(1, -1, 1, 1)
    x = (torch.from_numpy(arrays["x_test"]).unsqueeze(1).float() / 255 - mean) / std  # crop_pct 1: no resize
    y = torch.from_numpy(arrays["y_test"]).long()

    def predict(m: torch.nn.Module) -> torch.Tensor:
        return torch.cat([m(x[i : i + batch]).argmax(-1) for i in range(0, len(x), batch)])

    fp32 = predict(model)
    lines = [f"int8 accuracy: {MNIST_MODEL.name} on the {len(y):,} MNIST test digits ({data})"]
    lines.append(f"{'recipe':<44} {'accuracy':>8} {'agreement with fp32':>19}")
    recipes = {
        "fp32 (vitlab eager)": model,
        "vitlab int8 (for_inference)": for_inference(model, "int8"),
        "timm int8 vitlab recipe": int8_vitlab_recipe(timm_model),
        "timm int8 all Linear (per-tensor)": int8_all_linear(timm_model),
    }
    for name, m in recipes.items():
        pred = fp32 if m is model else predict(m)
        acc, agree = (pred == y).float().mean().item(), (pred == fp32).float().mean().item()
        lines.append(f"{name:<44} {100 * acc:>7.2f}% {100 * agree:>18.2f}%")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timings per contender (median kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-peers", action="store_true", help="vitlab only")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled contenders (slow to build)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the int8 accuracy check on MNIST")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    if not args.no_accuracy and MNIST_DATA.is_file():
        print(int8_accuracy(), flush=True)
    int8 = int8_matmul_peaks()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16), "int8": max(int8.values())}
    print(
        f"matmul peak (1024^3): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s, int8 "
        + ", ".join(f"{k} {v:.0f}" for k, v in int8.items())
        + " GOP/s (the int8 peak is the best of these)"
    )
    first = True
    for name in args.models:
        for batch in args.batch:  # print each model/batch group as it finishes
            rows = bench_inference(
                name,
                batch,
                tuple(args.modes),
                args.rounds,
                with_peers=not args.no_peers,
                compile_peers=not args.no_compile,
                compile_vitlab=not args.no_compile,
            )
            lines = format_rows(rows, peaks).splitlines()
            print("\n".join(lines if first else lines[1:]), flush=True)
            first = False


if __name__ == "__main__":
    main()
