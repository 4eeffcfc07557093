"""Export a vitlab model to ONNX, torch.export (``.pt2``) or TorchScript, then prove the file right.

Every export goes the same way: a fixed-size copy of the model (learned positions resampled once, at
export time, so no interpolation is traced into the graph), the export into a temporary file, a run of
the exported file against eager PyTorch on the given images, and only then the rename onto the target.
A file that does not match eager PyTorch within the tolerance is never left behind.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..models import VitlabModel
from ..weights import Preprocessing
from ..weights.io import atomic_path

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torch-export", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2", "torchscript": ".pt"}
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
META_FILE = "vitlab.json"  # extra file inside .pt2 / TorchScript archives


class ExportError(ValueError):
    """The export failed, or the exported model does not match eager PyTorch."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how it was checked.

    Attributes:
        path: The exported file.
        format: One of :data:`FORMATS`.
        input_shape: ``(C, H, W)`` the file takes; the batch is free with ``dynamic_batch``.
        dynamic_batch: Whether the batch dimension is symbolic.
        max_abs_diff: Largest |exported - eager| over every checked output.
        checked_batches: Batch sizes the file was run with (every check image is used).
        metadata: What was stored in the file (preprocessing, labels, config).
    """

    path: Path
    format: str
    input_shape: tuple[int, int, int]
    dynamic_batch: bool
    max_abs_diff: float
    checked_batches: list[int]
    metadata: dict[str, str] = field(default_factory=dict)


def fixed_size_model(model: VitlabModel, img_size: tuple[int, int] | None = None) -> VitlabModel:
    """An eval-mode copy of ``model`` for exactly ``img_size`` inputs (the model's own ``with_img_size``).

    A ViT's learned position tables are resampled there, once (bicubic, as the model does at run time),
    so the exported graph holds a constant table. Weights are shared in value, not in memory.
    """
    shape = model.input_shape
    if len(shape) != 3:  # a sequence model: exported at its one input size
        if img_size is not None:
            raise ExportError(f"the {model.architecture!r} model takes {shape} inputs; it has no image size")
        return copy.deepcopy(model).eval()
    size = tuple(img_size) if img_size is not None else tuple(shape[1:])
    try:
        return model.with_img_size(size)
    except ValueError as err:
        raise ExportError(f"cannot export at {size[0]}x{size[1]}: {err}") from None


def export_metadata(
    model: VitlabModel, preprocessing: Preprocessing | None, class_names: list[str] | None, dynamic_batch: bool
) -> dict[str, str]:
    """String metadata a consumer needs: input name, size, mean/std, resize, labels, the vitlab config."""
    shape = list(model.input_shape)
    pre = {**dataclasses.asdict(preprocessing), "input_size": shape} if preprocessing is not None else None
    return {
        "producer": f"vitlab {__version__}",
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": json.dumps(["batch" if dynamic_batch else 1, *shape]),
        "preprocessing": json.dumps(pre),
        "class_names": json.dumps(class_names or [f"class_{i}" for i in range(model.cfg.num_classes)]),
        "vitlab_architecture": model.architecture,
        "vitlab_config": json.dumps(model.cfg.to_dict()),
    }


# ---------------------------------------------------------------------------------------------- writers


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warn about their own internals; keep the user's terminal clean."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    if out.getvalue().strip():
        log.debug("exporter output:\n%s", out.getvalue())


def _batch_dim(dynamic_batch: bool) -> dict[str, dict[int, Any]] | None:
    return {"x": {0: torch.export.Dim("batch", min=1, max=65536)}} if dynamic_batch else None


def _require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'vitlab[export]'")


def _write_onnx(
    model: VitlabModel, x: torch.Tensor, path: Path, meta: dict[str, str], dyn: bool, opset: int | None
) -> None:
    import onnx

    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    with _quiet():
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            dynamic_shapes=_batch_dim(dyn),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            **kwargs,
        )
    proto = program.model_proto
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _write_torch_export(model: VitlabModel, x: torch.Tensor, path: Path, meta: dict[str, str], dyn: bool) -> None:
    with _quiet():
        program = torch.export.export(model, (x,), dynamic_shapes=_batch_dim(dyn))
        torch.export.save(program, str(path), extra_files={META_FILE: json.dumps(meta)})


def _write_torchscript(model: VitlabModel, x: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={META_FILE: json.dumps(meta)})


# ---------------------------------------------------------------------------------------------- readers


def load_exported(path: str | os.PathLike, format: str) -> Any:
    """A callable ``f(x: np.ndarray | Tensor) -> np.ndarray`` running an exported file."""
    path = Path(path)
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.asarray(x, dtype=np.float32)})[0]
    if format == "torch-export":
        with _quiet():
            module = torch.export.load(str(path)).module()
    elif format == "torchscript":
        with _quiet():
            module = torch.jit.load(str(path), map_location="cpu")
    else:
        raise ExportError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")

    def run(x: Any) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()

    return run


def read_metadata(path: str | os.PathLike, format: str | None = None) -> dict[str, str]:
    """The metadata :func:`export_model` stored in a file (ONNX metadata props or the archive's vitlab.json)."""
    path = Path(path)
    format = format or guess_format(path)
    if format == "onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}
    extra = {META_FILE: ""}
    with _quiet():
        if format == "torch-export":
            torch.export.load(str(path), extra_files=extra)
        else:
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[META_FILE]) if extra[META_FILE] else {}


def guess_format(path: Path) -> str:
    """The format from the file suffix (``.onnx``, ``.pt2``, ``.pt``)."""
    for fmt, suffix in SUFFIXES.items():
        if path.suffix == suffix:
            return fmt
    raise ExportError(f"{path}: cannot tell the format from the suffix; use one of {', '.join(SUFFIXES.values())}")


# ---------------------------------------------------------------------------------------------- export


def export_model(
    model: VitlabModel,
    path: str | os.PathLike,
    format: str | None = None,
    img_size: tuple[int, int] | None = None,
    dynamic_batch: bool = False,
    opset: int | None = None,
    preprocessing: Preprocessing | None = None,
    class_names: list[str] | None = None,
    images: torch.Tensor | None = None,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Export ``model``, run the file against eager PyTorch, and keep it only if they agree.

    Args:
        model: A vitlab model (any training options: the export copy is in eval mode at a fixed size).
        path: Output file; written atomically, and only after the check passes.
        format: ``onnx``, ``torch-export`` or ``torchscript``; from the suffix when None.
        img_size: Export input size (H, W); the model's own by default.
        dynamic_batch: Make the batch dimension symbolic (checked with two batch sizes).
        opset: ONNX opset (the exporter's default when None).
        preprocessing: Stored in the file; the model's (or timm's defaults) when None.
        class_names: Stored in the file.
        images: Preprocessed inputs (B, C, H, W) at ``img_size`` to check with; seeded noise when None.
        tolerance: Largest allowed |exported - eager| (fp32).

    Raises:
        ExportError: the export failed or the outputs differ by more than ``tolerance``.
    """
    path = Path(path)
    format = format or guess_format(path)
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if format == "onnx":
        _require_onnx()
    was_training = model.training
    try:
        return _export(
            model.eval(), path, format, img_size, dynamic_batch, opset, preprocessing, class_names, images, tolerance
        )
    finally:
        model.train(was_training)


def _export(
    model: VitlabModel,
    path: Path,
    format: str,
    img_size: tuple[int, int] | None,
    dynamic_batch: bool,
    opset: int | None,
    preprocessing: Preprocessing | None,
    class_names: list[str] | None,
    images: torch.Tensor | None,
    tolerance: float,
) -> ExportResult:
    fixed = fixed_size_model(model, img_size)
    shape = tuple(fixed.input_shape)  # (C, H, W) for images, (C, L) for sequences
    if images is None:
        images = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    if tuple(images.shape[1:]) != shape:
        raise ExportError(f"check inputs are {tuple(images.shape[1:])}, the export takes {shape}")
    pre = preprocessing or Preprocessing.for_config(fixed.cfg)
    meta = export_metadata(fixed, pre, class_names, dynamic_batch)
    example = images[:2] if dynamic_batch and len(images) >= 2 else images[:1]
    if dynamic_batch and len(example) < 2:
        example = example.expand(2, *shape).contiguous()  # batch 1 would be specialised as a constant
    with atomic_path(path) as tmp:
        try:
            if format == "onnx":
                _write_onnx(fixed, example, tmp, meta, dynamic_batch, opset)
            elif format == "torch-export":
                _write_torch_export(fixed, example, tmp, meta, dynamic_batch)
            else:
                _write_torchscript(fixed, example, tmp, meta)
        except Exception as err:  # the exporters raise many types; the user needs one line
            raise ExportError(f"{format} export failed: {type(err).__name__}: {str(err).splitlines()[0]}") from err
        run = load_exported(tmp, format)
        # A dynamic file runs the whole batch and a single image; a fixed one runs each image on its own.
        if dynamic_batch:
            batches = [images] if len(images) == 1 else [images, images[:1]]
        else:
            batches = list(images.split(len(example)))
        worst = 0.0
        with torch.no_grad():
            for x in batches:
                expected = model(x).float().numpy()  # the original model, resampling at run time
                got = run(x.numpy())
                if got.shape != expected.shape:
                    raise ExportError(f"exported output is {got.shape}, eager is {expected.shape}")
                worst = max(worst, float(np.abs(got - expected).max()))
        if not worst <= tolerance:
            raise ExportError(
                f"the exported {format} model differs from eager PyTorch by {worst:.3g} (> {tolerance:g}); "
                "nothing was written"
            )
    return ExportResult(path, format, shape, dynamic_batch, worst, [len(x) for x in batches], meta)
