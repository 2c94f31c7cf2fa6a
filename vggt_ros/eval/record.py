"""Record the pipeline's outputs during a replay to a bag, for RViz / Foxglove.

Topics (bag time = stamp of the newest keyframe of the window, so the recording plays in step
with the input bag; every topic name starts with ``prefix``, default ``/vggt``):

========================  ===========================  =============================================
topic                     type                         content
========================  ===========================  =============================================
``depth/image``           sensor_msgs/Image 32FC1      depth of each keyframe new in a window
``depth/camera_info``     sensor_msgs/CameraInfo       intrinsics at the depth's (model) resolution
``depth/confidence``      sensor_msgs/Image 32FC1      VGGT depth confidence
``points``                sensor_msgs/PointCloud2      the window's points (x y z rgb confidence), map
``map``                   sensor_msgs/PointCloud2      the final global map (latched, at the end)
``tracks``                vggt_ros/msg/KeypointTracks  keypoint tracks (when the window has some)
``odometry``              nav_msgs/Odometry            newest keyframe pose, ``map`` -> camera
``path``                  nav_msgs/Path                the reference camera's keyframe path
``/tf``                   tf2_msgs/TFMessage           ``map -> <camera>_vggt`` per new keyframe, and
                                                       ``map -> odom`` when the pipeline gives it
========================  ===========================  =============================================

The camera frames get a ``_vggt`` suffix so they do not fight with the input bag's own TF tree
(``base_link -> camera``) when both bags play together.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vggt_ros.eval import bags

logger = logging.getLogger(__name__)
TRACKS_TYPE = "vggt_ros/msg/KeypointTracks"


def _register_tracks_type(store: Any) -> bool:
    """Register KeypointTracks from the package's msg/ definition; False when it is not found."""
    if TRACKS_TYPE in store.types:
        return True
    msg_file = Path(__file__).resolve().parents[2] / "msg" / "KeypointTracks.msg"
    if not msg_file.is_file():
        return False
    from rosbags.typesys import get_types_from_msg

    store.register(get_types_from_msg(msg_file.read_text(), TRACKS_TYPE))
    return True


class OutputRecorder:
    """Writes what the node would publish for each window result (see the module docstring)."""

    def __init__(
        self, path: str | Path, storage: str = "sqlite3", prefix: str = "/vggt", map_frame: str = "map"
    ):
        self.writer = bags.BagWriter(path, storage=storage)
        self.writer.__enter__()
        self.store = self.writer.store
        self.prefix = prefix.rstrip("/")
        self.map_frame = map_frame
        self.tracks_ok = _register_tracks_type(self.store)
        if not self.tracks_ok:
            logger.warning("msg/KeypointTracks.msg not found: tracks are not recorded")
        self._last_stamp = 0.0
        self.windows = 0

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def write(self, job: Any, result: Any) -> None:
        """Record one WindowResult (rejected windows are skipped, as the node publishes nothing)."""
        if not result.accepted:
            return
        s = self.store
        self.windows += 1
        shared = set(getattr(job, "shared_ids", []) or [])
        newest = float(np.max(result.stamps))
        self._last_stamp = max(self._last_stamp, newest)
        transforms = []
        for i, kf_id in enumerate(result.keyframe_ids):
            if kf_id in shared:
                continue
            t, cam = float(result.stamps[i]), str(result.camera_ids[i])
            depth = np.asarray(result.depth[i], np.float32)
            self.writer.write(
                self.topic("depth/image"), bags.image_message(s, depth, t, cam, "32FC1"), newest
            )
            conf = np.asarray(result.depth_conf[i], np.float32)
            self.writer.write(
                self.topic("depth/confidence"), bags.image_message(s, conf, t, cam, "32FC1"), newest
            )
            info = bags.camera_info_message(
                s, result.model_intrinsics[i], depth.shape[0], depth.shape[1], t, cam
            )
            self.writer.write(self.topic("depth/camera_info"), info, newest)
            transforms.append(
                bags.transform_stamped(s, result.cam_to_map[i], t, self.map_frame, f"{cam}_vggt")
            )
        if result.map_to_odom is not None:
            transforms.append(bags.transform_stamped(s, result.map_to_odom, newest, self.map_frame, "odom"))
        if transforms:
            self.writer.write("/tf", bags.tf_message(s, transforms), newest)
        xyz, rgb, conf = result.points_map
        self.writer.write(
            self.topic("points"), bags.pointcloud2_message(s, xyz, rgb, conf, newest, self.map_frame)
        )
        last = int(np.argmax(result.stamps))
        odom = bags.odometry(
            s, result.cam_to_map[last], newest, self.map_frame, f"{result.camera_ids[last]}_vggt"
        )
        self.writer.write(self.topic("odometry"), odom)
        if result.tracks is not None and self.tracks_ok:
            self.writer.write(self.topic("tracks"), self._tracks(result, newest))

    def _tracks(self, result: Any, stamp: float) -> Any:
        tr = result.tracks
        s = self.store
        ids = [int(k) for k in tr.keyframe_ids]
        where = {k: i for i, k in enumerate(result.keyframe_ids)}
        n, f = tr.pixels.shape[1], tr.pixels.shape[0]
        Time = s.types["builtin_interfaces/msg/Time"]
        stamps = []
        for k in ids:
            ns = bags.to_ns(float(result.stamps[where[k]]) if k in where else stamp)
            stamps.append(Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))
        cams = [str(result.camera_ids[where[k]]) if k in where else "" for k in ids]
        points = np.asarray(tr.points_map, np.float32).reshape(n, 3)
        query_frame = ids.index(tr.query_keyframe_id) if tr.query_keyframe_id in ids else 0
        # Message layout is track-major (k = t * F + f); the pipeline's arrays are frame-major.
        return s.types[TRACKS_TYPE](
            header=bags.header(s, stamp, self.map_frame),
            window_id=int(result.window_id),
            num_tracks=n,
            num_frames=f,
            frame_stamps=stamps,
            frame_ids=cams,
            camera_ids=cams,
            keyframe_ids=np.asarray(ids, np.uint64),
            track_ids=np.arange(n, dtype=np.uint64),
            query_frame=np.full(n, query_frame, np.uint32),
            query_pixels=np.asarray(tr.query_pixels, np.float32).ravel(),
            has_point=np.isfinite(points).all(axis=1),
            points=points.ravel(),
            pixels=np.asarray(tr.pixels, np.float32).transpose(1, 0, 2).ravel(),
            visibility=np.asarray(tr.visibility, np.float32).T.ravel(),
            confidence=np.asarray(tr.confidence, np.float32).T.ravel(),
        )

    def close(self, pipeline: Any | None = None) -> None:
        """Write the final path and map (when ``pipeline`` is given) and close the bag."""
        try:
            if pipeline is not None:
                path = list(pipeline.path() or [])
                if path:
                    msg = bags.path_message(
                        self.store, [p[0] for p in path], [p[1] for p in path], self.map_frame
                    )
                    self.writer.write(self.topic("path"), msg, self._last_stamp)
                gm = pipeline.global_map
                cloud = bags.pointcloud2_message(
                    self.store, gm.points(), gm.colors(), gm.confidences(), self._last_stamp, self.map_frame
                )
                self.writer.write(self.topic("map"), cloud)
        finally:
            self.writer.__exit__(None, None, None)
