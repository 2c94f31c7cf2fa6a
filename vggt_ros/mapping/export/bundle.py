"""Keyframe bundle: everything a SLAM system needs to warm-start from the pipeline, as one .npz.

Layout of ``keyframes.npz`` (format ``vggt_ros.keyframes/1``; K keyframes, T tracks, O track
observations; all poses ``map_from_optical``, map z-up REP-103; OpenCV pixels with (0, 0) the
centre of the top-left pixel; lengths in metres when ``scale_metric`` else normalized units):

===========================  ===============  ===============================================
key                          shape, dtype     meaning
===========================  ===============  ===============================================
``format``                   [] str           ``"vggt_ros.keyframes/1"``
``keyframe_ids``             [K] int64        pipeline keyframe ids (sorted by stamp)
``stamps``                   [K] float64      image stamps, seconds
``camera_ids``               [K] str          camera of each keyframe
``cam_to_map``               [K, 4, 4] f64    optical frame -> map
``intrinsics``               [K, 3, 3] f64    pixel intrinsics at the original image size
``image_hw``                 [K, 2] int64     original (height, width)
``model_intrinsics``         [K, 3, 3] f64    intrinsics of the depth maps
``depth``                    [K, Hm, Wm] f32  z-depth at model resolution (NaN = none)
``depth_conf``               [K, Hm, Wm] f32  VGGT depth confidence (>= 1; higher is better)
``images``                   [K, H, W, 3] u8  original RGB (only when all keyframes share a size)
``scale``                    [2] f64          (metres per map unit, one-sigma)
``scale_metric``             [] bool          whether lengths are metres
``scale_source``             [] str           "none", "odometry", "depth", "rig", "fixed"
``track_points``             [T, 3] f32       3D point of each track in the map (NaN = unknown)
``track_query_keyframe``     [T] int64        keyframe id of the query
``track_query_pixel``        [T, 2] f32       query pixel (x, y)
``obs_track``                [O] int64        track index of each observation
``obs_keyframe``             [O] int64        keyframe id of each observation
``obs_pixel``                [O, 2] f32       tracked pixel (x, y) at the original size
``obs_visibility``           [O] f32          visibility in [0, 1]
``obs_confidence``           [O] f32          confidence in [0, 1]
===========================  ===============  ===============================================

Load with :func:`read_bundle` (or plain ``np.load(path, allow_pickle=False)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

FORMAT = "vggt_ros.keyframes/1"


@dataclass
class KeyframeBundle:
    """In-memory form of the .npz (field names and shapes as in the module docstring)."""

    keyframe_ids: np.ndarray
    stamps: np.ndarray
    camera_ids: np.ndarray
    cam_to_map: np.ndarray
    intrinsics: np.ndarray
    image_hw: np.ndarray
    model_intrinsics: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    scale: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0]))
    scale_metric: bool = False
    scale_source: str = "none"
    images: np.ndarray | None = None
    track_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    track_query_keyframe: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    track_query_pixel: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    obs_track: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    obs_keyframe: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    obs_pixel: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    obs_visibility: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    obs_confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        k = len(self.keyframe_ids)
        for name in ("stamps", "camera_ids", "cam_to_map", "intrinsics", "image_hw", "model_intrinsics"):
            if len(getattr(self, name)) != k:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {k} keyframes")
        if self.depth.shape[0] != k or self.depth_conf.shape != self.depth.shape:
            raise ValueError(
                f"depth {self.depth.shape} / depth_conf {self.depth_conf.shape} do not match {k} keyframes"
            )

    @property
    def num_keyframes(self) -> int:
        return len(self.keyframe_ids)

    def index_of(self, keyframe_ids: np.ndarray) -> np.ndarray:
        """Positions of keyframe ids in this bundle ([...] int64; -1 where absent)."""
        order = np.argsort(self.keyframe_ids)
        ids = np.asarray(keyframe_ids, np.int64)
        pos = np.clip(np.searchsorted(self.keyframe_ids[order], ids), 0, max(len(order) - 1, 0))
        found = len(order) > 0
        out = (
            np.where(found & (self.keyframe_ids[order][pos] == ids), order[pos], -1)
            if found
            else np.full(ids.shape, -1)
        )
        return out.astype(np.int64)


def write_bundle(path: str | Path, bundle: KeyframeBundle) -> Path:
    """Write the bundle as a compressed .npz (no pickled objects: strings are unicode arrays)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"format": np.array(FORMAT)}
    for f in fields(bundle):
        value = getattr(bundle, f.name)
        if value is None:
            continue
        if f.name == "camera_ids":
            value = np.asarray([str(c) for c in value], dtype=np.str_)
        arrays[f.name] = np.asarray(value)
    np.savez_compressed(path, **arrays)
    return path


def read_bundle(path: str | Path) -> KeyframeBundle:
    """Read a bundle written by :func:`write_bundle` (checks the format tag)."""
    with np.load(Path(path), allow_pickle=False) as data:
        tag = str(data["format"]) if "format" in data else None
        if tag != FORMAT:
            raise ValueError(f"{path}: not a keyframe bundle (format {tag!r}, expected {FORMAT!r})")
        kwargs = {f.name: data[f.name] for f in fields(KeyframeBundle) if f.name in data}
    kwargs["scale_metric"] = bool(kwargs.get("scale_metric", False))
    kwargs["scale_source"] = str(kwargs.get("scale_source", "none"))
    return KeyframeBundle(**kwargs)
