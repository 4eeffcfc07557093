"""``vitlab convert SRC --to vitlab|hf|timm|jax --out DST``: convert weights and prove the outputs match."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import add_img_size, cli_spelling, img_size

if TYPE_CHECKING:
    from ..weights.verify import Reference

TARGETS = ("vitlab", "hf", "timm", "jax")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert weights between vitlab, timm, Hugging Face, JAX .npz, DeiT and vit-pytorch",
        description=(
            "Read weights (format given with --from or detected), optionally adapt them (new input size, "
            "new number of classes), write them in another format, then prove it on real images: the source "
            "library (timm, transformers, timm's JAX reader, vit-pytorch) runs the source file by its own means, "
            "vitlab runs its model of it, and the written file is read back by vitlab and run by the target "
            "library; logits must agree to 1e-4, else the exit status is 1."
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
    p.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="IMAGE",
        help="images (files, folders, globs) for the parity checks; default: the photos shipped with vitlab",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data import image_batch, sample_images
    from ..weights import export_hf, export_jax, export_timm, load_checkpoint, load_pretrained, save
    from ..weights.verify import (
        Reference,
        compare,
        output_of,
        probe_input,
        run_hf_dir,
        run_jax_npz,
        run_source,
        run_timm_file,
    )

    overrides = {"num_heads": args.num_heads} if args.num_heads is not None else {}
    size = img_size(args.img_size)
    images = _images(args.images) if args.images else sample_images()
    loaded = load_checkpoint(
        args.src, format=args.src_format, model=args.model, img_size=size, num_classes=args.num_classes, **overrides
    )
    model, cfg = loaded.model, loaded.model.cfg
    print(cli_spelling(str(loaded.report), "convert"))
    shape = model.input_shape
    print(f"model: {model.architecture} ({cfg.describe()}) img={shape[1]}x{shape[2]} classes={cfg.num_classes}")
    adapted = args.num_classes is not None or size is not None
    # The mapping is proved on the weights as they are: with a new size or head, load them once more unadapted.
    source = loaded if not adapted else load_checkpoint(args.src, format=args.src_format, model=args.model, **overrides)
    if source.preprocessing is not None:
        x_src = image_batch(images, source.preprocessing)
        print(f"parity inputs: {len(images)} images ({', '.join(p.name for p in images)})")
    else:  # a sequence model: no images to show it
        x_src = probe_input(source.model, 3)
        print(f"parity inputs: 3 seeded random sequences {tuple(x_src.shape[1:])}")
    checks = []
    src_ref = run_source(Path(args.src), loaded.source_format, source.model.cfg, x_src)
    if loaded.source_format == "vitlab":
        src_ref = Reference("vitlab", None, skipped="the source is a vitlab file: vitlab is its own reference")
    checks.append(
        compare(
            f"source file run by {src_ref.library} vs vitlab",
            output_of(source.model, x_src, src_ref.kind),
            src_ref,
        )
    )
    x = x_src if not adapted else image_batch(images, loaded.preprocessing)  # adapting needs an image model

    def baseline(kind: str) -> Reference:
        """What every output is held to: the source library's own output where it ran on the same input."""
        if not adapted and src_ref.output is not None and src_ref.kind == kind:
            return src_ref
        return Reference("vitlab", output_of(model, x, kind), kind)

    def check_back(name: str, back) -> None:
        base = baseline("logits")
        checks.append(compare(f"{name} vs {_label(base, src_ref)}", output_of(back, x), base))

    def check_target(name: str, ref: Reference) -> None:
        if ref.output is None:  # the target library is missing or cannot express the model
            checks.append(compare(name, x, ref))
            return
        base = baseline(ref.kind)
        checks.append(compare(f"{name} vs {_label(base, src_ref)}", ref.output, base))

    out = Path(args.out)
    if args.dst_format == "vitlab":
        save(model, out, loaded.preprocessing, loaded.class_names)
        check_back("vitlab file read back by vitlab", load_pretrained(out))
    elif args.dst_format == "hf":
        export_hf(model, out, loaded.preprocessing, loaded.class_names)
        check_back("HF directory read back by vitlab", load_pretrained(out))
        check_target("HF directory run by transformers", run_hf_dir(out, cfg, x))
    elif args.dst_format == "timm":
        kwargs = export_timm(model, out)
        check_back("timm file read back by vitlab", load_pretrained(out, model=cfg))
        check_target("timm file run by timm", run_timm_file(out, cfg, x))
        if kwargs:
            shown = {k: v for k, v in kwargs.items() if k != "norm_layer"}
            print(f"timm: timm.models.vision_transformer.VisionTransformer(**{shown})")
    else:
        if model.architecture != "vit":
            raise ValueError(f"--to jax: the JAX layouts hold ViTs only, not a {model.architecture!r} model")
        export_jax(model.state_dict(), cfg, out, layout=args.jax_layout)
        check_back("JAX .npz read back by vitlab", load_pretrained(out, model=cfg, act=cfg.act, norm_eps=cfg.norm_eps))
        check_target("JAX .npz run by timm's JAX reader", run_jax_npz(out, cfg, x))
    print(f"wrote {out} ({args.dst_format})")
    for check in checks:
        print(f"parity: {check}")
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"vitlab convert: {len(failed)} parity check(s) FAILED: the conversion is wrong", file=sys.stderr)
    return 1 if failed else 0


def _label(base: Reference, src_ref: Reference) -> str:
    return f"source ({src_ref.library})" if base is src_ref else "vitlab's model"


def _images(inputs: list[str]) -> list[Path]:
    """The ``--images`` files; a missing one is an error (the check must run on what the user named)."""
    from ..data import find_images

    paths, problems = find_images(inputs)
    if problems:
        raise ValueError(f"--images: {'; '.join(problems)}")
    return paths
