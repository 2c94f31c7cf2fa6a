"""Inference engine: preprocessing, precision, the Predictor API."""

# Registers the built-in compiled-section backends (torch, tensorrt) with the runner.
from vggt_ros.engine import backends as _backends  # noqa: F401
from vggt_ros.engine.precision import PRECISIONS, inference_context, resolve_device, resolve_precision
from vggt_ros.engine.predictor import Prediction, Predictor
from vggt_ros.engine.preprocess import PREPROCESS_MODES, PreprocessedBatch, plan_transform, preprocess_frames

__all__ = [
    "PRECISIONS",
    "PREPROCESS_MODES",
    "Prediction",
    "Predictor",
    "PreprocessedBatch",
    "inference_context",
    "plan_transform",
    "preprocess_frames",
    "resolve_device",
    "resolve_precision",
]
