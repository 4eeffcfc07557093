"""The Predictor: weights + the preprocessing they were trained with -> top-k labels for real images."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..data import ImageError, class_names_for, load_image, to_mode
from ..data.transforms import eval_transform
from ..models import VitlabModel
from ..weights import Preprocessing, load_model
from .precision import PRECISIONS, for_inference

log = logging.getLogger(__name__)

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


@dataclass
class Prediction:
    """Top-k result for one image (or the reason it could not be read).

    Attributes:
        source: File path, or ``<image N>`` for in-memory images.
        indices: Class indices, most probable first.
        labels: Their names.
        probs: Their softmax probabilities.
        error: Why the image could not be used; the other fields are then empty.
    """

    source: str
    indices: list[int]
    labels: list[str]
    probs: list[float]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Files(Dataset):
    """Decode and transform files in DataLoader workers; a bad file yields its error, not an exception."""

    def __init__(self, paths: Sequence[Path], transform: Any, mode: str) -> None:
        self.paths, self.transform, self.mode = list(paths), transform, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.transform(load_image(self.paths[i], self.mode)), None
        except ImageError as err:
            return i, None, str(err)


def _collate(
    items: list[tuple[int, torch.Tensor | None, str | None]],
) -> list[tuple[int, torch.Tensor | None, str | None]]:
    return items


_NOT_FINITE = "the model gave non-finite (NaN or inf) probabilities; the weights or their preprocessing are broken"


class Predictor:
    """Run a classifier on images with the preprocessing its weights carry.

    Args:
        model: A vitlab model.
        preprocessing: How to prepare images; defaults to the model's (from its checkpoint) or timm's ViT defaults.
        class_names: Labels; defaults to the checkpoint's, the ImageNet-1k names for 1000 classes, else ``class_i``.
        device: ``cpu`` or ``cuda``.
        precision: ``fp32``, ``bf16`` (bf16 weights) or ``int8`` (dynamic quantization of the Linear
            layers, CPU); see :func:`vitlab.infer.precision.for_inference`.

    Example:
        >>> predictor = Predictor.from_pretrained("vit_b16.safetensors")
        >>> predictor("cat.jpg")[0].labels[0]
        'tabby, tabby cat'
    """

    def __init__(
        self,
        model: VitlabModel,
        preprocessing: Preprocessing | None = None,
        class_names: Sequence[str] | None = None,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available here")
        cfg = model.cfg
        if cfg.num_classes == 0:
            raise ValueError("the model has no classifier head (num_classes=0); nothing to predict")
        if len(model.input_shape) != 3:
            raise ValueError(f"the {model.architecture!r} model takes {model.input_shape} inputs, not images")
        if model.input_shape[0] not in (1, 3):
            raise ValueError(f"images have 1 or 3 channels; this model takes {model.input_shape[0]}")
        self.model = model.eval().to(device)  # the model as given (fp32), for inspection
        self.runner = for_inference(self.model, precision, device)  # what runs: fp32 in and out
        self.device, self.precision = torch.device(device), precision
        self.preprocessing = preprocessing or Preprocessing.for_config(cfg)
        names = class_names_for(cfg.num_classes, class_names)
        if len(names) != cfg.num_classes:
            raise ValueError(f"{len(names)} class names for a model with {cfg.num_classes} classes")
        self.class_names = list(names)
        self.mode = "L" if self.preprocessing.input_size[0] == 1 else "RGB"
        self.transform = eval_transform(self.preprocessing)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, device: str = "cpu", precision: str = "fp32", **load_kwargs: Any
    ) -> Predictor:
        """A predictor for a checkpoint (any format :func:`vitlab.load_checkpoint` reads) or a named model.

        A model name without a checkpoint gets random weights (logged as a warning): useful to try the
        pipeline, not to classify.
        """
        loaded = load_model(name_or_path, **load_kwargs)
        return cls(loaded.model, loaded.preprocessing, loaded.class_names, device, precision)

    # ------------------------------------------------------------------ preprocessing

    def _as_pil(self, image: ImageLike) -> Image.Image:
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, self.mode)
        if isinstance(image, Image.Image):
            return to_mode(image, self.mode)
        if isinstance(image, torch.Tensor):  # (C, H, W) or (H, W); uint8, or float in [0, 1]
            image = image.detach().cpu()
            image = image.permute(1, 2, 0).numpy() if image.ndim == 3 else image.numpy()
        if isinstance(image, np.ndarray):  # (H, W, C) or (H, W); uint8, or float in [0, 1]
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
                raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
            if image.dtype != np.uint8:
                image = np.clip(np.rint(image.astype(np.float64) * 255), 0, 255).astype(np.uint8)
            return to_mode(Image.fromarray(image), self.mode)
        raise TypeError(f"cannot read an image from {type(image).__name__}")

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """One image (path, PIL, array or tensor) -> the model's input ``(C, H, W)``."""
        return self.transform(self._as_pil(image))

    # ------------------------------------------------------------------ prediction

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch (B, C, H, W) -> class probabilities (B, num_classes), float32."""
        logits = self.runner(batch.to(self.device))
        return logits.float().softmax(dim=-1).cpu()

    def _topk(self, source: str, probs: torch.Tensor, k: int) -> Prediction:
        if not torch.isfinite(probs).all():
            raise ValueError(f"{source}: {_NOT_FINITE}")
        values, idx = probs.topk(min(k, probs.numel()))
        indices = idx.tolist()
        return Prediction(
            source, indices, [self.class_names[i] for i in indices], [round(v, 6) for v in values.tolist()]
        )

    def __call__(self, images: ImageLike | Sequence[ImageLike], topk: int = 5) -> list[Prediction]:
        """Predict images in memory or on disk; always returns a list, one :class:`Prediction` per image.

        Args:
            images: One image or a sequence: paths, PIL images, arrays (H, W[, C]) or tensors (C, H, W);
                a 4-D array (N, H, W, C) or tensor (N, C, H, W) is a batch.
            topk: Number of classes per image.

        Raises:
            ImageError: a file cannot be decoded (use :meth:`predict_files` to skip bad files instead).
        """
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            items: list[ImageLike] = list(images)
        elif isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
            items = [images]
        else:
            items = list(images)
        sources = [str(x) if isinstance(x, (str, os.PathLike)) else f"<image {i}>" for i, x in enumerate(items)]
        batch = torch.stack([self.preprocess(x) for x in items])
        probs = self.probabilities(batch)
        return [self._topk(s, p, topk) for s, p in zip(sources, probs, strict=True)]

    def predict_files(
        self, paths: Sequence[str | os.PathLike], topk: int = 5, batch_size: int = 16, workers: int = 0
    ) -> Iterator[Prediction]:
        """Predict many files, decoded in DataLoader workers, yielding results in input order as they finish.

        A file that cannot be decoded yields a :class:`Prediction` with ``error`` set; the others go on.
        """
        if batch_size < 1 or workers < 0:
            raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
        paths = [Path(p) for p in paths]
        loader = DataLoader(
            _Files(paths, self.transform, self.mode),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
            persistent_workers=False,
        )
        for items in loader:
            good = [(i, x) for i, x, err in items if err is None]
            probs = self.probabilities(torch.stack([x for _, x in good])) if good else None
            by_index = {i: p for (i, _), p in zip(good, probs if probs is not None else [], strict=False)}
            for i, _, err in items:
                if err is not None:
                    yield Prediction(str(paths[i]), [], [], [], error=err)
                elif not torch.isfinite(by_index[i]).all():
                    yield Prediction(str(paths[i]), [], [], [], error=f"{paths[i]}: {_NOT_FINITE}")
                else:
                    yield self._topk(str(paths[i]), by_index[i], topk)
