"""Ground-truth rosbags from the procedural renderer (:mod:`vggt_ros.eval.synthetic`).

Layout of a generated bag (all names are the defaults of ``vggt-ros eval`` as well):

=================================  ============================  =====================================
topic                              type                          content
=================================  ============================  =====================================
``/camera/image_raw``              sensor_msgs/Image (rgb8)      the rendered frames
``/camera/camera_info``            sensor_msgs/CameraInfo        exact pinhole intrinsics, no distortion
``/camera/depth/image_raw``        sensor_msgs/Image (32FC1)     ground-truth z-depth, metres
``/camera_right/...``              (same three)                  second camera of a rig (optional)
``/odom``                          nav_msgs/Odometry             ``odom -> base_link``, exact unless
                                                                 ``odom_drift`` (:func:`drifting_odometry`)
``/ground_truth/pose``             geometry_msgs/PoseStamped     ``camera_optical_frame`` in ``world``
``/tf``                            tf2_msgs/TFMessage            ``odom -> base_link`` per frame
``/tf_static``                     tf2_msgs/TFMessage            ``world -> odom`` (identity),
                                                                 ``base_link -> <camera>_optical_frame``
=================================  ============================  =====================================

Frames: ``world`` is the renderer's world (z-up, REP-103, metres); ``odom`` coincides with it
(exact odometry; with ``odom_drift`` the odometry wanders off it as wheel odometry does);
``base_link`` is a REP-103 body (x forward, y left, z up) carried by the
camera: ``base_link -> camera_optical_frame`` is the fixed optical rotation
(:data:`BASE_TO_OPTICAL`), and the right camera sits ``baseline`` metres along the left
camera's optical x (= -y of base_link). All messages of frame k carry the stamp
``start + k / fps``; the bag time of each message equals its header stamp.

The generator's parameters are stored in the bag's metadata (``custom_data``) as JSON under
``vggt_ros.synthetic``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt_ros.eval import bags
from vggt_ros.eval.synthetic import SyntheticSequence, render_sequence
from vggt_ros.mapping.export.trajectory import Trajectory

# Points in the optical frame (x right, y down, z forward) -> REP-103 body (x forward, y left,
# z up): columns are the optical axes expressed in the body.
BASE_TO_OPTICAL = np.array(
    [[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
WORLD_FRAME, ODOM_FRAME, BASE_FRAME = "world", "odom", "base_link"
GT_POSE_TOPIC, ODOM_TOPIC = "/ground_truth/pose", "/odom"
DEFAULT_START = 1000.0  # seconds; away from 0, which ROS tools read as "no stamp"


@dataclass(frozen=True)
class CameraTopics:
    """Topic and frame names of one camera (``name`` as in ``/<name>/image_raw``)."""

    name: str

    @property
    def image(self) -> str:
        return f"/{self.name}/image_raw"

    @property
    def info(self) -> str:
        return f"/{self.name}/camera_info"

    @property
    def depth(self) -> str:
        return f"/{self.name}/depth/image_raw"

    @property
    def frame(self) -> str:
        return f"{self.name}_optical_frame"


LEFT, RIGHT = CameraTopics("camera"), CameraTopics("camera_right")


def base_poses(seq: SyntheticSequence) -> np.ndarray:
    """[S, 4, 4] ``world_from_base_link`` of the primary camera's body."""
    return seq.cam_to_world @ np.linalg.inv(BASE_TO_OPTICAL)


def ground_truth_trajectory(seq: SyntheticSequence, start: float = DEFAULT_START) -> Trajectory:
    """The primary camera's optical-frame poses in ``world`` at the bag's stamps."""
    return Trajectory(seq.stamps + start, seq.cam_to_world)


def drifting_odometry(base: np.ndarray, drift: float, seed: int = 0) -> np.ndarray:
    """Wheel-odometry-like poses [S, 4, 4] ``odom <- base_link`` from the true ones.

    Each step's motion is re-integrated with a systematic error (a wheel-radius error: every
    translation scaled by ``1 + drift / 2``), random translation noise of ``drift / 2`` of the
    step's length, and a heading (yaw) error of ``drift`` radians per metre driven, random walk.
    ``drift`` 0.02 is a typical 2 % of distance; 0 returns ``base`` unchanged.
    """
    from scipy.spatial.transform import Rotation

    base = np.asarray(base, np.float64)
    if drift <= 0 or len(base) < 2:
        return base.copy()
    rng = np.random.default_rng([int(seed), 0x0D0])
    out = [base[0].copy()]
    for k in range(1, len(base)):
        step = np.linalg.inv(base[k - 1]) @ base[k]
        length = float(np.linalg.norm(step[:3, 3]))
        noisy = step.copy()
        noisy[:3, 3] = step[:3, 3] * (1.0 + drift / 2) + rng.normal(size=3) * (drift / 2) * length / np.sqrt(
            3
        )
        yaw = Rotation.from_euler("z", rng.normal() * drift * length).as_matrix()
        noisy[:3, :3] = yaw @ step[:3, :3]
        out.append(out[-1] @ noisy)
    return np.stack(out)


def _body_twist(poses: np.ndarray, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite-difference body-frame twist [S, 3] linear (m/s), [S, 3] angular (rad/s)."""
    from scipy.spatial.transform import Rotation

    lin, ang = np.zeros((len(poses), 3)), np.zeros((len(poses), 3))
    for k in range(len(poses) - 1):
        dt = stamps[k + 1] - stamps[k]
        rel = np.linalg.inv(poses[k]) @ poses[k + 1]
        lin[k] = rel[:3, 3] / dt
        ang[k] = Rotation.from_matrix(rel[:3, :3]).as_rotvec() / dt
    if len(poses) > 1:
        lin[-1], ang[-1] = lin[-2], ang[-2]
    return lin, ang


def write_sequence_bag(
    seq: SyntheticSequence,
    path: str | Path,
    storage: str = "sqlite3",
    compress: bool = False,
    start: float = DEFAULT_START,
    with_depth: bool = True,
    progress: Callable[[int], None] | None = None,
    odom_drift: float = 0.0,
) -> Path:
    """Write a rendered sequence as a bag with the layout of the module docstring.

    Args:
        seq: the sequence (with ``seq.right`` for a rig).
        path: new rosbag2 directory (or ``.bag`` for ROS 1).
        storage: "sqlite3" or "mcap" (rosbag2 only).
        compress: zstd-compress the bag file (rosbag2 only; roughly halves the size).
        start: stamp of frame 0, seconds.
        with_depth: also write the ground-truth depth topics.
        progress: called with 1 after each frame (e.g. a tqdm bar's ``update``).
        odom_drift: odometry error as a share of the distance driven (:func:`drifting_odometry`,
            seeded by the sequence's seed); 0 writes exact odometry. TF ``odom -> base_link``
            follows the odometry, as a robot's would.

    Returns:
        ``path``.
    """
    path = Path(path)
    stamps = seq.stamps + start
    base = drifting_odometry(base_poses(seq), odom_drift, seq.seed)
    lin, ang = _body_twist(base, stamps)
    cameras = [(LEFT, seq)] + ([(RIGHT, seq.right)] if seq.right is not None else [])
    writer = bags.BagWriter(path, storage=storage, compress=compress)
    params = {
        "generator": "vggt_ros.eval.generate",
        "frames": seq.num_frames,
        "height": seq.height,
        "width": seq.width,
        "seed": seq.seed,
        "path": seq.path,
        "baseline": seq.baseline,
        "start": start,
        "intrinsics": seq.intrinsics.tolist(),
        "odom_drift": float(odom_drift),
    }
    if not writer.ros1:
        writer._writer.set_custom_data("vggt_ros.synthetic", json.dumps(params))
    with writer:
        s = writer.store
        static = [bags.transform_stamped(s, np.eye(4), stamps[0], WORLD_FRAME, ODOM_FRAME)]
        right_offset = np.eye(4)
        if seq.right is not None:
            right_offset[0, 3] = float(seq.baseline)
        for cam, _ in cameras:
            offset = right_offset if cam is RIGHT else np.eye(4)
            static.append(
                bags.transform_stamped(s, BASE_TO_OPTICAL @ offset, stamps[0], BASE_FRAME, cam.frame)
            )
        writer.write("/tf_static", bags.tf_message(s, static), stamps[0])
        for k, t in enumerate(stamps):
            writer.write(
                "/tf", bags.tf_message(s, [bags.transform_stamped(s, base[k], t, ODOM_FRAME, BASE_FRAME)])
            )
            writer.write(ODOM_TOPIC, bags.odometry(s, base[k], t, ODOM_FRAME, BASE_FRAME, lin[k], ang[k]))
            writer.write(GT_POSE_TOPIC, bags.pose_stamped(s, seq.cam_to_world[k], t, WORLD_FRAME))
            for cam, view in cameras:
                fx_b = float(seq.intrinsics[0, 0] * seq.baseline) if cam is RIGHT else 0.0
                writer.write(
                    cam.info,
                    bags.camera_info_message(
                        s, view.intrinsics, view.height, view.width, t, cam.frame, baseline_fx=fx_b
                    ),
                )
                writer.write(cam.image, bags.image_message(s, view.images[k], t, cam.frame, "rgb8"))
                if with_depth:
                    writer.write(cam.depth, bags.image_message(s, view.depth[k], t, cam.frame, "32FC1"))
            if progress is not None:
                progress(1)
    return path


def generate_bag(
    path: str | Path,
    num_frames: int = 16,
    height: int = 120,
    width: int = 160,
    seed: int = 0,
    fov_deg: float = 70.0,
    trajectory: str = "orbit",
    baseline: float | None = None,
    fps: float = 10.0,
    storage: str = "sqlite3",
    compress: bool = False,
    start: float = DEFAULT_START,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, SyntheticSequence]:
    """Render a sequence (see :func:`vggt_ros.eval.synthetic.render_sequence`) and write its bag.

    Returns:
        (bag path, the rendered sequence with its exact ground truth).
    """
    seq = render_sequence(
        num_frames=num_frames,
        height=height,
        width=width,
        seed=seed,
        fov_deg=fov_deg,
        path=trajectory,
        second_camera_baseline=baseline,
        fps=fps,
    )
    return write_sequence_bag(seq, path, storage, compress, start, progress=progress), seq
