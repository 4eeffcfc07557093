"""``vitlab train --config RECIPE.yaml [key=value ...]`` and ``vitlab train --resume RUN_DIR``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a ViT from a YAML recipe",
        description=(
            "Train from a YAML recipe (configs/*.yaml) with dotted overrides, e.g. "
            "`vitlab train --config configs/mnist.yaml optim.lr=5e-4 schedule.epochs=3`. "
            "The run directory gets config.yaml, metrics.jsonl, curves.png, checkpoints/last.pt, "
            "best.safetensors and report.md. `--resume RUN_DIR` continues exactly where the last checkpoint "
            "stopped. For several processes: `torchrun --nproc_per_node 2 -m vitlab.cli train ...`."
        ),
    )
    p.add_argument("--config", default=None, help="YAML recipe (defaults apply to what it leaves out)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=3e-4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    from pathlib import Path

    from ..train import fit, load_config

    logging.basicConfig(level=logging.INFO, format="vitlab train: %(message)s")
    if args.resume:
        if args.config or args.overrides:
            raise ValueError("--resume takes the run's own config.yaml; give no --config or overrides with it")
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(f"{run_dir}: not a run directory (no config.yaml)")
        cfg = load_config(run_dir / "config.yaml")
        result = fit(cfg, resume=run_dir, progress=not args.quiet)
    else:
        cfg = load_config(args.config, args.overrides)
        result = fit(cfg, progress=not args.quiet)
    summary = {k: v for k, v in result.items() if not k.endswith("per_class_acc")}
    print(json.dumps(summary))
    return 0
