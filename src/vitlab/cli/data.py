"""``vitlab data mnist --out DIR``: fetch the public data the demo reads (MNIST, checksums verified)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="fetch public datasets (MNIST) in the layout vitlab reads",
        description="Fetch public datasets in the layout vitlab reads.",
    )
    datasets = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    m = datasets.add_parser(
        "mnist",
        help="DIR/mnist.npz from torchvision's MNIST download",
        description=(
            "Make sure DIR/mnist.npz exists: if it does not, download MNIST with torchvision (each file's MD5 "
            "verified) and write it as mnist.npz (x_train, y_train, x_test, y_test). Nothing is fetched when "
            "the file is already there. Without a network, place mnist.npz in DIR yourself."
        ),
    )
    m.add_argument("--out", required=True, metavar="DIR", help="directory that holds (or will hold) mnist.npz")
    m.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="base URL serving the four idx .gz files, in place of torchvision's mirrors (repeatable)",
    )
    m.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.fetch import MNIST_FILE, fetch_mnist

    present = (Path(args.out) / MNIST_FILE).is_file()
    path = fetch_mnist(args.out, args.mirror)
    print(f"{path}: {'already there' if present else 'downloaded and checked'}", file=sys.stderr)
    return 0
