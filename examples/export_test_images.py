"""Write a few test images of a dataset vitlab reads (mnist.npz, idx, image folder, .tar.gz) as PNG files.

python examples/export_test_images.py ../shared/data/mnist.npz runs/demo/digits --count 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitlab.data.datasets import load_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args()
    splits = load_splits(args.data)
    samples = splits.test if splits.test is not None else splits.val
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(min(args.count, len(samples))):
        label = splits.class_names[int(samples.labels[i])].replace("/", "-")
        samples.image(i).save(out / f"test{i:04d}_label-{label}.png")
    print(f"wrote {min(args.count, len(samples))} test images to {out}")


if __name__ == "__main__":
    main()
