"""The back end: a Sim(3) pose graph over keyframes, loop closure, and the corrected map.

Fed by the pipeline after every accepted window (:meth:`BackEnd.add_window`):

* every new keyframe becomes a pose-graph node (:mod:`.pose_graph`) and every pair of
  consecutive keyframes of the window an odometry edge, with standard deviations that grow with
  the window's disagreement with the map (median relative residual);
* once the scale is metric, each new reference-camera keyframe with odometry gets an
  odometry-sensor edge (metres) to the previous one (``loop.sensor_odometry``);
* each keyframe keeps a few hundred points *relative to itself* (pixel, depth in the node's
  units, colour, confidence), so the map can be rebuilt from corrected poses, and old keyframes
  can be aligned to again long after chaining forgot their dense maps;
* reference-camera keyframes go into the place database (:mod:`.loops`).

Loop closure (:meth:`BackEnd.close_loops`): a new keyframe's candidates are verified one at a
time by running VGGT on a window of the new keyframe, its predecessor, the candidate and the
candidate's successor, aligning that window to G on the *old* keyframes' stored points
(robust Sim(3), as chaining does), and checking what it implies for the new keyframe: the
correction must stay a small share of the path travelled since the old keyframe
(``loop.max_correction_ratio``) and below ``loop.max_correction_deg``; look-alike places usually
fail this because the implied jump is as long as the path. An accepted loop adds robust edges
between the two old and two new keyframes and re-optimises; :meth:`BackEnd.poses` then gives the
corrected keyframe poses.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from vggt_ros.geometry.alignment import Sim3, robust_umeyama
from vggt_ros.geometry.overlap import mutual_view_overlap
from vggt_ros.mapping.calibration import calibrated_prediction
from vggt_ros.mapping.chaining import median_relative_residual, unproject_pixels, weighted_median
from vggt_ros.mapping.config import ChainingConfig, LoopConfig, RefineConfig
from vggt_ros.mapping.frames import camera_in_odom
from vggt_ros.mapping.loops import EncoderPlaceRecognizer, LoopCandidate, OrbPlaceRecognizer
from vggt_ros.mapping.pose_graph import (
    EdgeSigmas,
    PoseGraph,
    SensorSigmas,
    interpolate_correction,
    node_sim3,
    window_relative,
)
from vggt_ros.mapping.pose_refine import refined_prediction

logger = logging.getLogger(__name__)

# A point of one verification frame is "seen" by another when that frame's depth there agrees
# within this share: looser than ground truth's 0.1, the window's depth is a prediction.
VIEW_OVERLAP_DEPTH_TOLERANCE = 0.25
MAX_SIGMA_FACTOR = 10.0  # an edge's standard deviations grow at most this much with its window's disagreement


@dataclass
class KeyframePoints:
    """Points of one keyframe stored relative to it (in its node's local units).

    Attributes:
        rows, cols: [N] model-resolution pixels; depth: [N] float32 z-depth in node units;
        rgb: [N, 3] uint8; conf: [N] float32; model_intrinsics: [3, 3]; model_hw: (Hm, Wm);
        camera_id, stamp: of the keyframe; jpeg: the image (reference camera only, for loop
        verification windows), else None; calibration: [3, 3] camera_info intrinsics of that
        image, given to the verification windows (None: the network's are used).
    """

    rows: np.ndarray
    cols: np.ndarray
    depth: np.ndarray
    rgb: np.ndarray
    conf: np.ndarray
    model_intrinsics: np.ndarray
    model_hw: tuple[int, int]
    camera_id: str
    stamp: float
    jpeg: bytes | None = None
    calibration: np.ndarray | None = None

    def local_points(self, keep: np.ndarray | None = None) -> np.ndarray:
        """[N, 3] camera-frame points in node units (of the ``keep`` mask's points when given)."""
        rows, cols = (self.rows, self.cols) if keep is None else (self.rows[keep], self.cols[keep])
        depth = np.zeros(self.model_hw, np.float32)
        depth[self.rows, self.cols] = self.depth
        return unproject_pixels(depth, self.model_intrinsics, rows, cols)


@dataclass
class LoopEvent:
    """One verified loop candidate (accepted or not).

    Attributes:
        query_id, candidate_id: the new and the old keyframe.
        accepted, reason: the verdict and why.
        matches: ORB matches that proposed it (0 with encoder place recognition).
        similarity: the encoder descriptors' centred cosine that proposed it (NaN with ORB).
        residual, inlier_ratio: of the verification window's alignment on the old keyframes.
        median_relative_residual: that alignment's median point residual / depth (as chaining's).
        correction_m, correction_deg: what the loop would move the new keyframe by (G units).
        correction_scale: and the factor it would change its unit (scale) by.
        path_since_m: path length of the reference keyframes between the two (G units).
        view_overlap: share of the new keyframe's surface the old one sees in the verification
            window (and of the old one's the new one sees: the smaller), from the window's own
            depth and poses; NaN before it was computed.
        offset: [4, 4] the new keyframe's camera in the old one's as the loop measures it
            (rotation, translation in G units: the old keyframe's current pose and the new
            one's pose implied by the verification window), or None before it was computed.
        edges: (old, new) keyframe pairs added to the pose graph.
        seconds: verification time.
        held: refused only for its correction's size, and kept for confirmation
            (``loop.confirmation_keyframes``).
        confirmed_by: the query keyframe of the held loop this one confirmed (both accepted),
            or None.
        confirmation_apart: how far apart (G units, degrees) the two loops of a confirmation
            put the new keyframe, or None.
        refined_frames: frames of the verification window placed by PnP
            (``loop.refine_verification``), or None when its poses were not refined.
    """

    query_id: int
    candidate_id: int
    accepted: bool
    reason: str
    matches: int
    residual: float = float("inf")
    inlier_ratio: float = 0.0
    median_relative_residual: float = float("nan")
    correction_m: float = float("nan")
    correction_deg: float = float("nan")
    path_since_m: float = float("nan")
    view_overlap: float = float("nan")
    correction_scale: float = float("nan")
    offset: np.ndarray | None = None
    confirmation_apart: tuple[float, float] | None = None
    refined_frames: int | None = None
    edges: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0
    similarity: float = float("nan")
    held: bool = False
    confirmed_by: int | None = None


@dataclass
class _HeldLoop:
    """A loop refused only for the size of its correction, waiting for a second that agrees.

    ``correction`` is G <- G: the implied pose of the query keyframe times the inverse of its
    pose at verification time; ``edges`` the (old, new, Z_old_new) loop edges it would add."""

    event: LoopEvent
    correction: Sim3
    edges: list[tuple[int, int, Sim3]]


def place_key(pose: Sim3, cell: float) -> tuple[int, ...]:
    """The place of a camera (keyframe -> G): its position's cell of side ``cell`` (G units)
    and its optical axis's 45-degree sector of azimuth about G's y axis (the first camera's
    down) and band of elevation (below -30, -30 to 30, above 30 degrees)."""
    x, y, z = pose.rotation[:, 2]
    azimuth = int(np.floor((np.arctan2(x, z) + np.pi) / (np.pi / 4))) % 8
    elevation = int(np.clip(np.floor((np.degrees(np.arcsin(np.clip(-y, -1.0, 1.0))) + 90.0) / 60.0), 0, 2))
    cx, cy, cz = np.floor(np.asarray(pose.translation) / cell).astype(int)
    return (int(cx), int(cy), int(cz), azimuth, elevation)


def _angle_deg(rotation: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


class BackEnd:
    """Pose graph, keyframe point store, place database and loop verification."""

    def __init__(
        self,
        config: LoopConfig,
        chaining: ChainingConfig,
        seed: int = 0,
        calibrated_intrinsics: bool = False,
        refine: RefineConfig | None = None,
    ) -> None:
        """``calibrated_intrinsics``: verification windows use the keyframes' camera_info
        intrinsics (``window.calibrated_intrinsics``, as the pipeline's windows do).
        ``refine``: the pose refinement of the pipeline's windows, applied to the verification
        windows too while ``loop.refine_verification`` (None or disabled: the head's poses)."""
        self.config = config
        self.chaining = chaining
        self.calibrated_intrinsics = calibrated_intrinsics
        self.refine = refine
        self.graph = PoseGraph(loop_kernel=self.config.loop_kernel)
        # The re-seeds bound the place database (they discard what they drop); its own bound,
        # which evicts the oldest entries, only backs that up: at the graph's size it would
        # evict the kept places (the oldest entries) as the newest keyframes come in.
        self.places: OrbPlaceRecognizer | EncoderPlaceRecognizer
        if config.place_recognition == "encoder":
            logger.warning(
                "loop.place_recognition = encoder is experimental: with vggt-compact-v3 its "
                "candidates closed false loops (places up to 12 m apart) on 4 of 4 loop sequences "
                "measured, which the verification window did not reject (docs/mapping.md)"
            )
            self.places = EncoderPlaceRecognizer(
                min_similarity=config.encoder_min_similarity,
                min_gap=config.min_gap_keyframes,
                max_keyframes=2 * config.max_keyframes,
            )
        else:
            self.places = OrbPlaceRecognizer(
                min_matches=config.min_matches,
                fast_threshold=config.orb_fast_threshold,
                min_gap=config.min_gap_keyframes,
                max_keyframes=2 * config.max_keyframes,
            )
        self.points: OrderedDict[int, KeyframePoints] = OrderedDict()
        self.reference_order: list[int] = []  # reference-camera keyframes in insertion order
        # Insertion number of every stored reference keyframe: two are neighbours (for a
        # verification window) only when inserted one after the other.
        self._reference_seq: dict[int, int] = {}
        self._reference_count = 0
        # Places kept by re-seeds (loop.keep_places): keyframe -> its kept successor (or None).
        self._places: dict[int, int | None] = {}
        self.loops: list[LoopEvent] = []
        self._nodes: list[int] = []  # graph nodes in insertion order
        # Nodes fixed when added: the first keyframe and the first of every new map segment
        # (a window sharing no keyframe with the graph). A re-seed keeps them fixed.
        self._anchors: set[int] = set()
        self._edges: list[tuple[int, int, Sim3, EdgeSigmas, bool]] = []  # (a, b, Z_ab, sigmas, loop)
        # Odometry-sensor edges (a, b, camera b -> a in metres).
        self._sensor_edges: list[tuple[int, int, np.ndarray]] = []
        self._last_odometry: tuple[int, np.ndarray] | None = None  # (keyframe, odom <- camera)
        self.sensor_sigmas = SensorSigmas(
            np.radians(config.sensor_rotation_sigma_deg),
            config.sensor_translation_share,
            config.sensor_translation_floor_m,
        )
        self._cooldown = 0
        self._held: _HeldLoop | None = None
        self.reseeds = 0
        self._rng = np.random.default_rng(seed)
        self.stats = {
            "loops_detected": 0,
            "loops_verified": 0,
            "loops_accepted": 0,
            "loops_rejected": 0,
            "loops_confirmed": 0,
        }

    # -------------------------------------------------------------------------- windows

    def add_window(
        self,
        prediction: Any,
        keyframes: list[Any],
        transform: Sim3,
        residual: float,
        reference_camera: str | None,
        metres_per_unit: float | None = None,
        disagreement: float = float("nan"),
    ) -> list[int]:
        """Nodes, odometry edges, stored points and place entries of an accepted window.

        ``keyframes`` follow the prediction's frames; ``transform`` is the window's G <- W;
        ``residual`` its alignment residual (0 for the first window, inf when placed without an
        alignment); ``disagreement`` its median relative residual to the map (NaN when it had no
        dense correspondences); ``metres_per_unit`` the metric size of a G unit when the scale
        is metric (enables the odometry-sensor edges), else None. Returns the ids of the
        keyframes new to the graph.
        """
        c = self.config
        poses = np.asarray(prediction.cam_to_world, np.float64)
        # A window sharing no keyframe with the graph (the first, or one that starts a new map
        # segment) is anchored where chaining put it: its first keyframe gets a prior.
        anchor = not any(kf.id in self.graph for kf in keyframes)
        new = []
        for i, kf in enumerate(keyframes):
            if kf.id in self.graph:
                continue
            self.graph.add_keyframe(kf.id, node_sim3(transform, poses[i], transform.scale), fixed=anchor)
            self._nodes.append(kf.id)
            if anchor:
                self._anchors.add(kf.id)
            anchor = False
            self._store_points(prediction, i, kf, reference_camera)
            new.append(kf.id)
        # Window edges between consecutive keyframes (by time, then camera), looser when the
        # window disagreed more with the map. A window placed without alignment (a new map
        # segment: no finite residual) gets the loosest edges; the first window the tightest.
        if not np.isfinite(residual):
            factor = MAX_SIGMA_FACTOR
        elif np.isfinite(disagreement):
            factor = min(MAX_SIGMA_FACTOR, 1.0 + max(0.0, disagreement) / c.odometry_sigma_disagreement)
        else:
            factor = 1.0
        sigmas = EdgeSigmas(
            np.radians(c.odometry_rotation_sigma_deg), c.odometry_translation_sigma, c.odometry_scale_sigma
        ).scaled(factor)
        order = sorted(range(len(keyframes)), key=lambda i: (keyframes[i].stamp, str(keyframes[i].camera_id)))
        ids = [kf.id for kf in keyframes]
        units = {k: self.graph.node_scale(k) for k in ids}
        if c.odometry_current_unit and np.isfinite(residual) and len(new) < len(ids):
            # The window was aligned on the map as the back end last moved it, so a keyframe
            # it shares with the map has the unit it has there now, not the one it was created
            # with; an edge built from the creation unit restates every correction since then as
            # a scale (and distance) step to the new keyframes, and the steps compound.
            # (The unit the window measures from its depth at the stored pixels is the same up
            # to that window's depth noise, which then enters every edge between two shared
            # keyframes: one held-out there-and-back went from 1.52 to 2.48 % APE with it.)
            units.update({k: self.graph.pose(k).scale for k in ids if k not in new})
        for a, b in zip(order, order[1:]):
            ka, kb = keyframes[a].id, keyframes[b].id
            rel = window_relative(transform, poses[a], poses[b], units[ka], units[kb])
            self.graph.add_odometry(ka, kb, rel, sigmas)
            self._edges.append((ka, kb, rel, sigmas, False))
        if metres_per_unit is not None and c.sensor_odometry:
            fresh = [kf for kf in keyframes if kf.id in new]
            self._add_sensor_edges(fresh, reference_camera, metres_per_unit)
        self.graph.update()
        if len(self.graph) > c.max_keyframes:
            self._reseed()
        return new

    def _add_sensor_edges(self, new: list[Any], reference_camera: str | None, metres_per_unit: float) -> None:
        """An odometry-sensor edge from the previous reference keyframe with odometry to each new
        one (in time order): odom <- camera of both, their relative motion in metres."""
        with_odometry = sorted(
            (kf for kf in new if kf.camera_id == reference_camera and kf.frame.odom_pose is not None),
            key=lambda kf: kf.stamp,
        )
        for kf in with_odometry:
            cam = camera_in_odom(kf.frame.odom_pose, kf.frame.camera_to_base)
            last = self._last_odometry
            if last is not None and last[0] in self.graph:
                measured = np.linalg.inv(last[1]) @ cam
                self.graph.add_sensor_odometry(last[0], kf.id, measured, metres_per_unit, self.sensor_sigmas)
                self._sensor_edges.append((last[0], kf.id, measured))
            self._last_odometry = (kf.id, cam)

    def _reseed(self) -> None:
        """Keep the newest half of the graph (see ``loop.max_keyframes``): their current poses,
        the oldest of them fixed, the edges among them; forget the rest, except one keyframe
        (and its successor) per place of the older part (``loop.keep_places``), fixed where it
        was last optimised. Kept anchors of later map segments stay fixed too: a segment that
        no edge ties to the oldest kept node would otherwise float free, and GTSAM reports the
        system indeterminate."""
        poses = self.graph.poses()
        recent = self._nodes[-(self.config.max_keyframes // 2) :]
        self._places = self._places_to_keep(poses, set(recent)) if self.config.keep_places else {}
        places = set(self._places) | {n for n in self._places.values() if n is not None}
        keep = [k for k in self._nodes if k in places and k not in recent] + recent
        kept = set(keep)
        self._anchors = {recent[0]} | (self._anchors & kept) | (places - set(recent))
        graph = PoseGraph(loop_kernel=self.config.loop_kernel)
        for k in keep:
            graph.add_keyframe(k, poses[k], fixed=k in self._anchors, unit=self.graph.node_scale(k))
        self._edges = [e for e in self._edges if e[0] in kept and e[1] in kept]
        for a, b, rel, sigmas, loop in self._edges:
            (graph.add_loop if loop else graph.add_odometry)(a, b, rel, sigmas)
        self._sensor_edges = [e for e in self._sensor_edges if e[0] in kept and e[1] in kept]
        metres = self.graph.metres_per_unit()  # the old graph's estimate seeds the new one
        for a, b, measured in self._sensor_edges:
            graph.add_sensor_odometry(a, b, measured, metres, self.sensor_sigmas)
        graph.stats.updates = self.graph.stats.updates
        graph.update()
        self.graph, self._nodes = graph, keep
        for k in [k for k in self.points if k not in kept]:
            del self.points[k]
            self.places.discard(k)
        self.reference_order = [k for k in self.reference_order if k in kept]
        self._reference_seq = {k: self._reference_seq[k] for k in self.reference_order}
        self.reseeds += 1
        logger.info(
            "pose graph re-seeded with its newest %d keyframes and %d kept places",
            len(recent),
            len(self._places),
        )

    def _places_to_keep(self, poses: dict[int, Sim3], recent: set[int]) -> dict[int, int | None]:
        """One reference keyframe per place among those a re-seed would drop, with its successor
        (the verification window's second old frame): {keyframe: successor or None}.

        A place is a cell of ``loop.place_cell`` x the keyframes' median scene depth (G units)
        and a 45-degree sector of viewing azimuth (three of elevation) in G. Places kept by
        earlier re-seeds claim their cells first, then the oldest keyframe of a cell: the
        first map of a place is the one the later passes come back to, so its scale and
        position, not a drifted copy's, are what their loops hold on to. At most a quarter of
        ``loop.max_keyframes`` keyframes (pairs) are kept, the earliest places first.
        """
        c = self.config
        older = [k for k in self.reference_order if k not in recent and k in poses and k in self.points]
        depths = [
            float(np.median(self.points[k].depth)) * poses[k].scale
            for k in older
            if self.points[k].depth.size
        ]
        if not depths:
            return {}
        cell = c.place_cell * float(np.median(depths))
        if not (np.isfinite(cell) and cell > 0):
            return {}
        budget = c.max_keyframes // 4
        ordered = [k for k in older if k in self._places] + [k for k in older if k not in self._places]
        index = {k: i for i, k in enumerate(self.reference_order)}
        claimed: dict[tuple[int, ...], int] = {}
        kept: dict[int, int | None] = {}
        size = 0
        for k in ordered:
            key = place_key(poses[k], cell)
            if key in claimed:
                continue
            j = index[k] + 1
            successor = self.reference_order[j] if j < len(self.reference_order) else None
            if successor is not None and self._reference_seq.get(successor) != self._reference_seq[k] + 1:
                successor = None  # not its neighbour in time (dropped by an earlier re-seed)
            if size + 1 + (successor is not None) > budget:
                break
            claimed[key] = k
            kept[k] = successor
            size += 1 + (successor is not None)
        return kept

    def _store_points(self, prediction: Any, i: int, kf: Any, reference_camera: str | None) -> None:
        depth = np.asarray(prediction.depth[i], np.float32)
        conf = np.asarray(prediction.depth_conf[i], np.float32)
        ok = np.asarray(prediction.valid_mask[i], bool) & np.isfinite(depth) & (depth > 0) & np.isfinite(conf)
        if ok.sum() >= 10:
            ok &= conf >= np.percentile(conf[ok], self.chaining.conf_percentile)
        rows, cols = np.nonzero(ok)
        if len(rows) > self.config.points_per_keyframe:
            pick = self._rng.choice(len(rows), self.config.points_per_keyframe, replace=False)
            rows, cols = rows[pick], cols[pick]
        jpeg = None
        if kf.camera_id == reference_camera:
            image = kf.frame.image
            ok_jpeg, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
            jpeg = buf.tobytes() if ok_jpeg else None
            self.places.add(kf.id, image)
            self.reference_order.append(kf.id)
            self._reference_seq[kf.id] = self._reference_count
            self._reference_count += 1
        # Window depth is in window units; node units are window units (the node's scale is the
        # window's, see node_sim3).
        self.points[kf.id] = KeyframePoints(
            rows=rows.astype(np.int32),
            cols=cols.astype(np.int32),
            depth=depth[rows, cols].copy(),
            rgb=np.asarray(prediction.colors[i])[rows, cols].astype(np.uint8),
            conf=conf[rows, cols].copy(),
            model_intrinsics=np.asarray(prediction.model_intrinsics[i], np.float64).copy(),
            model_hw=tuple(depth.shape),
            camera_id=str(kf.camera_id),
            stamp=float(kf.stamp),
            jpeg=jpeg,
            calibration=kf.frame.intrinsics if self.calibrated_intrinsics else None,
        )

    # ----------------------------------------------------------------------------- loops

    def close_loops(self, new_reference_ids: list[int], predictor: Any) -> list[LoopEvent]:
        """Look for and verify loops of the new reference keyframes (at most
        ``loop.max_verifications`` verification windows); returns every verification's event."""
        events: list[LoopEvent] = []
        budget = self.config.max_verifications
        if budget > 0 and new_reference_ids:
            try:
                # A lambda: the predictor's frame_descriptors is looked up only when the encoder
                # calls it (ORB never does, and test doubles need not have it).
                self.places.describe_pending(lambda images: predictor.frame_descriptors(images))
            except Exception as exc:  # noqa: BLE001 - no descriptor means no loop this time, not a dead node
                logger.warning("place recognition failed: %s: %s", type(exc).__name__, exc)
                return events
        for kf_id in new_reference_ids:
            if self._cooldown > 0:
                self._cooldown -= 1
                continue
            if budget <= 0 or kf_id not in self.places:
                break
            for candidate in self.places.candidates(kf_id, limit=budget):
                self.stats["loops_detected"] += 1
                if (
                    candidate.keyframe_id not in self.points
                    or self.points[candidate.keyframe_id].jpeg is None
                ):
                    continue
                budget -= 1
                event = self.verify(kf_id, candidate, predictor)
                events.append(event)
                self.loops.append(event)
                self.stats["loops_verified"] += 1
                self.stats["loops_accepted" if event.accepted else "loops_rejected"] += 1
                if event.accepted:
                    self._cooldown = self.config.cooldown_keyframes
                    break
                if budget <= 0:
                    break
        return events

    def _neighbour(self, kf_id: int, step: int) -> int | None:
        """The reference keyframe inserted ``step`` (+1 or -1) after ``kf_id``, when still stored
        (a kept place's neighbours are mostly gone)."""
        order = self.reference_order
        if kf_id not in order:
            return None
        j = order.index(kf_id) + step
        if not 0 <= j < len(order) or self.points[order[j]].jpeg is None:
            return None
        if self._reference_seq.get(order[j]) != self._reference_seq.get(kf_id, -2) + step:
            return None
        return order[j]

    def verify(self, query_id: int, candidate: LoopCandidate, predictor: Any) -> LoopEvent:
        """Verify one candidate with a VGGT window (see the module docstring)."""
        t0 = time.perf_counter()
        c = self.config
        old = [candidate.keyframe_id, self._neighbour(candidate.keyframe_id, +1)]
        new = [query_id, self._neighbour(query_id, -1)]
        old = [k for k in old if k is not None]
        new = [k for k in new if k is not None]
        ids = new + old  # the query first: the window's frame is the new keyframe's
        images = [
            cv2.cvtColor(
                cv2.imdecode(np.frombuffer(self.points[k].jpeg, np.uint8), cv2.IMREAD_COLOR),
                cv2.COLOR_BGR2RGB,
            )
            for k in ids
        ]
        event = LoopEvent(query_id, candidate.keyframe_id, False, "", candidate.matches)
        event.similarity = candidate.similarity
        try:
            prediction = predictor.predict(images)
            prediction, _ = calibrated_prediction(prediction, [self.points[k].calibration for k in ids])
        except Exception as exc:  # noqa: BLE001 - a failed verification is a rejected loop
            event.reason = f"verification window failed: {type(exc).__name__}: {exc}"
            event.seconds = time.perf_counter() - t0
            return event
        if c.refine_verification and self.refine is not None and self.refine.enabled:
            # One chain query -> predecessor -> candidate -> successor: the loop's own pair is
            # placed by its SIFT matches on the predecessor's depth (where trusted).
            try:
                prediction, refinement = refined_prediction(prediction, None, self.refine)
            except Exception as exc:  # noqa: BLE001 - unmeasured, the loop is refused (a false one costs more)
                event.reason = f"verification window's pose refinement failed: {type(exc).__name__}: {exc}"
                event.seconds = time.perf_counter() - t0
                return event
            if refinement is not None:
                event.refined_frames = int(refinement.refined.sum())
        fit = self._align_on_old(prediction, ids, old)
        if fit is None:
            event.reason = "too few points of the old keyframes to align on"
            event.seconds = time.perf_counter() - t0
            return event
        to_g, residual, inlier_ratio, relative = fit
        event.residual, event.inlier_ratio = residual, inlier_ratio
        event.median_relative_residual = relative
        poses = np.asarray(prediction.cam_to_world, np.float64)
        qi = ids.index(query_id)
        units = self._units(prediction, ids, to_g)
        implied = node_sim3(to_g, poses[qi], units[query_id])
        current = self.graph.pose(query_id)
        event.correction_m = float(np.linalg.norm(implied.translation - current.translation))
        event.correction_deg = _angle_deg(implied.rotation.T @ current.rotation)
        event.correction_scale = float(implied.scale / current.scale)
        event.path_since_m = self._path_length(candidate.keyframe_id, query_id)
        old_pose = self.graph.pose(candidate.keyframe_id)
        event.offset = np.eye(4)
        event.offset[:3, :3] = old_pose.rotation.T @ implied.rotation
        event.offset[:3, 3] = old_pose.rotation.T @ (implied.translation - old_pose.translation)
        event.view_overlap = self._view_overlap(prediction, qi, ids.index(candidate.keyframe_id))
        reasons = []
        if event.view_overlap < c.min_view_overlap:
            reasons.append(f"views share {event.view_overlap:.2f} of their surface < {c.min_view_overlap}")
        if not np.isfinite(residual) or residual > self.chaining.max_residual:
            reasons.append(f"residual {residual:.4f} > {self.chaining.max_residual}")
        if inlier_ratio < self.chaining.min_inlier_ratio:
            reasons.append(f"inlier share {inlier_ratio:.2f} < {self.chaining.min_inlier_ratio}")
        if not np.isfinite(relative) or relative > self.chaining.max_median_relative_residual:
            reasons.append(
                f"points disagree by {relative:.3f} of their depth (median) > "
                f"{self.chaining.max_median_relative_residual}"
            )
        size_reasons = []
        if event.correction_m > c.max_correction_ratio * event.path_since_m:
            size_reasons.append(
                f"implied jump {event.correction_m:.3f} > {c.max_correction_ratio} x path "
                f"{event.path_since_m:.3f}"
            )
        if event.correction_deg > c.max_correction_deg:
            size_reasons.append(f"implied rotation {event.correction_deg:.1f} deg > {c.max_correction_deg}")
        if reasons or (size_reasons and not c.confirmation_keyframes):
            event.reason = "; ".join(reasons + size_reasons)
            event.seconds = time.perf_counter() - t0
            return event
        # The loop edges it would add: candidate - query and candidate's successor - query's
        # predecessor (more from the same window would be counted as independent evidence,
        # which they are not).
        edges = [
            (
                o,
                n,
                window_relative(to_g, poses[ids.index(o)], poses[ids.index(n)], units[o], units[n]),
            )
            for o, n in zip(old, new)
        ]
        if size_reasons and event.correction_m > c.confirmed_max_correction_ratio * event.path_since_m:
            size_reasons.append(f"too large to confirm (> {c.confirmed_max_correction_ratio} x path)")
            event.reason = "; ".join(size_reasons)
            event.seconds = time.perf_counter() - t0
            return event
        if size_reasons:
            held = _HeldLoop(event, implied @ current.inverse(), edges)
            agreement = self._confirms(held)
            if agreement is not None:
                event.reason = "; ".join(size_reasons) + f"; {agreement}"
                self._held = held
                event.held = True
                event.seconds = time.perf_counter() - t0
                return event
            first, self._held = self._held, None
            assert first is not None
            spread_from = first.event.candidate_id
            for o, n, rel in first.edges:
                self._add_loop_edge(o, n, rel, first.event)
            first.event.accepted, first.event.reason = True, f"confirmed by the loop of keyframe {query_id}"
            self.stats["loops_rejected"] -= 1  # counted when it was held
            self.stats["loops_accepted"] += 1
            event.confirmed_by = first.event.query_id
            apart_m, apart_deg = event.confirmation_apart or (float("nan"), float("nan"))
            event.reason = (
                f"confirms the held loop of keyframe {first.event.query_id} "
                f"(they disagree by {apart_m:.3f} and {apart_deg:.1f} deg)"
            )
            self.stats["loops_confirmed"] += 1
        else:
            event.reason = "ok"
            spread_from = candidate.keyframe_id
        for o, n, rel in edges:
            self._add_loop_edge(o, n, rel, event)
        if c.spread_correction:
            self._spread_correction(implied @ current.inverse(), spread_from, query_id)
        self.graph.update(extra_iterations=5)
        event.accepted = True
        event.seconds = time.perf_counter() - t0
        return event

    @staticmethod
    def _view_overlap(prediction: Any, a: int, b: int) -> float:
        """The smaller share of frame a's and frame b's surface that the other frame sees, from
        the window's depth and poses (its own frame: no map estimate enters)."""
        depth = [np.asarray(prediction.depth[i], np.float64) for i in (a, b)]
        ks = [np.asarray(prediction.model_intrinsics[i], np.float64) for i in (a, b)]
        poses = [np.asarray(prediction.cam_to_world[i], np.float64) for i in (a, b)]
        return mutual_view_overlap(
            depth[0], ks[0], poses[0], depth[1], ks[1], poses[1], tolerance=VIEW_OVERLAP_DEPTH_TOLERANCE
        )

    def _window_depth_at_stored(
        self, prediction: Any, i: int, kf_id: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Frame ``i``'s depth of a verification window at keyframe ``kf_id``'s stored pixels
        ([N] window units) and where it is usable ([N] bool: finite, positive); None when the
        window's depth map has another size than the stored one."""
        stored = self.points[kf_id]
        depth_v = np.asarray(prediction.depth[i], np.float64)
        if depth_v.shape != stored.model_hw:
            return None
        d = depth_v[stored.rows, stored.cols]
        return d, np.isfinite(d) & (d > 0)

    def _units(self, prediction: Any, ids: list[int], to_g: Sim3) -> dict[int, float]:
        """Each keyframe's unit (the size of one of its node units in G) as the verification
        window ``prediction`` (frames in ``ids`` order, G <- window ``to_g``) sees it: the
        confidence-weighted median of its window depth over its stored depth at the stored
        pixels, times the window's scale. The creation unit (``loop.measured_scale`` off, or too
        few valid pixels) otherwise."""
        units = {k: self.graph.node_scale(k) for k in ids}
        if not self.config.measured_scale:
            return units
        for i, k in enumerate(ids):
            sampled = self._window_depth_at_stored(prediction, i, k)
            if sampled is None:
                continue
            d, ok = sampled
            stored = self.points[k]
            ok &= stored.depth > 0
            if ok.sum() < 10:
                continue
            ratio = weighted_median(d[ok] / stored.depth[ok], np.maximum(stored.conf[ok], 1e-6))
            if np.isfinite(ratio) and ratio > 0:
                units[k] = float(to_g.scale * ratio)
        return units

    def _spread_correction(self, correction: Sim3, old_id: int, new_id: int) -> None:
        """Start the optimisation over from every node mapped after ``old_id`` moved by a share
        of ``correction`` (G <- G, what the loop implies for ``new_id``), growing linearly with
        the insertion order from none at ``old_id`` to all of it at ``new_id`` and for every
        node after it (:meth:`PoseGraph.reoptimize_from`; the loop edges must be in the graph).
        Chaining drift grows along the path, so the share of it each keyframe carries grows
        too."""
        if old_id not in self._nodes or new_id not in self._nodes:
            return
        first = self._nodes.index(old_id)
        # Fixed nodes (anchors, kept places) stay where they are and carry no share.
        after = [k for k in self._nodes[first + 1 :] if k not in self._anchors]
        if new_id not in after:
            return
        last = after.index(new_id) + 1
        poses, moved = self.graph.poses(), {}
        for j, k in enumerate(after, start=1):
            share = min(1.0, j / last)
            moved[k] = interpolate_correction(correction, share) @ poses[k]
        self.graph.reoptimize_from(moved)

    def _confirms(self, held: _HeldLoop) -> str | None:
        """None when ``held`` confirms the loop held before it (both imply the same correction
        for ``held``'s keyframe, within ``loop.confirmation_keyframes``, and close on different
        old keyframes); else why not."""
        c, event = self.config, held.event
        first = self._held
        if first is None or any(k not in self.graph for o, n, _ in first.edges for k in (o, n)):
            return "held for confirmation"
        order = self.reference_order
        gap = order.index(event.query_id) - order.index(first.event.query_id)
        if gap > c.confirmation_keyframes:
            return f"held for confirmation (the held loop is {gap} keyframes old)"
        if event.candidate_id == first.event.candidate_id:
            # The same old image seen again from the next keyframes repeats the first loop's
            # mistake if it was one (a look-alike view from metres away): not a second opinion.
            return f"held for confirmation (closes on keyframe {event.candidate_id} as the held loop does)"
        current = self.graph.pose(event.query_id)
        by_first, by_this = first.correction @ current, held.correction @ current
        apart_m = float(np.linalg.norm(by_first.translation - by_this.translation))
        apart_deg = _angle_deg(by_first.rotation.T @ by_this.rotation)
        if apart_deg > c.confirmation_max_deg or apart_m > c.confirmation_max_ratio * event.path_since_m:
            return (
                f"held for confirmation (disagrees with the loop of keyframe {first.event.query_id} "
                f"by {apart_m:.3f} and {apart_deg:.1f} deg)"
            )
        held.event.confirmation_apart = (apart_m, apart_deg)
        return None

    def _add_loop_edge(self, old: int, new: int, relative: Sim3, event: LoopEvent) -> None:
        sigmas = EdgeSigmas()
        self.graph.add_loop(old, new, relative, sigmas)
        self._edges.append((old, new, relative, sigmas, True))
        event.edges.append((old, new))

    def _align_on_old(
        self, prediction: Any, ids: list[int], old: list[int]
    ) -> tuple[Sim3, float, float, float] | None:
        """G <- V from the old keyframes' stored points (current estimates) and the window's
        depth at the same pixels; (transform, residual / scene depth, inlier share, median of
        each point's residual / its depth)."""
        src, dst, weights, depths = [], [], [], []
        for k in old:
            i = ids.index(k)
            stored = self.points[k]
            sampled = self._window_depth_at_stored(prediction, i, k)
            if sampled is None:
                continue
            depth_v = np.asarray(prediction.depth[i], np.float64)
            ok = sampled[1]
            if ok.sum() < 10:
                continue
            node = self.graph.pose(k)
            local = stored.local_points(ok)
            dst.append(node.apply(local))
            p_v = unproject_pixels(
                depth_v, np.asarray(prediction.model_intrinsics[i]), stored.rows[ok], stored.cols[ok]
            )
            T = np.asarray(prediction.cam_to_world[i], np.float64)
            src.append(p_v @ T[:3, :3].T + T[:3, 3])
            conf_v = np.asarray(prediction.depth_conf[i], np.float64)[stored.rows[ok], stored.cols[ok]]
            weights.append(np.sqrt(np.maximum(conf_v, 0) * np.maximum(stored.conf[ok], 0)))
            depths.append(stored.depth[ok] * node.scale)
        if not src:
            return None
        src_all, dst_all, w_all = np.concatenate(src), np.concatenate(dst), np.concatenate(weights)
        scene = float(np.median(np.concatenate(depths)))
        try:
            fit = robust_umeyama(
                src_all,
                dst_all,
                w_all,
                with_scale=True,
                inlier_threshold=self.chaining.inlier_threshold * scene,
                method=self.chaining.robust_method,
                rng=self._rng,
                scale_estimator=self.chaining.scale_estimator,
            )
        except ValueError:
            return None
        inlier_ratio = float((w_all * fit.inliers).sum() / max(w_all.sum(), 1e-12))
        relative = median_relative_residual(fit.residuals, np.concatenate(depths), w_all)
        return fit.transform, float(fit.rms / scene), inlier_ratio, relative

    def _path_length(self, old_id: int, new_id: int) -> float:
        """Length (G units) of the reference keyframes' estimated path from ``old_id`` to ``new_id``."""
        order = self.reference_order
        if old_id not in order or new_id not in order:
            return float("nan")
        a, b = sorted((order.index(old_id), order.index(new_id)))
        pts = np.array([self.graph.pose(k).translation for k in order[a : b + 1]])
        return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum()) if len(pts) > 1 else 0.0

    # ---------------------------------------------------------------------------- results

    def poses(self) -> dict[int, Sim3]:
        """Current estimates of every node (G <- keyframe, node units)."""
        return self.graph.poses()

    def cloud(self, poses: dict[int, Sim3] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored keyframe points placed with ``poses`` (default: the current estimates):
        xyz [N, 3] in G, rgb [N, 3] uint8, conf [N]."""
        poses = poses or self.poses()
        xyz, rgb, conf = [], [], []
        for k, stored in self.points.items():
            if k not in poses:
                continue
            local = stored.local_points()
            xyz.append(poses[k].apply(local))
            rgb.append(stored.rgb)
            conf.append(stored.conf)
        if not xyz:
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
        return np.concatenate(xyz), np.concatenate(rgb), np.concatenate(conf)
