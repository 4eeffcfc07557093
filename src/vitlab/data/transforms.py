"""Transforms derived from the weights' preprocessing metadata (nothing hardcodes ImageNet statistics)."""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode, v2

from ..weights import Preprocessing

_INTERP = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


class ResizeToCover(torch.nn.Module):
    """Resize keeping the aspect ratio so the image covers ``size`` (H, W) (for non-square targets)."""

    def __init__(self, size: tuple[int, int], interpolation: InterpolationMode) -> None:
        super().__init__()
        self.size, self.interpolation = size, interpolation

    def forward(self, img):
        w, h = v2.functional.get_size(img)[::-1]
        scale = max(self.size[0] / h, self.size[1] / w)
        new = (max(self.size[0], round(h * scale)), max(self.size[1], round(w * scale)))
        return v2.functional.resize(img, list(new), interpolation=self.interpolation, antialias=True)


def eval_transform(pre: Preprocessing) -> v2.Compose:
    """The evaluation transform of a set of weights: resize, centre crop, scale to [0, 1], normalise.

    Like timm's ``transforms_imagenet_eval`` (center mode): the shorter side is resized to
    ``floor(size / crop_pct)``, then the centre ``size`` is cropped. Input: a PIL image in the model's
    mode (``RGB`` or ``L``). Output: float32 ``(C, H, W)``.
    """
    _, h, w = pre.input_size
    interp = _INTERP[pre.interpolation]
    scale = (math.floor(h / pre.crop_pct), math.floor(w / pre.crop_pct))
    resize = (
        v2.Resize(scale[0], interpolation=interp, antialias=True)  # shorter side
        if scale[0] == scale[1]
        else ResizeToCover(scale, interp)
    )
    return v2.Compose(
        [
            resize,
            v2.CenterCrop((h, w)),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )


class ResizeToPatches(torch.nn.Module):
    """Resize keeping the aspect ratio so the image has about ``area`` pixels, each side a multiple of ``patch``."""

    def __init__(self, area: int, patch: int, interpolation: InterpolationMode) -> None:
        super().__init__()
        self.area, self.patch, self.interpolation = area, patch, interpolation

    def forward(self, img):
        h, w = v2.functional.get_size(img)
        scale = math.sqrt(self.area / (h * w))
        new = [max(self.patch, round(side * scale / self.patch) * self.patch) for side in (h, w)]
        return v2.functional.resize(img, new, interpolation=self.interpolation, antialias=True)


def fit_transform(pre: Preprocessing, patch_size: int) -> v2.Compose:
    """Keep the whole image: resize to about the model's pixel count, sides rounded to whole patches.

    For looking at attention over a full photo of any aspect ratio (the model's position embedding is
    resampled to the new grid); :func:`eval_transform` is what the model is evaluated with.
    """
    _, h, w = pre.input_size
    return v2.Compose(
        [
            ResizeToPatches(h * w, patch_size, _INTERP[pre.interpolation]),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )


def train_transform(
    pre: Preprocessing,
    random_resized_crop: list[float] | None = None,
    translate: float = 0.0,
    hflip: float = 0.0,
    rand_augment: list[int] | None = None,
    trivial_augment: bool = False,
    random_erasing: float = 0.0,
) -> v2.Compose:
    """The training transform: geometric and photometric augmentation, then the eval normalisation.

    Args:
        pre: The model's preprocessing (size, interpolation, mean/std).
        random_resized_crop: Scale range of ``RandomResizedCrop``; None resizes to the size.
        translate: ``RandomAffine`` translation as a fraction of the size (digits shift, they do not flip).
        hflip: Probability of a horizontal flip.
        rand_augment: ``[num_ops, magnitude]`` of RandAugment.
        trivial_augment: TrivialAugmentWide.
        random_erasing: Probability of RandomErasing (on the normalised tensor).
    """
    _, h, w = pre.input_size
    interp = _INTERP[pre.interpolation]
    steps: list[torch.nn.Module] = []
    if random_resized_crop:
        steps.append(
            v2.RandomResizedCrop((h, w), scale=tuple(random_resized_crop), interpolation=interp, antialias=True)
        )
    else:
        steps.append(v2.Resize((h, w), interpolation=interp, antialias=True))
    if translate:
        steps.append(v2.RandomAffine(degrees=0, translate=(translate, translate)))
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if rand_augment:
        steps.append(v2.RandAugment(num_ops=rand_augment[0], magnitude=rand_augment[1], interpolation=interp))
    if trivial_augment:
        steps.append(v2.TrivialAugmentWide(interpolation=interp))
    steps += [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
    ]
    if random_erasing:
        steps.append(v2.RandomErasing(p=random_erasing))
    return v2.Compose(steps)
