"""``vitlab eval --model CKPT --data PATH``: accuracy, per-class accuracy and a confusion-matrix PNG."""

from __future__ import annotations

import argparse

from ._common import add_precision


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset: accuracy, per-class accuracy, confusion matrix",
        description="Evaluate with the preprocessing stored in the checkpoint on a split of a dataset.",
    )
    p.add_argument("--model", required=True, help="checkpoint (any format vitlab reads)")
    p.add_argument("--data", required=True, help="mnist.npz, idx directory, image folder or .tar.gz")
    p.add_argument("--split", default="test", choices=("test", "val"), help="which split (default test)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None, help="directory for confusion.png and eval.json")
    p.add_argument("--device", default="cpu")
    add_precision(p)
    p.add_argument(
        "--compare",
        action="store_true",
        help="with --precision bf16/int8, also run fp32 and report the top-1 agreement",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch
    from torch.utils.data import DataLoader

    from ..data.datasets import load_splits
    from ..data.loaders import EpochBatchSampler, TransformDataset
    from ..data.transforms import eval_transform
    from ..infer.precision import for_inference, top1_agreement
    from ..train.engine import evaluate
    from ..train.plots import plot_confusion
    from ..weights import load_checkpoint

    loaded = load_checkpoint(args.model)
    splits = load_splits(args.data)
    samples = splits.test if args.split == "test" else splits.val
    if samples is None:
        raise ValueError(f"{args.data}: has no {args.split} split")
    model = loaded.model
    if model.cfg.num_classes != len(splits.class_names):
        raise ValueError(
            f"{args.model} predicts {model.cfg.num_classes} classes, {args.data} has {len(splits.class_names)}"
        )
    names = loaded.class_names or splits.class_names
    mode = "L" if model.cfg.in_chans == 1 else "RGB"
    ds = TransformDataset(samples, eval_transform(loaded.preprocessing), mode)
    sampler = EpochBatchSampler(len(ds), args.batch_size, shuffle=False, drop_last=False)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=args.workers)
    device = torch.device(args.device)
    runner = for_inference(model, args.precision, device)
    result = evaluate(runner, loader, model.cfg.num_classes, device)
    how = "" if args.precision == "fp32" else f", {args.precision}"
    print(f"{args.split} accuracy: {result['acc']:.4f} ({result['n']} images{how}), loss {result['loss']:.4f}")
    if args.compare and args.precision != "fp32":
        agree = top1_agreement(for_inference(model, "fp32", device), runner, loader, device)
        reference = evaluate(for_inference(model, "fp32", device), loader, model.cfg.num_classes, device)
        result["fp32_acc"], result["top1_agreement_with_fp32"] = reference["acc"], agree
        print(f"fp32 accuracy: {reference['acc']:.4f}; top-1 agreement {args.precision} vs fp32: {agree:.4f}")
    width = max(len(n) for n in names)
    for name, acc in zip(names, result["per_class_acc"], strict=True):
        print(f"  {name:<{width}}  {acc:.4f}")
    out = Path(args.out) if args.out else Path(args.model).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(
        result["confusion"],
        names,
        out / "confusion.png",
        f"{Path(args.model).name} on {args.split}: {result['acc']:.4f}",
    )
    (out / "eval.json").write_text(json.dumps({k: v for k, v in result.items()} | {"class_names": names}, indent=1))
    print(f"wrote {out / 'confusion.png'} and {out / 'eval.json'}")
    return 0
