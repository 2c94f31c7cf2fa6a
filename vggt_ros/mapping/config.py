"""Configuration of the mapping pipeline: one dataclass per stage, validated on construction.

Every field is flat (a number, string, bool or list of strings) with a docstring stating its
unit, so the ROS node can declare each one as a parameter (``<section>.<field>``, e.g.
``window.size``). Invalid values raise ``ValueError`` naming the field and the rule it broke.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

SCALE_SOURCES = ("none", "odometry", "depth", "rig", "fixed")
ROBUST_METHODS = ("irls", "ransac")
SCALE_ESTIMATORS = ("forward", "symmetric")  # vggt_ros.geometry.alignment.SCALE_ESTIMATORS
PLACE_RECOGNITION = ("orb", "encoder")


def _fail(section: str, name: str, value: object, rule: str) -> None:
    raise ValueError(f"{section}.{name} = {value!r}: {rule}")


class _Validated:
    """Shared checks; subclasses list their rules in ``_rules``."""

    _section = ""

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                _fail(self._section, name, value, "must be a finite number > 0")

    def _non_negative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                _fail(self._section, name, value, "must be a finite number >= 0")

    def _integer(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            _fail(self._section, name, value, f"must be an integer >= {minimum}")

    def _fraction(self, name: str, lo: float = 0.0, hi: float = 1.0) -> None:
        value = getattr(self, name)
        if not (isinstance(value, (int, float)) and lo <= value <= hi):
            _fail(self._section, name, value, f"must lie in [{lo}, {hi}]")

    def _choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            _fail(self._section, name, value, f"must be one of {choices}")

    def to_dict(self) -> dict[str, object]:
        """Flat ``{field: value}`` (lists copied), e.g. to declare ROS parameters."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), list) else v) for f in fields(self)
        }


@dataclass
class KeyframeConfig(_Validated):
    """When a camera frame becomes a keyframe (tested per camera on every frame)."""

    min_parallax_px: float = 10.0
    """Median optical flow since the last keyframe, in pixels of the original image, that makes a
    keyframe (measured by sparse Lucas-Kanade flow on a downscaled gray image). Smaller: windows
    span less motion (more windows per metre); 10 rather than 30 cut the embedded model's
    held-out APE from 10.8 to 6.6 % of the path (docs/mapping.md, "Keyframes")."""
    min_tracked_ratio: float = 0.3
    """Share of the last keyframe's corners still tracked (0-1) below which the view has changed
    enough to need a keyframe whatever the flow says."""
    min_translation_m: float = 0.25
    """Odometry translation of the base since the last keyframe (metres) that makes a keyframe;
    only used when frames carry odometry."""
    min_rotation_deg: float = 15.0
    """Odometry rotation since the last keyframe (degrees) that makes a keyframe."""
    max_interval_s: float = 10.0
    """Elapsed time (seconds) after which a frame becomes a keyframe even without motion;
    0 disables the time criterion."""
    min_interval_s: float = 0.1
    """No two keyframes closer than this (seconds): caps the keyframe rate."""
    flow_image_width: int = 160
    """Width (pixels) of the gray image the flow runs on; the height keeps the aspect."""
    max_flow_features: int = 100
    """Corners tracked from each keyframe."""
    reject_blur: bool = False
    """Refuse blurred candidates (the next sharp frame becomes the keyframe instead)."""
    blur_ratio: float = 0.5
    """A frame is blurred when its sharpness (variance of the Laplacian of the small gray image)
    is below this fraction of the median sharpness of the recent frames."""
    blur_history: int = 30
    """Number of recent frames whose median sharpness is the blur reference."""

    _section = "keyframe"

    def __post_init__(self) -> None:
        self._non_negative("min_parallax_px", "min_translation_m", "min_rotation_deg")
        self._non_negative("max_interval_s", "min_interval_s")
        self._fraction("min_tracked_ratio")
        self._fraction("blur_ratio")
        self._integer("flow_image_width", 32)
        self._integer("max_flow_features", 8)
        self._integer("blur_history", 3)
        if self.max_interval_s and self.max_interval_s < self.min_interval_s:
            _fail(self._section, "max_interval_s", self.max_interval_s, "must be >= min_interval_s (or 0)")


@dataclass
class WindowConfig(_Validated):
    """Which keyframes go into one VGGT inference."""

    size: int = 8
    """Keyframe times per window (a rig contributes all its cameras at each time)."""
    stride: int = 4
    """New keyframe times between two inferences; ``size - stride`` times are shared with the
    previous window and anchor the chaining."""
    rig_cameras: list[str] = field(default_factory=list)
    """Camera ids of a rig, all of which go into every keyframe time; empty = the cameras seen so
    far. The first one is the reference camera (it carries the path)."""
    rig_time_tolerance_s: float = 0.02
    """Frames of different cameras at most this far apart (seconds) belong to the same time."""
    rig_max_wait_s: float = 0.5
    """A keyframe time still missing cameras after this long (seconds of stamps) is used with the
    cameras it has."""
    num_track_queries: int = 0
    """Query points tracked through each window (corners of its first keyframe); 0 = no tracks."""
    calibrated_intrinsics: bool = True
    """After the network, use each frame's camera_info intrinsics (mapped to the model's
    resolution) instead of the network's predicted field of view: pose refinement, chaining, map,
    clouds and loop verification. Frames without camera_info keep the network's; false: the
    network's everywhere (calibration.py, docs/mapping.md)."""

    _section = "window"

    def __post_init__(self) -> None:
        self._integer("size", 2)
        self._integer("stride", 1)
        if self.stride >= self.size:
            _fail(
                self._section,
                "stride",
                self.stride,
                f"must be < size ({self.size}) so windows share keyframes",
            )
        if not isinstance(self.rig_cameras, list) or not all(
            isinstance(c, str) and c for c in self.rig_cameras
        ):
            _fail(self._section, "rig_cameras", self.rig_cameras, "must be a list of non-empty strings")
        if len(set(self.rig_cameras)) != len(self.rig_cameras):
            _fail(self._section, "rig_cameras", self.rig_cameras, "must not repeat a camera")
        self._non_negative("rig_time_tolerance_s")
        self._positive("rig_max_wait_s")
        self._integer("num_track_queries", 0)
        if not isinstance(self.calibrated_intrinsics, bool):
            _fail(self._section, "calibrated_intrinsics", self.calibrated_intrinsics, "must be true or false")

    @property
    def overlap(self) -> int:
        """Keyframe times shared by consecutive windows."""
        return self.size - self.stride


@dataclass
class ChainingConfig(_Validated):
    """Alignment of each new window to the global frame and when to refuse it."""

    max_median_relative_residual: float = 0.3
    """Largest accepted median, over the dense correspondences, of a point's residual after the
    fit divided by its depth (an AbsRel-like disagreement between the window and the map). The
    acceptance test that counts: a trained network's right windows disagree with the map by
    0.06-0.21 (10th-90th percentile), a garbage window by about 0.8 (docs/mapping.md)."""
    max_residual: float = 1.0
    """Largest accepted alignment residual: weighted inlier RMS of the shared keyframes' points
    divided by their median depth (dimensionless). 1.0 = off except for a fit without inliers;
    at most ``inlier_threshold`` by construction, so only a smaller value tests anything (0.03
    suits a predictor whose windows agree to a few percent)."""
    inlier_threshold: float = 0.05
    """Correspondence residual, relative to the median depth, that counts as an inlier (in the
    robust fit and in the inlier share)."""
    min_inlier_ratio: float = 0.0
    """Smallest accepted confidence-weighted share of inlier correspondences (0-1); 0 = off
    (a trained network's windows have a median share of 0.12 at ``inlier_threshold`` 0.05)."""
    max_center_residual: float = 1.0
    """Largest accepted residual of a shared camera centre, relative to the median depth;
    1.0 = only gross failures (a camera a whole scene depth off)."""
    min_shared_keyframes: int = 1
    """Windows need at least this many keyframes already in the map to be chained; fewer (the
    previous window was rejected) re-anchors on the newest mapped keyframes."""
    points_per_keyframe: int = 1500
    """Dense correspondences sampled per shared keyframe."""
    conf_percentile: float = 30.0
    """Dense correspondences come from pixels above this confidence percentile (0-100) in both
    the old and the new prediction."""
    center_weight: float = 0.2
    """Share (0-1) of the total alignment weight given to the camera-centre correspondences (the
    rest goes to the dense points)."""
    robust_method: str = "ransac"
    """"irls" or "ransac" (see vggt_ros.geometry.alignment)."""
    scale_estimator: str = "symmetric"
    """"symmetric" (sqrt of the ratio of the two point sets' spreads) or "forward" (Umeyama's
    least squares). The window and the map are both network predictions; the forward scale is
    biased low by their noise (regression dilution, ~1 % a window at 5 % depth noise) and the
    bias compounds: on a 15-minute run the map shrank 3,000-fold and the pose graph became
    singular (docs/mapping.md)."""
    max_consecutive_rejections: int = 2
    """After this many rejected windows in a row the next one starts a new segment (placed by
    odometry, or by continuity with the last mapped keyframe) instead of being refused again."""

    _section = "chaining"

    def __post_init__(self) -> None:
        self._positive(
            "max_residual", "inlier_threshold", "max_center_residual", "max_median_relative_residual"
        )
        self._fraction("min_inlier_ratio")
        self._integer("min_shared_keyframes", 1)
        self._integer("points_per_keyframe", 10)
        self._fraction("conf_percentile", 0.0, 100.0)
        self._fraction("center_weight")
        self._choice("robust_method", ROBUST_METHODS)
        self._choice("scale_estimator", SCALE_ESTIMATORS)
        self._integer("max_consecutive_rejections", 0)


@dataclass
class ScaleConfig(_Validated):
    """Where metric scale comes from."""

    source: str = "none"
    """"none" (normalized VGGT units, reported as not metric), "odometry" (baseline ratio),
    "depth" (metric depth topic), "rig" (known camera extrinsics), "fixed" (``fixed_factor``)."""
    fixed_factor: float = 1.0
    """Metres per normalized unit for source "fixed"."""
    min_baseline_m: float = 0.1
    """Odometry / rig baselines shorter than this (metres) give no scale sample (too noisy)."""
    history: int = 200
    """Most recent scale samples the estimate is the median of (smoothing window)."""
    min_samples: int = 3
    """Samples needed before the estimate is reported as metric."""
    depth_min_m: float = 0.1
    """Sensor depths below this (metres) are ignored."""
    depth_max_m: float = 10.0
    """Sensor depths above this (metres) are ignored."""
    depth_conf_percentile: float = 50.0
    """Only predicted pixels above this confidence percentile (0-100) are compared with the
    sensor."""

    _section = "scale"

    def __post_init__(self) -> None:
        self._choice("source", SCALE_SOURCES)
        self._positive("fixed_factor", "depth_max_m")
        self._non_negative("min_baseline_m", "depth_min_m")
        self._integer("history", 1)
        self._integer("min_samples", 1)
        self._fraction("depth_conf_percentile", 0.0, 100.0)
        if self.depth_max_m <= self.depth_min_m:
            _fail(self._section, "depth_max_m", self.depth_max_m, "must be > depth_min_m")


@dataclass
class MapConfig(_Validated):
    """The global voxel map."""

    voxel_size_m: float = 0.05
    """Voxel edge (map units: metres when the scale is metric, else normalized units)."""
    max_points: int = 2_000_000
    """Point budget: beyond it the least recently updated, least confident voxels are dropped."""
    radius_m: float = 0.0
    """Keep only voxels within this distance (map units) of the newest camera; 0 = no limit."""
    conf_percentile: float = 50.0
    """Per window, only pixels above this depth-confidence percentile (0-100) enter the map."""
    min_confidence: float = 0.0
    """And only pixels with at least this depth confidence (VGGT's confidence is >= 1)."""
    pixel_stride: int = 2
    """Use every n-th pixel of the model-resolution depth in each direction."""

    _section = "map"

    def __post_init__(self) -> None:
        self._positive("voxel_size_m")
        self._integer("max_points", 1)
        self._non_negative("radius_m", "min_confidence")
        self._fraction("conf_percentile", 0.0, 100.0)
        self._integer("pixel_stride", 1)


@dataclass
class LoopConfig(_Validated):
    """The back end: Sim(3) pose graph of keyframes, loop detection and verification
    (vggt_ros.mapping.backend; docs/mapping.md)."""

    enabled: bool = True
    """Keep the pose graph and look for loops; false = chaining only (the map never corrects)."""
    min_gap_keyframes: int = 15
    """A loop candidate is at least this many reference-camera keyframes older than the query."""
    place_recognition: str = "orb"
    """How loop candidates are found: orb (ORB bag of words, then a fundamental-matrix RANSAC
    check: precise, misses revisits in low-texture scenes) or encoder (EXPERIMENTAL: the cosine
    of the model's own encoder tokens, mean-pooled per keyframe; it finds more revisits and more
    look-alikes, and the VGGT verification window must reject the latter, which with
    vggt-compact-v3 it does not: false loops on 4 of 4 sequences measured). docs/mapping.md."""
    encoder_min_similarity: float = 0.5
    """encoder: fewest cosine similarity (descriptors centred on the mean of the stored ones) of
    a candidate."""
    min_matches: int = 40
    """Fewest geometrically consistent ORB matches (fundamental-matrix RANSAC) of a candidate."""
    orb_fast_threshold: int = 7
    """FAST corner threshold of the ORB features (grey levels; OpenCV's default is 20). ORB
    keeps the 500 strongest corners, so a lower threshold only matters where corners are weak:
    in dim, low-contrast rooms 20 finds almost none (3 per keyframe on a generated held-out
    figure-eight) and no loop closes. 20 before 2026-12-05."""
    max_verifications: int = 1
    """Candidates verified with a VGGT window per processed window (each costs one inference)."""
    min_view_overlap: float = 0.4
    """A loop's two keyframes must each see at least this share of the other's surface in the
    verification window (its own depth and poses). The window's alignment checks only the old
    keyframes against the map; how the new one stands to them is the network's guess, and
    between views that share little surface it is a poor one (measured: true loops 0.46-0.97,
    a loop between cameras 2.4 m apart sharing 0.28 of their surface 0.30). 0 = off."""
    refine_verification: bool = True
    """Re-measure the verification window's poses by PnP on its own depth, as each window's are
    (``refine.*``; only while ``refine.enabled``): the new keyframe then stands to the old ones
    where their SIFT matches put it, not where the network guesses. False: the head's poses."""
    max_correction_ratio: float = 0.3
    """A loop may move the new keyframe by at most this share of the path travelled since the old
    one: drift is a few percent of the path; a wrong loop between look-alike places usually
    implies a jump as long as the path itself."""
    max_correction_deg: float = 30.0
    """A loop may rotate the new keyframe by at most this many degrees."""
    confirmation_keyframes: int = 8
    """A loop whose correction exceeds the two bounds above, but passes every other test, is
    held; a second one, found within this many reference keyframes, that implies the same
    correction and closes on another old keyframe accepts both (0 = off: every large
    correction is refused). Drift after a long lap can be larger than the bounds; a look-alike
    place rarely implies one wrong correction twice, except seen again from the next keyframe
    (the same old keyframe: since 2026-12-05 not a confirmation)."""
    confirmation_max_deg: float = 30.0
    """Two held loops imply the same correction when the rotations they give the later keyframe
    differ by at most this many degrees ..."""
    confirmation_max_ratio: float = 0.2
    """... and its positions by at most this share of the path travelled since the old keyframe."""
    confirmed_max_correction_ratio: float = 1.0
    """A confirmed pair may still move the new keyframe by at most this share of the path (a
    chained path cannot drift further than it has travelled)."""
    map_rebuild_min_windows: int = 10
    """After an accepted loop, keyframes, TF and path move to the optimised poses at once, and
    the voxel map is rebuilt from the keyframes' stored points unless the last rebuild was fewer
    than this many windows ago: then at the first window this many windows after it (and
    whenever the map is saved). A rebuild handles up to max_keyframes x points_per_keyframe
    points (about 0.4 s on two CPU cores at 2,000 keyframes), and a robot that keeps revisiting
    places closes a loop every few windows. 1: rebuild after every loop."""
    spread_correction: bool = True
    """Once an accepted loop's edges are in the graph, re-optimise the keyframes between the old
    and the new keyframe (and after it), starting from them moved by a growing share of the
    loop's correction (none at the old one, all of it at the new one and after), the keyframes
    before the loop held where they are. Without it a large
    correction (tens of degrees after a long lap) leaves the loop edges so far off that their
    robust kernel ignores them."""
    measured_scale: bool = True
    """Loop edges and the loop's correction take each keyframe's unit (its scale) as the
    verification window measures it (its depth there against its stored depth, times the
    window's scale in the map), so a loop corrects scale drift as well as position. False: the
    units the keyframes were created with (a loop then restates the drift; before 2026-12-03)."""
    loop_kernel: float = 10.0
    """Cauchy parameter of loop edges, in their standard deviations: a loop edge further off
    than this loses weight quickly (with ``spread_correction`` the optimisation starts with the
    loop closed, and a small value lets the chain's odometry edges pull it open again)."""
    points_per_keyframe: int = 1500
    """Points kept per keyframe (relative to it) to verify loops and rebuild the map after an
    optimisation."""
    max_keyframes: int = 2000
    """Keyframes in the pose graph, the place database and the point store. Beyond it the graph
    is re-seeded with the newest half (their current poses, the edges between them) and the
    kept places (``keep_places``): memory and cost per keyframe stay bounded; loops to the other
    older keyframes can no longer close, their points leave a rebuilt map, their poses stay
    where they were last optimised."""
    keep_places: bool = True
    """At a re-seed, also keep one reference keyframe (with its successor) per place of the part
    dropped (a cell of ``place_cell`` x the scene depth and a 45-degree sector of viewing
    direction), fixed where it was last optimised, with its stored points and place entry, up
    to a quarter of ``max_keyframes``: later passes still close loops on the first map of a
    place, which holds their scale and position against drift, and a rebuilt map keeps the
    places not visited lately. False: the newest half only (before 2026-12-05)."""
    place_cell: float = 0.5
    """Side of a kept place's cell, as a share of the keyframes' median scene depth."""
    cooldown_keyframes: int = 10
    """After a closed loop, this many reference keyframes are not searched for loops (a robot
    going round the same place again would otherwise close a loop at every keyframe)."""
    odometry_rotation_sigma_deg: float = 1.0
    """Standard deviation of a window edge's relative rotation (grows with the window's
    disagreement with the map, see ``odometry_sigma_disagreement``)."""
    odometry_translation_sigma: float = 0.05
    """Of its relative translation, as a share of the scene depth."""
    odometry_scale_sigma: float = 0.03
    """Of the log of its relative scale."""
    odometry_current_unit: bool = True
    """A window's edges take each keyframe it shares with the map at its current unit in the
    graph: the scale the back end's corrections have given it, at which the window was aligned
    on the map. False: the unit it was created with, which turns every earlier correction of
    its scale into a scale (and distance) step to the new keyframes; the steps compound (the
    map's passes drifted apart x1.5-2 in long runs; before 2026-12-05)."""
    odometry_sigma_disagreement: float = 0.1
    """A window's edge standard deviations are multiplied by 1 + d / this, at most 10x, where d
    is the window's median relative residual to the map (chaining's acceptance statistic): a
    window that disagreed with the map by this much gets edges with twice the standard
    deviations (a quarter of the weight)."""
    sensor_odometry: bool = True
    """Add an odometry-sensor edge (metres, from odom_topic) between consecutive reference-camera
    keyframes once the scale is metric: it constrains their rigid motion, which pulls back the
    scale and position drift of chaining even where no loop closes."""
    sensor_rotation_sigma_deg: float = 0.5
    """Standard deviation of an odometry-sensor edge's relative rotation."""
    sensor_translation_share: float = 0.02
    """Of its relative translation, as a share of the distance between the two keyframes."""
    sensor_translation_floor_m: float = 0.005
    """Plus this many metres (odometry is never exact, even standing still)."""
    sensor_map_rebuild_windows: int = 10
    """With odometry-sensor edges, keyframes move to their optimised poses after every window
    (the next windows chain onto the corrected poses); the voxel map is rebuilt from them every
    this many windows (a rebuild handles up to max_keyframes x points_per_keyframe points)."""

    _section = "loop"

    def __post_init__(self) -> None:
        self._integer("min_gap_keyframes", 2)
        self._integer("min_matches", 8)
        self._integer("orb_fast_threshold", 1)
        self._integer("max_verifications", 0)
        self._integer("points_per_keyframe", 10)
        self._integer("max_keyframes", 10)
        self._integer("cooldown_keyframes", 0)
        self._integer("sensor_map_rebuild_windows", 1)
        self._integer("map_rebuild_min_windows", 1)
        self._integer("confirmation_keyframes", 0)
        self._positive(
            "max_correction_ratio",
            "max_correction_deg",
            "confirmation_max_deg",
            "confirmation_max_ratio",
            "confirmed_max_correction_ratio",
            "loop_kernel",
            "odometry_rotation_sigma_deg",
            "odometry_translation_sigma",
            "odometry_scale_sigma",
            "odometry_sigma_disagreement",
            "sensor_rotation_sigma_deg",
            "sensor_translation_floor_m",
        )
        self._non_negative("sensor_translation_share")
        self._choice("place_recognition", PLACE_RECOGNITION)
        self._fraction("encoder_min_similarity", -1.0, 1.0)
        self._fraction("min_view_overlap")
        self._positive("place_cell")
        for name in (
            "enabled",
            "sensor_odometry",
            "spread_correction",
            "keep_places",
            "measured_scale",
            "odometry_current_unit",
            "refine_verification",
        ):
            if not isinstance(getattr(self, name), bool):
                _fail(self._section, name, getattr(self, name), "must be true or false")


@dataclass
class RefineConfig(_Validated):
    """Window poses refined by PnP on the network's own depth (``pose_refine.py``; docs/mapping.md,
    "Pose refinement"): each frame is placed on the previous frame of its camera from matched
    keypoints (SIFT, then tracked corners) and that frame's depth, where the placement is
    trusted; else the camera head's pose stays."""

    enabled: bool = True
    """Refine each window's poses before chaining (false: the camera head's poses as they are)."""
    sift: bool = True
    """Place each frame by SIFT matches first (scale-invariant: forward motion enlarges the
    image, and Lucas-Kanade tracks then come out short and shrink the step); the tracked corners
    where SIFT's placement is not used. False: tracked corners only."""
    min_sift_inliers: int = 12
    """Fewest PnP inliers among the SIFT matches for their placement to be used (no share:
    ratio-tested matches carry many outliers in dim rooms)."""
    max_corners: int = 400
    """Corners tracked per frame pair (model-resolution image)."""
    reprojection_px: float = 2.0
    """RANSAC inlier threshold, pixels of the model-resolution image."""
    min_inliers: int = 20
    """Fewest PnP inliers for a placement to be used."""
    min_inlier_share: float = 0.5
    """Smallest share (0-1) of the tracked corners that must be PnP inliers."""
    max_rotation_deg: float = 0.0
    """When > 0: a placement whose rotation differs from the camera head's by more (degrees) is
    not used. 0: no check. With the cameras' calibration (``window.calibrated_intrinsics``) PnP's
    rotations are the better ones: on the model card's turn-in-place sequence the compact
    model's head errs by 10-35 degrees per step and PnP by 1-2 (docs/mapping.md)."""
    head_tolerance: float = 6.0
    """The head's rotation, given the translation that best fits PnP's N inliers, is kept where
    its median reprojection error is within ``1 + head_tolerance / sqrt(N)`` times PnP's (plus
    ``head_tolerance_px``): PnP fits the depth's errors too, and with the correspondences in a
    narrow band of the image it trades rotation for translation; the more inliers, the better
    the medians are known, so the smaller the factor (N = 36: 2x, N = 144: 1.5x). 0 (and
    ``head_tolerance_px`` 0): PnP's pose wherever it places the frame. Chosen on held-out
    sequences that are not the model card's (docs/mapping.md "Pose refinement")."""
    head_tolerance_px: float = 0.1
    """Pixels added to the head's allowance (a floor where PnP fits its inliers almost exactly)."""
    max_step_ratio: float = 0.0
    """When >= 1: a placement whose step (translation length) is more than this factor longer or
    shorter than the head's is not used. 0: no limit (the head's steps err more: median
    |log ratio| 0.41 against PnP's 0.16, docs/mapping.md)."""
    threads: int = 4
    """Threads that do the refinement's image work (the frames' keypoints, the pairs' matches and
    tracked corners; in the background while the network runs) and place the frame pairs at once
    (OpenCV releases the GIL; a window of 8 frames has 7 pairs). More helps on many-core machines
    only."""

    _section = "refine"

    def __post_init__(self) -> None:
        for name in ("enabled", "sift"):
            if not isinstance(getattr(self, name), bool):
                _fail(self._section, name, getattr(self, name), "must be true or false")
        self._integer("max_corners", 10)
        self._integer("min_sift_inliers", 6)
        self._integer("threads", 1)
        self._positive("reprojection_px")
        self._non_negative("head_tolerance", "head_tolerance_px", "max_rotation_deg")
        ratio = self.max_step_ratio
        if not (isinstance(ratio, (int, float)) and (ratio == 0 or ratio >= 1.0)):
            _fail(self._section, "max_step_ratio", ratio, "must be 0 (no limit) or a number >= 1")
        self._integer("min_inliers", 6)
        self._fraction("min_inlier_share")


def _sections() -> dict[str, type]:
    return {
        "keyframe": KeyframeConfig,
        "window": WindowConfig,
        "refine": RefineConfig,
        "chaining": ChainingConfig,
        "scale": ScaleConfig,
        "map": MapConfig,
        "loop": LoopConfig,
    }


@dataclass
class PipelineConfig:
    """All stages; the node declares ``<section>.<field>`` parameters from these."""

    keyframe: KeyframeConfig = field(default_factory=KeyframeConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    chaining: ChainingConfig = field(default_factory=ChainingConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    map: MapConfig = field(default_factory=MapConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        for name, kind in _sections().items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(
                    f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}"
                )
        if self.chaining.min_shared_keyframes > self.window.overlap:
            raise ValueError(
                f"chaining.min_shared_keyframes = {self.chaining.min_shared_keyframes}: must be <= "
                f"window.size - window.stride = {self.window.overlap} (the keyframes windows share)"
            )

    @staticmethod
    def from_flat(params: dict[str, object]) -> PipelineConfig:
        """Build from ``{"section.field": value}`` (ROS parameter names); unknown keys raise."""
        sections: dict[str, dict[str, object]] = {}
        for key, value in params.items():
            section, _, name = key.partition(".")
            sections.setdefault(section, {})[name] = value
        built = {}
        for section, values in sections.items():
            if section not in _sections():
                raise ValueError(
                    f"unknown parameter section {section!r} (expected one of {tuple(_sections())})"
                )
            known = {f.name for f in fields(_sections()[section])}
            for name in values:
                if name not in known:
                    raise ValueError(f"unknown parameter {section}.{name}")
            built[section] = _sections()[section](**values)
        return PipelineConfig(**built)

    def to_flat(self) -> dict[str, object]:
        """``{"section.field": value}`` for every field (the ROS parameter names)."""
        out: dict[str, object] = {}
        for section in _sections():
            for name, value in getattr(self, section).to_dict().items():
                out[f"{section}.{name}"] = value
        return out
