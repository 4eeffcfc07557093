"""Inference: the Predictor (weights + their preprocessing -> top-k) and streaming result writers."""

from .output import FORMATS, PredictionWriter
from .predictor import PRECISIONS, Prediction, Predictor

__all__ = ["FORMATS", "PRECISIONS", "Prediction", "PredictionWriter", "Predictor"]
