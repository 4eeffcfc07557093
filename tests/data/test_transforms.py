"""Training augmentation: RandAugment and TrivialAugment change the images, and each sample's draw is seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.data.loaders import TransformDataset
from vitlab.data.transforms import train_transform
from vitlab.weights import Preprocessing

PRE = Preprocessing(input_size=(3, 64, 64), crop_pct=1.0, interpolation="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)


class OnePhoto:
    def __init__(self, path: Path) -> None:
        self.img, self.labels = Image.open(path).convert("RGB"), np.array([0])

    def __len__(self) -> int:
        return 1

    def image(self, i: int) -> Image.Image:
        return self.img


@pytest.mark.parametrize("augment", [{"rand_augment": [2, 9]}, {"trivial_augment": True}])
def test_rand_and_trivial_augment_change_the_image_and_are_seeded(photos: Path, augment: dict) -> None:
    sample = OnePhoto(photos / "chelsea.png")
    plain = TransformDataset(sample, train_transform(PRE), "RGB")[0][0]  # resize and normalise only
    ds = TransformDataset(sample, train_transform(PRE, **augment), "RGB", seed=5)
    draws = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        draws.append(ds[0][0])
        torch.manual_seed(1000 + epoch)  # the global RNG must not matter
        assert torch.equal(ds[0][0], draws[-1]), epoch  # same (seed, epoch, index): same augmentation
    changed = sum(not torch.allclose(d, plain, atol=1e-3) for d in draws)
    distinct = len({d.numpy().tobytes() for d in draws})
    # both can draw the identity (or a zero magnitude) now and then. Observed over these 12 draws: RandAugment
    # changed 12 and gave 12 distinct images, TrivialAugment changed 9 and gave 10; without augmentation: 0 and 1
    assert changed >= 6 and distinct >= 6, (changed, distinct)
    again = TransformDataset(sample, train_transform(PRE, **augment), "RGB", seed=5)
    again.set_epoch(3)
    assert torch.equal(again[0][0], draws[3])  # a new dataset with the same seed draws the same
    other = TransformDataset(sample, train_transform(PRE, **augment), "RGB", seed=6)
    differs = 0
    for epoch in range(12):
        other.set_epoch(epoch)
        differs += not torch.equal(other[0][0], draws[epoch])
    assert differs >= 9, differs  # another seed: other draws (observed 12 of 12 for both)
