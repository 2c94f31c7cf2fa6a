"""PerceptionPipeline: frames in -> keyframes -> windows -> VGGT -> chained poses, depth, map.

The one implementation the ROS node and ``vggt-ros eval`` drive (docs/pipeline_contract.md):
``add_frame`` is cheap and runs on the callback thread; ``process`` is heavy and runs on a worker
thread. State shared between them (keyframe store, mapped keyframes, map, scale) is guarded by
one lock that is never held during inference.

Frames (see also ``frames.py``): G is the chained frame (first accepted window's first camera,
normalized units); ``map <- G`` is the Sim(3) ``p_map = R_a (s p_G) + t_a`` with ``(R_a, t_a)`` the
first camera's pose in the z-up map and ``s`` the metric scale (metres per G unit; 1 and
``t_a = 0`` while the scale is not metric, so nothing mixes metres with normalized units).
Poses are stored in G and converted with the current scale whenever asked, so a refined
scale moves the whole trajectory consistently; the voxel map is re-scaled to match.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vggt_ros.geometry.alignment import Sim3
from vggt_ros.mapping import interpreter
from vggt_ros.mapping.backend import BackEnd, LoopEvent
from vggt_ros.mapping.calibration import calibrated_prediction
from vggt_ros.mapping.chaining import ChainOutcome, WindowChainer, unproject_pixels
from vggt_ros.mapping.config import PipelineConfig
from vggt_ros.mapping.frames import camera_in_odom, map_anchor, map_to_odom
from vggt_ros.mapping.heap import release_free_heap
from vggt_ros.mapping.keyframes import KeyframeDecision, KeyframeSelector
from vggt_ros.mapping.pose_refine import refined_prediction
from vggt_ros.mapping.refine_features import FeatureCache
from vggt_ros.mapping.rig import RigGrouper
from vggt_ros.mapping.scale import ScaleEstimator, depth_ratio, odometry_ratios, rig_ratios
from vggt_ros.mapping.types import (
    Frame,
    Keyframe,
    PointsMap,
    ScaleEstimate,
    Tracks,
    WindowJob,
    WindowPoses,
    WindowResult,
)
from vggt_ros.mapping.voxel_map import VoxelMap
from vggt_ros.mapping.window import WindowBuilder, select_query_points
from vggt_ros.mapping.window_points import window_map_points

logger = logging.getLogger(__name__)

#: The window pose refinement's counters in ``PerceptionPipeline.stats`` (reports, /diagnostics):
#: frames given camera_info intrinsics, frames measured from correspondences (placed by PnP on
#: SIFT matches, or given the head's rotation with a fitted translation) or left with the head's
#: pose, windows whose refinement raised, and the refinement's image-only work answered
#: from its cache (``*_hits``: done earlier, while the network ran or for an earlier window) or
#: computed (``*_misses``).
REFINEMENT_COUNTERS = (
    "frames_calibrated",
    "frames_refined",
    "frames_refined_by_sift",
    "frames_head_rotation",
    "frames_not_refined",
    "refine_failures",
    "refine_keypoints_hits",
    "refine_keypoints_misses",
    "refine_matches_hits",
    "refine_matches_misses",
    "refine_tracks_hits",
    "refine_tracks_misses",
)

# Keyframe times kept (images and all) for re-anchoring after rejected windows, in windows.
STORE_WINDOWS = 3
# Relative scale change above which the voxel map is re-scaled.
RESCALE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class KeyframeInfo:
    """What the pipeline keeps of a mapped keyframe after its image is dropped."""

    id: int
    time_index: int
    stamp: float
    camera_id: str
    odom_pose: np.ndarray | None
    camera_to_base: np.ndarray | None
    intrinsics: np.ndarray | None

    @staticmethod
    def of(kf: Keyframe) -> KeyframeInfo:
        f = kf.frame
        return KeyframeInfo(
            kf.id, kf.time_index, f.stamp, f.camera_id, f.odom_pose, f.camera_to_base, f.intrinsics
        )


class PredictorLike(Protocol):
    def predict(self, frames: list[np.ndarray], query_points: np.ndarray | None = None) -> Any: ...


class PerceptionPipeline:
    """Keyframes, windows, inference, chaining, scale and map for one robot.

    Args:
        config: the PipelineConfig.
        predictor: ``vggt_ros.engine.Predictor`` or anything with the same ``predict(frames,
            query_points)`` returning a Prediction-like object. A predictor whose
            ``caches_frames`` is true also gets ``frame_keys`` (one identity per keyframe) and
            encodes each keyframe once across the overlapping windows.

    Attributes:
        global_map: the VoxelMap (map frame).
        stats: counters for diagnostics (frames, keyframes, windows, rejections, segments, ...).
        last_decision: the last KeyframeDecision per camera.
    """

    def __init__(self, config: PipelineConfig, predictor: PredictorLike) -> None:
        self.config = config
        self.predictor = predictor
        self._lock = threading.RLock()
        # The keyframe store alone has its own lock: the image callback (add_frame) must never
        # wait for the processing lock, which a window holds through chaining and the map merge
        # (seconds with a large map on a CPU; measured as a 4.8 s callback stall before).
        self._store_lock = threading.Lock()
        self.reset()

    # ---------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget everything: keyframes, windows, trajectory, scale and map."""
        cfg = self.config
        with getattr(self, "_lock", threading.RLock()):
            self._selectors: dict[str, KeyframeSelector] = {}
            self._grouper = RigGrouper(
                cfg.window.rig_cameras, cfg.window.rig_time_tolerance_s, cfg.window.rig_max_wait_s
            )
            self._builder = WindowBuilder(cfg.window)
            with self._store_lock:
                self._store: OrderedDict[int, Keyframe] = OrderedDict()
            self._next_keyframe_id = 0
            # Frame identities for the predictor's frame cache: keyframe ids restart at 0 after a
            # reset, so they are qualified by this reset's own token.
            self._frame_key_prefix = uuid.uuid4().hex
            self._next_time_index = 0
            self._last_time_stamp: float | None = None
            self._chainer = WindowChainer(cfg.chaining, dense_memory=4 * cfg.window.size * 4)
            self._backend = (
                BackEnd(
                    cfg.loop,
                    cfg.chaining,
                    calibrated_intrinsics=cfg.window.calibrated_intrinsics,
                    refine=cfg.refine,
                )
                if cfg.loop.enabled
                else None
            )
            # The pose refinement's keypoints, matches and tracks, reused by the windows that
            # share frames.
            self._refine_features = FeatureCache(
                capacity=4 * cfg.window.size,
                threads=cfg.refine.threads,
                max_corners=cfg.refine.max_corners,
                sift=cfg.refine.sift,
            )
            # Chain a window on the frames the map holds while the refinement places the
            # others (same outcome: _chain_while_refining). False: chain after it (tests).
            self._chain_during_refinement = True
            self._sensor_windows = 0  # accepted windows that added odometry-sensor edges
            # Windows since the voxel map was last rebuilt from the keyframes, and whether a
            # correction since then still waits for its rebuild (loop.map_rebuild_min_windows).
            self._windows_since_rebuild = 0
            self._map_stale = False
            self._chained_poses: dict[int, np.ndarray] = {}  # G poses as chained, before any loop
            self._applied_scale: dict[int, float] = {}  # node scale baked into the chainer's depth
            self._scale = ScaleEstimator(cfg.scale)
            self.global_map = VoxelMap(cfg.map.voxel_size_m, cfg.map.max_points, cfg.map.radius_m)
            self._map_applied = Sim3.identity()  # map <- G used for the voxels now in the map
            self._anchor: np.ndarray | None = None  # map <- first camera, metres
            self._orientation = ""
            self._keyframe_info: dict[int, KeyframeInfo] = {}  # mapped keyframes, without images
            self._segment = 0
            self._rejections_in_row = 0
            self._map_to_odom: np.ndarray | None = None
            self.last_decision: dict[str, KeyframeDecision] = {}
            self._trigger_reasons: dict[tuple[str, float], str] = {}
            self.stats = {
                "frames": 0,
                "frames_ignored": 0,
                "keyframes": 0,
                "keyframe_times": 0,
                "incomplete_times": 0,
                "windows": 0,
                "windows_accepted": 0,
                "windows_rejected": 0,
                "windows_without_tracks": 0,
                "segments": 1,
                **dict.fromkeys(REFINEMENT_COUNTERS, 0),
            }

    @property
    def scale(self) -> ScaleEstimate:
        with self._lock:
            return self._scale.estimate()

    @property
    def orientation(self) -> str:
        """How the map was made z-up (empty before the first window)."""
        return self._orientation

    @property
    def reference_camera(self) -> str | None:
        return self._grouper.reference_camera

    # ------------------------------------------------------------ frames in

    def add_frame(self, frame: Frame) -> WindowJob | None:
        """Keyframe test and window bookkeeping (cheap; callback thread).

        Returns:
            A WindowJob when a window is due, else None.
        """
        self.stats["frames"] += 1
        if not self._grouper.accepts(frame.camera_id):
            self.stats["frames_ignored"] += 1
            return None
        self._grouper.observe(frame)
        selector = self._selectors.get(frame.camera_id)
        if selector is None:
            selector = self._selectors[frame.camera_id] = KeyframeSelector(self.config.keyframe)
        decision = selector.evaluate(frame, self._last_time_stamp)
        self.last_decision[frame.camera_id] = decision
        if decision.is_keyframe and not self._grouper.pending_near(frame.stamp):
            self._grouper.trigger(frame)
            selector.accept(frame)
            self._last_time_stamp = frame.stamp
            self._trigger_reasons[(frame.camera_id, frame.stamp)] = decision.reason
        job = None
        for frames in self._grouper.pop_ready():
            job = self._add_time(frames) or job
        self.stats["incomplete_times"] = self._grouper.incomplete_times
        return job

    def _add_time(self, frames: list[Frame]) -> WindowJob | None:
        time_index = self._next_time_index
        self._next_time_index += 1
        keyframes = []
        for frame in frames:
            selector = self._selectors[frame.camera_id]
            if selector.last_keyframe_stamp != frame.stamp:
                selector.accept(frame)
            # Cameras that joined another camera's keyframe time are marked "rig".
            reason = self._trigger_reasons.pop((frame.camera_id, frame.stamp), "rig")
            keyframes.append(Keyframe(self._next_keyframe_id, time_index, frame, reason))
            self._next_keyframe_id += 1
        self.stats["keyframes"] += len(keyframes)
        self.stats["keyframe_times"] += 1
        with self._store_lock:
            for kf in keyframes:
                self._store[kf.id] = kf
            limit = STORE_WINDOWS * self.config.window.size
            times = sorted({kf.time_index for kf in self._store.values()})
            for old in [
                k for k, kf in self._store.items() if kf.time_index < times[max(0, len(times) - limit)]
            ]:
                del self._store[old]
        job = self._builder.add_time(keyframes)
        if job is not None:
            self.stats["windows"] += 1
            n = self.config.window.num_track_queries
            image = job.keyframes[0].frame.image
            refusal = self._tracking_refusal(image.shape[:2]) if n > 0 else None
            if refusal:
                self.stats["windows_without_tracks"] += 1
                if self.stats["windows_without_tracks"] == 1:
                    logger.warning("no keypoint tracks: %s", refusal)
            elif n > 0:
                job.query_points = select_query_points(image, n)
        return job

    def _tracking_refusal(self, image_hw: tuple[int, int]) -> str | None:
        """The predictor's reason to refuse query points on frames of this size (if it has one)."""
        check = getattr(self.predictor, "tracking_refusal", None)
        return check(tuple(image_hw)) if callable(check) else None

    # -------------------------------------------------------------- process

    def process(self, job: WindowJob, on_poses: Callable[[WindowPoses], None] | None = None) -> WindowResult:
        """Inference, chaining, scale and map for one window (heavy; worker thread).

        Args:
            on_poses: called with the window's :class:`WindowPoses` as soon as an accepted
                window is chained and scaled, before its points are fused into the map (tens of
                milliseconds at 350x518), so TF and odometry can go out first. Not called for a
                rejected window; an exception it raises is logged, not propagated.
        """
        t0 = time.perf_counter()
        gc_at_start = interpreter.pause_ms()
        keyframes, note = self._with_anchors(job)
        images = [kf.frame.image for kf in keyframes]
        options: dict[str, Any] = {}
        if getattr(self.predictor, "caches_frames", False):
            # Frames shared with earlier windows reuse their encoder tokens (same outputs).
            options["frame_keys"] = [(self._frame_key_prefix, kf.id) for kf in keyframes]
        refine = self.config.refine
        if refine.enabled and getattr(self.predictor, "reports_model_inputs", False):
            # The refinement's image-only work (keypoints, matches, tracked corners) is done
            # while the network runs (the same results as after it).
            options["on_model_inputs"] = functools.partial(
                self._refine_features.prefetch_window, camera_ids=[kf.camera_id for kf in keyframes]
            )
        prediction = self.predictor.predict(images, job.query_points, **options)
        t_refine = time.perf_counter()
        refinement = None
        if self.config.window.calibrated_intrinsics:
            prediction, calibrated = calibrated_prediction(
                prediction, [kf.frame.intrinsics for kf in keyframes]
            )
            self.stats["frames_calibrated"] += calibrated
        early: dict[str, Any] = {}  # the chaining done during the refinement, if it was
        if self.config.refine.enabled:
            early_frames, on_early = self._chain_while_refining(keyframes, job.window_id, early)
            try:
                prediction, refinement = refined_prediction(
                    prediction,
                    [kf.camera_id for kf in keyframes],
                    self.config.refine,
                    self._refine_features,
                    prefetch="on_model_inputs" not in options,
                    early_frames=early_frames,
                    on_early=on_early,
                )
            except Exception as exc:  # noqa: BLE001 - the head's poses are still a window
                logger.warning(
                    "pose refinement failed for window %d: %s: %s", job.window_id, type(exc).__name__, exc
                )
                self.stats["refine_failures"] += 1
                refinement = None
                early.clear()  # it chained on refined poses the window will not have
            if refinement is not None:
                self.stats["frames_refined"] += int(refinement.refined.sum())
                self.stats["frames_refined_by_sift"] += refinement.methods.count("sift")
                self.stats["frames_head_rotation"] += refinement.methods.count("head")
                self.stats["frames_not_refined"] += int(
                    len(refinement.refined) - 1 - refinement.refined.sum()
                )
            for key, count in self._refine_features.counts().items():
                self.stats[f"refine_{key}"] = count
        t1 = time.perf_counter()
        ids = [kf.id for kf in keyframes]
        new_reference: list[int] = []
        sensor_edges_added = False
        with self._lock:
            outcome = early.get("outcome")
            if outcome is None:
                outcome = self._chainer.align(prediction, ids, job.window_id)
            segment_note = ""
            if not outcome.accepted:
                if self._rejections_in_row >= self.config.chaining.max_consecutive_rejections:
                    outcome, segment_note = self._new_segment(prediction, keyframes, outcome)
                else:
                    self._rejections_in_row += 1
            t2 = time.perf_counter()
            if outcome.accepted:
                self._rejections_in_row = 0
                self._chainer.commit(prediction, ids, outcome.transform, job.window_id, self._segment)
                for kf in keyframes:
                    self._keyframe_info.setdefault(kf.id, KeyframeInfo.of(kf))
                if self._anchor is None:
                    self._anchor, self._orientation = map_anchor(
                        keyframes[0].frame.odom_pose, keyframes[0].frame.camera_to_base
                    )
                self._update_scale(prediction, keyframes, outcome.transform)
                self.stats["windows_accepted"] += 1
            else:
                self.stats["windows_rejected"] += 1
            t3 = time.perf_counter()
            scale = self._scale.estimate()
            map_from_g = self._map_from_g(scale)
            to_map = map_from_g @ outcome.transform
            cam_to_map = to_map.transform_poses(np.asarray(prediction.cam_to_world, np.float64))
            # A new segment's window could not be checked against the map: its poses are kept
            # (the trajectory goes on) but its points wait until a later window chains to it.
            mapped = outcome.accepted and not segment_note
            if mapped:
                # map <- odom depends on the keyframe poses only, not on the point map.
                self._map_to_odom = self._compute_map_to_odom(map_from_g)
            map_to_odom = None if self._map_to_odom is None else self._map_to_odom.copy()
            stamps = np.array([kf.stamp for kf in keyframes])
            camera_ids = [kf.camera_id for kf in keyframes]
        t_poses = time.perf_counter()
        gc_ms = interpreter.pause_ms() - gc_at_start
        if on_poses is not None and outcome.accepted:
            poses = WindowPoses(
                job.window_id, ids, stamps, camera_ids, cam_to_map, map_to_odom, scale, (t_poses - t0) * 1e3
            )
            try:
                on_poses(poses)
            except Exception as exc:  # noqa: BLE001 - the map stage must run whatever a publisher does
                logger.warning("on_poses callback failed for window %d: %s", job.window_id, exc)
        with self._lock:
            # The back end after the poses went out: its place features and stored points
            # (tens of ms a window) change nothing the poses are made of.
            t_back = time.perf_counter()
            if outcome.accepted:
                sensor_edges = self._sensor_edge_count()
                new_reference = self._add_to_back_end(prediction, keyframes, outcome)
                sensor_edges_added = self._sensor_edge_count() > sensor_edges
            t_map = time.perf_counter()
            points = PointsMap.empty()
            if mapped:
                self._sync_map(map_from_g)
                cfg = self.config.map
                points = window_map_points(
                    prediction, to_map, cfg.pixel_stride, cfg.conf_percentile, cfg.min_confidence
                )
                center = self._robot_position(keyframes, cam_to_map)
                self.global_map.insert(points.xyz, points.rgb, points.conf, center=center)
            t4 = time.perf_counter()
            tracks = self._tracks(prediction, keyframes, job.query_points, cam_to_map, to_map.scale)
            reason = outcome.reason + segment_note + note
            if not outcome.accepted:
                reason = f"rejected: {reason}"
            depth_factor = to_map.scale
            result = WindowResult(
                accepted=outcome.accepted,
                reason=reason,
                residual=outcome.residual,
                window_id=job.window_id,
                keyframe_ids=ids,
                stamps=stamps,
                camera_ids=camera_ids,
                cam_to_map=cam_to_map,
                depth=(np.asarray(prediction.depth, np.float32) * depth_factor).astype(np.float32),
                depth_conf=np.asarray(prediction.depth_conf, np.float32),
                model_intrinsics=np.asarray(prediction.model_intrinsics, np.float64),
                intrinsics=np.asarray(prediction.intrinsics, np.float64),
                points_map=points,
                tracks=tracks,
                scale=scale,
                map_to_odom=map_to_odom,
                segment_id=self._segment,
                inlier_ratio=outcome.inlier_ratio,
                center_residual=outcome.center_residual,
                median_relative_residual=outcome.median_relative_residual,
                num_shared=outcome.num_shared,
                orientation=self._orientation,
            )
        # The back end's corrections (odometry-sensor edges, loops) count as the "loop" stage.
        t_loop = time.perf_counter()
        if outcome.accepted and sensor_edges_added:
            # Odometry-sensor edges correct the graph continuously: keyframes follow it after every
            # window, so the next windows chain onto corrected poses; the map is rebuilt now and then.
            self._sensor_windows += 1
            rebuild = self._sensor_windows % self.config.loop.sensor_map_rebuild_windows == 0
            with self._lock:
                self._apply_back_end(rebuild_map=rebuild)
                self._map_stale = self._map_stale or not rebuild
            result.map_rebuilt = rebuild
            result.poses_corrected = True
        # Loop verification runs a network window: outside the lock, so frames keep flowing.
        if new_reference and self._backend is not None:
            result.loops = self._backend.close_loops(new_reference, self.predictor)
            if any(event.accepted for event in result.loops):
                with self._lock:
                    self._apply_back_end(rebuild_map=False)
                    self._map_stale = True
                result.poses_corrected = True
        self._windows_since_rebuild += 1
        if self._map_stale and self._windows_since_rebuild >= self.config.loop.map_rebuild_min_windows:
            with self._lock:
                self._rebuild_map()
            result.map_rebuilt = True
        t5 = time.perf_counter()
        result.timings = {
            "predict_ms": (t_refine - t0) * 1e3,
            # Chaining done during the refinement counts as chaining, not as refinement.
            "refine_ms": (t1 - t_refine) * 1e3 - early.get("ms", 0.0),
            **{
                f"refine_{k}": v
                for k, v in (refinement.timings if refinement is not None else {}).items()
                if k != "early_ms"
            },
            "chain_ms": (t2 - t1) * 1e3 + early.get("ms", 0.0),
            "scale_ms": (t3 - t2) * 1e3,
            "poses_ms": (t_poses - t0) * 1e3,
            "gc_ms": gc_ms,  # the garbage collector's pauses inside poses_ms (interpreter.py)
            "back_end_ms": (t_map - t_back) * 1e3,
            "map_ms": (t4 - t_map) * 1e3,
            "loop_ms": (t5 - t_loop) * 1e3,
            "total_ms": (t5 - t0) * 1e3,
            **{f"predictor_{k}": float(v) for k, v in getattr(prediction, "timings", {}).items()},
        }
        return result

    def _record_chained_poses(self, keyframes: list[Keyframe]) -> None:
        """Where window chaining alone would have put the window's new keyframes.

        Once a loop (or an odometry-sensor edge) has moved the mapped keyframes, the next
        windows chain onto the corrected poses; so each new keyframe is placed relative to the
        window's oldest keyframe that has a chained pose already, by the same relative pose it has
        now: ``chained(new) = chained(anchor) current(anchor)^-1 current(new)``. Before any
        correction the two agree and this is the chaining's own pose. A window with no such
        keyframe (the first, a new segment) is taken as placed.
        """
        poses = self._chainer.keyframes
        anchor = next((kf.id for kf in keyframes if kf.id in self._chained_poses and kf.id in poses), None)
        offset = (
            np.eye(4) if anchor is None else self._chained_poses[anchor] @ np.linalg.inv(poses[anchor].pose)
        )
        for kf in keyframes:
            if kf.id in poses and kf.id not in self._chained_poses:
                self._chained_poses[kf.id] = offset @ poses[kf.id].pose

    def _add_to_back_end(
        self, prediction: Any, keyframes: list[Keyframe], outcome: ChainOutcome
    ) -> list[int]:
        """Pose-graph nodes and edges, stored points and place entries of an accepted window;
        returns its new reference-camera keyframes (the loop queries)."""
        self._record_chained_poses(keyframes)
        if self._backend is None:
            return []
        scale = self._scale.estimate()
        reseeds = self._backend.reseeds
        new = self._backend.add_window(
            prediction,
            keyframes,
            outcome.transform,
            outcome.residual,
            self.reference_camera,
            metres_per_unit=scale.value if scale.metric else None,
            disagreement=outcome.median_relative_residual,
        )
        for k in new:
            self._applied_scale[k] = self._backend.graph.node_scale(k)
        if self._backend.reseeds != reseeds:
            release_free_heap()  # half the graph and its stored points were just freed
        ref = self.reference_camera
        return [kf.id for kf in keyframes if kf.id in new and kf.camera_id == ref]

    def _sensor_edge_count(self) -> int:
        return self._backend.graph.stats.sensor_edges if self._backend is not None else 0

    def _apply_back_end(self, rebuild_map: bool = True) -> None:
        """Move every mapped keyframe to its optimised pose (rescaling its stored depth) and
        rebuild the voxel map from the keyframes' stored points (bounded by loop.max_keyframes x
        loop.points_per_keyframe points) unless ``rebuild_map`` is false."""
        poses = self._backend.poses()
        for k, mapped in self._chainer.keyframes.items():
            pose = poses.get(k)
            if pose is None:
                continue
            rigid = np.eye(4)
            rigid[:3, :3], rigid[:3, 3] = pose.rotation, pose.translation
            mapped.pose = rigid
            factor = pose.scale / self._applied_scale.get(k, pose.scale)
            if mapped.depth is not None and abs(factor - 1.0) > 1e-12:
                mapped.depth = (mapped.depth * factor).astype(np.float32)
            self._applied_scale[k] = pose.scale
        if rebuild_map:
            self._rebuild_map(poses)

    def _rebuild_map(self, poses: dict[int, Sim3] | None = None) -> None:
        """Replace the voxel map by the keyframes' stored points placed with ``poses`` (default:
        the back end's current estimates); caller holds the lock."""
        if self._backend is None:
            return
        xyz, rgb, conf = self._backend.cloud(poses)
        map_from_g = self._map_from_g(self._scale.estimate())
        self.global_map.clear()
        if len(xyz):
            self.global_map.insert(map_from_g.apply(xyz).astype(np.float32), rgb, conf.astype(np.float32))
        self._map_applied = map_from_g
        self._map_stale = False
        self._windows_since_rebuild = 0
        self.stats["map_rebuilds"] = self.stats.get("map_rebuilds", 0) + 1
        # The old map and the rebuild's temporaries are freed now; without this the process's
        # resident memory climbs for hours although its live data is bounded (heap.py).
        release_free_heap()

    def refresh_map(self) -> bool:
        """Rebuild the voxel map now if a loop correction still waits for its rebuild
        (``loop.map_rebuild_min_windows``); call before saving or reporting the final map.
        Returns whether it rebuilt."""
        with self._lock:
            if not self._map_stale:
                return False
            self._rebuild_map()
            return True

    @property
    def map_size(self) -> int:
        """Points in the voxel map (read consistently with a window being merged)."""
        with self._lock:
            return len(self.global_map)

    @property
    def loops(self) -> list[LoopEvent]:
        """Every verified loop candidate so far (accepted and rejected)."""
        return list(self._backend.loops) if self._backend is not None else []

    @property
    def back_end_stats(self) -> dict[str, float]:
        """Loop counters and pose-graph sizes for diagnostics."""
        if self._backend is None:
            return {"enabled": 0}
        g = self._backend.graph.stats
        units = self._backend.graph.units()
        return {
            "enabled": 1,
            # The keyframes' map units (1 = the first window's): their median drifting away
            # from 1 is scale drift that loops did not correct.
            "graph_unit_median": float(np.median(units)) if units.size else float("nan"),
            "graph_unit_newest": float(units[-1]) if units.size else float("nan"),
            **self._backend.stats,
            "graph_keyframes": g.keyframes,
            "graph_odometry_edges": g.odometry_edges,
            "graph_loop_edges": g.loop_edges,
            "graph_sensor_edges": g.sensor_edges,
            "graph_update_ms": g.last_update_ms,
            "graph_update_ms_median": float(np.median(g.update_ms)) if g.update_ms else 0.0,
            "graph_reseeds": self._backend.reseeds,
            "graph_failed_updates": g.failed_updates,
        }

    def _with_anchors(self, job: WindowJob) -> tuple[list[Keyframe], str]:
        """The job's keyframes, plus the newest mapped ones when too few of its own are mapped.

        After a rejected window the next one may share keyframes only with that window; adding
        the newest mapped keyframe times (at the end, so frame 0 and the query points stay the
        job's) re-anchors it to the map.
        """
        with self._store_lock:
            stored = list(self._store.values())
        with self._lock:
            if self._chainer.empty:
                return list(job.keyframes), ""
            need = self.config.chaining.min_shared_keyframes
            mapped = [kf for kf in job.keyframes if self._chainer.has_dense(kf.id)]
            if len(mapped) >= need:
                return list(job.keyframes), ""
            in_job = set(job.keyframe_ids)
            candidates = [kf for kf in stored if kf.id not in in_job and self._chainer.has_dense(kf.id)]
            if not candidates:
                return list(job.keyframes), ""
            times = sorted({kf.time_index for kf in candidates})[-max(need, self.config.window.overlap) :]
            extra = [kf for kf in candidates if kf.time_index in times]
            return list(job.keyframes) + extra, f" (re-anchored on keyframes {[kf.id for kf in extra]})"

    def _chain_while_refining(
        self, keyframes: list[Keyframe], window_id: int, early: dict[str, Any]
    ) -> tuple[list[int], Callable[[Any], None] | None]:
        """The window's frames the map holds, and a callback for the refinement that chains the
        window on them (``early["outcome"]``, ``early["ms"]``) while it still places the others.

        The same outcome as chaining after the refinement, bit for bit: the alignment reads the
        poses of those frames alone (``WindowChainer.align``), and the refinement hands them
        over final (``refine_window_poses``'s ``on_early``). Measured: docs/benchmarks.md
        ("Latency in the node"). ([], None) where nothing is mapped yet or it is switched off.
        """
        if not self._chain_during_refinement:
            return [], None
        ids = [kf.id for kf in keyframes]

        def mapped() -> list[int]:
            return [i for i, k in enumerate(ids) if self._chainer.has_dense(k)]

        with self._lock:
            shared = mapped()
        if not shared:
            return [], None

        def chain(partial: Any) -> None:
            start = time.perf_counter()
            with self._lock:
                if mapped() == shared:  # (else chained after the refinement, as without this)
                    try:
                        early["outcome"] = self._chainer.align(partial, ids, window_id)
                    except Exception:  # noqa: BLE001 - chained again after it, where the error shows
                        early.clear()
            early["ms"] = (time.perf_counter() - start) * 1e3

        return shared, chain

    def _new_segment(
        self, prediction: Any, keyframes: list[Keyframe], failed: ChainOutcome
    ) -> tuple[ChainOutcome, str]:
        """Place a window that cannot be chained: odometry if it exists, else continuity.

        Its first camera goes where odometry (through the current map -> odom) puts it, or else
        onto the newest mapped keyframe of the same camera (the robot did not teleport); its scale
        matches that keyframe's median depth. The map stays one frame; the segment id tells
        consumers the trajectory may jump here.
        """
        self._segment += 1
        self.stats["segments"] += 1
        self._rejections_in_row = 0
        first = keyframes[0]
        previous = [k for k, kf in self._keyframe_info.items() if kf.camera_id == first.camera_id]
        ref_id = max(previous) if previous else next(reversed(self._chainer.keyframes))
        ref = self._chainer.keyframes[ref_id]
        valid = np.asarray(prediction.valid_mask[0]) & (np.asarray(prediction.depth[0]) > 0)
        depth_w = float(np.median(np.asarray(prediction.depth[0])[valid])) if valid.any() else 1.0
        depth_g = self._chainer.median_depth(ref_id)
        scale = depth_g / depth_w if np.isfinite(depth_g) and depth_w > 0 else 1.0
        pose = ref.pose
        how = f"continuity with keyframe {ref_id}"
        estimate = self._scale.estimate()
        if first.frame.odom_pose is not None and self._map_to_odom is not None and estimate.metric:
            cam_map = self._map_to_odom @ camera_in_odom(first.frame.odom_pose, first.frame.camera_to_base)
            pose = self._map_from_g(estimate).inverse().transform_poses(cam_map)
            how = "odometry"
        transform = Sim3(scale, pose[:3, :3].copy(), pose[:3, 3].copy())
        outcome = ChainOutcome(True, f"new segment {self._segment}", transform, failed.residual, 0.0, 0)
        return outcome, f" placed by {how} after: {failed.reason}"

    # ---------------------------------------------------------------- scale

    def _update_scale(self, prediction: Any, keyframes: list[Keyframe], transform: Sim3) -> None:
        cfg = self.config.scale
        poses_g = transform.transform_poses(np.asarray(prediction.cam_to_world, np.float64))
        if cfg.source == "odometry":
            ref = self.reference_camera
            sel = [
                i for i, kf in enumerate(keyframes) if kf.camera_id == ref and kf.frame.odom_pose is not None
            ]
            if len(sel) >= 2:
                odom = np.array(
                    [
                        camera_in_odom(keyframes[i].frame.odom_pose, keyframes[i].frame.camera_to_base)[:3, 3]
                        for i in sel
                    ]
                )
                self._scale.add_samples(odometry_ratios(poses_g[sel, :3, 3], odom, cfg.min_baseline_m))
        elif cfg.source == "depth":
            for i, kf in enumerate(keyframes):
                if kf.frame.metric_depth is None:
                    continue
                predicted = prediction.depth_original(i) * transform.scale
                conf = prediction.depth_conf_original(i)
                ratio = depth_ratio(
                    predicted,
                    conf,
                    kf.frame.metric_depth,
                    cfg.depth_conf_percentile,
                    cfg.depth_min_m,
                    cfg.depth_max_m,
                )
                self._scale.add_samples([ratio])
        elif cfg.source == "rig":
            by_time: dict[int, list[int]] = {}
            for i, kf in enumerate(keyframes):
                if kf.frame.camera_to_base is not None:
                    by_time.setdefault(kf.time_index, []).append(i)
            for members in by_time.values():
                if len(members) >= 2:
                    metric = np.array([keyframes[i].frame.camera_to_base[:3, 3] for i in members])
                    self._scale.add_samples(rig_ratios(poses_g[members, :3, 3], metric, cfg.min_baseline_m))

    # ------------------------------------------------------------------ map

    def _map_from_g(self, scale: ScaleEstimate) -> Sim3:
        """map <- G for the given scale (see the module docstring)."""
        if self._anchor is None:
            return Sim3.identity()
        t = self._anchor[:3, 3] if scale.metric else np.zeros(3)
        return Sim3(scale.value if scale.metric else 1.0, self._anchor[:3, :3], t.copy())

    def _sync_map(self, map_from_g: Sim3) -> None:
        """Re-express the voxel map when map <- G changed (new scale estimate or anchor)."""
        delta = map_from_g @ self._map_applied.inverse()
        moved = np.abs(delta.translation).max() > 1e-9 or not np.allclose(
            delta.rotation, np.eye(3), atol=1e-9
        )
        if abs(delta.scale - 1.0) > RESCALE_TOLERANCE or moved:
            # delta(p) = s R p + t: scale about the origin, then rotate and shift.
            self.global_map.rescale(delta.scale)
            self.global_map.transform(delta.rotation, delta.translation)
            self._map_applied = map_from_g

    def _robot_position(self, keyframes: list[Keyframe], cam_to_map: np.ndarray) -> np.ndarray:
        ref = self.reference_camera
        idx = [i for i, kf in enumerate(keyframes) if kf.camera_id == ref] or list(range(len(keyframes)))
        newest = max(idx, key=lambda i: keyframes[i].stamp)
        return cam_to_map[newest, :3, 3].copy()

    def _compute_map_to_odom(self, map_from_g: Sim3) -> np.ndarray | None:
        scale = self._scale.estimate()
        if not scale.metric:
            return None
        ref = self.reference_camera
        candidates = [
            (kf.stamp, k)
            for k, kf in self._keyframe_info.items()
            if kf.camera_id == ref and kf.odom_pose is not None
        ]
        if not candidates:
            return None
        _, k = max(candidates)
        kf = self._keyframe_info[k]
        cam_map = map_from_g.transform_poses(self._chainer.keyframes[k].pose)
        return map_to_odom(cam_map, kf.odom_pose, kf.camera_to_base)

    # --------------------------------------------------------------- tracks

    def _tracks(
        self,
        prediction: Any,
        keyframes: list[Keyframe],
        queries: np.ndarray | None,
        cam_to_map: np.ndarray,
        depth_scale: float,
    ) -> Tracks | None:
        if queries is None or getattr(prediction, "tracks", None) is None:
            return None
        depth = prediction.depth_original(0)
        h, w = depth.shape
        cols = np.clip(np.rint(queries[:, 0]).astype(np.int64), 0, w - 1)
        rows = np.clip(np.rint(queries[:, 1]).astype(np.int64), 0, h - 1)
        cam = unproject_pixels(depth * depth_scale, np.asarray(prediction.intrinsics[0]), rows, cols)
        # unproject_pixels reads integer pixels; use the exact query position for x, y.
        K = np.asarray(prediction.intrinsics[0])
        z = cam[:, 2]
        y = (queries[:, 1] - K[1, 2]) / K[1, 1]
        x = (queries[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
        cam = np.stack((x * z, y * z, z), axis=1)
        pts = cam @ cam_to_map[0, :3, :3].T + cam_to_map[0, :3, 3]
        pts[~(np.isfinite(z) & (z > 0))] = np.nan
        n_frames = len(keyframes)
        return Tracks(
            query_keyframe_id=keyframes[0].id,
            query_pixels=np.asarray(queries, np.float64).copy(),
            keyframe_ids=[kf.id for kf in keyframes],
            pixels=np.asarray(prediction.tracks, np.float64)[:n_frames],
            visibility=np.asarray(prediction.track_vis, np.float32)[:n_frames],
            confidence=np.asarray(prediction.track_conf, np.float32)[:n_frames],
            points_map=pts,
        )

    # -------------------------------------------------------------- queries

    def keyframe_poses(self) -> dict[int, np.ndarray]:
        """{keyframe_id: [4, 4] cam_to_map} of every mapped keyframe (current scale)."""
        with self._lock:
            to_map = self._map_from_g(self._scale.estimate())
            return {k: to_map.transform_poses(kf.pose) for k, kf in self._chainer.keyframes.items()}

    def path(self) -> list[tuple[float, np.ndarray]]:
        """[(stamp, [4, 4] cam_to_map)] of the reference camera's mapped keyframes, by stamp."""
        with self._lock:
            ref = self.reference_camera
            poses = self.keyframe_poses()
            out = [
                (self._keyframe_info[k].stamp, T)
                for k, T in poses.items()
                if self._keyframe_info[k].camera_id == ref
            ]
            return sorted(out, key=lambda item: item[0])

    def chained_path(self) -> list[tuple[float, np.ndarray]]:
        """:meth:`path` as window chaining alone would have placed it: no loop or odometry-sensor
        correction, also for the keyframes mapped after one (see ``_record_chained_poses``)."""
        with self._lock:
            ref = self.reference_camera
            to_map = self._map_from_g(self._scale.estimate())
            out = [
                (self._keyframe_info[k].stamp, to_map.transform_poses(T))
                for k, T in self._chained_poses.items()
                if k in self._keyframe_info and self._keyframe_info[k].camera_id == ref
            ]
            return sorted(out, key=lambda item: item[0])

    def keyframe(self, keyframe_id: int) -> KeyframeInfo | None:
        """A mapped keyframe's metadata (stamp, camera, odometry, mounting)."""
        with self._lock:
            return self._keyframe_info.get(keyframe_id)
