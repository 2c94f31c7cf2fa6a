"""Test doubles for the evaluation tests: a predictor built from exact ground truth plus known noise.

``GroundTruthPredictor`` has the ``predict(frames, query_points)`` interface of
``vggt_ros.engine.Predictor`` and returns a real ``Prediction``. It recognises each frame by its
pixels (the synthetic frames are all different), and answers with

* poses: the true optical-frame poses perturbed once per frame by a fixed, seeded error
  (``trans_noise`` metres per axis, ``rot_noise_deg`` degrees about a random axis), expressed
  relative to the window's first frame and multiplied by ``norm_scale`` (VGGT's per-window
  normalisation is an arbitrary scale, so the pipeline has to recover it);
* depth: the true z-depth times ``norm_scale`` times ``(1 + e)`` with ``e`` uniform in
  ``[-depth_noise, depth_noise]``, fixed per frame and pixel;
* intrinsics: the true ones; model resolution = original resolution (identity transform);
* tracks: the query pixels carried to the other frames with the true geometry.

Because the noise is a fixed function of the frame, every window sees the same perturbed world,
so chaining reproduces the perturbed trajectory up to one similarity, and the evaluation must
report exactly the error of that perturbed trajectory.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.spatial.transform import Rotation

from vggt_ros.engine import Prediction
from vggt_ros.eval.synthetic import SyntheticSequence
from vggt_ros.geometry import ImageTransform


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class GroundTruthPredictor:
    def __init__(
        self,
        seq: SyntheticSequence,
        trans_noise: float = 0.0,
        rot_noise_deg: float = 0.0,
        depth_noise: float = 0.0,
        norm_scale: float = 0.37,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.seq = seq
        self.norm_scale = norm_scale
        self.depth_noise = depth_noise
        self.index = {_key(img): k for k, img in enumerate(seq.images)}
        n = seq.num_frames
        noise = np.tile(np.eye(4), (n, 1, 1))
        axes = rng.normal(size=(n, 3))
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
        noise[:, :3, :3] = Rotation.from_rotvec(axes * np.deg2rad(rot_noise_deg)).as_matrix()
        self.noisy = seq.cam_to_world @ noise
        self.noisy[:, :3, 3] += rng.normal(scale=trans_noise, size=(n, 3))
        self.depth_factor = 1.0 + rng.uniform(-depth_noise, depth_noise, size=seq.depth.shape)
        self.calls = 0
        self.window_sizes: list[int] = []

    def frame_index(self, image: np.ndarray) -> int:
        return self.index[_key(image)]

    def predict(self, frames: list[np.ndarray], query_points: np.ndarray | None = None) -> Prediction:
        self.calls += 1
        self.window_sizes.append(len(frames))
        idx = [self.frame_index(f) for f in frames]
        s = self.norm_scale
        base = np.linalg.inv(self.noisy[idx[0]])
        cam_to_world = np.stack([base @ self.noisy[k] for k in idx])
        cam_to_world[:, :3, 3] *= s
        extrinsics = np.linalg.inv(cam_to_world)[:, :3, :]
        depth = np.stack([self.seq.depth[k] * self.depth_factor[k] * s for k in idx]).astype(np.float32)
        h, w = self.seq.height, self.seq.width
        K = np.repeat(self.seq.intrinsics[None], len(idx), axis=0)
        transform = ImageTransform((h, w), (h, w), (1.0, 1.0), (0.0, 0.0), (0, 0, w, h))
        tracks = vis = conf = None
        if query_points is not None:
            tracks, vis = self._tracks(idx, np.asarray(query_points, np.float64))
            conf = vis.copy()
        return Prediction(
            cam_to_world=cam_to_world,
            extrinsics=extrinsics,
            intrinsics=K.copy(),
            model_intrinsics=K.copy(),
            depth=depth,
            depth_conf=np.full(depth.shape, 2.0, np.float32),
            world_points=None,
            world_points_conf=None,
            valid_mask=np.ones(depth.shape, bool),
            colors=np.stack([self.seq.images[k] for k in idx]),
            model_hw=(h, w),
            original_sizes=[(h, w)] * len(idx),
            transforms=[transform] * len(idx),
            tracks=tracks,
            model_tracks=tracks,
            track_vis=vis,
            track_conf=conf,
            query_points=query_points,
            timings={"preprocess_ms": 0.0, "inference_ms": 1.0, "postprocess_ms": 0.0},
            weights={"source": "ground-truth test double", "trained": True},
        )

    def _tracks(self, idx: list[int], q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seq, K = self.seq, self.seq.intrinsics
        k0 = idx[0]
        u = np.clip(np.rint(q[:, 0]).astype(int), 0, seq.width - 1)
        v = np.clip(np.rint(q[:, 1]).astype(int), 0, seq.height - 1)
        z = seq.depth[k0][v, u].astype(np.float64)
        cam = np.stack(((q[:, 0] - K[0, 2]) / K[0, 0] * z, (q[:, 1] - K[1, 2]) / K[1, 1] * z, z), axis=-1)
        world = cam @ seq.cam_to_world[k0][:3, :3].T + seq.cam_to_world[k0][:3, 3]
        tracks = np.zeros((len(idx), len(q), 2))
        vis = np.zeros((len(idx), len(q)), np.float32)
        for i, k in enumerate(idx):
            w2c = np.linalg.inv(seq.cam_to_world[k])
            pc = world @ w2c[:3, :3].T + w2c[:3, 3]
            tracks[i, :, 0] = K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2]
            tracks[i, :, 1] = K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]
            inside = (pc[:, 2] > 0) & (tracks[i, :, 0] >= 0) & (tracks[i, :, 0] <= seq.width - 1)
            inside &= (tracks[i, :, 1] >= 0) & (tracks[i, :, 1] <= seq.height - 1)
            vis[i] = inside
        return tracks, vis
