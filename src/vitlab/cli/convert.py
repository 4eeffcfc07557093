"""``vitlab convert SRC --to vitlab|hf|timm|jax --out DST``: convert weights and prove the outputs match."""

from __future__ import annotations

import argparse

from ._common import add_img_size, img_size

TARGETS = ("vitlab", "hf", "timm", "jax")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert weights between vitlab, timm, Hugging Face, JAX .npz, DeiT and vit-pytorch",
        description=(
            "Read weights (format given with --from or detected), optionally adapt them (new input size, "
            "new number of classes), write them in another format, then check the written file: it is read "
            "back and, where the other library is installed, run there too; logits must agree to 1e-4."
        ),
    )
    p.add_argument("src", help="checkpoint file or Hugging Face directory")
    p.add_argument("--from", dest="src_format", default=None, help="vitlab, timm, deit, hf, jax or vit_pytorch")
    p.add_argument("--to", dest="dst_format", required=True, choices=TARGETS, help="output format")
    p.add_argument("--out", required=True, help="output file (.safetensors, .pth or .npz) or directory (hf)")
    p.add_argument("--model", default=None, help="named model for what the weights do not record (e.g. heads)")
    add_img_size(p, help="new input size: N or H W (positions resampled)")
    p.add_argument("--num-classes", type=int, default=None, help="new classifier size (zero-initialised head)")
    p.add_argument("--num-heads", type=int, default=None, help="number of attention heads, if not recorded")
    p.add_argument("--jax-layout", default="original", choices=("original", "big_vision"), help="layout for --to jax")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..weights import export_hf, export_jax, export_timm, load_checkpoint, save
    from ..weights.verify import against_hf, against_model, against_timm

    overrides = {}
    if args.num_heads is not None:
        overrides["num_heads"] = args.num_heads
    size = img_size(args.img_size)
    loaded = load_checkpoint(
        args.src,
        format=args.src_format,
        model=args.model,
        img_size=size,
        num_classes=args.num_classes,
        **overrides,
    )
    model, cfg = loaded.model, loaded.model.cfg
    print(loaded.report)
    print(
        f"model: D={cfg.embed_dim} depth={cfg.depth} heads={cfg.num_heads} patch={cfg.patch_size} "
        f"img={cfg.img_size[0]}x{cfg.img_size[1]} classes={cfg.num_classes} pool={cfg.global_pool!r}"
    )
    adapted = args.num_classes is not None or size is not None
    checks = []
    if not adapted and loaded.source_format == "hf":
        checks.append(against_hf(model, Path(args.src), "source (transformers) vs vitlab"))
    if not adapted and loaded.source_format in ("timm", "deit"):
        checks.append(against_timm(model, model.state_dict(), "source (timm) vs vitlab"))

    out = Path(args.out)
    from ..weights import load_pretrained

    if args.dst_format == "vitlab":
        save(model, out, loaded.preprocessing, loaded.class_names)
        checks.append(against_model(model, load_pretrained(out), "vitlab file read back"))
    elif args.dst_format == "hf":
        export_hf(model, out, loaded.preprocessing, loaded.class_names)
        checks.append(against_model(model, load_pretrained(out), "HF directory read back by vitlab"))
        checks.append(against_hf(model, out, "HF directory run by transformers"))
    elif args.dst_format == "timm":
        kwargs = export_timm(model, out)
        checks.append(against_model(model, load_pretrained(out, model=cfg), "timm file read back by vitlab"))
        from ..weights.io import read_pickle, read_safetensors

        sd = read_pickle(out) if out.suffix in (".pth", ".pt", ".bin") else read_safetensors(out)[0]
        checks.append(against_timm(model, sd, "timm file run by timm"))
        shown = {k: v for k, v in kwargs.items() if k != "norm_layer"}
        print(f"timm: timm.models.vision_transformer.VisionTransformer(**{shown})")
    else:
        export_jax(model.state_dict(), cfg, out, layout=args.jax_layout)
        back = load_pretrained(out, model=cfg, act=cfg.act, norm_eps=cfg.norm_eps)
        checks.append(against_model(model, back, "JAX .npz read back by vitlab"))
    print(f"wrote {out} ({args.dst_format})")
    for check in checks:
        print(f"parity: {check}")
    return 0 if all(c.ok for c in checks) else 1
