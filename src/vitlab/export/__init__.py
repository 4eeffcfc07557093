"""Export: ONNX, torch.export and TorchScript files with preprocessing metadata, checked against eager PyTorch."""

from __future__ import annotations

from .exporters import (
    FORMATS,
    SUFFIXES,
    ExportError,
    ExportResult,
    export_model,
    fixed_size_model,
    guess_format,
    load_exported,
    read_metadata,
)

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "ExportError",
    "ExportResult",
    "export_model",
    "fixed_size_model",
    "guess_format",
    "load_exported",
    "read_metadata",
]
