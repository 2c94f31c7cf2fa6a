"""File exports of predictions: PLY point clouds, 16-bit depth PNGs, camera JSON.

Written with numpy alone (open3d is optional in this project), so exports work everywhere the
library does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:  # the engine is only needed for type hints; exports stay importable alone
    from vggt_ros.engine.predictor import Prediction

PNG16_MAX = 65535
_PLY_TYPES = {"float": "<f4", "float32": "<f4", "uchar": "u1", "uint8": "u1", "double": "<f8", "int": "<i4"}


def _point_dtype(with_conf: bool) -> np.dtype:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if with_conf:
        fields.append(("confidence", "<f4"))
    return np.dtype(fields)


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray | None = None) -> Path:
    """Write a binary little-endian PLY point cloud.

    Args:
        path: output file.
        xyz: [M, 3] positions (stored as float32).
        rgb: [M, 3] uint8 colours (red, green, blue).
        conf: optional [M] confidence (stored as float32 property ``confidence``).

    Returns:
        The path written.
    """
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be [M, 3], got {xyz.shape}")
    if rgb.shape != xyz.shape:
        raise ValueError(f"rgb must be [M, 3] like xyz {xyz.shape}, got {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8, got {rgb.dtype}")
    if conf is not None and np.shape(conf) != (xyz.shape[0],):
        raise ValueError(f"conf must be [M] with M = {xyz.shape[0]}, got {np.shape(conf)}")

    data = np.empty(xyz.shape[0], dtype=_point_dtype(conf is not None))
    for i, axis in enumerate("xyz"):
        data[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        data[channel] = rgb[:, i]
    if conf is not None:
        data["confidence"] = conf
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(data)}"]
    header += [f"property float {a}" for a in "xyz"]
    header += [f"property uchar {c}" for c in ("red", "green", "blue")]
    if conf is not None:
        header.append("property float confidence")
    header.append("end_header")

    path = Path(path)
    with path.open("wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    return path


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """Read a binary little-endian PLY vertex list (as written by :func:`write_ply`).

    Returns:
        {"xyz": [M, 3] float32, "rgb": [M, 3] uint8 (if present), "confidence": [M] (if present),
        plus every property by name}.
    """
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    lines = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary little-endian PLY is supported")
    count, fields, in_vertex = 0, [], False
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            in_vertex = parts[1] == "vertex"
            count = int(parts[2]) if in_vertex else count
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] not in _PLY_TYPES:
                raise ValueError(f"{path}: unsupported property type {parts[1]!r}")
            fields.append((parts[2], _PLY_TYPES[parts[1]]))
    data = np.frombuffer(raw, dtype=np.dtype(fields), count=count, offset=end + len(b"end_header\n"))
    out: dict[str, np.ndarray] = {name: data[name].copy() for name, _ in fields}
    out["xyz"] = np.stack([data["x"], data["y"], data["z"]], axis=-1).astype(np.float32)
    if {"red", "green", "blue"} <= set(out):
        out["rgb"] = np.stack([data["red"], data["green"], data["blue"]], axis=-1).astype(np.uint8)
    return out


def auto_depth_png_scale(depths: Sequence[np.ndarray] | np.ndarray, headroom: float = 0.9) -> float:
    """A PNG scale (stored units per depth unit) that fits every finite depth into 16 bits.

    Normalized VGGT depth is of order 1, so a fixed millimetre scale (1000) would waste most of
    the 16-bit range; this picks the largest integer scale with
    ``max_depth * scale <= headroom * 65535``, so the farthest depth keeps about 4-5 significant
    digits. Falls back to 1000 when there is no finite positive depth.
    """
    finite_max = 0.0
    for d in depths:
        d = np.asarray(d)
        good = d[np.isfinite(d) & (d > 0)]
        if good.size:
            finite_max = max(finite_max, float(good.max()))
    if finite_max <= 0.0:
        return 1000.0
    return float(max(1, math.floor(headroom * PNG16_MAX / finite_max)))


def write_depth_png16(path: str | Path, depth: np.ndarray, scale: float) -> Path:
    """Write a depth map as a 16-bit PNG: stored = round(depth * scale).

    Args:
        path: output ``.png``.
        depth: [H, W] depth; NaN, inf and values <= 0 are stored as 0 (= no depth, as ROS and
            most RGB-D tools read it); values beyond the range clip to 65535.
        scale: stored units per depth unit (e.g. 1000 for millimetres from metres). Read back
            with ``cv2.imread(path, cv2.IMREAD_UNCHANGED) / scale``.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got {depth.shape}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    good = np.isfinite(depth) & (depth > 0)
    stored = np.zeros(depth.shape, dtype=np.uint16)
    stored[good] = np.clip(np.rint(depth[good] * scale), 0, PNG16_MAX).astype(np.uint16)
    path = Path(path)
    if not cv2.imwrite(str(path), stored):
        raise OSError(f"could not write {path}")
    return path


def write_depth_npy(path: str | Path, depth: np.ndarray) -> Path:
    """Save a float32 array (depth or confidence) losslessly as ``.npy``."""
    path = Path(path)
    np.save(path, np.asarray(depth, dtype=np.float32))
    return path


def json_ready(value: Any) -> Any:
    """numpy -> lists, non-finite floats -> None (strict JSON has no NaN/Infinity)."""
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def cameras_dict(
    prediction: Prediction, names: Sequence[str], depth_png_scale: float | None = None
) -> dict[str, Any]:
    """The content of ``cameras.json`` (see :func:`write_cameras_json`)."""
    if len(names) != prediction.num_frames:
        raise ValueError(f"{len(names)} names for {prediction.num_frames} frames")
    frames = []
    for i, name in enumerate(names):
        h, w = prediction.original_sizes[i]
        frames.append(
            {
                "name": name,
                "width": w,
                "height": h,
                "K": prediction.intrinsics[i],
                "cam_to_world": prediction.cam_to_world[i],
                "extrinsics": prediction.extrinsics[i],
                "model_K": prediction.model_intrinsics[i],
            }
        )
    weights = dict(prediction.weights)
    return json_ready(
        {
            "frames": frames,
            "model_height": prediction.model_hw[0],
            "model_width": prediction.model_hw[1],
            "weights": weights,
            "trained": bool(weights.get("trained", False)),
            "scale": "normalized",
            "camera_convention": "OpenCV optical frame (x right, y down, z forward); world = first camera",
            "extrinsics_convention": "camera-from-world [R|t]; cam_to_world is its inverse (4x4)",
            "depth_png_scale": depth_png_scale,
            "timings_ms": prediction.timings,
        }
    )


def write_cameras_json(
    path: str | Path, prediction: Prediction, names: Sequence[str], depth_png_scale: float | None = None
) -> Path:
    """Write every frame's camera of a prediction as JSON.

    Per frame: name, width, height (original image), K (3x3 intrinsics for the original size),
    cam_to_world (4x4), extrinsics (3x4 camera-from-world), model_K (model resolution). Top level:
    model size, weights identity, "trained" (False = random weights, outputs meaningless),
    "scale": "normalized" (VGGT's per-window scale, not metres), depth_png_scale (stored PNG
    units per depth unit, or null). Non-finite numbers are written as null.
    """
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        json.dump(cameras_dict(prediction, names, depth_png_scale), f, indent=2, allow_nan=False)
        f.write("\n")
    return path
