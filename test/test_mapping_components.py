"""Mapping building blocks: configuration, voxel map, rig grouping, windows, scale estimation."""

from __future__ import annotations

import numpy as np
import pytest

from vggt_ros.mapping import (
    BODY_FROM_OPTICAL,
    Frame,
    Keyframe,
    KeyframeConfig,
    PipelineConfig,
    RigGrouper,
    ScaleConfig,
    ScaleEstimator,
    VoxelMap,
    WindowBuilder,
    WindowConfig,
    map_anchor,
    select_query_points,
)
from vggt_ros.mapping.scale import depth_ratio, odometry_ratios

IMG = np.zeros((8, 8, 3), np.uint8)


# ------------------------------------------------------------------ config


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"window.stride = 8: must be < size"):
        WindowConfig(size=8, stride=8)
    with pytest.raises(ValueError, match=r"keyframe.min_tracked_ratio"):
        KeyframeConfig(min_tracked_ratio=1.5)
    with pytest.raises(ValueError, match=r"scale.source"):
        ScaleConfig(source="lidar")
    with pytest.raises(ValueError, match=r"window.size"):
        WindowConfig(size=True)
    with pytest.raises(ValueError, match=r"min_shared_keyframes"):
        PipelineConfig.from_flat({"window.size": 4, "window.stride": 3, "chaining.min_shared_keyframes": 2})
    with pytest.raises(ValueError, match=r"unknown parameter window.sise"):
        PipelineConfig.from_flat({"window.sise": 4})


def test_config_round_trips_through_flat_parameters() -> None:
    cfg = PipelineConfig(window=WindowConfig(size=5, stride=2, rig_cameras=["a", "b"]))
    flat = cfg.to_flat()
    assert flat["window.size"] == 5 and flat["window.rig_cameras"] == ["a", "b"]
    assert all(isinstance(v, (int, float, str, bool, list)) for v in flat.values())
    assert PipelineConfig.from_flat(flat) == cfg


def test_frame_validation() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        Frame(0.0, "c", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="odom_pose"):
        Frame(0.0, "c", IMG, odom_pose=np.eye(3))


# -------------------------------------------------------------- voxel map


def test_voxel_fusion_is_confidence_weighted() -> None:
    vm = VoxelMap(voxel_size=1.0, max_points=10)
    vm.insert(
        np.array([[0.2, 0.2, 0.2], [0.8, 0.2, 0.2]]),
        np.array([[0, 0, 0], [200, 200, 200]]),
        np.array([1.0, 3.0]),
    )
    assert len(vm) == 1
    np.testing.assert_allclose(vm.points(np.float64)[0], [0.65, 0.2, 0.2])
    np.testing.assert_array_equal(vm.colors()[0], [150, 150, 150])
    assert vm.confidences()[0] == pytest.approx(2.0) and vm.counts()[0] == 2
    vm.insert(np.array([[5.5, 0.5, 0.5], [np.nan, 0, 0]]))
    assert len(vm) == 2


def test_voxel_fusion_over_many_insertions_equals_fusing_all_points_at_once() -> None:
    """Windows that add voxels before, between and after the map's ones (the sorted merge in
    _fold_in) give the same voxels, sums and counts as one dictionary over all points."""
    rng = np.random.default_rng(4)
    vm = VoxelMap(voxel_size=0.5, max_points=10**6)
    sums: dict[tuple[int, int, int], list[float]] = {}
    for k in range(6):
        xyz = rng.normal(size=(400, 3)) * 2.0 + [k - 3.0, 0.0, 0.0]  # overlapping, shifting
        conf = rng.uniform(0.1, 2.0, 400)
        vm.insert(xyz, np.full((400, 3), 100, np.uint8), conf)
        for p, c in zip(xyz, conf, strict=True):
            acc = sums.setdefault(tuple(np.floor(p / 0.5).astype(int)), [0.0, 0.0, 0.0, 0.0, 0])
            acc[0] += c
            acc[1:4] = [a + c * x for a, x in zip(acc[1:4], p, strict=True)]
            acc[4] += 1
    assert len(vm) == len(sums)
    expected = np.array([[a[1] / a[0], a[2] / a[0], a[3] / a[0]] for _, a in sorted(sums.items())])
    got = vm.points(np.float64)
    order = np.lexsort(np.floor(got / 0.5).T[::-1])  # the dictionary's (x, y, z) order
    np.testing.assert_allclose(got[order], expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(vm.counts()[order], [a[4] for _, a in sorted(sums.items())])
    np.testing.assert_allclose(vm.confidences()[order], [a[0] / a[4] for _, a in sorted(sums.items())])


def test_voxel_grouping_by_box_table_equals_sorting_the_keys() -> None:
    """_unique_voxels groups a compact window through a table over its bounding box and a sparse
    one by sorting; both must give np.unique's keys and inverse, also beyond the packed range."""
    from vggt_ros.mapping.voxel_map import _pack, _unique_voxels

    rng = np.random.default_rng(5)
    compact = rng.integers(-10, 10, (5000, 3)) + [7, -300, 12]  # 8,000 cells: the table
    sparse = rng.integers(-(10**5), 10**5, (5000, 3))  # far beyond 16 cells a point: the sort
    extreme = np.vstack([compact[:50], [[2**22, 0, 0], [-(2**22), 5, 5]]])  # clipped as _pack does
    for index in (compact, sparse, extreme):
        uniq, inverse = _unique_voxels(index)
        expected_uniq, expected_inverse = np.unique(_pack(index), return_inverse=True)
        np.testing.assert_array_equal(uniq, expected_uniq)
        np.testing.assert_array_equal(inverse, expected_inverse)


def test_voxel_budget_drops_oldest_then_least_confident() -> None:
    vm = VoxelMap(voxel_size=1.0, max_points=3)
    vm.insert(np.array([[0.5, 0, 0], [1.5, 0, 0]]), conf=np.array([5.0, 1.0]))
    vm.insert(np.array([[2.5, 0, 0], [3.5, 0, 0]]), conf=np.array([1.0, 1.0]))
    assert len(vm) == 3 and vm.dropped_by_budget == 1
    assert sorted(vm.points()[:, 0].tolist()) == [0.5, 2.5, 3.5]


def test_incremental_fusion_equals_fusing_everything_at_once() -> None:
    """Windows folded in one by one (updates in place, new voxels inserted in order) give the
    voxels that summing all points per voxel gives; the budget keeps the newest voxels and,
    within the stamp at the cut, the most confident (the order a full lexsort would give)."""
    rng = np.random.default_rng(3)
    windows = [(rng.uniform(-1, 1, (400, 3)) + 0.3 * k, rng.uniform(0.1, 2.0, 400)) for k in range(5)]
    vm = VoxelMap(voxel_size=0.2, max_points=10**6)
    for xyz, conf in windows:
        vm.insert(xyz, conf=conf)
    xyz = np.concatenate([w[0] for w in windows])
    conf = np.concatenate([w[1] for w in windows])
    stamp = np.concatenate([np.full(len(w[0]), k + 1) for k, w in enumerate(windows)])
    keys = [tuple(v) for v in np.floor(xyz / 0.2).astype(int)]
    ref: dict = {}
    for key, p, c, t in zip(keys, xyz, conf, stamp):
        w, wp, n, last = ref.get(key, (0.0, np.zeros(3), 0, 0))
        ref[key] = (w + c, wp + c * p, n + 1, max(last, t))
    assert len(vm) == len(ref)
    got = {
        tuple(np.floor(p / 0.2).astype(int)): (p, c, n)
        for p, c, n in zip(vm.points(np.float64), vm.confidences(), vm.counts())
    }
    for key, (w, wp, n, _) in ref.items():
        p, c, count = got[key]
        np.testing.assert_allclose(p, wp / w, atol=1e-9)
        assert count == n and c == pytest.approx(w / n, rel=1e-6)
    # Budget: drop `excess` voxels, oldest stamp first, then lowest mean confidence.
    budget = len(vm) - 37
    order = sorted(ref, key=lambda k: (ref[k][3], ref[k][0] / ref[k][2]))
    vm.max_points = budget
    vm.enforce_bounds()
    assert len(vm) == budget and vm.dropped_by_budget == 37
    kept = {tuple(np.floor(p / 0.2).astype(int)) for p in vm.points(np.float64)}
    assert kept == set(order[37:])


def test_voxel_radius_and_rescale() -> None:
    vm = VoxelMap(voxel_size=0.1, max_points=100, radius=2.0)
    vm.insert(np.array([[0.05, 0, 0], [1.05, 0, 0], [5.05, 0, 0]]), center=np.zeros(3))
    assert len(vm) == 2 and vm.dropped_by_radius == 1
    vm.rescale(2.0, center=np.array([0.05, 0, 0]))
    np.testing.assert_allclose(sorted(vm.points(np.float64)[:, 0]), [0.05, 2.05], atol=1e-9)
    vm.transform(BODY_FROM_OPTICAL, np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(vm.points(np.float64)[:, 2], [1.0, 1.0], atol=1e-9)


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_voxel_map_save(tmp_path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    vm = VoxelMap(voxel_size=0.01, max_points=1000)
    xyz = rng.uniform(-1, 1, (50, 3))
    vm.insert(xyz, rng.integers(0, 255, (50, 3)), rng.uniform(1, 2, 50))
    path = vm.save(tmp_path / f"map{suffix}")
    data = path.read_bytes()
    header, _, body = data.partition(b"end_header\n" if suffix == ".ply" else b"DATA binary\n")
    assert len(body) == len(vm) * (19 if suffix == ".ply" else 20)
    row = np.dtype(
        [("xyz", "<f4", 3), ("rgb", "u1", 3), ("conf", "<f4")]
        if suffix == ".ply"
        else [("xyz", "<f4", 3), ("rgb", "<u4"), ("conf", "<f4")]
    )
    rows = np.frombuffer(body, row)
    np.testing.assert_allclose(rows["xyz"], vm.points())
    np.testing.assert_allclose(rows["conf"], vm.confidences())
    if suffix == ".pcd":
        rgb = rows["rgb"]
        np.testing.assert_array_equal(np.stack((rgb >> 16 & 255, rgb >> 8 & 255, rgb & 255), 1), vm.colors())
    try:
        import open3d as o3d
    except ImportError:  # open3d's wheel needs system libraries not every machine has
        return
    cloud = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(cloud.points), vm.points(), atol=1e-6)
    with pytest.raises(ValueError, match=r"\.ply or \.pcd"):
        vm.save(tmp_path / "map.xyz")


# ------------------------------------------------------------ rig, window


def test_rig_grouping_by_time_tolerance() -> None:
    g = RigGrouper(["left", "right"], tolerance_s=0.01, max_wait_s=0.5)
    right0 = Frame(0.004, "right", IMG)
    g.observe(right0)  # the secondary camera may come first
    left0 = Frame(0.0, "left", IMG)
    g.observe(left0)
    g.trigger(left0)
    ready = g.pop_ready()
    assert [[f.camera_id for f in t] for t in ready] == [["left", "right"]]
    # A time whose partner never arrives is released once the partner is past the tolerance.
    left1 = Frame(1.0, "left", IMG)
    g.observe(left1)
    g.trigger(left1)
    assert g.pop_ready() == []
    g.observe(Frame(1.05, "right", IMG))
    ready = g.pop_ready()
    assert [[f.camera_id for f in t] for t in ready] == [["left"]] and g.incomplete_times == 1
    g.observe(Frame(2.0, "other", IMG))
    assert g.ignored_frames == 1


def test_window_builder_size_stride_and_shared_ids() -> None:
    wb = WindowBuilder(WindowConfig(size=4, stride=2))
    jobs = []
    for t in range(10):
        kfs = [Keyframe(2 * t, t, Frame(t, "a", IMG), "x"), Keyframe(2 * t + 1, t, Frame(t, "b", IMG), "rig")]
        job = wb.add_time(kfs)
        if job is not None:
            jobs.append(job)
    assert [j.window_id for j in jobs] == [0, 1, 2, 3]
    assert [kf.time_index for kf in jobs[1].keyframes] == [2, 2, 3, 3, 4, 4, 5, 5]
    assert jobs[1].shared_ids == [4, 5, 6, 7] and jobs[0].shared_ids == []


def test_query_points_fill_textureless_images() -> None:
    pts = select_query_points(np.full((100, 120, 3), 90, np.uint8), 10)
    assert pts.shape == (10, 2) and np.all(pts >= 0) and np.all(pts[:, 0] <= 119)


# ------------------------------------------------------------------ scale


def test_scale_estimator_is_robust_and_reports_uncertainty() -> None:
    rng = np.random.default_rng(0)
    est = ScaleEstimator(ScaleConfig(source="odometry", min_samples=5))
    assert not est.estimate().metric and est.estimate().sigma == float("inf")
    samples = 2.5 * np.exp(rng.normal(0, 0.02, 100))
    samples[:20] = rng.uniform(0.1, 50, 20)  # 20 % wild samples
    est.add_samples(samples)
    e = est.estimate()
    assert e.metric and e.value == pytest.approx(2.5, rel=0.02) and 0 < e.sigma < 0.05
    assert ScaleEstimator(ScaleConfig(source="fixed", fixed_factor=0.3)).estimate().value == 0.3
    assert not ScaleEstimator(ScaleConfig()).estimate().metric


def test_scale_samples() -> None:
    a = np.array([[0, 0, 0], [1, 0, 0], [1.01, 0, 0]], float)
    r = odometry_ratios(a, 2.0 * a, min_baseline_m=0.1)
    np.testing.assert_allclose(r, [2.0, 2.0])  # the 2 cm pair is skipped
    pred = np.full((20, 20), 2.0)
    sensor = np.full((10, 10), 3.0)  # other resolution: resampled
    sensor[0, 0] = 50.0  # out of range
    assert depth_ratio(pred, np.ones((20, 20)), sensor, 50.0, 0.1, 10.0) == pytest.approx(1.5)


def test_map_anchor_prefers_odometry() -> None:
    odom = np.eye(4)
    odom[:3, 3] = [1, 2, 0]
    pose, how = map_anchor(odom, None)
    assert how == "odometry" and np.allclose(pose[:3, 3], [1, 2, 0])
    # Optical z (forward) becomes map x, optical y (down) becomes map -z.
    pose, how = map_anchor(None, None)
    assert how == "optical-axes"
    np.testing.assert_allclose(pose[:3, :3] @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_allclose(pose[:3, :3] @ [0, 1, 0], [0, 0, -1])
