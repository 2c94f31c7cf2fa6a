"""Keyframe selection on synthetic motion: static, steady image motion, odometry, time, blur, cost."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.mapping import Frame, KeyframeConfig, KeyframeSelector


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A 480x800 rendered view (real scene texture): 640x480 crops shift up to 160 px."""
    seq = render_sequence(1, 480, 800, seed=3, path="sideways")
    return seq.images[0]


def shifted(texture: np.ndarray, dx: float) -> np.ndarray:
    """640x480 crop of ``texture`` moved by dx pixels (sub-pixel, like a panning camera)."""
    m = np.float32([[1, 0, -dx], [0, 1, 0]])
    return cv2.warpAffine(texture, m, (640, 480), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def run(selector: KeyframeSelector, frames: list[Frame]) -> list[int]:
    keyframes = []
    for i, frame in enumerate(frames):
        if selector.evaluate(frame).is_keyframe:
            selector.accept(frame)
            keyframes.append(i)
    return keyframes


def test_static_camera_gives_no_keyframes_after_the_first(texture: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    base = shifted(texture, 0.0)
    frames = []
    for i in range(90):  # 3 s at 30 Hz, with sensor noise
        noisy = np.clip(base.astype(np.int16) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
        frames.append(Frame(i / 30.0, "cam", noisy))
    assert run(KeyframeSelector(KeyframeConfig()), frames) == [0]


def test_steady_motion_gives_keyframes_at_the_expected_rate(texture: np.ndarray) -> None:
    # 2 px per frame and a 30 px parallax threshold: a keyframe every 15 frames.
    frames = [Frame(i / 30.0, "cam", shifted(texture, 2.0 * i)) for i in range(76)]
    keyframes = run(KeyframeSelector(KeyframeConfig(min_parallax_px=30.0, min_interval_s=0.0)), frames)
    gaps = np.diff(keyframes)
    assert keyframes[0] == 0 and len(keyframes) >= 5
    assert set(gaps.tolist()) <= {15, 16}, keyframes


def test_minimum_interval_caps_the_rate(texture: np.ndarray) -> None:
    frames = [Frame(i / 30.0, "cam", shifted(texture, 2.0 * i)) for i in range(60)]
    cfg = KeyframeConfig(min_parallax_px=4.0, min_interval_s=0.5)
    keyframes = run(KeyframeSelector(cfg), frames)
    assert np.all(np.diff(keyframes) >= 15)  # 0.5 s at 30 Hz


def test_odometry_translation_and_rotation(texture: np.ndarray) -> None:
    image = shifted(texture, 0.0)  # no image motion at all: only odometry can fire

    def pose(x: float, yaw_deg: float) -> np.ndarray:
        T = np.eye(4)
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        T[:2, :2] = [[c, -s], [s, c]]
        T[0, 3] = x
        return T

    cfg = KeyframeConfig(min_translation_m=0.25, min_rotation_deg=15.0)
    sel = KeyframeSelector(cfg)
    frames = [Frame(i * 0.1, "cam", image, odom_pose=pose(0.05 * i, 0.0)) for i in range(21)]
    assert run(sel, frames) == [0, 5, 10, 15, 20]
    sel = KeyframeSelector(cfg)
    frames = [Frame(i * 0.1, "cam", image, odom_pose=pose(0.0, 3.1 * i)) for i in range(11)]
    decisions = []
    for f in frames:
        d = sel.evaluate(f)
        if d.is_keyframe:
            sel.accept(f)
            decisions.append(d.reason)
    assert decisions == ["first", "rotation", "rotation"]


def test_elapsed_time(texture: np.ndarray) -> None:
    image = shifted(texture, 0.0)
    frames = [Frame(i * 0.5, "cam", image) for i in range(13)]
    assert run(KeyframeSelector(KeyframeConfig(max_interval_s=2.0)), frames) == [0, 4, 8, 12]


def test_blurred_candidates_are_rejected(texture: np.ndarray) -> None:
    cfg = KeyframeConfig(min_parallax_px=19.0, min_interval_s=0.0, reject_blur=True)
    sel = KeyframeSelector(cfg)
    frames = [Frame(i / 30.0, "cam", shifted(texture, 2.0 * i)) for i in range(12)]
    assert run(sel, frames) == [0, 10]
    # Frame 10 would be due (parallax 20 px) but is motion blurred; 21 is sharp again.
    sel2 = KeyframeSelector(cfg)
    frames = [Frame(i / 30.0, "cam", shifted(texture, 2.0 * i)) for i in range(30)]
    frames[10] = Frame(frames[10].stamp, "cam", cv2.GaussianBlur(frames[10].image, (0, 0), 4.0))
    keyframes = []
    for i, f in enumerate(frames):
        d = sel2.evaluate(f)
        if d.is_keyframe:
            sel2.accept(f)
            keyframes.append(i)
        if i == 10:
            assert d.reason == "blurred" and not d.is_keyframe
    assert keyframes[:2] == [0, 11]


def test_view_change_counts_as_tracking_loss(texture: np.ndarray) -> None:
    sel = KeyframeSelector(KeyframeConfig(min_interval_s=0.0))
    first = Frame(0.0, "cam", shifted(texture, 0.0))
    sel.accept(first)
    other = render_sequence(1, 480, 640, seed=9, path="orbit").images[0]
    d = sel.evaluate(Frame(0.1, "cam", other))
    assert d.is_keyframe and d.reason in ("tracking_lost", "parallax")


def test_cost_per_640x480_frame_is_a_few_milliseconds(texture: np.ndarray) -> None:
    """Per-frame cost on one core (figure and command in docs/mapping.md); loose bound for CI."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        sel = KeyframeSelector(KeyframeConfig(min_parallax_px=1e9, reject_blur=True))
        frames = [Frame(i / 30.0, "cam", shifted(texture, 0.5 * i)) for i in range(60)]
        sel.accept(frames[0])
        times = []
        for f in frames[1:]:
            t = time.perf_counter()
            sel.evaluate(f)
            times.append(time.perf_counter() - t)
    finally:
        cv2.setNumThreads(threads)
    assert np.median(times) * 1e3 < 10.0
