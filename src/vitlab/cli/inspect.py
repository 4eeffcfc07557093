"""``vitlab inspect --model CKPT --data DATA --out DIR``: the paper's analysis figures and an HTML report."""

from __future__ import annotations

import argparse

from ._common import require_attention


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="the paper's Fig. 7 / Fig. 11 analysis of a model, as PNGs and one HTML page",
        description=(
            "Writes into --out: filters.png (principal components of the patch-embedding filters), "
            "position_similarity.png (position-embedding cosine similarity on the patch grid), "
            "attention_distance.png (mean attention distance of every head against depth, over --images "
            "images of the data), rollout.png (attention rollout overlays), inspect.json (the numbers) and "
            "report.html (all of it on one self-contained page, with the model summary and, when the data "
            "has labels, the accuracy on its test split)."
        ),
    )
    p.add_argument("--model", required=True, help="checkpoint (any format vitlab reads) or a model name")
    p.add_argument(
        "--data",
        required=True,
        help="a dataset vitlab reads (mnist.npz, idx directory, image folder, .tar.gz) or a folder of images",
    )
    p.add_argument("--split", default="test", choices=("test", "val"), help="which split of a dataset (default test)")
    p.add_argument("--images", type=int, default=128, help="images averaged for the attention distance (default 128)")
    p.add_argument("--rollout-images", type=int, default=8, help="images shown with rollout overlays (default 8)")
    p.add_argument("--no-accuracy", action="store_true", help="skip evaluating on the whole split")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="which images are drawn from the split")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from ..data import ImageError, find_images, load_image
    from ..data.datasets import DatasetError, load_splits
    from ..data.loaders import EpochBatchSampler, TransformDataset
    from ..data.transforms import eval_transform
    from ..train.engine import evaluate
    from ..viz import inspect_model
    from ..weights import load_model

    if args.images < 1 or args.rollout_images < 0 or args.batch_size < 1:
        raise ValueError("--images and --batch-size must be >= 1, --rollout-images >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA device is available here")
    logging.basicConfig(level=logging.WARNING, format="vitlab inspect: %(message)s")
    loaded = load_model(args.model)
    model, pre = loaded.model.eval().to(args.device), loaded.preprocessing
    require_attention(model, args.model)
    mode = "L" if model.cfg.in_chans == 1 else "RGB"
    transform = eval_transform(pre)
    rng = np.random.default_rng(args.seed)
    accuracy = None
    names = loaded.class_names
    data = Path(args.data)
    try:
        splits = load_splits(data)
    except DatasetError as err:
        if not data.is_dir():
            raise
        splits = None  # a plain folder of images: figures only, no accuracy
        paths, problems = find_images([str(data)])
        for line in problems:
            print(f"vitlab inspect: {line}")
        if not paths:
            raise ValueError(f"{data}: neither a dataset vitlab reads ({err}) nor a folder with images") from None
        chosen = sorted(rng.permutation(len(paths))[: args.images])
        images = []
        for i in chosen:
            try:
                images.append(transform(load_image(paths[i], mode)))
            except ImageError as bad:
                print(f"vitlab inspect: skipped {bad}")
        if not images:
            raise ValueError(f"{data}: none of the images could be read") from None
        batch = torch.stack(images)
    if splits is not None:
        samples = splits.test if args.split == "test" else splits.val
        if samples is None:
            raise ValueError(f"{data}: has no {args.split} split")
        names = names or splits.class_names
        ds = TransformDataset(samples, transform, mode)
        chosen = sorted(rng.permutation(len(ds))[: args.images])
        batch = torch.stack([ds[int(i)][0] for i in chosen])
        if args.no_accuracy:
            pass
        elif model.cfg.num_classes != len(splits.class_names):
            print(
                f"vitlab inspect: no accuracy: the model predicts {model.cfg.num_classes} classes, "
                f"{data} has {len(splits.class_names)}"
            )
        else:
            loader = DataLoader(
                ds, batch_sampler=EpochBatchSampler(len(ds), args.batch_size, shuffle=False, drop_last=False)
            )
            device = torch.device(args.device)
            result = evaluate(model, loader, model.cfg.num_classes, device)
            accuracy = {"split": args.split, "acc": result["acc"], "n": result["n"], "data": str(data)}
            print(f"{args.split} accuracy: {result['acc']:.4f} ({result['n']} images)")

    report = inspect_model(
        model,
        batch.to(args.device),
        args.out,
        pre,
        class_names=names,
        title=f"{Path(args.model).name}",
        accuracy=accuracy,
        rollout_images=args.rollout_images,
        batch_size=args.batch_size,
    )
    for note in report.notes:
        print(f"note: {note}")
    sim = report.numbers.get("position_similarity")
    if sim:
        print(f"position embedding similarity: neighbours {sim['neighbours']:.3f}, distant {sim['distant']:.3f}")
    dist = report.numbers["mean_attention_distance_px"]
    print(f"mean attention distance (px): block 1 {np.mean(dist[0]):.1f}, block {len(dist)} {np.mean(dist[-1]):.1f}")
    for name, path in report.figures.items():
        print(f"wrote {path} ({name})")
    print(f"wrote {report.html}")
    return 0
