"""Where training windows come from: the procedural renderer and recorded sequences.

A source hands out batches of windows by *global window index*: window ``i`` of training step
``k`` is a pure function of (source seed, ``k * batch + i``), whichever process draws it. Two
processes of a DDP run therefore train on exactly the windows one process would, and a resumed
run sees the same windows as an uninterrupted one.

* :class:`ProceduralSource`: random rooms rendered on the training device (GPU when there is
  one) by :mod:`vggt_ros.eval.procedural`, with exact depth and track targets.
* :class:`SequenceSource`: windows of frames from ground-truth sequences (bags written by
  ``vggt-ros generate`` or ``vggt-ros convert-dataset`` from TUM RGB-D / EuRoC folders), read
  once into memory at the training size; random start and frame gap per window. Track targets
  are made from the depth (visible where the projected depth agrees), when the bag has depth.
* :class:`MixedSource`: several sources, each window drawn from one of them by weight.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from vggt_ros.eval.procedural import ProceduralSettings, render_windows, window_seeds
from vggt_ros.eval.sequences import GroundTruthSequence, SequenceError, read_bag_sequence
from vggt_ros.train.targets import WindowBatch, unproject_depth

TRAIN_STREAM, VALIDATION_STREAM = 0, 1


class DataSourceError(ValueError):
    """A data source that cannot give training windows (the message says why)."""


class ProceduralSource:
    """Windows of random procedural scenes, rendered on ``device``.

    Args:
        workers: processes that draw the scenes' random parameters (numpy, about 1 ms a window)
            while the device renders; 0 draws them in this process.
        render_chunk: windows rendered at once (larger: fewer kernel launches, more memory).
    """

    def __init__(
        self,
        settings: ProceduralSettings,
        seed: int = 0,
        stream: int = TRAIN_STREAM,
        workers: int = 0,
        render_chunk: int = 8,
    ) -> None:
        self.settings = settings
        self.seed = int(seed)
        self.stream = int(stream)
        self.workers = int(workers)
        self.render_chunk = int(render_chunk)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor | None:
        if multiprocessing.current_process().daemon:
            # A daemonic process (the trainer's batch process) may not start children: draw
            # the scenes here (the result is the same).
            return None
        if self.workers > 0 and self._pool is None:
            # spawn: the trainer may hold CUDA and threads, which forked children must not inherit.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict[str, object]:
        # A copy (e.g. pickled into the batch process) starts its own pool when it needs one.
        return {**self.__dict__, "_pool": None}

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.settings.height, self.settings.width

    @property
    def frames(self) -> int:
        return self.settings.frames

    def windows(self, indices: Sequence[int], device: torch.device | str) -> WindowBatch:
        """Windows with global indices ``indices``."""
        seeds = window_seeds(self.seed, list(indices), self.stream)
        r = render_windows(self.settings, seeds, device, chunk=self.render_chunk, pool=self._executor())
        return WindowBatch(
            images=r.images,
            cam_to_world=r.cam_to_world,
            intrinsics=r.intrinsics,
            depth=r.depth,
            depth_valid=torch.ones_like(r.depth, dtype=torch.bool),
            query_points=r.query_points,
            tracks=r.tracks,
            track_visible=r.track_visible,
        )

    def describe(self) -> dict[str, object]:
        return {
            "kind": "procedural",
            "seed": self.seed,
            "stream": self.stream,
            "settings": self.settings.to_dict(),
        }


def tracks_from_depth(
    depth: torch.Tensor,
    cam_to_world: torch.Tensor,
    intrinsics: torch.Tensor,
    queries: torch.Tensor,
    tolerance: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Track targets of one window from its depth maps (for sources without a renderer).

    Args:
        depth: [S, H, W] metres (non-positive or NaN: unknown); cam_to_world [S, 4, 4];
        intrinsics [S, 3, 3]; queries [N, 2] integer pixel positions in frame 0 with valid depth.
        tolerance: relative depth agreement that counts as visible (occlusion test).

    Returns:
        queries [N, 2], tracks [S, N, 2] and visible [S, N] (in image, in front, and the depth map
        of that frame agrees with the point's depth there).
    """
    s, h, w = depth.shape
    qx, qy = queries[:, 0].long(), queries[:, 1].long()
    points = unproject_depth(depth[0], intrinsics[0])[qy, qx].double()  # [N, 3] camera 0
    world = (cam_to_world[0, :3, :3].double() @ points.T).T + cam_to_world[0, :3, 3].double()
    inv = torch.linalg.inv(cam_to_world.double())  # camera-from-world [S, 4, 4]
    pc = torch.einsum("sij,nj->sni", inv[:, :3, :3], world) + inv[:, None, :3, 3]
    z = pc[..., 2]
    K = intrinsics.double()
    u = K[:, None, 0, 0] * pc[..., 0] / z.clamp_min(1e-6) + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * pc[..., 1] / z.clamp_min(1e-6) + K[:, None, 1, 2]
    inside = (z > 1e-3) & (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    ui = u.round().long().clamp(0, w - 1)
    vi = v.round().long().clamp(0, h - 1)
    seen = depth[torch.arange(s)[:, None], vi, ui].double()
    agree = torch.isfinite(seen) & (seen > 0) & ((seen - z).abs() <= tolerance * z)
    visible = inside & agree
    visible[0] = True
    tracks = torch.stack((u, v), dim=-1).float()
    tracks[0] = queries.float()
    return queries.float(), tracks, visible


class SequenceSource:
    """Windows from in-memory ground-truth sequences.

    Args:
        sequences: sequences at one common image size.
        frames: S frames per window.
        max_gap: largest step between consecutive window frames (a random gap in 1..max_gap per
            window, so windows cover different baselines).
        track_queries: queries per window (0: no track targets; needs depth otherwise).
        seed, stream: as :class:`ProceduralSource`.
    """

    def __init__(
        self,
        sequences: list[GroundTruthSequence],
        frames: int,
        max_gap: int = 3,
        track_queries: int = 0,
        seed: int = 0,
        stream: int = TRAIN_STREAM,
    ) -> None:
        if not sequences:
            raise DataSourceError("no sequences given")
        sizes = {s.images.shape[1:3] for s in sequences}
        if len(sizes) > 1:
            raise DataSourceError(f"sequences have different image sizes {sorted(sizes)}")
        usable = [s for s in sequences if len(s) >= frames]
        if not usable:
            raise DataSourceError(f"every sequence is shorter than the window of {frames} frames")
        self.sequences = usable
        self.frames, self.max_gap, self.track_queries = frames, max(1, max_gap), track_queries
        self.seed, self.stream = int(seed), int(stream)
        self.has_depth = all(s.depth is not None for s in usable)
        if track_queries and not self.has_depth:
            raise DataSourceError("track targets from sequences need ground-truth depth in every sequence")

    @classmethod
    def from_bags(
        cls, paths: Sequence[str | Path], size: tuple[int, int], frames: int, **kwargs: object
    ) -> SequenceSource:
        """Read bags (see :func:`vggt_ros.eval.sequences.read_bag_sequence`) at ``size``."""
        reader_keys = (
            "image_topic",
            "camera_info_topic",
            "depth_topic",
            "ground_truth",
            "max_frames",
            "every",
        )
        read = {k: kwargs.pop(k) for k in reader_keys if k in kwargs}
        try:
            sequences = [read_bag_sequence(p, size, **read) for p in paths]
        except SequenceError as exc:
            raise DataSourceError(str(exc)) from exc
        return cls(sequences, frames, **kwargs)

    @property
    def image_hw(self) -> tuple[int, int]:
        return tuple(self.sequences[0].images.shape[1:3])

    def _window(self, index: int, device: torch.device | str) -> dict[str, torch.Tensor | None]:
        rng = np.random.default_rng(window_seeds(self.seed, [index], self.stream)[0])
        lengths = np.array([len(s) for s in self.sequences], np.float64)
        seq = self.sequences[int(rng.choice(len(self.sequences), p=lengths / lengths.sum()))]
        gap = (
            int(rng.integers(1, min(self.max_gap, (len(seq) - 1) // max(1, self.frames - 1)) + 1))
            if self.frames > 1
            else 1
        )
        start = int(rng.integers(0, len(seq) - (self.frames - 1) * gap))
        idx = start + gap * np.arange(self.frames)
        if rng.uniform() < 0.5:  # play backwards as often as forwards
            idx = idx[::-1].copy()
        images = torch.from_numpy(seq.images[idx]).to(device).permute(0, 3, 1, 2).float() / 255.0
        pose = torch.from_numpy(seq.cam_to_world[idx]).to(device).float()
        K = torch.from_numpy(np.repeat(seq.intrinsics[None], self.frames, 0)).to(device).float()
        out: dict[str, torch.Tensor | None] = {"images": images, "cam_to_world": pose, "intrinsics": K}
        out.update(depth=None, depth_valid=None, query_points=None, tracks=None, track_visible=None)
        if seq.depth is not None:
            depth = torch.from_numpy(np.nan_to_num(seq.depth[idx], nan=0.0)).to(device)
            out["depth"], out["depth_valid"] = depth, depth > 0
            if self.track_queries:
                valid = torch.nonzero(depth[0] > 0)
                if len(valid):
                    pick = torch.from_numpy(rng.integers(0, len(valid), self.track_queries)).to(device)
                    yx = valid[pick]
                    queries = torch.stack((yx[:, 1], yx[:, 0]), dim=-1)
                    q, t, v = tracks_from_depth(depth, pose, K, queries)
                else:  # nothing to track: all queries invisible beyond frame 0
                    q = torch.zeros((self.track_queries, 2), device=device)
                    t = torch.zeros((self.frames, self.track_queries, 2), device=device)
                    v = torch.zeros((self.frames, self.track_queries), dtype=torch.bool, device=device)
                out.update(query_points=q, tracks=t, track_visible=v)
        return out

    def windows(self, indices: Sequence[int], device: torch.device | str) -> WindowBatch:
        items = [self._window(i, device) for i in indices]
        return WindowBatch(
            **{k: None if items[0][k] is None else torch.stack([it[k] for it in items]) for k in items[0]}
        )

    def describe(self) -> dict[str, object]:
        return {
            "kind": "sequences",
            "sequences": [s.name for s in self.sequences],
            "frames": self.frames,
            "max_gap": self.max_gap,
            "seed": self.seed,
            "stream": self.stream,
        }


class MixedSource:
    """Each window comes from one of several sources (drawn per window index by weight).

    All sources must give the same image size. Sources may differ in their targets: windows of a
    source without depth get zero depth marked invalid (camera loss only), and a batch in which
    any window lacks track targets carries none.
    """

    def __init__(self, sources: list, weights: list[float], seed: int = 0) -> None:
        if len(sources) != len(weights) or not sources:
            raise DataSourceError("need one weight per source")
        sizes = {tuple(s.image_hw) for s in sources}
        if len(sizes) > 1:
            raise DataSourceError(f"sources give different image sizes {sorted(sizes)}")
        p = np.asarray(weights, np.float64)
        if (p < 0).any() or p.sum() <= 0:
            raise DataSourceError(f"weights must be non-negative with a positive sum, got {weights}")
        self.sources, self.p, self.seed = sources, p / p.sum(), int(seed)

    @property
    def image_hw(self) -> tuple[int, int]:
        return tuple(self.sources[0].image_hw)

    def windows(self, indices: Sequence[int], device: torch.device | str) -> WindowBatch:
        """Windows ``indices``; a window a source gives without depth gets zero depth marked
        invalid, and when any window lacks track targets the batch has none."""
        pick = [
            int(np.random.default_rng([self.seed, 7, int(i)]).choice(len(self.sources), p=self.p))
            for i in indices
        ]
        parts: dict[int, tuple[list[int], WindowBatch]] = {}
        for k in sorted(set(pick)):
            mine = [i for i, s in zip(indices, pick) if s == k]
            parts[k] = (mine, self.sources[k].windows(mine, device))
        where = {i: (k, n) for k, (mine, _) in parts.items() for n, i in enumerate(mine)}
        rows = [(parts[k][1], n) for k, n in (where[i] for i in indices)]

        def stack(name: str, fill: object = None) -> torch.Tensor | None:
            values = [getattr(b, name) for b, _ in rows]
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                if fill is None:
                    return None
                like = next(v for v in values if v is not None)
                return torch.stack(
                    [
                        torch.full_like(like[0], fill) if getattr(b, name) is None else getattr(b, name)[n]
                        for b, n in rows
                    ]
                )
            return torch.stack([getattr(b, name)[n] for b, n in rows])

        out = {name: stack(name) for name in ("images", "cam_to_world", "intrinsics")}
        out["depth"], out["depth_valid"] = stack("depth", 0.0), stack("depth_valid", False)
        tracks = {name: stack(name) for name in ("query_points", "tracks", "track_visible")}
        if any(v is None for v in tracks.values()):
            tracks = dict.fromkeys(tracks)
        return WindowBatch(**out, **tracks)

    def describe(self) -> dict[str, object]:
        return {"kind": "mixed", "weights": self.p.tolist(), "sources": [s.describe() for s in self.sources]}
