"""Test doubles for the mapping tests: a predictor that returns ground-truth-derived windows.

``FakePredictor`` knows the exact pose and depth of every image it can be shown (rendered by
``vggt_ros.eval.synthetic``). For each call it builds a real ``vggt_ros.engine.Prediction`` the
way VGGT would: every window in its own first-camera frame, with its own random scale, plus
pose noise, depth noise and depth outliers (at random confidences, so weights alone cannot hide
them). Windows listed in ``corrupt_calls`` get garbage cameras and depth.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from vggt_ros.engine import Prediction
from vggt_ros.geometry import ImageTransform
from vggt_ros.geometry.camera import invert_rigid, project_points

# Nothing to collect here; pytest imports this file because of its name.
__test__ = False


def _key(image: np.ndarray) -> int:
    return hash(image.tobytes())


def _thumb(image: np.ndarray) -> np.ndarray:
    """A small float thumbnail to recognise an image after lossy compression (JPEG)."""
    import cv2

    return cv2.resize(image, (24, 18), interpolation=cv2.INTER_AREA).astype(np.float32)


class FakePredictor:
    """Ground truth in, VGGT-like windows out.

    Args:
        sequences: iterables of (images [S,H,W,3], cam_to_world [S,4,4], depth [S,H,W] metres,
            intrinsics [3,3]) whose images may be passed to ``predict``.
        seed: noise seed.
        rot_noise_deg: per-camera rotation noise (std, degrees).
        trans_noise: per-camera position noise (std, relative to the window's median depth).
        depth_noise: multiplicative depth noise (std).
        outlier_share: share of depth pixels replaced by garbage.
        corrupt_calls: indices of predict calls whose output is garbage.
        drift_scale: std of a per-window error of the depth's scale against the cameras'
            (chaining then drifts in scale like a real network's windows make it).
        drift_bias: mean of that error (log): a systematic drift, the kind loops correct best.
        drift_rotation_deg: std of a per-window rotation of all but the first camera.

    Images are recognised by content, also after JPEG compression (the loop back end stores
    keyframes as JPEG).
    """

    __test__ = False

    def __init__(
        self,
        sequences: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        seed: int = 0,
        rot_noise_deg: float = 0.1,
        trans_noise: float = 0.002,
        depth_noise: float = 0.01,
        outlier_share: float = 0.05,
        corrupt_calls: tuple[int, ...] = (),
        drift_scale: float = 0.0,
        drift_rotation_deg: float = 0.0,
        drift_bias: float = 0.0,
    ) -> None:
        self.lookup: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._thumbs: list[tuple[np.ndarray, int]] = []
        for images, poses, depths, K in sequences:
            for img, pose, depth in zip(images, poses, depths):
                self.lookup[_key(img)] = (img, pose, depth, K)
                self._thumbs.append((_thumb(img), _key(img)))
        self.drift_scale = drift_scale
        self.drift_rotation_deg = drift_rotation_deg
        self.drift_bias = drift_bias
        self.rng = np.random.default_rng(seed)
        self.rot_noise_deg = rot_noise_deg
        self.trans_noise = trans_noise
        self.depth_noise = depth_noise
        self.outlier_share = outlier_share
        self.corrupt_calls = set(corrupt_calls)
        self.calls = 0
        self.window_scales: list[float] = []

    def _find(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        hit = self.lookup.get(_key(image))
        if hit is not None:
            return hit
        thumb = _thumb(image)
        errors = [float(np.abs(t - thumb).mean()) for t, _ in self._thumbs]
        best = int(np.argmin(errors))
        if errors[best] > 6.0:
            raise KeyError("an image the fake predictor was not given")
        return self.lookup[self._thumbs[best][1]]

    def predict(self, frames: list[np.ndarray], query_points: np.ndarray | None = None) -> Prediction:
        rng = self.rng
        gt = [self._find(f) for f in frames]
        corrupt = self.calls in self.corrupt_calls
        self.calls += 1
        images = np.stack([g[0] for g in gt])
        poses = np.stack([g[1] for g in gt])
        depth_gt = np.stack([g[2] for g in gt]).astype(np.float64)
        K = np.stack([g[3] for g in gt])
        s, h, w = depth_gt.shape
        scale = float(np.exp(rng.uniform(np.log(0.2), np.log(5.0))))
        self.window_scales.append(scale)
        rel = np.linalg.inv(poses[0]) @ poses  # cameras in the first camera's frame, metres
        scene = float(np.median(depth_gt))
        for i in range(1, s):
            noise = Rotation.from_rotvec(rng.normal(0, np.radians(self.rot_noise_deg), 3)).as_matrix()
            rel[i, :3, :3] = noise @ rel[i, :3, :3]
            rel[i, :3, 3] += rng.normal(0, self.trans_noise * scene, 3)
        if self.drift_rotation_deg:
            tilt = Rotation.from_rotvec(rng.normal(0, np.radians(self.drift_rotation_deg), 3)).as_matrix()
            for i in range(1, s):
                rel[i, :3, :3] = tilt @ rel[i, :3, :3]
                rel[i, :3, 3] = tilt @ rel[i, :3, 3]
        depth = depth_gt * (1.0 + rng.normal(0, self.depth_noise, depth_gt.shape))
        if self.drift_scale or self.drift_bias:
            depth *= float(np.exp(rng.normal(self.drift_bias, self.drift_scale)))
        conf = rng.uniform(1.0, 5.0, depth.shape)
        bad = rng.random(depth.shape) < self.outlier_share
        depth[bad] *= rng.uniform(0.3, 3.0, int(bad.sum()))
        if corrupt:
            # A window that went wrong: scrambled cameras and depth, confidently.
            for i in range(1, s):
                rel[i, :3, :3] = Rotation.random(random_state=rng).as_matrix()
                rel[i, :3, 3] = rng.normal(0, scene, 3)
            depth = rng.uniform(0.2, 3.0, depth.shape) * scene
        rel[:, :3, 3] *= scale
        depth *= scale
        extrinsics = invert_rigid(rel)[:, :3, :]
        transform = ImageTransform((h, w), (h, w), (1.0, 1.0), (0.0, 0.0), (0, 0, w, h))
        tracks = vis = tconf = model_tracks = None
        if query_points is not None:
            q = np.asarray(query_points, np.float64)
            cols = np.clip(np.rint(q[:, 0]).astype(int), 0, w - 1)
            rows = np.clip(np.rint(q[:, 1]).astype(int), 0, h - 1)
            z = depth_gt[0, rows, cols]
            cam = np.stack(
                ((q[:, 0] - K[0, 0, 2]) / K[0, 0, 0] * z, (q[:, 1] - K[0, 1, 2]) / K[0, 1, 1] * z, z), 1
            )
            world = cam @ poses[0, :3, :3].T + poses[0, :3, 3]
            ext_gt = invert_rigid(poses)[:, :3, :]
            tracks, zc = project_points(np.broadcast_to(world, (s,) + world.shape), ext_gt, K)
            model_tracks = tracks.copy()
            vis = (zc > 0).astype(np.float32)
            tconf = np.ones((s, len(q)), np.float32)
        return Prediction(
            cam_to_world=rel,
            extrinsics=extrinsics,
            intrinsics=K.astype(np.float64),
            model_intrinsics=K.astype(np.float64),
            depth=depth.astype(np.float32),
            depth_conf=conf.astype(np.float32),
            world_points=None,
            world_points_conf=None,
            valid_mask=np.ones((s, h, w), bool),
            colors=images.copy(),
            model_hw=(h, w),
            original_sizes=[(h, w)] * s,
            transforms=[transform] * s,
            tracks=tracks,
            model_tracks=model_tracks,
            track_vis=vis,
            track_conf=tconf,
            query_points=None if query_points is None else np.asarray(query_points, np.float64),
            timings={"inference_ms": 0.0},
            weights={"source": "fake", "trained": True},
        )


def sequence_tuple(seq) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """(images, cam_to_world, depth, intrinsics) of a SyntheticSequence."""
    return seq.images, seq.cam_to_world, seq.depth, seq.intrinsics


def trajectory_error(estimated: np.ndarray, truth: np.ndarray, with_scale: bool) -> float:
    """RMS position error [same unit as truth] after one global Sim(3) (or SE(3)) alignment."""
    from vggt_ros.geometry.alignment import umeyama

    fit = umeyama(estimated, truth, with_scale=with_scale)
    return float(np.sqrt(np.mean(np.sum((fit.apply(estimated) - truth) ** 2, axis=1))))


def path_error_of_extent(path: list[tuple[float, np.ndarray]], seq) -> float:  # noqa: ANN001
    """RMS position error of a pipeline's ``path()`` (stamp, 4x4 pose) against the rendered
    sequence's cameras at the nearest stamps, after one Sim(3), over the true path's extent."""
    idx = [int(np.argmin(np.abs(seq.stamps - stamp))) for stamp, _ in path]
    est = np.stack([pose[:3, 3] for _, pose in path])
    extent = np.ptp(seq.cam_to_world[idx, :3, 3], axis=0).max()
    return trajectory_error(est, seq.cam_to_world[idx, :3, 3], with_scale=True) / extent
