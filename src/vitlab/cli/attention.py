"""``vitlab attention IMAGE... --model CKPT --out DIR``: attention maps and rollout overlaid on images."""

from __future__ import annotations

import argparse
import sys

from ._common import require_attention


def _layers(text: str) -> list[int] | str:
    if text == "all":
        return text
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or block numbers like -1 or 0,5,11; got {text!r}") from None


def _head(text: str) -> int | str:
    if text in ("mean", "all", "max", "min"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a head number, mean, all, max or min; got {text!r}") from None


def _query(text: str) -> tuple[int, int]:
    try:
        row, col = (int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a patch as ROW,COL (from 0), got {text!r}") from None
    return row, col


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="attention maps or rollout of images, overlaid as heat maps",
        description=(
            "Draw what a ViT attends to. For each image, writes IMAGE-STEM_METHOD.png into --out: the input as the "
            "model sees it, then one heat-map overlay per map (with --head all, a grid of every head of each "
            "layer). Raw maps are the attention of the [CLS] token to the patches (for models without a class "
            "token, the mean over patch queries); rollout follows Abnar & Zuidema (2020). Only the asked-for "
            "blocks compute explicit attention; the rest stay on the fused kernel."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, directories or globs")
    p.add_argument("--model", required=True, help="checkpoint (any format vitlab reads) or a model name")
    p.add_argument("--method", default="raw", choices=("raw", "rollout"), help="raw attention or rollout")
    p.add_argument(
        "--layer",
        type=_layers,
        default=None,
        help="blocks, counted from 0, negatives from the end: -1, 0,5,11 or all "
        "(default: -1 for raw; all for rollout, which runs through the deepest block given)",
    )
    p.add_argument(
        "--head",
        type=_head,
        default="mean",
        help="raw: a head number (from 0), mean or all; rollout: how heads are fused, mean, max or min",
    )
    p.add_argument(
        "--query",
        type=_query,
        default=None,
        metavar="ROW,COL",
        help="window-attention models (Swin): the patch (row, column of the first stage's patch grid, from 0) "
        "whose window attention to draw in the chosen blocks (counted across stages)",
    )
    p.add_argument("--discard-ratio", type=float, default=0.0, help="rollout: drop each query's weakest attention")
    p.add_argument(
        "--resize",
        default="crop",
        choices=("crop", "fit"),
        help="crop: as the model predicts (default); fit: the whole image, resized to whole patches",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="heat-map opacity (default 0.5)")
    p.add_argument("--save-maps", action="store_true", help="also write the maps at patch resolution as .npz")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import io
    import logging
    from pathlib import Path

    import numpy as np
    import torch

    from ..data import ImageError, class_names_for, find_images, load_image
    from ..data.transforms import eval_transform, fit_transform
    from ..viz import attention_maps
    from ..viz.render import model_view, panel_figure, save_figure, write_bytes
    from ..weights import load_model

    if not 0 <= args.alpha <= 1:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    logging.basicConfig(level=logging.WARNING, format="vitlab attention: %(message)s")
    paths, problems = find_images(args.inputs)
    for line in problems:
        print(f"vitlab attention: {line}", file=sys.stderr)
    if not paths:
        raise ValueError("no images to draw")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA device is available here")
    loaded = load_model(args.model)
    model = loaded.model.eval().to(args.device)
    if args.query is not None or not model.supports_attention:
        if args.query is not None and hasattr(model, "forward_window_attention"):
            return _window_view(args, loaded, model, paths, len(problems))
        if args.query is not None:
            raise ValueError(f"--query is for window-attention models (Swin); {args.model} has global maps")
        require_attention(model, args.model)
    pre = loaded.preprocessing
    every = args.layer == "all" or (args.layer is None and args.method == "rollout")
    layers = None if every else args.layer or [-1]
    transform = eval_transform(pre) if args.resize == "crop" else fit_transform(pre, model.cfg.patch_size)
    mode = "L" if model.cfg.in_chans == 1 else "RGB"
    names = class_names_for(model.cfg.num_classes, loaded.class_names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = len(problems)
    described = False
    for path in paths:
        try:
            x = transform(load_image(path, mode))[None].to(args.device)
        except ImageError as err:
            print(f"vitlab attention: {err}", file=sys.stderr)
            failed += 1
            continue
        result = attention_maps(model, x, args.method, layers, args.head, args.discard_ratio)
        if not described:
            print(f"showing {result.description}")
            described = True
        suptitle = path.name
        if model.cfg.num_classes:
            prob = result.logits.float().softmax(-1)[0]
            p, k = prob.max(0)
            suptitle += f": {names[int(k)]} ({p:.2f})"
        fig = panel_figure(
            model_view(x[0], pre),
            result.maps[0].cpu(),
            result.titles,
            suptitle,
            args.alpha,
            per_row=model.cfg.num_heads if args.head == "all" else None,
        )
        target = save_figure(fig, out / f"{path.stem}_{args.method}.png")
        share = result.prefix_share[0].float().mean().item()
        line = f"{path} -> {target}"
        if model.num_prefix_tokens:
            line += f" ({100 * share:.0f}% of the attention went to prefix tokens, not shown)"
        print(line)
        if args.save_maps:
            buf = io.BytesIO()
            np.savez(buf, maps=result.maps[0].cpu().numpy(), titles=np.array(result.titles))
            write_bytes(buf.getvalue(), out / f"{path.stem}_{args.method}.npz")
    return 1 if failed else 0


def _window_view(args: argparse.Namespace, loaded, model, paths, failed: int) -> int:
    """``--query``: one patch's window attention in the chosen blocks (Swin), drawn on the image."""
    from pathlib import Path

    from ..data import ImageError, class_names_for, load_image
    from ..data.transforms import eval_transform
    from ..viz.render import model_view, panel_figure, save_figure
    from ..viz.window_maps import window_attention_maps

    if args.method != "raw" or args.resize != "crop":
        raise ValueError("--query draws raw window attention of the model's input size (no rollout, no --resize fit)")
    layers = None if args.layer == "all" else args.layer or -1
    names = class_names_for(model.cfg.num_classes, loaded.class_names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    transform = eval_transform(loaded.preprocessing)
    described = False
    for path in paths:
        try:
            x = transform(load_image(path, "L" if model.cfg.in_chans == 1 else "RGB"))[None].to(args.device)
        except ImageError as err:
            print(f"vitlab attention: {err}", file=sys.stderr)
            failed += 1
            continue
        result = window_attention_maps(model, x, args.query, layers, args.head)
        if not described:
            print(f"showing {result.description}")
            described = True
        suptitle = f"{path.name}, query patch {args.query}"
        if model.cfg.num_classes:
            p, k = result.logits.float().softmax(-1)[0].max(0)
            suptitle += f": {names[int(k)]} ({p:.2f})"
        fig = panel_figure(
            model_view(x[0], loaded.preprocessing), result.maps[0].cpu(), result.titles, suptitle, args.alpha
        )
        print(f"{path} -> {save_figure(fig, out / f'{path.stem}_window.png')}")
    return 1 if failed else 0
