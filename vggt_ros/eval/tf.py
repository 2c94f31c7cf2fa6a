"""A minimal TF buffer for bag replay: static and dynamic transforms, interpolated lookups.

Edges are stored ``parent <- child`` (as TransformStamped carries them: the transform maps
child-frame points into the parent frame). Each frame has at most one parent, as in TF.
Dynamic edges are interpolated (linear translation, slerp rotation) between their samples and
never extrapolated beyond ``max_extrapolation`` seconds.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from vggt_ros.mapping.export.trajectory import Trajectory, interpolate


class TfError(LookupError):
    """No transform between two frames at the asked time."""


class TfBuffer:
    """Collects TFMessages (static and dynamic) and answers ``lookup(target, source, t)``."""

    def __init__(self, max_extrapolation: float = 0.05) -> None:
        self.max_extrapolation = max_extrapolation
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._dynamic: dict[str, list[tuple[float, np.ndarray]]] = defaultdict(list)
        self._sorted: dict[str, Trajectory] = {}

    @property
    def frames(self) -> set[str]:
        return set(self._parent) | set(self._parent.values())

    def add(self, parent: str, child: str, stamp: float, transform: np.ndarray, static: bool) -> None:
        """Add ``parent <- child`` (``transform`` [4, 4]); ids are used without a leading slash."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        self._parent[child] = parent
        if static:
            self._static[child] = np.asarray(transform, np.float64)
        else:
            self._dynamic[child].append((float(stamp), np.asarray(transform, np.float64)))
            self._sorted.pop(child, None)

    def add_message(self, msg: object, static: bool) -> None:
        """Add every transform of a tf2_msgs/TFMessage."""
        from vggt_ros.eval.bags import matrix_from_msg, stamp_of

        for tr in msg.transforms:
            self.add(tr.header.frame_id, tr.child_frame_id, stamp_of(tr), matrix_from_msg(tr), static)

    def _edge(self, child: str, stamp: float) -> np.ndarray:
        if child in self._static:
            return self._static[child]
        if child not in self._sorted:
            samples = sorted(self._dynamic[child], key=lambda s: s[0])
            self._sorted[child] = Trajectory([s for s, _ in samples], [T for _, T in samples]).sorted()
        traj = self._sorted[child]
        t = float(np.clip(stamp, traj.stamps[0], traj.stamps[-1]))
        if abs(t - stamp) > self.max_extrapolation:
            raise TfError(
                f"{self._parent[child]} -> {child} known for "
                f"[{traj.stamps[0]:.3f}, {traj.stamps[-1]:.3f}] s, not at {stamp:.3f} s"
            )
        at, _ = interpolate(traj, np.array([t]))
        return at.poses[0]

    def _chain(self, frame: str, stamp: float) -> tuple[list[str], np.ndarray]:
        """(frames from ``frame`` up to its root, root <- frame)."""
        path, T = [frame], np.eye(4)
        seen = {frame}
        while frame in self._parent:
            T = self._edge(frame, stamp) @ T
            frame = self._parent[frame]
            if frame in seen:
                raise TfError(f"TF loop through {frame}")
            seen.add(frame)
            path.append(frame)
        return path, T

    def lookup(self, target: str, source: str, stamp: float) -> np.ndarray:
        """[4, 4] ``target <- source`` at ``stamp`` (maps source-frame points into target)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        path_t, root_from_target = self._chain(target, stamp)
        path_s, root_from_source = self._chain(source, stamp)
        if path_t[-1] != path_s[-1]:
            raise TfError(f"frames {target!r} and {source!r} are not connected in TF")
        return np.linalg.inv(root_from_target) @ root_from_source

    def can_lookup(self, target: str, source: str, stamp: float) -> bool:
        try:
            self.lookup(target, source, stamp)
        except TfError:
            return False
        return True

    def dynamic_stamps(self, target: str, source: str) -> np.ndarray:
        """Stamps of the dynamic samples along the chain between two frames (for trajectories)."""
        stamps: list[float] = []
        for frame in (target.lstrip("/"), source.lstrip("/")):
            while frame in self._parent:
                stamps.extend(s for s, _ in self._dynamic.get(frame, []))
                frame = self._parent[frame]
        return np.unique(np.asarray(stamps, np.float64))
