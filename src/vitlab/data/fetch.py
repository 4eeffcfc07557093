"""Fetching the public data the demo reads: MNIST, through torchvision's downloader (which verifies each
file's MD5), converted to the ``mnist.npz`` layout every reader here takes (``x_train`` (60000, 28, 28)
uint8, ``y_train`` (60000,) uint8, ``x_test``, ``y_test``)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..weights.io import atomic_path

log = logging.getLogger(__name__)

MNIST_FILE = "mnist.npz"


class FetchError(OSError):
    """Data that could not be fetched; the message says what to do instead, in one line."""


def fetch_mnist(out_dir: str | os.PathLike, mirrors: Sequence[str] | None = None) -> Path:
    """``out_dir/mnist.npz``, downloaded and converted if it is not there yet (nothing is fetched if it is).

    Args:
        out_dir: Where ``mnist.npz`` is (or goes); created if missing.
        mirrors: Base URLs to download the four idx ``.gz`` files from, in order, in place of torchvision's
            ``MNIST.mirrors``; the files must still match torchvision's MD5s (``MNIST.resources``).

    Raises:
        FetchError: no mirror could be reached, or a file failed its checksum.
    """
    from torchvision.datasets import MNIST

    out_dir = Path(out_dir)
    target = out_dir / MNIST_FILE
    if target.is_file():
        return target

    class Mirrored(MNIST):  # torchvision reads the mirrors from the instance's class
        pass

    if mirrors:
        Mirrored.mirrors = [m if m.endswith("/") else m + "/" for m in mirrors]
    where = ", ".join(Mirrored.mirrors)
    advice = (
        f"with no network, place {MNIST_FILE} (keys x_train, y_train, x_test, y_test) in {out_dir}, "
        f"or give make the directory that holds it: make demo DATA=/path/to/dir"
    )
    chatter = io.StringIO()  # torchvision prints each URL and draws download bars; keep them out of logs
    with tempfile.TemporaryDirectory(prefix="vitlab-mnist-") as tmp:
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                splits = [Mirrored(tmp, train=train, download=True) for train in (True, False)]
        except (RuntimeError, OSError) as err:
            # torchvision's "Error downloading F:\nTried M, got:\nE\n..." on one line
            reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip()).rstrip(":")
            if "corrupted" in reason:
                reason += " (the file failed torchvision's MD5 check)"
            raise FetchError(f"could not download MNIST from {where}: {reason}; {advice}") from None
        arrays = {}
        for split, ds in zip(("train", "test"), splits, strict=True):
            arrays[f"x_{split}"] = ds.data.numpy().astype(np.uint8)
            arrays[f"y_{split}"] = ds.targets.numpy().astype(np.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp_path:
        np.savez_compressed(tmp_path, **arrays)
    log.info("wrote %s (%d train, %d test digits)", target, len(arrays["y_train"]), len(arrays["y_test"]))
    return target
