"""The inference worker's warm-up at the real window shapes (vggt_ros.ros.node_worker), without
ROS: the mixin runs on a plain object with a recording predictor."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import numpy as np
import pytest

from vggt_ros.engine.predictor import warm_up_window_shapes
from vggt_ros.ros.node_worker import WorkerMixin


class RecordingPredictor:
    def __init__(self, device: str, fail: bool = False) -> None:
        self.device, self.fail, self.windows = device, fail, []

    def predict(self, frames: list[np.ndarray]) -> None:
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        self.windows.append((len(frames), frames[0].shape))


class CachingPredictor(RecordingPredictor):
    """Records the frame keys of each window and what a frame cache would encode."""

    caches_frames = True

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.seen: set = set()
        self.encoded: list[int] = []  # frames new to each keyed window
        self.runner = SimpleNamespace(frame_cache=SimpleNamespace(clear=self.seen.clear))

    def predict(self, frames: list[np.ndarray], frame_keys: list | None = None) -> None:
        super().predict(frames)
        if frame_keys is not None:
            assert len(set(frame_keys)) == len(frame_keys) == len(frames)
            self.encoded.append(len(set(frame_keys) - self.seen))
            self.seen.update(frame_keys)


class Worker(WorkerMixin):
    def __init__(self, predictor: RecordingPredictor, backend: str, stride: int = 4) -> None:
        self.predictor, self.backend = predictor, backend
        window = SimpleNamespace(overlap=4, stride=stride)
        self.pipeline = SimpleNamespace(config=SimpleNamespace(window=window))
        self.stats = SimpleNamespace(values={}, set=lambda k, v: self.stats.values.__setitem__(k, v))
        self.warnings, self.logged = [], []

    def _inference_backend(self) -> str:
        return self.backend

    def _warn(self, key: str, text: str, *_: float) -> None:
        self.warnings.append(text)

    def get_logger(self):
        return SimpleNamespace(info=self.logged.append)


def job(cameras: int = 1, size: int = 8):
    image = np.zeros((350, 518, 3), np.uint8)
    kfs = [
        SimpleNamespace(camera_id=f"cam{i % cameras}", frame=SimpleNamespace(image=image))
        for i in range(size)
    ]
    return SimpleNamespace(keyframes=kfs)


def test_shapes_warm_once_with_the_steady_size_last() -> None:
    predictor = RecordingPredictor("cuda:0")
    worker = Worker(predictor, "torch")
    worker._warm_up_window_shapes(job())
    # Re-anchored (8 + overlap 4) first, the steady 8 last, two each; then never again.
    assert [n for n, _ in predictor.windows] == [12, 12, 8, 8]
    assert all(shape == (350, 518, 3) for _, shape in predictor.windows)
    worker._warm_up_window_shapes(job())
    assert len(predictor.windows) == 4 and worker.stats.values["warm_up_s"] >= 0
    # Then start-up's objects are out of the collector's reach (interpreter.freeze_survivors).
    assert worker.stats.values["gc_frozen_objects"] > 0 and gc.get_freeze_count() > 0
    assert "windows of 12 and 8 frames" in worker.logged[0]
    # A reconfigured node (new predictor: other weights or backend) warms up again.
    worker.predictor = fresh = RecordingPredictor("cuda:0")
    worker._warm_up_window_shapes(job())
    assert [n for n, _ in fresh.windows] == [12, 12, 8, 8]


def test_a_frame_cache_warms_the_steady_state_of_sliding_windows() -> None:
    """With a frame cache the steady windows encode only the stride's new frames (another
    encoder shape) and replay a graph over cached tokens: both warm up last, and the cache is
    left empty for the real frames."""
    predictor = CachingPredictor("cuda:0")
    Worker(predictor, "torch", stride=2)._warm_up_window_shapes(job(cameras=2, size=8))
    # Re-anchored 16 and steady 8 without keys, then keyed steady windows: all 8 new, then
    # 4 new (stride 2 x 2 cameras) three times.
    assert [n for n, _ in predictor.windows] == [16, 16, 8, 8, 8, 8, 8, 8]
    assert predictor.encoded == [8, 4, 4, 4]
    assert predictor.seen == set()  # emptied
    plain = RecordingPredictor("cuda:0")  # no cache: no keyed windows
    assert warm_up_window_shapes(plain, np.zeros((4, 4, 3), np.uint8), (8,), new_frames=4) == [8]
    assert len(plain.windows) == 2


def test_rig_windows_re_anchor_on_every_camera() -> None:
    predictor = RecordingPredictor("cpu")
    Worker(predictor, "torch")._warm_up_window_shapes(job(cameras=2, size=8))
    assert [n for n, _ in predictor.windows] == [16, 16, 8, 8]


def test_eager_cpu_needs_no_warm_up_and_a_failure_is_only_a_warning() -> None:
    predictor = RecordingPredictor("cpu")
    worker = Worker(predictor, "eager")
    worker._warm_up_window_shapes(job())
    assert predictor.windows == []
    assert worker.stats.values["gc_frozen_objects"] > 0 and gc.get_freeze_count() > 0  # frozen all the same
    failing = Worker(RecordingPredictor("cuda:0", fail=True), "eager")
    failing._warm_up_window_shapes(job())  # must not raise: the windows still run
    assert "out of memory" in failing.warnings[0]


@pytest.mark.parametrize(("counts", "order"), [((8, 12), [12, 8]), ((8, 8), [8]), ((4,), [4])])
def test_warm_up_order(counts, order) -> None:
    predictor = RecordingPredictor("cpu")
    assert warm_up_window_shapes(predictor, np.zeros((4, 4, 3), np.uint8), counts, windows=1) == order
    assert [n for n, _ in predictor.windows] == order
