"""A window's intrinsics from the cameras' calibration (camera_info) instead of the network's guess.

Why: VGGT predicts each frame's field of view, and everything after the network (pose
refinement, chaining, the map, the published clouds) unprojects depth with it. The embedded
compact model's focal length is off by a factor of 0.93-1.84 (median per sequence, 2026-12-05:
1.84 on procedural-turn, 1.29 on procedural-orbit, 1.04 on lap 1030) while a robot's camera_info
is calibrated. With the calibrated focal length, PnP in the pose refinement measured the 22
degree turns of procedural-turn to 0.4-6 degrees (mostly 1-2) instead of 5-12 degrees. The
network's depth is along the optical axis and does not depend on the intrinsics used.

Only the frames that carry intrinsics change; the others keep the network's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import is_dataclass, replace
from typing import Any

import numpy as np


def calibrated_prediction(prediction: Any, intrinsics: Sequence[np.ndarray | None]) -> tuple[Any, int]:
    """A copy of a ``Prediction`` with each frame's intrinsics replaced by its calibration.

    Args:
        prediction: a window's ``Prediction`` (``model_intrinsics`` [S, 3, 3] of the
            model-resolution maps, ``intrinsics`` [S, 3, 3] of the original images,
            ``transforms``: per frame, the original -> model pixel map).
        intrinsics: per frame, [3, 3] of the original image (camera_info's K, pixel centres at
            integers), or None to keep the network's.

    Returns:
        (the copy, or ``prediction`` itself when nothing changes; frames replaced). A prediction
        without ``transforms`` (no pixel map to apply) is returned unchanged.

    Raises:
        ValueError: ``intrinsics`` does not have one entry per frame.
    """
    transforms = getattr(prediction, "transforms", None)
    count = len(prediction.model_intrinsics)
    if len(intrinsics) != count:
        raise ValueError(f"{len(intrinsics)} intrinsics for a window of {count} frames")
    if not transforms or all(k is None for k in intrinsics):
        return prediction, 0
    model = np.array(prediction.model_intrinsics, np.float64)
    original = np.array(prediction.intrinsics, np.float64)
    replaced = 0
    for i, k in enumerate(intrinsics):
        if k is None:
            continue
        k = np.asarray(k, np.float64)
        model[i] = transforms[i].intrinsics_to_model(k)
        original[i] = k
        replaced += 1
    if is_dataclass(prediction):
        return replace(prediction, model_intrinsics=model, intrinsics=original), replaced
    copied = copy.copy(prediction)
    copied.model_intrinsics, copied.intrinsics = model, original
    return copied, replaced
