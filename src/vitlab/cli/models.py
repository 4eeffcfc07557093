"""``vitlab models [PATTERN]``: the table of named models with parameters and GMACs."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the named models with parameters and GMACs",
        description="List the named models. PATTERN is a substring (base) or a shell pattern (vit_*_patch16_*).",
    )
    p.add_argument("pattern", nargs="?", default=None, help="filter: substring or shell-style pattern")
    p.add_argument("--names", action="store_true", help="print only the names, one per line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models import create_model, list_models
    from ..models.summary import count_params
    from ..models.zoo import find_row

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; run `vitlab models` for the full list")
    if args.names:
        print("\n".join(names))
        return 0
    header = f"{'model':<36}{'arch':<8}{'params':>13}{'GMACs':>9}{'input':>10}  note"
    print(header)
    print("-" * len(header))
    for name in names:
        model = create_model(name, device="meta")  # instant: no memory, no initialisation
        shape = model.input_shape
        size = shape[1:] if len(shape) == 3 else shape  # images: HxW; sequences: CxL
        shown = str(size[0]) if len(size) == 2 and size[0] == size[1] and len(shape) == 3 else "x".join(map(str, size))
        row_note = find_row(name).note
        note = model.cfg.describe() + (f"; {row_note}" if row_note else "")
        print(
            f"{name:<36}{model.architecture:<8}{count_params(model):>13,}{model.count_macs() / 1e9:>9.2f}"
            f"{shown:>10}  {note}"
        )
    return 0
