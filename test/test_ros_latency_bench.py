"""The latency benchmark: a bag replayed at a fixed rate into the real node; the report's stage
latencies come from the node's own stamps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import REPO_ROOT, require_ros

require_ros()


@pytest.mark.slow
def test_replays_a_bag_at_rate_and_reports_every_stage(tmp_path: Path) -> None:
    from vggt_ros.cli import main as cli

    bag = tmp_path / "bag"
    assert cli(["generate", str(bag), "--frames", "24", "--height", "112", "--width", "140", "-q"]) == 0
    out = tmp_path / "latency"
    cmd = [
        sys.executable,
        "-m",
        "vggt_ros.ros.latency_bench",
        str(bag),
        *("--untrained", "--config", "vggt-tiny", "--device", "cpu", "--precision", "fp32"),
        *("--image-size", "140", "--window", "3", "--stride", "1", "--every-frame"),
        # 20 s measured after 3 s of warm-up: on CI's loaded two cores an 8 s run once processed
        # a single window (2026-12-04) and a 12 s run two (2026-12-05) where 12 s alone
        # process 82.
        *("--rate-hz", "8", "--seconds", "20", "--warmup-s", "3", "--out", str(out)),
    ]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "| image_to_tf |" in done.stdout
    report = json.loads((out / "latency.json").read_text())
    assert (out / "latency.png").stat().st_size > 1000
    # The publisher kept its rate and the node saw it; every frame was a keyframe candidate.
    assert report["frames_published"] >= 0.8 * 8 * 20
    # The node's callbacks share the GIL with its inference worker: on CI's two loaded cores it
    # receives fewer than the 8 frames/s published (2.92 frames/s on 2026-12-04, 1.91 on
    # 2026-12-05), so the rate itself says little. What must hold is that frames arrive
    # throughout the run: a stalled subscription would leave whole quarters empty.
    by_second = report["frames_received_by_second"]
    assert len(by_second) >= 19, by_second
    quarters = np.array_split(np.array(by_second), 4)
    assert all(q.sum() >= 2 for q in quarters), by_second
    # The whole seconds and the fraction after them add up to every frame received (a burst
    # after a stall can land in that fraction: 10 frames in one CI run of 2026-12-06).
    tail = report["frames_received_after_whole_seconds"]
    assert tail >= 0
    received = report["frames_received_per_s"] * report["measured_s"]
    assert sum(by_second) + tail == pytest.approx(received, abs=0.5)
    # --every-frame: every received frame becomes a keyframe.
    assert report["keyframes_per_s"] == pytest.approx(report["frames_received_per_s"], rel=0.1)
    assert report["windows_processed"] >= 3
    stages = report["stages_ms"]
    for stage in ("callback", "queue_wait", "preprocess", "network", "chaining", "publish", "image_to_tf"):
        q = stages[stage]
        assert q["count"] >= 1 and 0.0 <= q["p50"] <= q["p95"] <= q["max"], stage
    # A window's TF leaves after its network pass: image-to-TF is at least the network time.
    assert stages["image_to_tf"]["max"] >= stages["network"]["p50"] * 0.5


def test_refuses_a_missing_bag(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "vggt_ros.ros.latency_bench", str(tmp_path / "none")]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bag not found" in done.stderr
