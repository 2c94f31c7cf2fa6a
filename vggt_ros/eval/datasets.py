"""Public dataset folders -> rosbag2, so they replay through ``vggt-ros eval`` like any bag.

Supported layouts (the datasets themselves are not shipped; point these at a download):

* **TUM RGB-D** (``rgbd_dataset_freiburg*``): ``rgb.txt`` / ``depth.txt`` (``stamp path``),
  ``groundtruth.txt`` (TUM poses of the colour camera's optical centre in the mocap world),
  16-bit depth PNGs at 5000 units per metre, registered to the colour images. Intrinsics are the
  published per-sensor calibrations (picked from ``freiburg1/2/3`` in the folder name, else the
  ROS default 525/319.5/239.5). Images stay as recorded (the benchmark convention).
* **EuRoC MAV** (``MH_01_easy/mav0``): ``cam0/data.csv`` (``stamp_ns,filename``), ``cam0/data/*.png``
  (mono), ``cam0/sensor.yaml`` (pinhole + radtan, ``T_BS`` body <- camera), optionally ``cam1``,
  and ``state_groundtruth_estimate0/data.csv`` (body pose, quaternion w x y z). Images are
  undistorted to a pinhole camera by default (VGGT assumes one); ground truth is interpolated
  to the image stamps and composed with ``T_BS`` into optical-frame poses.

Output topics follow :mod:`vggt_ros.eval.generate` (``/camera/image_raw``, ``/camera/camera_info``,
``/camera/depth/image_raw`` (32FC1 metres), ``/camera_right/...`` for EuRoC's cam1,
``/ground_truth/pose`` (optical frame in ``world``), ``/tf_static`` ``base_link -> camera
optical frames``), so the same ``vggt-ros eval`` defaults apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vggt_ros.eval import bags
from vggt_ros.eval.generate import (
    BASE_FRAME,
    BASE_TO_OPTICAL,
    GT_POSE_TOPIC,
    LEFT,
    RIGHT,
    WORLD_FRAME,
    CameraTopics,
)
from vggt_ros.mapping.export.trajectory import Trajectory, associate, interpolate, read_tum

DATASET_KINDS = ("tum", "euroc")
TUM_DEPTH_SCALE = 5000.0  # TUM depth PNG units per metre
# Published TUM RGB-D colour calibrations (fx, fy, cx, cy, d0..d4).
TUM_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3, (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "freiburg2": (520.9, 521.0, 325.1, 249.7, (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "freiburg3": (535.4, 539.2, 320.1, 247.6, (0.0, 0.0, 0.0, 0.0, 0.0)),
    "default": (525.0, 525.0, 319.5, 239.5, (0.0, 0.0, 0.0, 0.0, 0.0)),
}


class DatasetError(ValueError):
    """A dataset folder that does not have the expected layout (user error)."""


def detect_kind(folder: str | Path) -> str:
    """ "tum" or "euroc" from the folder's files; raises DatasetError otherwise."""
    folder = Path(folder)
    if (folder / "rgb.txt").is_file():
        return "tum"
    if (folder / "mav0" / "cam0").is_dir() or (folder / "cam0" / "data.csv").is_file():
        return "euroc"
    raise DatasetError(f"{folder}: neither a TUM RGB-D folder (rgb.txt) nor EuRoC (mav0/cam0)")


def _read_list(path: Path, sep: str | None = None) -> list[list[str]]:
    if not path.is_file():
        raise DatasetError(f"missing {path}")
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append([p.strip() for p in line.split(sep)])
    return rows


@dataclass
class ConversionSummary:
    """What a conversion wrote: frames per camera, ground-truth poses, depth frames."""

    bag: Path
    frames: int
    ground_truth: int
    depth: int
    skipped: int


def _read_color(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def tum_intrinsics(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """([3, 3] K, [5] distortion) of a TUM sequence from the sensor named in its folder name."""
    key = next((k for k in TUM_INTRINSICS if k in folder.resolve().name), "default")
    fx, fy, cx, cy, dist = TUM_INTRINSICS[key]
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), np.array(dist)


def convert_tum(
    folder: str | Path,
    out: str | Path,
    storage: str = "sqlite3",
    max_frames: int | None = None,
    max_depth_diff: float = 0.02,
    progress: Callable[[int], None] | None = None,
) -> ConversionSummary:
    """TUM RGB-D folder -> rosbag2 (see the module docstring).

    Depth frames are written with their own stamps (``eval`` associates them to images); the
    ground truth is written at its own 100 Hz stamps as ``/ground_truth/pose``.
    """
    folder = Path(folder)
    rgb_rows = _read_list(folder / "rgb.txt")[:max_frames]
    depth_rows = _read_list(folder / "depth.txt") if (folder / "depth.txt").is_file() else []
    gt = read_tum(folder / "groundtruth.txt") if (folder / "groundtruth.txt").is_file() else None
    K, dist = tum_intrinsics(folder)
    rgb_stamps = np.array([float(r[0]) for r in rgb_rows])
    if depth_rows:
        d_stamps = np.array([float(r[0]) for r in depth_rows])
        order = np.argsort(d_stamps)
        _, dj = associate(rgb_stamps, d_stamps[order], max_depth_diff)
        depth_rows = [depth_rows[order[j]] for j in dj]
    skipped = written_depth = written_gt = 0
    with bags.BagWriter(out, storage=storage) as writer:
        s = writer.store
        t0 = float(rgb_stamps[0]) if len(rgb_stamps) else 0.0
        static = bags.transform_stamped(s, BASE_TO_OPTICAL, t0, BASE_FRAME, LEFT.frame)
        writer.write("/tf_static", bags.tf_message(s, [static]), t0)
        if gt is not None:
            lo, hi = rgb_stamps.min() - 1.0, rgb_stamps.max() + 1.0
            for t, T in zip(gt.stamps, gt.poses):
                if lo <= t <= hi:
                    writer.write(GT_POSE_TOPIC, bags.pose_stamped(s, T, float(t), WORLD_FRAME))
                    written_gt += 1
        events = [(float(r[0]), "rgb", r[1]) for r in rgb_rows] + [
            (float(r[0]), "depth", r[1]) for r in depth_rows
        ]
        for t, kind, rel in sorted(events):
            path = folder / rel
            if kind == "rgb":
                try:
                    rgb = _read_color(path)
                except DatasetError:
                    skipped += 1
                    continue
                h, w = rgb.shape[:2]
                writer.write(LEFT.info, _info(s, K, dist, h, w, t, LEFT.frame))
                writer.write(LEFT.image, bags.image_message(s, rgb, t, LEFT.frame, "rgb8"))
                if progress is not None:
                    progress(1)
            else:
                raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if raw is None or raw.dtype != np.uint16:
                    skipped += 1
                    continue
                depth = raw.astype(np.float32) / TUM_DEPTH_SCALE
                depth[raw == 0] = np.nan
                writer.write(LEFT.depth, bags.image_message(s, depth, t, LEFT.frame, "32FC1"))
                written_depth += 1
    return ConversionSummary(Path(out), len(rgb_rows) - skipped, written_gt, written_depth, skipped)


def _info(
    store: object,
    intrinsics: np.ndarray,
    dist: np.ndarray,
    h: int,
    w: int,
    t: float,
    frame: str,
    bfx: float = 0.0,
) -> object:
    return bags.camera_info_message(store, intrinsics, h, w, t, frame, distortion=dist, baseline_fx=bfx)


# ------------------------------------------------------------------------------------------------
# EuRoC
# ------------------------------------------------------------------------------------------------
@dataclass
class EurocCamera:
    """One EuRoC camera: [3, 3] K, [4] radtan distortion, (H, W), [4, 4] body <- camera."""

    K: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]
    body_from_cam: np.ndarray


def read_euroc_sensor(path: Path) -> EurocCamera:
    """Parse a EuRoC ``sensor.yaml`` (pinhole + radtan camera)."""
    import yaml

    if not path.is_file():
        raise DatasetError(f"missing {path}")
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("%"))
    data = yaml.safe_load(text)
    try:
        fu, fv, cu, cv = (float(v) for v in data["intrinsics"])
        dist = np.asarray(data.get("distortion_coefficients", [0, 0, 0, 0]), np.float64)
        w, h = (int(v) for v in data["resolution"])
        T = np.asarray(data["T_BS"]["data"], np.float64).reshape(4, 4)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: not a EuRoC camera sensor.yaml ({exc})") from exc
    if data.get("camera_model", "pinhole") != "pinhole":
        raise DatasetError(
            f"{path}: camera_model {data.get('camera_model')!r} is not supported (pinhole only)"
        )
    return EurocCamera(np.array([[fu, 0, cu], [0, fv, cv], [0, 0, 1.0]]), dist, (h, w), T)


def read_euroc_groundtruth(path: Path) -> Trajectory:
    """``state_groundtruth_estimate0/data.csv`` -> world_from_body (stamps in seconds)."""
    rows = _read_list(path, sep=",")
    if not rows:
        raise DatasetError(f"{path}: no ground-truth rows")
    a = np.asarray([[float(v) for v in r[:8]] for r in rows])
    poses = np.stack([bags.matrix_from_tq(r[1:4], (r[5], r[6], r[7], r[4])) for r in a])
    return Trajectory(a[:, 0] * 1e-9, poses).sorted()


def convert_euroc(
    folder: str | Path,
    out: str | Path,
    storage: str = "sqlite3",
    max_frames: int | None = None,
    undistort: bool = True,
    stereo: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ConversionSummary:
    """EuRoC MAV folder (``.../mav0`` or its parent) -> rosbag2 (see the module docstring)."""
    root = Path(folder)
    if (root / "mav0").is_dir():
        root = root / "mav0"
    cams: list[tuple[CameraTopics, str]] = [(LEFT, "cam0")]
    if stereo and (root / "cam1" / "data.csv").is_file():
        cams.append((RIGHT, "cam1"))
    sensors = {name: read_euroc_sensor(root / name / "sensor.yaml") for _, name in cams}
    gt_path = root / "state_groundtruth_estimate0" / "data.csv"
    gt = read_euroc_groundtruth(gt_path) if gt_path.is_file() else None

    # Undistortion maps and the pinhole matrices written to camera_info.
    maps, Ks = {}, {}
    for _, name in cams:
        cam = sensors[name]
        h, w = cam.size
        if undistort and np.any(cam.dist):
            newK, _ = cv2.getOptimalNewCameraMatrix(cam.K, cam.dist, (w, h), 0.0)
            maps[name] = cv2.initUndistortRectifyMap(cam.K, cam.dist, None, newK, (w, h), cv2.CV_32FC1)
            Ks[name] = newK
        else:
            Ks[name] = cam.K
    rows = {name: _read_list(root / name / "data.csv", sep=",") for _, name in cams}
    left_rows = rows["cam0"][:max_frames]
    stamps0 = np.array([int(r[0]) * 1e-9 for r in left_rows])
    skipped = written_gt = 0
    body_to_cam0 = np.linalg.inv(sensors["cam0"].body_from_cam)
    with bags.BagWriter(out, storage=storage) as writer:
        s = writer.store
        t0 = float(stamps0[0]) if len(stamps0) else 0.0
        static = [
            bags.transform_stamped(s, sensors[name].body_from_cam, t0, BASE_FRAME, topics.frame)
            for topics, name in cams
        ]
        writer.write("/tf_static", bags.tf_message(s, static), t0)
        if gt is not None:
            at, ok = interpolate(gt, stamps0, max_gap=0.05)
            cam_poses = at.poses @ sensors["cam0"].body_from_cam
            for t, T in zip(at.stamps, cam_poses):
                writer.write(GT_POSE_TOPIC, bags.pose_stamped(s, T, float(t), WORLD_FRAME))
            written_gt = int(ok.sum())
        # Right images are matched to left ones by stamp (EuRoC triggers both together).
        right_by_stamp = {}
        if len(cams) > 1:
            right_by_stamp = {int(r[0]): r[1] for r in rows["cam1"]}
            baseline = float(np.linalg.norm((body_to_cam0 @ sensors["cam1"].body_from_cam)[:3, 3]))
        for row in left_rows:
            stamp_ns, t = int(row[0]), int(row[0]) * 1e-9
            for topics, name in cams:
                rel = row[1] if name == "cam0" else right_by_stamp.get(stamp_ns)
                if rel is None:
                    continue
                gray = cv2.imread(str(root / name / "data" / rel), cv2.IMREAD_GRAYSCALE)
                if gray is None:
                    skipped += 1
                    continue
                if name in maps:
                    gray = cv2.remap(gray, *maps[name], cv2.INTER_LINEAR)
                h, w = gray.shape
                dist = np.zeros(5) if name in maps or not undistort else np.r_[sensors[name].dist, 0.0][:5]
                bfx = Ks[name][0, 0] * baseline if name == "cam1" else 0.0
                writer.write(topics.info, _info(s, Ks[name], dist, h, w, t, topics.frame, bfx))
                writer.write(topics.image, bags.image_message(s, gray, t, topics.frame, "mono8"))
            if progress is not None:
                progress(1)
    return ConversionSummary(Path(out), len(left_rows) - skipped, written_gt, 0, skipped)


def convert_dataset(
    folder: str | Path,
    out: str | Path,
    kind: str | None = None,
    storage: str = "sqlite3",
    max_frames: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ConversionSummary:
    """Convert a TUM RGB-D or EuRoC folder (``kind`` detected when None) to a rosbag2."""
    kind = kind or detect_kind(folder)
    if kind not in DATASET_KINDS:
        raise DatasetError(f"dataset kind must be one of {DATASET_KINDS}, got {kind!r}")
    if kind == "tum":
        return convert_tum(folder, out, storage, max_frames, progress=progress)
    return convert_euroc(folder, out, storage, max_frames, progress=progress)


def dataset_frame_count(folder: str | Path, kind: str | None = None) -> int:
    """Number of (left) images, for progress bars."""
    kind = kind or detect_kind(folder)
    root = Path(folder)
    if kind == "tum":
        return len(_read_list(root / "rgb.txt"))
    if (root / "mav0").is_dir():
        root = root / "mav0"
    return len(_read_list(root / "cam0" / "data.csv", sep=","))
