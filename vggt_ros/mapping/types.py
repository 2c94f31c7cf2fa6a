"""Data passed in and out of the pipeline (see docs/pipeline_contract.md).

Frames: images are ROS optical frames (x right, y down, z forward); ``cam_to_map`` maps optical
coordinates to the z-up ``map`` frame (REP-103: x forward, y left, z up); odometry poses are
``odom <- base_link``. Units: seconds, pixels, and metres when ``ScaleEstimate.metric`` (else
VGGT's normalized units).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


def _check_pose(value: np.ndarray | None, name: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, np.float64)
    if arr.shape != (4, 4) or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a finite 4x4 matrix, got shape {arr.shape}")
    return arr


@dataclass
class Frame:
    """One camera image with what the node knows about it at its stamp.

    Attributes:
        stamp: seconds (header stamp).
        camera_id: which camera (e.g. its optical frame id).
        image: [H, W, 3] uint8 RGB.
        intrinsics: [3, 3] from camera_info, used after the network instead of VGGT's predicted
            ones (``window.calibrated_intrinsics``), or None (VGGT's own intrinsics are used).
        odom_pose: [4, 4] odom <- base_link at ``stamp``, or None.
        metric_depth: [H', W'] float32 metres registered to this image (any resolution, same
            field of view; <= 0 or non-finite = no measurement), or None.
        camera_to_base: [4, 4] base_link <- camera optical frame (from /tf_static), or None.
    """

    stamp: float
    camera_id: str
    image: np.ndarray
    intrinsics: np.ndarray | None = None
    odom_pose: np.ndarray | None = None
    metric_depth: np.ndarray | None = None
    camera_to_base: np.ndarray | None = None

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            desc = getattr(img, "shape", type(img).__name__), getattr(img, "dtype", "")
            raise ValueError(f"Frame.image must be an HxWx3 uint8 RGB array, got {desc}")
        if not np.isfinite(self.stamp):
            raise ValueError(f"Frame.stamp must be finite, got {self.stamp}")
        self.stamp = float(self.stamp)
        if self.intrinsics is not None:
            k = np.asarray(self.intrinsics, np.float64)
            if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
                raise ValueError(
                    f"Frame.intrinsics must be a finite 3x3 with positive focal lengths, got {k}"
                )
            self.intrinsics = k
        self.odom_pose = _check_pose(self.odom_pose, "Frame.odom_pose")
        self.camera_to_base = _check_pose(self.camera_to_base, "Frame.camera_to_base")
        if self.metric_depth is not None:
            d = np.asarray(self.metric_depth, np.float32)
            if d.ndim != 2:
                raise ValueError(f"Frame.metric_depth must be [H, W], got shape {d.shape}")
            self.metric_depth = d

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Keyframe:
    """A frame kept for inference.

    Attributes:
        id: unique, increasing keyframe id (one per camera image).
        time_index: index of its keyframe time (all cameras of a rig at one time share it).
        frame: the frame.
        reason: why it became a keyframe ("first", "parallax", "translation", ...), or "rig" for
            cameras that joined another camera's keyframe time.
    """

    id: int
    time_index: int
    frame: Frame
    reason: str

    @property
    def stamp(self) -> float:
        return self.frame.stamp

    @property
    def camera_id(self) -> str:
        return self.frame.camera_id


@dataclass
class WindowJob:
    """One inference's worth of keyframes.

    Attributes:
        window_id: increasing id.
        keyframes: ordered by time then camera (reference camera first); keyframes[0] is VGGT's
            world frame for this window.
        shared_ids: ids of keyframes also in the previous window (the chaining anchors).
        query_points: [N, 2] float64 pixels of keyframes[0] (original size) to track, or None.
    """

    window_id: int
    keyframes: list[Keyframe]
    shared_ids: list[int]
    query_points: np.ndarray | None = None

    @property
    def keyframe_ids(self) -> list[int]:
        return [k.id for k in self.keyframes]


@dataclass(frozen=True)
class ScaleEstimate:
    """Metres per normalized map unit.

    Attributes:
        value: the factor (1.0 when not metric).
        sigma: its one-sigma uncertainty (same unit; 0 for "fixed"/"none", inf while unknown).
        source: the configured source ("none", "odometry", "depth", "rig", "fixed").
        metric: True when outputs are in metres.
        num_samples: samples behind the estimate.
    """

    value: float
    sigma: float
    source: str
    metric: bool
    num_samples: int = 0


class PointsMap(NamedTuple):
    """Coloured points in the map frame: xyz [M, 3] float32, rgb [M, 3] uint8, conf [M] float32."""

    xyz: np.ndarray
    rgb: np.ndarray
    conf: np.ndarray

    @staticmethod
    def empty() -> PointsMap:
        return PointsMap(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32))


@dataclass
class Tracks:
    """Query points tracked through one window.

    Attributes:
        query_keyframe_id: keyframe the queries live in (the window's first).
        query_pixels: [N, 2] (x, y) original pixels in that keyframe.
        keyframe_ids: [K] the window's keyframes, in order.
        pixels: [K, N, 2] (x, y) original pixels of each track in each keyframe.
        visibility: [K, N] in [0, 1].
        confidence: [K, N] in [0, 1].
        points_map: [N, 3] 3D point of each query in the map frame (from the query keyframe's
            depth); NaN where the depth is unknown.
    """

    query_keyframe_id: int
    query_pixels: np.ndarray
    keyframe_ids: list[int]
    pixels: np.ndarray
    visibility: np.ndarray
    confidence: np.ndarray
    points_map: np.ndarray


@dataclass(frozen=True)
class WindowPoses:
    """An accepted window's poses, handed out before its map stage (see
    ``PerceptionPipeline.process``'s ``on_poses``): TF and odometry need only these, so a robot
    gets them without waiting for the point map to be fused.

    Attributes:
        window_id: the job's id.
        keyframe_ids, stamps, camera_ids: [K] per keyframe.
        cam_to_map: [K, 4, 4] optical frame -> map, as in :class:`WindowResult`.
        map_to_odom: [4, 4] map <- odom, or None (as in :class:`WindowResult`).
        scale: the scale estimate used.
        elapsed_ms: milliseconds from the start of ``process`` (inference included).
    """

    window_id: int
    keyframe_ids: list[int]
    stamps: np.ndarray
    camera_ids: list[str]
    cam_to_map: np.ndarray
    map_to_odom: np.ndarray | None
    scale: ScaleEstimate
    elapsed_ms: float


@dataclass
class WindowResult:
    """What one processed window gives the outputs.

    A rejected window (``accepted`` False) was not merged: its poses are the refused alignment,
    for diagnostics only; its ``points_map`` is empty. Per-keyframe arrays follow
    ``keyframe_ids``.

    Attributes:
        accepted: merged into the map and the trajectory.
        reason: why (accepted: "ok", "first window", "new segment ..."; rejected: the failed test).
        residual: alignment residual relative to the scene depth (0 for the first window).
        window_id: the job's id.
        keyframe_ids, stamps, camera_ids: [K] per keyframe.
        cam_to_map: [K, 4, 4] optical frame -> map (z-up), rigid, translations in map units.
        depth: [K, Hm, Wm] float32 z-depth (metres when ``scale.metric``).
        depth_conf: [K, Hm, Wm] float32.
        model_intrinsics: [K, 3, 3] for the depth maps; intrinsics: [K, 3, 3] original size.
        points_map: the window's confidence-filtered points in the map frame.
        tracks: Tracks, or None without queries.
        scale: the scale estimate used.
        timings: milliseconds per stage ("predict_ms", "chain_ms", "scale_ms", "map_ms", ...;
            "gc_ms": the garbage collector's pauses on the way to the poses, inside "poses_ms").
        map_to_odom: [4, 4] map <- odom (REP-105) when odometry exists and the scale is metric.
        segment_id: map segment (increases when chaining had to restart).
        inlier_ratio: weighted share of inlier correspondences in the alignment.
        center_residual: largest shared camera-centre residual / median shared depth.
        median_relative_residual: weighted median of the dense correspondences' residual / depth
            after the alignment (NaN when there were none; see ``ChainOutcome``).
        num_shared: keyframes the alignment used as anchors.
        orientation: how the map was made z-up ("odometry", "camera_to_base", "optical-axes").
        loops: loop candidates verified after this window (``vggt_ros.mapping.backend.LoopEvent``).
        map_rebuilt: an accepted loop moved the keyframes and the map was rebuilt from them.
        poses_corrected: the back end (odometry-sensor edges or a closed loop) moved the
            keyframes after the window's poses were handed to ``on_poses``: the path and TF sent
            then are stale and should be sent again.
    """

    accepted: bool
    reason: str
    residual: float
    window_id: int
    keyframe_ids: list[int]
    stamps: np.ndarray
    camera_ids: list[str]
    cam_to_map: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    model_intrinsics: np.ndarray
    intrinsics: np.ndarray
    points_map: PointsMap
    tracks: Tracks | None
    scale: ScaleEstimate
    timings: dict[str, float] = field(default_factory=dict)
    map_to_odom: np.ndarray | None = None
    segment_id: int = 0
    loops: list = field(default_factory=list)
    map_rebuilt: bool = False
    poses_corrected: bool = False
    inlier_ratio: float = 0.0
    center_residual: float = 0.0
    median_relative_residual: float = float("nan")
    num_shared: int = 0
    orientation: str = ""
