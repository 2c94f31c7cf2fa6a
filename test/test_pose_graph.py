"""The Sim(3) keyframe pose graph (vggt_ros.mapping.pose_graph) on synthetic drift."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vggt_ros.geometry.alignment import Sim3, umeyama
from vggt_ros.mapping.pose_graph import (
    EdgeSigmas,
    PoseGraph,
    from_gtsam,
    interpolate_correction,
    node_sim3,
    to_gtsam,
    window_relative,
)

RNG = np.random.default_rng(0)


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(axis, np.float64) / np.linalg.norm(axis) * angle).as_matrix()


def circle(n: int, radius: float = 3.0) -> np.ndarray:
    """[n, 4, 4] camera-to-world poses going once round a circle, looking along the path."""
    poses = []
    for k in range(n):
        a = 2 * np.pi * k / n
        T = np.eye(4)
        T[:3, :3] = _rot([0, 0, 1], a + np.pi / 2) @ np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
        T[:3, 3] = [radius * np.cos(a), radius * np.sin(a), 1.0]
        poses.append(T)
    return np.stack(poses)


def window_poses(gt: np.ndarray, ids: list[int], normalizer: float) -> dict[int, np.ndarray]:
    """What a VGGT window reports: poses relative to its first keyframe, in its own units."""
    first = np.linalg.inv(gt[ids[0]])
    out = {}
    for k in ids:
        T = first @ gt[k]
        T[:3, 3] /= normalizer
        out[k] = T
    return out


def drifting_graph(n: int = 60, size: int = 4, stride: int = 2, seed: int = 0, with_loop: bool = True):
    """A pose graph built like the pipeline does: windows of ``size`` keyframes every ``stride``,
    chained with errors that random-walk in scale (1.5 % per window), rotation (0.35 degrees) and
    position (1 cm); optionally one loop from a verification window on keyframes 0, 1, n-2, n-1
    aligned on the old keyframes (:func:`loop_edges`)."""
    rng = np.random.default_rng(seed)
    gt = circle(n)
    graph = PoseGraph()
    drift = Sim3.identity()
    for start in range(0, n - size + 1, stride):
        ids = list(range(start, start + size))
        lam = rng.uniform(1.0, 4.0)  # the window's own normalized scale
        local = window_poses(gt, ids, lam)
        exact = Sim3.from_matrix(gt[ids[0]] @ np.diag([lam, lam, lam, 1.0]))  # window -> world
        if start:
            step = Sim3(
                float(np.exp(0.015 * rng.normal())),
                _rot(rng.normal(size=3), 0.006),
                rng.normal(size=3) * 0.01,
            )
            drift = drift @ step
        to_g = drift @ exact
        for k in ids:
            if k not in graph:
                graph.add_keyframe(k, node_sim3(to_g, local[k], to_g.scale), fixed=k == 0)
        for a, b in zip(ids, ids[1:]):
            graph.add_odometry(
                a, b, window_relative(to_g, local[a], local[b], graph.node_scale(a), graph.node_scale(b))
            )
    graph.update()
    before = graph.poses()
    if with_loop:
        for old, new, rel in loop_edges(gt, graph):
            graph.add_loop(old, new, rel)
        graph.update(extra_iterations=3)
    return gt, graph, before


def loop_edges(gt: np.ndarray, graph: PoseGraph) -> list[tuple[int, int, Sim3]]:
    """The loop edges of an exact verification window on keyframes 0, 1, n-2, n-1 aligned on
    the old keyframes."""
    n = len(gt)
    ids = [0, 1, n - 2, n - 1]
    local = window_poses(gt, ids, 2.0)
    to_g = Sim3.from_matrix(gt[0] @ np.diag([2.0, 2.0, 2.0, 1.0]))  # aligned on keyframes 0, 1
    return [
        (
            old,
            new,
            window_relative(to_g, local[old], local[new], graph.node_scale(old), graph.node_scale(new)),
        )
        for old in (0, 1)
        for new in (n - 2, n - 1)
    ]


def ape(gt: np.ndarray, est: dict[int, Sim3]) -> float:
    p = np.stack([est[k].translation for k in range(len(gt))])
    q = gt[:, :3, 3]
    s = umeyama(p, q, with_scale=True)
    return float(np.sqrt(np.mean(np.sum((s.apply(p) - q) ** 2, axis=1))))


def test_gtsam_conversions_round_trip() -> None:
    s = Sim3(1.7, _rot([1, 2, 3], 0.4), np.array([0.3, -1.0, 2.0]))
    back = from_gtsam(to_gtsam(s))
    np.testing.assert_allclose(back.matrix(), s.matrix(), atol=1e-12)
    p = RNG.normal(size=3)
    np.testing.assert_allclose(to_gtsam(s).transformFrom(p), s.apply(p), atol=1e-12)


def test_window_edges_are_exact_for_a_consistent_window() -> None:
    gt = circle(10)
    local = window_poses(gt, [2, 3, 4], 2.5)
    to_g = Sim3(3.0, _rot([0, 1, 0], 0.3), np.array([1.0, 2.0, 3.0]))
    xa, xb = node_sim3(to_g, local[2], 3.0), node_sim3(to_g, local[3], 1.5)
    rel = window_relative(to_g, local[2], local[3], 3.0, 1.5)
    np.testing.assert_allclose((xa @ rel).matrix(), xb.matrix(), atol=1e-12)


def test_loop_closure_halves_the_drift() -> None:
    ratios = []
    for seed in range(5):
        gt, graph, before = drifting_graph(seed=seed)
        ratios.append(ape(gt, graph.poses()) / ape(gt, before))
        assert graph.stats.loop_edges == 4 and graph.stats.odometry_edges == 3 * 29
    assert float(np.median(ratios)) <= 0.5, ratios
    assert max(ratios) < 0.8, ratios
    # Without the loop the optimised chain keeps its drift.
    gt, graph, before = drifting_graph(with_loop=False)
    assert ape(gt, graph.poses()) == pytest.approx(ape(gt, before), rel=1e-3)


def test_interpolated_correction_runs_from_identity_to_the_whole() -> None:
    c = Sim3(1.3, _rot([0.2, 0.1, 1.0], 1.2), np.array([0.5, -2.0, 1.0]))
    np.testing.assert_allclose(interpolate_correction(c, 0.0).matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(interpolate_correction(c, 1.0).matrix(), c.matrix(), atol=1e-9)
    half = interpolate_correction(c, 0.5)
    np.testing.assert_allclose((half @ half).matrix(), c.matrix(), atol=1e-9)


def test_a_large_correction_needs_the_spread_start() -> None:
    """A lap whose every odometry edge under-estimates the turn by 1.5 degrees ends about 90
    degrees off. Robust loop edges that far from the chain get almost no weight, so adding them
    leaves the chain where it was; moving the keyframes by a growing share of the loop's
    correction first (what the back end does, ``loop.spread_correction``) closes the loop."""
    n = 60
    gt = circle(n)
    bias = Sim3(1.0, _rot([0, 1, 0], np.radians(1.5)), np.zeros(3))  # about the camera's vertical
    exact = [Sim3.from_matrix(np.linalg.inv(gt[k]) @ gt[k + 1]) for k in range(n - 1)]
    results = {}
    for spread in (False, True):
        graph = PoseGraph()
        pose = Sim3.from_matrix(gt[0])
        graph.add_keyframe(0, pose, fixed=True)
        for k in range(n - 1):
            measured = exact[k] @ bias
            pose = pose @ measured
            graph.add_keyframe(k + 1, pose)
            graph.add_odometry(k, k + 1, measured)
        graph.update()
        before = graph.poses()
        correction = Sim3.from_matrix(gt[n - 1]) @ before[n - 1].inverse()
        assert np.degrees(np.arccos((np.trace(correction.rotation) - 1) / 2)) > 60
        for old, new in ((0, n - 2), (0, n - 1), (1, n - 2), (1, n - 1)):
            graph.add_loop(old, new, Sim3.from_matrix(np.linalg.inv(gt[old]) @ gt[new]))
        if spread:
            graph.reoptimize_from(
                {k: interpolate_correction(correction, k / (n - 1)) @ before[k] for k in range(1, n)}
            )
        graph.update(extra_iterations=5)
        results[spread] = ape(gt, graph.poses()) / ape(gt, before)
    assert results[False] > 0.8, results  # the loop edges, that far off, are all but ignored
    assert results[True] < 0.3, results


def test_the_spread_start_optimises_only_the_loops_span() -> None:
    """A loop near the end of a long chain: the batch solve of reoptimize_from takes the moved
    keyframes and the factors touching them (its cost follows the loop's span, not the graph),
    closes the loop as well, and leaves the keyframes before the loop where they were."""
    n, old = 200, 150
    gt = circle(n, radius=20.0)
    bias = Sim3(1.0, _rot([0, 1, 0], np.radians(1.0)), np.zeros(3))
    graph = PoseGraph()
    pose = Sim3.from_matrix(gt[0])
    graph.add_keyframe(0, pose, fixed=True)
    for k in range(n - 1):
        measured = Sim3.from_matrix(np.linalg.inv(gt[k]) @ gt[k + 1]) @ bias
        pose = pose @ measured
        graph.add_keyframe(k + 1, pose)
        graph.add_odometry(k, k + 1, measured)
    graph.update()
    before = graph.poses()
    # The loop edges say where the end is relative to keyframe `old`, as the chain got there.
    truth_from_old = {k: before[old] @ Sim3.from_matrix(np.linalg.inv(gt[old]) @ gt[k]) for k in range(n)}
    for a, b in ((old, n - 1), (old + 1, n - 2)):
        graph.add_loop(a, b, Sim3.from_matrix(np.linalg.inv(gt[a]) @ gt[b]))
    correction = truth_from_old[n - 1] @ before[n - 1].inverse()
    share = {k: (k - old) / (n - 1 - old) for k in range(old + 1, n)}
    moved = {k: interpolate_correction(correction, f) @ before[k] for k, f in share.items()}
    local, _ = graph._local_problem(set(moved), graph._isam.calculateEstimate())
    assert local.size() < 0.35 * n  # the span's ~50 odometry edges, 2 loop edges and held neighbours
    graph.reoptimize_from(moved)
    graph.update(extra_iterations=5)
    after = graph.poses()

    def err(est: dict[int, Sim3]) -> float:
        gaps = [est[k].translation - truth_from_old[k].translation for k in moved]
        return float(np.mean(np.linalg.norm(gaps, axis=1)))

    assert err(after) < 0.3 * err(before), (err(before), err(after))
    shift = max(np.linalg.norm(after[k].translation - before[k].translation) for k in range(old - 50))
    assert shift < 1e-3, shift


def test_incremental_cost_stays_bounded() -> None:
    graph = PoseGraph()
    graph.add_keyframe(0, Sim3.identity(), fixed=True)
    step = Sim3(1.0, _rot([0, 0, 1], 0.01), np.array([0.1, 0.0, 0.0]))
    pose = Sim3.identity()
    times = []
    for k in range(1, 600):
        pose = pose @ step
        graph.add_keyframe(k, pose)
        graph.add_odometry(k - 1, k, step, EdgeSigmas())
        t0 = time.perf_counter()
        graph.update()
        times.append(time.perf_counter() - t0)
    early, late = np.median(times[50:150]), np.median(times[-100:])
    assert late < 3.0 * early + 1e-3, (early, late)


def test_sensor_odometry_edges_remove_the_drift() -> None:
    """Metric odometry between consecutive keyframes (noisy: 3 mm, 0.1 degrees on 0.31 m steps)
    pulls a chain
    that drifts in scale, rotation and position back to the truth, without any loop; the
    residual is zero at the truth whatever the nodes' local scales."""
    from vggt_ros.mapping.pose_graph import SensorSigmas, sensor_residual

    ratios = []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        gt, graph, before = drifting_graph(seed=seed, with_loop=False)
        n = len(gt)
        for a in range(n - 1):
            measured = np.linalg.inv(gt[a]) @ gt[a + 1]
            measured[:3, :3] = _rot(rng.normal(size=3), np.radians(0.1)) @ measured[:3, :3]
            measured[:3, 3] += rng.normal(size=3) * 0.003
            # G is the world here (the first window is exact and keyframe 0 fixed): 1 m per unit.
            # The first edge's guess is 20 % off; the graph estimates the unit itself.
            graph.add_sensor_odometry(a, a + 1, measured, 1.2, SensorSigmas())
        graph.update(extra_iterations=3)
        ratios.append(ape(gt, graph.poses()) / ape(gt, before))
        assert graph.stats.sensor_edges == n - 1
        assert graph.metres_per_unit() == pytest.approx(1.0, rel=0.03)  # one G unit is a metre
    assert max(ratios) <= 0.35, ratios  # measured 0.10-0.21

    exact = Sim3(2.5, _rot([0, 0, 1], 0.3), np.array([1.0, 0.0, 0.0]))
    other = Sim3(0.7, _rot([1, 0, 0], 0.2), np.array([0.0, 2.0, 0.5]))
    # G units of 2 m: the metric translation is twice the G-unit one.
    measured = np.eye(4)
    measured[:3, :3] = exact.rotation.T @ other.rotation
    measured[:3, 3] = exact.rotation.T @ (other.translation - exact.translation) * 2.0
    np.testing.assert_allclose(sensor_residual(exact, other, measured, 2.0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="metres_per_unit"):
        graph.add_sensor_odometry(0, 1, measured, 0.0)
    with pytest.raises(KeyError):
        graph.add_sensor_odometry(0, 10_000, measured, 1.0)


def test_a_failed_update_restarts_the_solver_and_later_updates_work() -> None:
    """An indeterminate step (here two new nodes tied only to each other) used to leave iSAM2
    half-updated: every later update failed on the same keys (a soak lost 190 windows)."""
    graph = PoseGraph()
    graph.add_keyframe(0, Sim3.identity(), fixed=True)
    graph.update()
    step = Sim3(1.0, np.eye(3), np.array([1.0, 0.0, 0.0]))
    graph.add_keyframe(1, step)
    graph.add_keyframe(3, step @ step)
    graph.add_odometry(1, 3, step)  # nothing ties 1 and 3 to the fixed node: indeterminate
    graph.update()
    assert graph.stats.failed_updates == 1
    graph.add_keyframe(2, step)
    graph.add_odometry(0, 2, step)
    graph.update()  # would raise "key already exists" before the restart
    assert graph.stats.failed_updates == 1
    poses = graph.poses()
    assert set(poses) == {0, 1, 2, 3}
    np.testing.assert_allclose(poses[2].translation, [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose((poses[1].inverse() @ poses[3]).translation, [1.0, 0.0, 0.0], atol=1e-6)
    # A second indeterminate step: weak priors go to the nodes without one only (2, 5, 6), so
    # repeated failures do not grow the graph by a prior per node each time.
    factors = graph._all_factors.size()
    graph.add_keyframe(5, step)
    graph.add_keyframe(6, step @ step)
    graph.add_odometry(5, 6, step)
    graph.update()
    assert graph.stats.failed_updates == 2
    assert graph._all_factors.size() == factors + 1 + 3


def test_a_failed_recovery_does_not_poison_later_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the restart fails as well, that update raises (the window fails and is counted), but
    what it held is not handed to the next update again: before, every later window failed on
    'key already exists' (the twelfth session's 30-minute soak lost 172 windows so)."""
    graph = PoseGraph()
    step = Sim3(1.0, np.eye(3), np.array([1.0, 0.0, 0.0]))
    graph.add_keyframe(0, Sim3.identity(), fixed=True)
    graph.add_keyframe(1, step)
    graph.add_keyframe(3, step @ step)
    graph.add_odometry(1, 3, step)  # indeterminate: nothing ties 1 and 3 to node 0

    def failing_restart(values):  # noqa: ANN001, ANN202
        raise RuntimeError("still indeterminate")

    real_restart = graph._restart_isam
    monkeypatch.setattr(graph, "_restart_isam", failing_restart)
    with pytest.raises(RuntimeError, match="still indeterminate"):
        graph.update()
    monkeypatch.setattr(graph, "_restart_isam", real_restart)
    factors = graph._all_factors.size()
    graph.add_keyframe(2, step)
    graph.add_odometry(0, 2, step)
    graph.update()  # no 'key already exists', no second recovery
    assert graph.stats.failed_updates == 1
    assert graph._all_factors.size() == factors + 1  # the new edge only, not the old ones again
    poses = graph.poses()
    assert set(poses) == {0, 1, 2, 3}
    np.testing.assert_allclose(poses[2].translation, [1.0, 0.0, 0.0], atol=1e-6)
