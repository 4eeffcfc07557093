"""Transforms derived from the weights' preprocessing metadata (nothing hardcodes ImageNet statistics)."""

from __future__ import annotations

import math

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ..weights import Preprocessing

_INTERP = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}
_PIL = {
    InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
    InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
    InterpolationMode.NEAREST: Image.Resampling.NEAREST,
}


class ResizeCenterCrop(torch.nn.Module):
    """Resize keeping the aspect ratio so the image covers ``resize`` (H, W), then take the centre ``crop``
    (H, W), computing only the crop.

    Resizing first costs the resized image: a 100000x1 PNG with "shorter side to 248" is 248 x 24.8M
    pixels (6.3 GB on the way) before the crop keeps 224 x 224 of them. So when the resized image would
    have more than ``max_area_ratio`` times the crop's pixels, a PIL image is resampled from the crop's
    box in the source alone (``Image.resize(box=...)``): each output pixel comes from the same source
    position with the same filter, and the work is bounded by the output. Pillow rounds its two passes
    differently there, so pixels may differ by a few grey levels (measured on six photos forced through
    it: at most 4, mean at most 0.23). Every other image (any photo up to about 13:1) takes the exact
    resize-then-crop of timm's eval transform.
    """

    max_area_ratio = 16  # resized / crop pixels; a 3:2 photo is about 1.8, a 3:1 panorama 3.7

    def __init__(self, resize: tuple[int, int], crop: tuple[int, int], interpolation: InterpolationMode) -> None:
        super().__init__()
        self.resize, self.crop, self.interpolation = resize, crop, interpolation

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """The size the whole image would be resized to: torchvision's ``Resize(int)`` for a square target
        (shorter side to it, the longer ``int(short * long / short)``), else the covering scale."""
        rh, rw = self.resize
        if rh == rw:
            if h <= w:
                return rh, int(rh * w / h)
            return int(rw * h / w), rw
        scale = max(rh / h, rw / w)
        return max(rh, round(h * scale)), max(rw, round(w * scale))

    def forward(self, img):
        h, w = v2.functional.get_size(img)
        nh, nw = self.resized_size(h, w)
        ch, cw = self.crop
        if not isinstance(img, Image.Image) or nh * nw <= self.max_area_ratio * ch * cw:
            img = v2.functional.resize(img, [nh, nw], interpolation=self.interpolation, antialias=True)
            return v2.functional.center_crop(img, [ch, cw])
        # the offsets of torchvision's center_crop in the resized image, mapped back to source coordinates
        top, left = round((nh - ch) / 2.0), round((nw - cw) / 2.0)
        sy, sx = h / nh, w / nw
        box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
        return img.resize((cw, ch), _PIL[self.interpolation], box=box)


class FlipChannels(torch.nn.Module):
    """RGB -> BGR (or back) on a (C, H, W) or (B, C, H, W) tensor: the channel dimension reversed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-3)


def channel_order_steps(pre: Preprocessing) -> list[torch.nn.Module]:
    """The steps that put an RGB tensor in the weights' channel order: none for ``RGB``, a flip for ``BGR``."""
    return [FlipChannels()] if pre.channel_order == "BGR" else []


def eval_transform(pre: Preprocessing) -> v2.Compose:
    """The evaluation transform of a set of weights: resize, centre crop, scale to [0, 1], normalise.

    Like timm's ``transforms_imagenet_eval`` (center mode): the shorter side is resized to
    ``floor(size / crop_pct)``, then the centre ``size`` is cropped (computing only the crop, so an
    image of any aspect ratio costs about the output). Input: a PIL image in the model's mode (``RGB``
    or ``L``). Output: float32 ``(C, H, W)``, channels in ``pre.channel_order`` (flipped to BGR, before the
    normalisation, for weights that expect it, as Hugging Face's MobileViT processor does).
    """
    _, h, w = pre.input_size
    scale = (math.floor(h / pre.crop_pct), math.floor(w / pre.crop_pct))
    return v2.Compose(
        [
            ResizeCenterCrop(scale, (h, w), _INTERP[pre.interpolation]),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            *channel_order_steps(pre),
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
        gh, gw = (max(1, round(side * scale / self.patch)) for side in (h, w))
        # A side rounded up to one patch must not leave the other its whole length: a 1x80M image would
        # otherwise become 16 x 1.3M pixels. Keep the patch count at about area / patch**2.
        cells = max(1, round(self.area / self.patch**2))
        if gh * gw > cells:
            gh, gw = (max(1, cells // gw), gw) if gh > gw else (gh, max(1, cells // gh))
        size = [gh * self.patch, gw * self.patch]
        if isinstance(img, Image.Image) and (size[0] > h) != (size[1] > w):
            # One side shrinks, the other grows. Pillow resamples the width first, so 1x80M -> 16x3136
            # would pass through 16 x 80M pixels (5 GB): shrink the long side alone first. Its filter
            # weights take (output x reduction factor) doubles (2.5 GB for 80M -> 3136), so reduce by a
            # whole factor first (box averaging; Pillow calls a gap of 3 indistinguishable from fair).
            img = img.resize((min(w, size[1]), min(h, size[0])), _PIL[self.interpolation], reducing_gap=3.0)
        return v2.functional.resize(img, size, interpolation=self.interpolation, antialias=True)


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
            *channel_order_steps(pre),
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
