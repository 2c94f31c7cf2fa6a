"""Encoder tokens reused across overlapping windows (vggt_ros.engine.frame_cache): a window run
from cached tokens equals the uncached window bit for bit in float32 on the CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vggt_ros.engine.frame_cache import FrameTokenCache, resolve_frame_cache
from vggt_ros.engine.predictor import Predictor, warm_up_window_shapes
from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.mapping import KeyframeConfig, PerceptionPipeline, PipelineConfig, WindowConfig
from vggt_ros.mapping.types import Frame
from vggt_ros.model.vggt import VGGT

OUTPUTS = ("cam_to_world", "intrinsics", "depth", "depth_conf", "world_points", "tracks", "track_vis")


def _predictors(cache: int) -> tuple[Predictor, Predictor]:
    """Two predictors on the same tiny weights, with and without a frame cache."""
    torch.manual_seed(0)
    model = VGGT("vggt-tiny").eval()
    twin = VGGT("vggt-tiny").eval()
    twin.load_state_dict(model.state_dict())
    options = dict(device="cpu", precision="fp32", target_size=196)
    return (
        Predictor(model, runner_options={"frame_cache": cache}, **options),
        Predictor(twin, **options),
    )


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(render_sequence(10, 168, 224, seed=4, path="orbit").images)


def _assert_same(a, b) -> None:  # noqa: ANN001
    for name in OUTPUTS:
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(x, y), name


def test_sliding_windows_from_cached_tokens_equal_uncached_bit_for_bit(frames) -> None:
    cached, plain = _predictors(cache=8)
    assert cached.caches_frames and not plain.caches_frames
    queries = np.array([[30.0, 40.0], [120.0, 90.0], [200.0, 150.0]])
    size, stride = 4, 2
    for start in range(0, len(frames) - size + 1, stride):
        keys = list(range(start, start + size))
        a = cached.predict(frames[start : start + size], queries, frame_keys=keys)
        b = plain.predict(frames[start : start + size], queries)
        _assert_same(a, b)
    stats = cached.runner.frame_cache.stats
    # 4 windows: the first encodes 4 frames, each later one 2 new frames and 2 from the cache.
    assert (stats.misses, stats.hits, stats.stale) == (10, 6, 0)


def test_warm_up_runs_the_cached_steady_state_and_leaves_the_cache_empty(frames) -> None:
    cached, _ = _predictors(cache=8)
    assert warm_up_window_shapes(cached, frames[0], (4, 6), windows=1, new_frames=2) == [6, 4]
    cache = cached.runner.frame_cache
    # Keyed windows of 4: all new, then twice 2 new and 2 cached; nothing kept for the real frames.
    assert (cache.stats.misses, cache.stats.hits) == (8, 4) and len(cache) == 0


def test_cache_is_bounded_least_recently_used(frames) -> None:
    cached, plain = _predictors(cache=5)
    cache = cached.runner.frame_cache
    for start in range(0, 7):
        keys = [f"f{i}" for i in range(start, start + 3)]
        cached.predict(frames[start : start + 3], frame_keys=keys)
        assert len(cache) <= 5
    assert cache.stats.evictions == 9 - 5
    # A window larger than the cache still runs (only its oldest frames are not kept).
    keys = [f"g{i}" for i in range(7)]
    _assert_same(cached.predict(frames[:7], frame_keys=keys), plain.predict(frames[:7]))
    assert len(cache) == 5


def test_a_reused_key_with_other_pixels_is_re_encoded(frames) -> None:
    cached, plain = _predictors(cache=8)
    cached.predict(frames[:3], frame_keys=[0, 1, 2])
    # A restarted numbering: key 1 now names another image.
    window = [frames[5], frames[6], frames[2]]
    _assert_same(cached.predict(window, frame_keys=[5, 1, 2]), plain.predict(window))
    stats = cached.runner.frame_cache.stats
    assert stats.stale == 1 and stats.hits == 1


def test_bad_keys_are_refused() -> None:
    cache = FrameTokenCache(4)
    images = torch.rand(1, 2, 3, 28, 28)
    with pytest.raises(ValueError, match="distinct"):
        cache.window_tokens(images, [1, 1], lambda x: x.flatten(1)[:, None])
    with pytest.raises(ValueError, match="2 frames"):
        cache.window_tokens(images, [1], lambda x: x.flatten(1)[:, None])
    with pytest.raises(ValueError, match=">= 1"):
        FrameTokenCache(0)


def test_pipeline_encodes_each_keyframe_once_with_the_same_results() -> None:
    seq = render_sequence(14, 168, 224, seed=5, path="orbit")
    config = PipelineConfig(
        window=WindowConfig(size=4, stride=2),
        keyframe=KeyframeConfig(min_parallax_px=1000.0, min_interval_s=0.0, max_interval_s=0.05),
    )
    cached, plain = _predictors(cache=16)
    results = []
    for predictor in (cached, plain):
        pipeline = PerceptionPipeline(config, predictor)
        out = []
        for i in range(seq.num_frames):
            frame = Frame(stamp=0.1 * i, camera_id="cam", image=seq.images[i], intrinsics=seq.intrinsics)
            job = pipeline.add_frame(frame)
            if job is not None:
                out.append(pipeline.process(job))
        results.append(out)
    assert len(results[0]) == len(results[1]) >= 5
    for a, b in zip(*results):
        fields = {f.name for f in dataclasses.fields(a)}
        assert {"cam_to_map", "depth"} <= fields
        assert np.array_equal(a.cam_to_map, b.cam_to_map) and np.array_equal(a.depth, b.depth)
    stats = cached.runner.frame_cache.stats
    keyframes = sum(len(r.keyframe_ids) for r in results[0])
    assert stats.misses + stats.hits == keyframes and stats.misses < keyframes and stats.stale == 0


@pytest.mark.parametrize(
    ("requested", "window_frames", "frames"), [(-1, 8, 16), (-1, 6, 12), (0, 8, 0), (8, 8, 8), (40, 8, 40)]
)
def test_frame_cache_setting_resolves_against_the_window(requested, window_frames, frames) -> None:
    assert resolve_frame_cache(requested, window_frames) == frames


@pytest.mark.parametrize(("requested", "message"), [(7, "cannot hold one window"), (-2, "use -1")])
def test_frame_cache_setting_refusals(requested, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_frame_cache(requested, 8, "model.frame_cache")
