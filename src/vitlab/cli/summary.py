"""``vitlab summary MODEL``: a per-layer table (output shape, parameters), totals and GMACs."""

from __future__ import annotations

import argparse

from ._common import add_img_size, img_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="per-layer table of a model: output shapes, parameters, MACs",
        description=(
            "Print a torchsummary-style table of a named model: every layer's output shape and parameters, "
            "totals, MACs per image, and the count torchsummary itself would print. Built on the meta device, "
            "so even the largest models summarise in about a second."
        ),
    )
    p.add_argument("model", help="a name from `vitlab models`")
    add_img_size(p)
    p.add_argument("--num-classes", type=int, help="classifier outputs (0 for no head)")
    p.add_argument("--in-chans", type=int, help="input channels")
    p.add_argument("--depth", type=int, default=None, help="fold modules deeper than this level (2 shows blocks)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models import create_model
    from ..models.summary import summarize

    overrides = {}
    if args.img_size:
        overrides["img_size"] = img_size(args.img_size)
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    if args.in_chans is not None:
        overrides["in_chans"] = args.in_chans
    if args.depth is not None and args.depth < 1:
        raise ValueError(f"--depth must be >= 1, got {args.depth}")
    model = create_model(args.model, device="meta", **overrides)
    try:
        result = summarize(model, depth=args.depth)
    except RuntimeError as err:  # e.g. an input so large that the attention matrix's size overflows
        raise ValueError(f"cannot summarise {args.model} at input {model.input_shape}: {err}") from None
    result.title = f"{args.model}: {result.title}"
    print(result.format())
    return 0
