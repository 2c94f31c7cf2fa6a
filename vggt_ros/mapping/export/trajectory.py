"""Stamped trajectories: TUM files, timestamp association and pose interpolation.

A :class:`Trajectory` holds N poses ``world_from_body`` ([N, 4, 4] float64; for cameras the
body is the OpenCV optical frame) at increasing stamps (seconds). The TUM format is one pose
per line, ``stamp tx ty tz qx qy qz qw`` (the body's position and orientation in the world),
with ``#`` comments; it is what evo, ORB-SLAM and the TUM RGB-D benchmark read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


@dataclass
class Trajectory:
    """Stamped poses.

    Attributes:
        stamps: [N] float64 seconds, strictly increasing after :meth:`sorted`.
        poses: [N, 4, 4] float64 ``world_from_body``.
    """

    stamps: np.ndarray
    poses: np.ndarray

    def __post_init__(self) -> None:
        self.stamps = np.asarray(self.stamps, np.float64).reshape(-1)
        self.poses = np.asarray(self.poses, np.float64).reshape(-1, 4, 4)
        if len(self.stamps) != len(self.poses):
            raise ValueError(f"{len(self.stamps)} stamps for {len(self.poses)} poses")

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def positions(self) -> np.ndarray:
        """[N, 3] body positions in the world."""
        return self.poses[:, :3, 3]

    def sorted(self) -> Trajectory:
        """Sorted by stamp, keeping the first pose of repeated stamps."""
        stamps, index = np.unique(self.stamps, return_index=True)
        return Trajectory(stamps, self.poses[index])

    def transformed(self, left: np.ndarray | None = None, right: np.ndarray | None = None) -> Trajectory:
        """``left @ pose @ right`` for every pose (change of world frame / of body frame)."""
        poses = self.poses
        if left is not None:
            poses = np.asarray(left, np.float64) @ poses
        if right is not None:
            poses = poses @ np.asarray(right, np.float64)
        return Trajectory(self.stamps.copy(), poses)

    def path_length(self) -> float:
        """Total distance travelled, in the trajectory's units."""
        return float(np.linalg.norm(np.diff(self.positions, axis=0), axis=1).sum()) if len(self) > 1 else 0.0


def read_tum(path: str | Path) -> Trajectory:
    """Read a TUM trajectory file (``stamp tx ty tz qx qy qz qw`` per line; ``#`` comments;
    commas accepted as separators). Raises ValueError naming the first bad line."""
    stamps, poses = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        parts = line.split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 8:
            raise ValueError(
                f"{path}:{number}: expected 8 numbers (stamp tx ty tz qx qy qz qw), got {line!r}"
            )
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat(values[4:8]).as_matrix()
        T[:3, 3] = values[1:4]
        stamps.append(values[0])
        poses.append(T)
    if not stamps:
        raise ValueError(f"{path}: no poses")
    return Trajectory(np.array(stamps), np.stack(poses)).sorted()


def write_tum(path: str | Path, trajectory: Trajectory, comment: str | None = None) -> Path:
    """Write ``trajectory`` as a TUM file (9 decimals for stamps, 9 significant for values)."""
    path = Path(path)
    lines = [f"# {line}" for line in (comment or "").splitlines()]
    lines.append("# timestamp tx ty tz qx qy qz qw")
    quats = Rotation.from_matrix(trajectory.poses[:, :3, :3]).as_quat()
    quats[quats[:, 3] < 0] *= -1.0  # one of the two equal quaternions, for stable diffs
    for t, T, q in zip(trajectory.stamps, trajectory.poses, quats):
        values = " ".join(f"{v:.9g}" for v in (*T[:3, 3], *q))
        lines.append(f"{t:.9f} {values}")
    path.write_text("\n".join(lines) + "\n")
    return path


def associate(query: np.ndarray, reference: np.ndarray, max_diff: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-stamp matching: indices (i into ``query``, j into ``reference``) with
    ``|query[i] - reference[j]| <= max_diff``; each reference stamp is used at most once.

    Args:
        query, reference: [N], [M] sorted stamps in seconds.
    """
    query, reference = np.asarray(query, np.float64), np.asarray(reference, np.float64)
    if len(query) == 0 or len(reference) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pos = np.clip(np.searchsorted(reference, query), 1, len(reference) - 1) if len(reference) > 1 else None
    if pos is None:
        j = np.zeros(len(query), np.int64)
    else:
        left, right = pos - 1, pos
        j = np.where(np.abs(reference[left] - query) <= np.abs(reference[right] - query), left, right)
    ok = np.abs(reference[j] - query) <= max_diff
    i = np.flatnonzero(ok)
    j = j[ok]
    # Drop repeated uses of one reference stamp, keeping the closest query.
    order = np.lexsort((np.abs(reference[j] - query[i]), j))
    i, j = i[order], j[order]
    first = np.ones(len(j), bool)
    first[1:] = j[1:] != j[:-1]
    i, j = i[first], j[first]
    back = np.argsort(i)
    return i[back], j[back]


def interpolate(
    trajectory: Trajectory, stamps: np.ndarray, max_gap: float | None = None
) -> tuple[Trajectory, np.ndarray]:
    """Poses at ``stamps`` by linear (position) and spherical-linear (rotation) interpolation.

    Args:
        trajectory: sorted source poses (at least 1).
        stamps: [K] query stamps.
        max_gap: refuse (mask out) queries whose bracketing source poses are further apart
            than this many seconds; queries outside the source's time span are always masked
            out, except exact matches of its ends.

    Returns:
        (the trajectory at the valid stamps, [K] bool mask of the valid queries).
    """
    src = trajectory.sorted()
    q = np.asarray(stamps, np.float64).reshape(-1)
    valid = (q >= src.stamps[0]) & (q <= src.stamps[-1])
    if len(src) == 1:
        valid &= q == src.stamps[0]
        return Trajectory(q[valid], np.repeat(src.poses, int(valid.sum()), axis=0)), valid
    if max_gap is not None:
        k = np.clip(np.searchsorted(src.stamps, q), 1, len(src) - 1)
        gap = src.stamps[k] - src.stamps[k - 1]
        exact = np.isin(q, src.stamps)
        valid &= (gap <= max_gap) | exact
    qv = q[valid]
    rot = Slerp(src.stamps, Rotation.from_matrix(src.poses[:, :3, :3]))(qv).as_matrix()
    pos = np.stack([np.interp(qv, src.stamps, src.positions[:, k]) for k in range(3)], axis=-1)
    poses = np.tile(np.eye(4), (len(qv), 1, 1))
    poses[:, :3, :3] = rot
    poses[:, :3, 3] = pos
    return Trajectory(qv, poses), valid
