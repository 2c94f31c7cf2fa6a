"""Latency stage statistics behind the node's /diagnostics (no ROS needed)."""

from __future__ import annotations

import math
import threading

import numpy as np

from vggt_ros.ros.stats import LATENCY_STAGES, Stats, percentiles


def test_percentiles_match_numpy() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 200):
        values = rng.gamma(2.0, 30.0, n).tolist()
        q = percentiles(values)
        assert q["count"] == n
        assert math.isclose(q["p50"], float(np.percentile(values, 50)), rel_tol=1e-12)
        assert math.isclose(q["p95"], float(np.percentile(values, 95)), rel_tol=1e-12)
        assert q["max"] == max(values)
    empty = percentiles([])
    assert empty["count"] == 0 and math.isnan(empty["p95"])


def test_stage_summary_keeps_the_newest_and_orders_stages() -> None:
    stats = Stats()
    for i in range(300):
        stats.stage("network", float(i))
    stats.stage("image_to_tf", 5.0)
    stats.stage("callback", 1.0)
    summary = stats.stage_summary()
    # Pipeline order, whatever the recording order.
    assert list(summary) == [s for s in LATENCY_STAGES if s in summary]
    assert summary["network"]["count"] == 200 and summary["network"]["max"] == 299.0
    assert summary["network"]["p50"] == float(np.percentile(np.arange(100, 300), 50))
    stats.reset()
    assert stats.stage_summary() == {}


def test_stages_are_thread_safe() -> None:
    stats = Stats()

    def record() -> None:
        for _ in range(1000):
            stats.stage("queue_wait", 1.0, keep=10_000)

    threads = [threading.Thread(target=record) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.stage_summary()["queue_wait"]["count"] == 4000
