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
