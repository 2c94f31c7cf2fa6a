"""Grouping frames of several cameras into keyframe times (a rig's cameras infer together).

A keyframe time starts when any camera's selector fires; it then collects, for every other
camera of the rig, the frame closest in stamp within ``rig_time_tolerance_s`` (from a short
per-camera buffer, or from frames still to arrive). It is released when every camera is in, or
when a missing camera can no longer match (its newest frame is already past the tolerance:
frames of one camera arrive in stamp order), or after ``rig_max_wait_s`` of stamps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vggt_ros.mapping.types import Frame

BUFFER_FRAMES = 32  # per camera; covers the tolerance at any sane frame rate


@dataclass
class _Pending:
    stamp: float
    trigger_camera: str
    frames: dict[str, Frame] = field(default_factory=dict)


class RigGrouper:
    """Collects the frames of one keyframe time from all cameras of a rig.

    Args:
        cameras: the rig's camera ids (first = reference); empty = every camera seen so far,
            in the order first seen.
        tolerance_s: largest stamp difference within one time.
        max_wait_s: release an incomplete time once any camera's stamp is this far past it.
    """

    def __init__(self, cameras: list[str], tolerance_s: float, max_wait_s: float) -> None:
        self.configured = list(cameras)
        self.tolerance = tolerance_s
        self.max_wait = max_wait_s
        self.reset()

    def reset(self) -> None:
        self._seen: list[str] = list(self.configured)
        self._buffers: dict[str, deque[Frame]] = {}
        self._latest: dict[str, float] = {}
        self._newest = float("-inf")
        self._pending: list[_Pending] = []
        self.ignored_frames = 0
        self.incomplete_times = 0

    @property
    def cameras(self) -> list[str]:
        """Cameras of the rig, reference first."""
        return list(self._seen)

    @property
    def reference_camera(self) -> str | None:
        return self._seen[0] if self._seen else None

    def accepts(self, camera_id: str) -> bool:
        """Whether frames of this camera belong to the rig."""
        return not self.configured or camera_id in self.configured

    def observe(self, frame: Frame) -> None:
        """Buffer a frame and let waiting keyframe times pick it up."""
        cam = frame.camera_id
        if not self.accepts(cam):
            self.ignored_frames += 1
            return
        if cam not in self._seen:
            self._seen.append(cam)
        self._buffers.setdefault(cam, deque(maxlen=BUFFER_FRAMES)).append(frame)
        self._latest[cam] = frame.stamp
        self._newest = max(self._newest, frame.stamp)
        for pending in self._pending:
            self._offer(pending, frame)

    def _offer(self, pending: _Pending, frame: Frame) -> None:
        dt = abs(frame.stamp - pending.stamp)
        if dt > self.tolerance:
            return
        current = pending.frames.get(frame.camera_id)
        if current is None or dt < abs(current.stamp - pending.stamp):
            pending.frames[frame.camera_id] = frame

    def pending_near(self, stamp: float) -> bool:
        """A keyframe time within the tolerance of ``stamp`` is already waiting."""
        return any(abs(p.stamp - stamp) <= self.tolerance for p in self._pending)

    def trigger(self, frame: Frame) -> None:
        """Start a keyframe time at ``frame`` (already observed) and fill it from the buffers."""
        pending = _Pending(frame.stamp, frame.camera_id, {frame.camera_id: frame})
        for cam, buffer in self._buffers.items():
            if cam != frame.camera_id:
                for buffered in buffer:
                    self._offer(pending, buffered)
        self._pending.append(pending)
        self._pending.sort(key=lambda p: p.stamp)

    def pop_ready(self) -> list[list[Frame]]:
        """Release finished keyframe times, oldest first, each as frames in rig camera order."""
        ready: list[list[Frame]] = []
        while self._pending:
            head = self._pending[0]
            missing = [c for c in self._seen if c not in head.frames]
            hopeless = all(self._latest.get(c, float("-inf")) > head.stamp + self.tolerance for c in missing)
            timed_out = self._newest > head.stamp + self.max_wait
            # Unconfigured rigs: a camera never seen cannot be waited for.
            if missing and not hopeless and not timed_out:
                break
            if missing:
                self.incomplete_times += 1
            self._pending.pop(0)
            order = {c: i for i, c in enumerate(self._seen)}
            ready.append(sorted(head.frames.values(), key=lambda f: order[f.camera_id]))
        return ready
