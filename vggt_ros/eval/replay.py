"""Bag replay through the perception pipeline (the node's logic, without ROS).

:func:`replay_bag` reads a bag in three passes:

1. context: camera_info, /tf and /tf_static, odometry and the ground-truth source (small);
2. images, in bag-time order, as :class:`vggt_ros.mapping.Frame` into
   :class:`vggt_ros.mapping.PerceptionPipeline` (``add_frame`` then ``process``), either as fast
   as possible (every window processed in turn, nothing dropped) or paced at ``rate`` x the
   recorded rate with inference on a worker thread behind a bounded queue, as the node runs it
   (windows arriving while the queue is full are dropped and counted);
3. ground-truth depth at the stamps of the keyframes that got depth.

It returns a :class:`ReplayResult` with the estimated and ground-truth camera trajectories,
the newest depth of every keyframe, per-window and per-frame latencies, and drop counts, which
:mod:`vggt_ros.eval.report` turns into metrics and files.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggt_ros.eval import bags
from vggt_ros.eval.tf import TfBuffer, TfError
from vggt_ros.mapping import interpreter
from vggt_ros.mapping.export.trajectory import Trajectory, associate, interpolate, read_tum

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = (
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/PoseWithCovarianceStamped",
    "geometry_msgs/msg/TransformStamped",
    "nav_msgs/msg/Odometry",
)
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_DEPTH_TOPIC = "/camera/depth/image_raw"
DEFAULT_ODOM_TOPIC = "/odom"
DEFAULT_GT_TOPIC = "/ground_truth/pose"


@dataclass
class GroundTruthSpec:
    """Where the ground-truth camera poses come from (one of the three).

    Attributes:
        tum: a TUM file of poses (of ``body``; default the camera optical frame).
        topic: a pose topic in the bag (PoseStamped, PoseWithCovarianceStamped,
            TransformStamped or Odometry).
        tf: (world frame, body frame) looked up in the bag's /tf and /tf_static.
        body: frame the poses describe when it is not the camera optical frame; the static TF
            ``body <- camera`` is composed on. Odometry and TF name it themselves.
    """

    tum: Path | None = None
    topic: str | None = None
    tf: tuple[str, str] | None = None
    body: str | None = None

    @staticmethod
    def parse(text: str) -> GroundTruthSpec:
        """``tum:FILE``, ``topic:/name`` (or just ``/name``), ``tf:WORLD:BODY`` or ``none``."""
        kind, _, rest = text.partition(":")
        if text.startswith("/"):
            return GroundTruthSpec(topic=text)
        if kind == "tum" and rest:
            return GroundTruthSpec(tum=Path(rest))
        if kind == "topic" and rest:
            return GroundTruthSpec(topic=rest)
        if kind == "tf" and rest.count(":") == 1:
            world, body = rest.split(":")
            return GroundTruthSpec(tf=(world, body))
        raise ValueError(f"ground truth {text!r}: expected tum:FILE, topic:/name, /name or tf:WORLD:BODY")

    def describe(self) -> str:
        if self.tum is not None:
            return f"tum:{self.tum}"
        if self.topic is not None:
            return f"topic:{self.topic}"
        if self.tf is not None:
            return f"tf:{self.tf[0]}:{self.tf[1]}"
        return "none"


@dataclass
class ReplayOptions:
    """What to replay and how.

    Attributes:
        image_topics: camera image topics (Image or CompressedImage); the first is the reference
            camera. Default: ``/camera/image_raw`` if present, else every image topic except
            depth ones.
        camera_info_topics: per image topic; default ``<image topic's namespace>/camera_info``
            when present (else the pipeline uses VGGT's own intrinsics).
        depth_gt_topic: ground-truth depth (32FC1 metres or 16UC1 millimetres); "" disables;
            default ``/camera/depth/image_raw`` when present.
        metric_depth_topic: a depth topic fed to the pipeline as ``Frame.metric_depth`` (for
            scale source "depth"); None disables.
        odom_topic: odometry fed as ``Frame.odom_pose``; "" disables; default ``/odom``.
        ground_truth: ground-truth source; default the ``/ground_truth/pose`` topic when present.
        rate: None = as fast as possible; r > 0 = r x the recorded rate (node-like dropping).
        queue_size: bounded job queue in rate mode.
        max_frames: stop after this many images of the reference camera.
        stamp_tolerance: seconds between an image and its depth / ground truth to match them.
    """

    image_topics: list[str] | None = None
    camera_info_topics: list[str] | None = None
    depth_gt_topic: str | None = None
    metric_depth_topic: str | None = None
    odom_topic: str | None = None
    ground_truth: GroundTruthSpec | None = None
    rate: float | None = None
    queue_size: int = 1
    max_frames: int | None = None
    stamp_tolerance: float = 0.02


@dataclass
class KeyframeRecord:
    """Newest pipeline output for one keyframe (model-resolution depth)."""

    keyframe_id: int
    stamp: float
    camera_id: str
    window_id: int
    cam_to_map: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    model_intrinsics: np.ndarray
    intrinsics: np.ndarray
    image: np.ndarray
    gt_depth: np.ndarray | None = None


@dataclass
class WindowRecord:
    """One window: its acceptance, latency (ms) and stage timings."""

    window_id: int
    accepted: bool
    reason: str
    residual: float
    num_keyframes: int
    newest_stamp: float
    latency_ms: float
    queue_ms: float
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ReplayResult:
    """Everything the report needs (see the module docstring).

    Attributes:
        estimate: reference camera keyframe poses (optical -> map) from ``pipeline.path()``.
        ground_truth: reference camera poses (optical -> GT world), or None.
        keyframes: {keyframe id: KeyframeRecord} of keyframes in accepted windows.
        windows: per processed or dropped window.
        frame_latency_ms: [F] ``add_frame`` time per image (the callback cost).
        frame_stamps: [F] image stamps; num_frames: images read (all cameras).
        dropped_windows / dropped_frames: rate mode, windows refused by the full queue and the
            new keyframes they carried; decode_failures: images that could not be decoded.
        scale: the pipeline's final ScaleEstimate; metric: its ``metric`` flag.
        points: final global map (xyz, rgb, conf).
        duration_s: bag time covered by the images; wall_s: replay wall time.
        options: the options used; topics: {topic: msgtype} of the bag.
        window_results: list of every processed window's ``WindowResult`` (in processing order).
        reference_camera: camera id of the first image topic.
        gt_depth_by_keyframe: ground-truth depth of every reference keyframe of any window.
        chained_estimate: the reference keyframes as chained, before loop corrections.
        loops: every verified loop candidate (``vggt_ros.mapping.backend.LoopEvent``).
        keyframe_stamps: stamps of the keyframes the loops name.
        warm_up: what :func:`warm_up_predictor` ran before the replay, or None.
        reference_camera_info: the reference camera's camera_info intrinsics [3, 3] and the
            (H, W) they are for, or None without camera_info (the loop report's ground-truth
            view overlap needs the true camera, not the pipeline's estimate).
        pipeline_stats: the pipeline's counters at the end (``PerceptionPipeline.stats``:
            keyframes, windows, calibrated and refined frames, ...).
        frame_cache: the predictor's frame cache over the replay (its size, hits, misses,
            stale, evictions; ``FrameTokenCache.usage_since``), or None without one.
    """

    estimate: Trajectory
    ground_truth: Trajectory | None
    keyframes: dict[int, KeyframeRecord]
    windows: list[WindowRecord]
    frame_latency_ms: np.ndarray
    frame_stamps: np.ndarray
    num_frames: int
    dropped_windows: int
    dropped_frames: int
    decode_failures: int
    scale: Any
    points: tuple[np.ndarray, np.ndarray, np.ndarray]
    duration_s: float
    wall_s: float
    options: ReplayOptions
    topics: dict[str, str]
    window_results: list[Any] = field(default_factory=list)
    reference_camera: str | None = None
    gt_depth_by_keyframe: dict[int, np.ndarray] = field(default_factory=dict)
    chained_estimate: Trajectory | None = None
    loops: list[Any] = field(default_factory=list)
    keyframe_stamps: dict[int, float] = field(default_factory=dict)
    warm_up: dict[str, Any] | None = None
    reference_camera_info: tuple[np.ndarray, tuple[int, int]] | None = None
    pipeline_stats: dict[str, int] = field(default_factory=dict)
    frame_cache: dict[str, int] | None = None

    @property
    def metric(self) -> bool:
        return bool(getattr(self.scale, "metric", False))


# ------------------------------------------------------------------------------------------------
# Topic resolution
# ------------------------------------------------------------------------------------------------
def _namespace(topic: str) -> str:
    return topic.rsplit("/", 1)[0] if topic.count("/") > 1 else ""


def resolve_options(options: ReplayOptions, topics: dict[str, str]) -> ReplayOptions:
    """Fill defaults from the bag's topics and check every named topic exists with a usable type.

    Raises:
        bags.BagError: a named topic is missing or of the wrong type, or no image topic exists.
    """
    o = ReplayOptions(**vars(options))

    def need(topic: str, kinds: tuple[str, ...], what: str) -> None:
        if topic not in topics:
            have = ", ".join(sorted(topics)) or "no topics"
            raise bags.BagError(f"{what} topic {topic} not in the bag (it has: {have})")
        if topics[topic] not in kinds:
            raise bags.BagError(f"{what} topic {topic} is {topics[topic]}, expected {' or '.join(kinds)}")

    if not o.image_topics:
        if DEFAULT_IMAGE_TOPIC in topics:
            o.image_topics = [DEFAULT_IMAGE_TOPIC]
        else:
            o.image_topics = sorted(t for t, k in topics.items() if k in IMAGE_TYPES and "depth" not in t)
        if not o.image_topics:
            raise bags.BagError(f"no image topic in the bag (topics: {', '.join(sorted(topics)) or 'none'})")
    for t in o.image_topics:
        need(t, IMAGE_TYPES, "image")
    if o.camera_info_topics is None:
        guesses = [f"{_namespace(t.removesuffix('/compressed'))}/camera_info" for t in o.image_topics]
        o.camera_info_topics = [g if g in topics else "" for g in guesses]
    elif len(o.camera_info_topics) != len(o.image_topics):
        raise bags.BagError(
            f"{len(o.camera_info_topics)} camera_info topics for {len(o.image_topics)} image topics"
        )
    for t in o.camera_info_topics:
        if t:
            need(t, ("sensor_msgs/msg/CameraInfo",), "camera_info")
    if o.depth_gt_topic is None:
        o.depth_gt_topic = DEFAULT_DEPTH_TOPIC if DEFAULT_DEPTH_TOPIC in topics else ""
    if o.depth_gt_topic:
        need(o.depth_gt_topic, ("sensor_msgs/msg/Image",), "ground-truth depth")
    if o.metric_depth_topic:
        need(o.metric_depth_topic, ("sensor_msgs/msg/Image",), "metric depth")
    if o.odom_topic is None:
        o.odom_topic = DEFAULT_ODOM_TOPIC if topics.get(DEFAULT_ODOM_TOPIC) == "nav_msgs/msg/Odometry" else ""
    if o.odom_topic:
        need(o.odom_topic, ("nav_msgs/msg/Odometry",), "odometry")
    if o.ground_truth is None:
        o.ground_truth = (
            GroundTruthSpec(topic=DEFAULT_GT_TOPIC) if DEFAULT_GT_TOPIC in topics else GroundTruthSpec()
        )
    if o.ground_truth.topic:
        need(o.ground_truth.topic, POSE_TYPES, "ground-truth pose")
    if o.ground_truth.tum is not None and not Path(o.ground_truth.tum).is_file():
        raise bags.BagError(f"ground-truth TUM file not found: {o.ground_truth.tum}")
    if o.rate is not None and not o.rate > 0:
        raise ValueError(f"rate must be > 0 (or None for as fast as possible), got {o.rate}")
    return o


# ------------------------------------------------------------------------------------------------
# Pass 1: context
# ------------------------------------------------------------------------------------------------
@dataclass
class _Context:
    camera_info: dict[str, tuple[np.ndarray, tuple[int, int], str]] = field(default_factory=dict)
    tf: TfBuffer = field(default_factory=TfBuffer)
    odom: Trajectory | None = None
    odom_child: str = "base_link"
    gt_raw: Trajectory | None = None
    gt_body: str | None = None
    gt_world: str = ""


def _read_context(path: Path, o: ReplayOptions, topics: dict[str, str]) -> _Context:
    ctx = _Context()
    wanted = {t for t in o.camera_info_topics or [] if t}
    wanted |= {t for t in ("/tf", "/tf_static") if t in topics}
    if o.odom_topic:
        wanted.add(o.odom_topic)
    gt = o.ground_truth or GroundTruthSpec()
    if gt.topic:
        wanted.add(gt.topic)
    odom_s, odom_T, gt_s, gt_T = [], [], [], []
    for topic, _, _, msg in bags.read_messages(path, sorted(wanted)):
        if topic in ("/tf", "/tf_static"):
            ctx.tf.add_message(msg, static=topic == "/tf_static")
        elif topic in (o.camera_info_topics or []) and topic not in ctx.camera_info:
            K, hw = bags.intrinsics_from_camera_info(msg)
            ctx.camera_info[topic] = (K, hw, msg.header.frame_id)
        if o.odom_topic and topic == o.odom_topic:
            odom_s.append(bags.stamp_of(msg))
            odom_T.append(bags.matrix_from_msg(msg))
            ctx.odom_child = msg.child_frame_id or ctx.odom_child
        if gt.topic and topic == gt.topic:
            gt_s.append(bags.stamp_of(msg))
            gt_T.append(bags.matrix_from_msg(msg))
            ctx.gt_world = msg.header.frame_id
            if hasattr(msg, "child_frame_id") and msg.child_frame_id:
                ctx.gt_body = msg.child_frame_id
    if odom_s:
        ctx.odom = Trajectory(odom_s, odom_T).sorted()
    if gt_s:
        ctx.gt_raw = Trajectory(gt_s, gt_T).sorted()
    elif gt.tum is not None:
        ctx.gt_raw = read_tum(gt.tum)
    elif gt.tf is not None:
        world, body = gt.tf
        stamps = ctx.tf.dynamic_stamps(world, body)
        if not len(stamps):
            raise bags.BagError(
                f"no dynamic TF between {world!r} and {body!r} in the bag (frames: {sorted(ctx.tf.frames)})"
            )
        poses = [ctx.tf.lookup(world, body, t) for t in stamps if ctx.tf.can_lookup(world, body, t)]
        stamps = [t for t in stamps if ctx.tf.can_lookup(world, body, t)]
        ctx.gt_raw, ctx.gt_body, ctx.gt_world = Trajectory(stamps, poses), body, world
    if gt.body:
        ctx.gt_body = gt.body
    return ctx


# ------------------------------------------------------------------------------------------------
# Pass 2: the pipeline
# ------------------------------------------------------------------------------------------------
class _DepthLookup:
    """Random access to depth images by stamp (bag time window, then nearest header stamp)."""

    def __init__(self, path: Path, topic: str, tolerance: float) -> None:
        self.path, self.topic, self.tolerance = path, topic, tolerance
        self._reader = bags._open_reader(path)
        self._conns = [c for c in self._reader.connections if c.topic == topic]

    def get(self, stamp: float, slack: float = 0.5) -> np.ndarray | None:
        best, best_dt = None, self.tolerance
        start, stop = bags.to_ns(stamp - slack), bags.to_ns(stamp + slack)
        for conn, _, raw in self._reader.messages(connections=self._conns, start=max(start, 0), stop=stop):
            msg = self._reader.deserialize(raw, conn.msgtype)
            dt = abs(bags.stamp_of(msg) - stamp)
            if dt <= best_dt:
                best, best_dt = msg, dt
        return None if best is None else bags.depth_from_image(best)

    def close(self) -> None:
        self._reader.close()


def _decode_image(msgtype: str, msg: Any) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        return bags.rgb_from_compressed(msg)
    return bags.rgb_from_image(msg)


def warm_up_predictor(
    path: str | Path,
    predictor: Any,
    window_times: int,
    overlap_times: int,
    windows: int,
    options: ReplayOptions | None = None,
    stride_times: int = 0,
) -> dict[str, Any] | None:
    """Run ``windows`` windows of each window shape (copies of the bag's first reference
    image) through ``predictor`` before a timed replay.

    The first windows at a new input shape pay one-off costs (torch.compile compiles, CUDA
    graphs are captured, cuDNN/cuBLAS pick kernels): tens of seconds with ``--backend torch``
    that belong to start-up, not to the steady latency a robot sees. A window holds
    ``window_times`` keyframe times of every camera; one re-anchored after a rejection holds
    ``overlap_times`` more, hence two shapes (the steady one runs last); with a frame cache the
    steady windows that add ``stride_times`` keyframe times run too (``warm_up_window_shapes``'s
    ``new_frames``). Returns {"windows",
    "frames", "image_hw", "seconds"}, or None when ``windows`` is 0 or no image decodes.
    """
    if windows <= 0:
        return None
    topics = {t: i.msgtype for t, i in bags.bag_topics(Path(path)).items()}
    o = resolve_options(options or ReplayOptions(), topics)
    cameras = len(o.image_topics)
    frame_counts = (window_times * cameras, (window_times + overlap_times) * cameras)
    from vggt_ros.engine.predictor import warm_up_window_shapes

    for _, msgtype, _, msg in bags.read_messages(Path(path), o.image_topics[:1]):
        try:
            rgb = _decode_image(msgtype, msg)
        except (bags.BagError, ValueError):
            continue
        t0 = time.perf_counter()
        counts = warm_up_window_shapes(predictor, rgb, frame_counts, windows, stride_times * cameras)
        # As the node does after its warm-up: start-up's objects out of the collector's reach.
        interpreter.freeze_survivors()
        seconds = time.perf_counter() - t0
        logger.info(
            "warm-up: %d window(s) of %s frames at %dx%d in %.1f s", windows, counts, *rgb.shape[:2], seconds
        )
        return {"windows": windows, "frames": counts, "image_hw": list(rgb.shape[:2]), "seconds": seconds}
    return None


def replay_bag(
    path: str | Path,
    pipeline: Any,
    options: ReplayOptions | None = None,
    progress: Callable[[int], None] | None = None,
    on_result: Callable[[Any, Any], None] | None = None,
) -> ReplayResult:
    """Replay ``path`` through ``pipeline`` (a ``PerceptionPipeline``; see the module docstring).

    Args:
        pipeline: built by the caller with its config and predictor (so tests can inject a
            test double predictor).
        progress: called with 1 per image read (e.g. ``tqdm.update``).
        on_result: called with (WindowJob, WindowResult) after every processed window (used to
            record the outputs to a bag).

    Raises:
        bags.BagError: unreadable bag, missing or mistyped topics.
    """
    from vggt_ros.mapping import Frame

    path = Path(path)
    topics = {t: i.msgtype for t, i in bags.bag_topics(path).items()}
    o = resolve_options(options or ReplayOptions(), topics)
    ctx = _read_context(path, o, topics)
    info_of = dict(zip(o.image_topics, o.camera_info_topics))
    metric_lookup = (
        _DepthLookup(path, o.metric_depth_topic, o.stamp_tolerance) if o.metric_depth_topic else None
    )

    keyframes: dict[int, KeyframeRecord] = {}
    windows: list[WindowRecord] = []
    window_results: list[Any] = []
    frame_ms: list[float] = []
    frame_stamps: list[float] = []
    images_by_kf: dict[int, np.ndarray] = {}
    counters = {"frames": 0, "ref_frames": 0, "decode": 0, "dropped_windows": 0, "dropped_frames": 0}
    seen_in_jobs: set[int] = set()
    lock = threading.Lock()

    def handle(job: Any, queued_at: float) -> None:
        t0 = time.perf_counter()
        result = pipeline.process(job)
        t1 = time.perf_counter()
        with lock:
            _record(job, result, (t1 - t0) * 1e3, (t0 - queued_at) * 1e3)
        if on_result is not None:
            on_result(job, result)

    def _record(job: Any, result: Any, latency_ms: float, queue_ms: float) -> None:
        window_results.append(result)
        windows.append(
            WindowRecord(
                int(result.window_id),
                bool(result.accepted),
                str(result.reason),
                float(result.residual),
                len(result.keyframe_ids),
                float(np.max(result.stamps)) if len(result.stamps) else float("nan"),
                latency_ms,
                queue_ms,
                {k: float(v) for k, v in (result.timings or {}).items()},
            )
        )
        if not result.accepted:
            return
        for i, kf_id in enumerate(result.keyframe_ids):
            keyframes[int(kf_id)] = KeyframeRecord(
                int(kf_id),
                float(result.stamps[i]),
                str(result.camera_ids[i]),
                int(result.window_id),
                np.asarray(result.cam_to_map[i], np.float64),
                np.asarray(result.depth[i], np.float32),
                np.asarray(result.depth_conf[i], np.float32),
                np.asarray(result.model_intrinsics[i], np.float64),
                np.asarray(result.intrinsics[i], np.float64),
                images_by_kf.get(int(kf_id), np.zeros((0, 0, 3), np.uint8)),
            )

    jobs: queue.Queue | None = None
    worker: threading.Thread | None = None
    if o.rate is not None:
        jobs = queue.Queue(maxsize=max(1, o.queue_size))

        def work() -> None:
            while True:
                item = jobs.get()
                if item is None:
                    return
                handle(*item)

        worker = threading.Thread(target=work, name="vggt-replay-inference", daemon=True)
        worker.start()

    wall0 = time.perf_counter()
    first_stamp: float | None = None
    reference_camera: str | None = None
    try:
        for topic, msgtype, _, msg in bags.read_messages(path, o.image_topics):
            if (
                o.max_frames is not None
                and topic == o.image_topics[0]
                and counters["ref_frames"] >= o.max_frames
            ):
                break
            stamp = bags.stamp_of(msg)
            counters["frames"] += 1
            counters["ref_frames"] += topic == o.image_topics[0]
            if progress is not None:
                progress(1)
            if o.rate is not None:
                first_stamp = stamp if first_stamp is None else first_stamp
                delay = (stamp - first_stamp) / o.rate - (time.perf_counter() - wall0)
                if delay > 0:
                    time.sleep(delay)
            try:
                rgb = _decode_image(msgtype, msg)
            except (bags.BagError, ValueError) as exc:
                counters["decode"] += 1
                logger.warning("skipping an image on %s at %.3f s: %s", topic, stamp, exc)
                continue
            frame = _make_frame(Frame, msg, topic, stamp, rgb, info_of.get(topic, ""), ctx, metric_lookup)
            if topic == o.image_topics[0] and reference_camera is None:
                reference_camera = frame.camera_id
            t0 = time.perf_counter()
            job = pipeline.add_frame(frame)
            frame_ms.append((time.perf_counter() - t0) * 1e3)
            frame_stamps.append(stamp)
            if job is None:
                continue
            for kf in job.keyframes:
                images_by_kf.setdefault(int(kf.id), kf.frame.image)
            new_ids = {int(k) for k in job.keyframe_ids} - seen_in_jobs
            seen_in_jobs.update(new_ids)
            if jobs is None:
                handle(job, time.perf_counter())
                continue
            try:
                jobs.put_nowait((job, time.perf_counter()))
            except queue.Full:
                # The node drops work it cannot keep up with instead of blocking its callbacks.
                counters["dropped_windows"] += 1
                counters["dropped_frames"] += len(new_ids)
    finally:
        if jobs is not None and worker is not None:
            jobs.put(None)
            worker.join()
        if metric_lookup is not None:
            metric_lookup.close()
    wall = time.perf_counter() - wall0

    estimate = _estimate(pipeline)
    ref_camera = next((r.camera_id for r in keyframes.values()), None)
    ground_truth = _ground_truth(ctx, o, estimate, ref_camera)
    # Ground-truth depth of every reference-camera keyframe of any window (accepted or not: the
    # window metrics score every window the network saw).
    gt_depth_by_kf: dict[int, np.ndarray] = {}
    if o.depth_gt_topic:
        wanted = {
            int(kf_id): float(stamp)
            for r in window_results
            for kf_id, stamp, cam in zip(r.keyframe_ids, r.stamps, r.camera_ids)
            if cam == reference_camera
        }
        wanted.update(
            {kf_id: rec.stamp for kf_id, rec in keyframes.items() if rec.camera_id == reference_camera}
        )
        lookup = _DepthLookup(path, o.depth_gt_topic, o.stamp_tolerance)
        try:
            for kf_id, stamp in sorted(wanted.items()):
                depth = lookup.get(stamp)
                if depth is not None:
                    gt_depth_by_kf[kf_id] = depth
        finally:
            lookup.close()
        for kf_id, rec in keyframes.items():
            rec.gt_depth = gt_depth_by_kf.get(kf_id)
    # Final (possibly re-optimised) keyframe poses replace the per-window ones.
    for kf_id, pose in (pipeline.keyframe_poses() or {}).items():
        if int(kf_id) in keyframes:
            keyframes[int(kf_id)].cam_to_map = np.asarray(pose, np.float64)
    pipeline.refresh_map()  # a loop's correction may still wait for its map rebuild
    gm = pipeline.global_map
    points = (np.asarray(gm.points()), np.asarray(gm.colors()), np.asarray(gm.confidences()))
    stamps = np.asarray(frame_stamps)
    return ReplayResult(
        estimate=estimate,
        ground_truth=ground_truth,
        keyframes=dict(sorted(keyframes.items())),
        windows=sorted(windows, key=lambda w: w.window_id),
        frame_latency_ms=np.asarray(frame_ms),
        frame_stamps=stamps,
        num_frames=counters["frames"],
        dropped_windows=counters["dropped_windows"],
        dropped_frames=counters["dropped_frames"],
        decode_failures=counters["decode"],
        scale=pipeline.scale,
        points=points,
        duration_s=float(stamps.max() - stamps.min()) if len(stamps) > 1 else 0.0,
        wall_s=wall,
        options=o,
        topics=topics,
        window_results=window_results,
        reference_camera=reference_camera,
        gt_depth_by_keyframe=gt_depth_by_kf,
        chained_estimate=_chained(pipeline),
        loops=list(getattr(pipeline, "loops", [])),
        keyframe_stamps={
            int(e_id): float(info.stamp)
            for event in getattr(pipeline, "loops", [])
            for e_id in (event.query_id, event.candidate_id)
            if (info := pipeline.keyframe(e_id)) is not None
        },
        reference_camera_info=_reference_camera_info(ctx, o),
        pipeline_stats={k: int(v) for k, v in pipeline.stats.items()},
    )


def _reference_camera_info(ctx: _Context, o: ReplayOptions) -> tuple[np.ndarray, tuple[int, int]] | None:
    """camera_info intrinsics of the first image topic and the (H, W) they are for, or None."""
    topic = (o.camera_info_topics or [""])[0]
    if not topic or topic not in ctx.camera_info:
        return None
    K, hw, _ = ctx.camera_info[topic]
    return np.asarray(K, np.float64), (int(hw[0]), int(hw[1]))


def _make_frame(
    frame_cls: type,
    msg: Any,
    topic: str,
    stamp: float,
    rgb: np.ndarray,
    info_topic: str,
    ctx: _Context,
    metric_lookup: _DepthLookup | None,
) -> Any:
    camera_id = msg.header.frame_id or topic
    K = None
    if info_topic and info_topic in ctx.camera_info:
        K, (h, w), _ = ctx.camera_info[info_topic]
        if (h, w) != rgb.shape[:2]:
            # camera_info of another resolution (e.g. binning): scale it to the image.
            K = K.copy()
            K[0] *= rgb.shape[1] / w
            K[1] *= rgb.shape[0] / h
    odom_pose = camera_to_base = None
    if ctx.odom is not None:
        at, ok = interpolate(ctx.odom, np.array([stamp]), max_gap=1.0)
        odom_pose = at.poses[0] if ok[0] else None
    try:
        camera_to_base = ctx.tf.lookup(ctx.odom_child, camera_id, stamp)
    except TfError:
        camera_to_base = None
    metric = metric_lookup.get(stamp) if metric_lookup is not None else None
    return frame_cls(
        stamp=stamp,
        camera_id=camera_id,
        image=rgb,
        intrinsics=K,
        odom_pose=odom_pose,
        metric_depth=metric,
        camera_to_base=camera_to_base,
    )


def _chained(pipeline: Any) -> Trajectory | None:
    """The reference keyframes as chaining placed them, before loop corrections (or None when
    the pipeline has no back end)."""
    chained = getattr(pipeline, "chained_path", None)
    if chained is None:
        return None
    path = list(chained() or [])
    if not path:
        return None
    return Trajectory([s for s, _ in path], [np.asarray(T, np.float64) for _, T in path]).sorted()


def _estimate(pipeline: Any) -> Trajectory:
    path = list(pipeline.path() or [])
    if not path:
        return Trajectory(np.zeros(0), np.zeros((0, 4, 4)))
    return Trajectory([s for s, _ in path], [np.asarray(T, np.float64) for _, T in path]).sorted()


def _ground_truth(
    ctx: _Context, o: ReplayOptions, estimate: Trajectory, ref_camera: str | None
) -> Trajectory | None:
    """Ground-truth poses of the reference camera's optical frame ``ref_camera`` (in the GT
    world), at the estimate's stamps where the ground truth is dense."""
    if ctx.gt_raw is None:
        return None
    gt = ctx.gt_raw
    if ctx.gt_body and ref_camera and ctx.gt_body.lstrip("/") != ref_camera.lstrip("/"):
        try:
            body_from_cam = ctx.tf.lookup(ctx.gt_body, ref_camera, float(gt.stamps[0]))
        except TfError as exc:
            raise bags.BagError(
                f"ground truth describes {ctx.gt_body!r}, and no static TF links it to camera "
                f"{ref_camera!r}: {exc}"
            ) from exc
        gt = gt.transformed(right=body_from_cam)
    # Match the estimate's stamps: interpolate dense ground truth, keep sparse as it is.
    if len(estimate) and len(gt) > 1:
        i, _ = associate(estimate.stamps, gt.stamps, o.stamp_tolerance)
        if len(i) < len(estimate):
            at, ok = interpolate(gt, estimate.stamps, max_gap=0.2)
            if ok.sum() > len(i):
                return at
    return gt
