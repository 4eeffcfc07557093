"""``vitlab predict INPUT... --model CKPT_OR_NAME``: top-k classes for image files, streamed as they finish."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from ._common import add_precision


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files, directories or globs",
        description=(
            "Classify images with the preprocessing the weights were trained with. INPUT is image files, "
            "directories (searched recursively) or glob patterns. A file that cannot be read is reported by "
            "name on stderr and the others are still predicted; the exit status is 1 if any input failed."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, directory or glob")
    p.add_argument(
        "--model", required=True, help="checkpoint (any format vitlab reads) or a model name (random weights)"
    )
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding images (default 0)")
    p.add_argument("--format", default="text", choices=("text", "json", "jsonl", "csv"), help="output format")
    p.add_argument("--out", default=None, help="write results here (streamed) instead of stdout")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_precision(p)
    p.add_argument("--strict", action="store_true", help="stop at the first input that cannot be read")
    p.add_argument("--verbose", action="store_true", help="print the model and its preprocessing to stderr")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from tqdm import tqdm

    from ..data import find_images
    from ..infer import PredictionWriter, Predictor

    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    logging.basicConfig(level=logging.WARNING, format="vitlab predict: %(message)s")
    paths, problems = find_images(args.inputs)
    for line in problems:
        print(f"vitlab predict: {line}", file=sys.stderr)
    if problems and args.strict:
        return 1
    if not paths:
        raise ValueError("no images to predict")
    predictor = Predictor.from_pretrained(args.model, device=args.device, precision=args.precision)
    if args.verbose:
        c, pre = predictor.model.cfg, predictor.preprocessing
        _, h, w = pre.input_size
        print(
            f"model: {args.model} ({predictor.model.architecture}: {c.describe()}, {c.num_classes} classes)",
            f"preprocessing: resize shorter side to {int(h / pre.crop_pct)} ({pre.interpolation}), centre crop "
            f"{h}x{w}, {predictor.mode}, mean {pre.mean}, std {pre.std}; {args.precision} on {args.device}",
            sep="\n",
            file=sys.stderr,
        )
    topk = min(args.topk, predictor.model.cfg.num_classes)
    failed = 0
    start = time.perf_counter()

    def predict_all(stream) -> None:
        nonlocal failed
        results = predictor.predict_files(paths, topk, args.batch_size, args.workers)
        bar = tqdm(results, total=len(paths), unit="img", disable=None, file=sys.stderr)
        with PredictionWriter(stream, args.format, topk) as writer:
            for result in bar:
                writer.write(result)
                if result.error:
                    failed += 1
                    bar.write(f"vitlab predict: {result.error}", file=sys.stderr)
                    if args.strict:
                        break

    if args.out:
        # Records stream into a temporary file beside --out, renamed into place when the run ends, however it
        # ends (an interrupted run keeps what it finished): a concurrent run with the same --out never mixes
        # into this one's file, and a failing run never truncates what was there before it started.
        with atomic_stream(_checked_out(args.out, paths)) as stream:
            predict_all(stream)
    else:
        predict_all(sys.stdout)
    seconds = time.perf_counter() - start
    done = len(paths) - failed
    print(
        f"vitlab predict: {done} of {len(paths)} images in {seconds:.1f} s ({done / max(seconds, 1e-9):.1f} img/s)"
        + (f"; {failed + len(problems)} inputs failed" if failed or problems else ""),
        file=sys.stderr,
    )
    return 1 if failed or problems else 0


def _checked_out(out: str, inputs: list) -> Path:
    """``--out`` as a path, refused when it is one of the inputs or a directory."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out}: is a directory; name a file")
    if path.exists():
        for p in inputs:
            if path.samefile(p):
                raise ValueError(f"--out {out}: is one of the input images; writing there would destroy it")
    return path


@contextlib.contextmanager
def atomic_stream(path: Path):
    """A text stream into a temporary file next to ``path``, renamed onto it when the block ends (also on an
    exception or Ctrl-C, so what was written is kept)."""
    from ..weights.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as stream:
        try:
            yield stream
        except BaseException:
            stream.close()
            os.replace(tmp, path)  # keep the records finished before the interruption
            raise
