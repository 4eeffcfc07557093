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
    from ..models.summary import count_params, estimate_macs
    from ..models.zoo import MODEL_TABLE

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; run `vitlab models` for the full list")
    if args.names:
        print("\n".join(names))
        return 0
    notes = {row[0]: row[5] for row in MODEL_TABLE}
    header = f"{'model':<34}{'params':>15}{'GMACs':>9}{'img':>9}{'patch':>6}{'D':>6}{'depth':>6}{'heads':>6}  note"
    print(header)
    print("-" * len(header))
    for name in names:
        model = create_model(name, device="meta")  # instant: no memory, no initialisation
        c = model.cfg
        img = "x".join(map(str, c.img_size)) if c.img_size[0] != c.img_size[1] else str(c.img_size[0])
        print(
            f"{name:<34}{count_params(model):>15,}{estimate_macs(c) / 1e9:>9.2f}{img:>9}{c.patch_size:>6}"
            f"{c.embed_dim:>6}{c.depth:>6}{c.num_heads:>6}  {notes[name]}"
        )
    return 0
