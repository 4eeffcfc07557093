"""``vitlab export --model CKPT --format onnx|torch-export|torchscript --out FILE``: export, then prove it."""

from __future__ import annotations

import argparse
import sys

from ._common import add_img_size, img_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export to ONNX, torch.export (.pt2) or TorchScript, checked against eager PyTorch",
        description=(
            "Export a model at a fixed input size, then run the exported file (ONNX Runtime for ONNX) against "
            "eager PyTorch and print the largest difference. The file is written only if that difference is "
            "within --tolerance (1e-4 by default). Preprocessing (input size, mean/std, resize) and class names "
            "are stored in the file: ONNX metadata properties, or vitlab.json inside .pt2/.pt archives."
        ),
    )
    p.add_argument("--model", required=True, help="checkpoint (any format vitlab reads) or a model name")
    p.add_argument("--format", choices=("onnx", "torch-export", "torchscript"), help="default: from the --out suffix")
    p.add_argument("--out", required=True, help="output file (.onnx, .pt2 or .pt)")
    add_img_size(p)
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension symbolic")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (exporter default when omitted)")
    p.add_argument(
        "--images",
        nargs="*",
        default=None,
        metavar="IMAGE",
        help="images to check the export with (files, directories, globs); seeded noise when omitted",
    )
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |exported - eager| (default 1e-4)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import logging
    from pathlib import Path

    import torch

    from ..data import ImageError, class_names_for, find_images, load_image
    from ..data.transforms import eval_transform
    from ..export import export_model, guess_format
    from ..weights import load_model

    logging.basicConfig(level=logging.WARNING, format="vitlab export: %(message)s")
    out = Path(args.out)
    fmt = args.format or guess_format(out)
    loaded = load_model(args.model)
    model = loaded.model.eval()
    size = img_size(args.img_size)
    size = (size, size) if isinstance(size, int) else size
    if loaded.preprocessing is None:  # a sequence model: no image preprocessing, no image size
        if size is not None or args.images is not None:
            raise ValueError(f"the {model.architecture!r} model takes {model.input_shape} inputs, not images")
        pre = None
    else:
        size = tuple(size or model.input_shape[1:])
        pre = dataclasses.replace(loaded.preprocessing, input_size=(model.input_shape[0], *size))
    images = None
    where = "3 seeded noise inputs (pass --images to check on real images)"
    if args.images is not None:
        paths, problems = find_images(args.images)
        for line in problems:
            print(f"vitlab export: {line}", file=sys.stderr)
        transform, mode = eval_transform(pre), "L" if model.input_shape[0] == 1 else "RGB"
        tensors = []
        for path in paths[:16]:
            try:
                tensors.append(transform(load_image(path, mode)))
            except ImageError as err:
                print(f"vitlab export: {err}", file=sys.stderr)
        if not tensors:
            raise ValueError("--images: no readable images to check the export with")
        images = torch.stack(tensors)
        where = f"{len(tensors)} real image{'s' if len(tensors) > 1 else ''}"
    names = class_names_for(model.cfg.num_classes, loaded.class_names) if model.cfg.num_classes else None
    result = export_model(
        model,
        out,
        fmt,
        img_size=size,
        dynamic_batch=args.dynamic_batch,
        opset=args.opset,
        preprocessing=pre,
        class_names=names,
        images=images,
        tolerance=args.tolerance,
    )
    batch = "batch" if result.dynamic_batch else "1"
    dims = ", ".join(map(str, result.input_shape))
    print(f"wrote {result.path} ({fmt}, input pixel_values ({batch}, {dims}))")
    print(
        f"checked against eager PyTorch on {where} in {len(result.checked_batches)} runs "
        f"(batch {', '.join(map(str, sorted(set(result.checked_batches), reverse=True)))}): "
        f"max abs difference {result.max_abs_diff:.3g} (tolerance {args.tolerance:g})"
    )
    return 0
