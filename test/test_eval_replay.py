"""`vggt-ros eval` on the shipped ground-truth bag with a predictor made of ground truth + known noise.

The double (test/eval_doubles.py) perturbs every frame's pose and depth by a fixed, seeded
amount; the real pipeline chains its windows, and the report must state exactly the error of
the perturbed trajectory (and the depth noise), whichever ground-truth source is used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from eval_doubles import GroundTruthPredictor

from vggt_ros.cli import build_parser, main
from vggt_ros.eval.commands import run_eval
from vggt_ros.eval.generate import DEFAULT_START
from vggt_ros.eval.metrics import trajectory_errors
from vggt_ros.eval.replay import GroundTruthSpec, ReplayOptions, replay_bag
from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.mapping import PerceptionPipeline, PipelineConfig
from vggt_ros.mapping.export.trajectory import Trajectory

BAG = Path(__file__).resolve().parent / "data" / "synthetic_orbit"
PIPELINE_ARGS = ["--window-size", "4", "--param", "keyframe.min_parallax_px=5.0"]
TRANS_NOISE, DEPTH_NOISE = 0.02, 0.1


@pytest.fixture(scope="module")
def seq():
    return render_sequence(16, 120, 160, seed=0)  # what the shipped bag holds


def config() -> PipelineConfig:
    flat = PipelineConfig().to_flat()
    # The report must state the double's injected pose error: poses pass through unrefined.
    flat.update(
        {"window.size": 4, "window.stride": 2, "keyframe.min_parallax_px": 5.0, "refine.enabled": False}
    )
    return PipelineConfig.from_flat(flat)


def expected_ape(predictor: GroundTruthPredictor, stamps: np.ndarray, seq) -> float:
    idx = np.rint((stamps - DEFAULT_START) * 10).astype(int)
    gt = Trajectory(seq.stamps + DEFAULT_START, seq.cam_to_world)
    return trajectory_errors(Trajectory(stamps, predictor.noisy[idx]), gt, "sim3").summary()["ape_trans_m"][
        "rmse"
    ]


def _evo_ape_rmse(reference: Path, estimate: Path) -> float:
    """APE RMSE (m) of two TUM files read and Sim(3)-aligned by evo itself."""
    from evo.core import metrics, sync
    from evo.tools import file_interface

    ref, est = sync.associate_trajectories(
        file_interface.read_tum_trajectory_file(str(reference)),
        file_interface.read_tum_trajectory_file(str(estimate)),
        max_diff=0.02,
    )
    est.align(ref, correct_scale=True)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    return float(ape.get_statistic(metrics.StatisticsType.rmse))


@pytest.mark.parametrize(
    "gt",
    [None, GroundTruthSpec(tf=("world", "camera_optical_frame")), GroundTruthSpec(topic="/odom")],
    ids=["gt-topic", "tf", "odometry+static-tf"],
)
def test_eval_reports_the_injected_noise(seq, gt: GroundTruthSpec | None) -> None:
    from vggt_ros.eval.report import evaluate

    predictor = GroundTruthPredictor(seq, trans_noise=TRANS_NOISE, depth_noise=DEPTH_NOISE)
    result = replay_bag(BAG, PerceptionPipeline(config(), predictor), ReplayOptions(ground_truth=gt))
    report, _ = evaluate(result)
    assert report["counts"]["windows_rejected"] == 0 and report["counts"]["keyframes"] >= 6
    tr = report["trajectory"]
    assert tr["alignment"] == "sim3" and not report["scale"]["metric"]
    # Exactly the error of the perturbed trajectory, which is of the injected size.
    assert tr["ape_trans_m"]["rmse"] == pytest.approx(
        expected_ape(predictor, result.estimate.stamps, seq), rel=1e-6
    )
    assert 0.3 * TRANS_NOISE * np.sqrt(3) < tr["ape_trans_m"]["rmse"] < 1.5 * TRANS_NOISE * np.sqrt(3)
    # Depth: e ~ U(-a, a) gives AbsRel E|e| = a / 2 (median scaling leaves the factor ~1).
    assert report["depth"]["abs_rel"] == pytest.approx(DEPTH_NOISE / 2, rel=0.05)
    assert report["depth"]["keyframes"] == report["counts"]["keyframes"]
    # Each window's row carries chaining's statistics next to its ground-truth scores.
    rows = report["windows"]["per_window"]
    assert len(rows) == report["counts"]["windows"] and all(r["accepted"] for r in rows)
    assert rows[0]["median_relative_residual"] is None  # the first window aligns to nothing
    for row in rows[1:]:
        assert 0 <= row["median_relative_residual"] < 0.2 and 0 <= row["center_residual"] < 0.05
        assert row["inlier_ratio"] >= 0.6 and row["residual"] < 0.03 and row["reason"] == "ok"


def test_noise_free_double_gives_zero_error(seq) -> None:
    from vggt_ros.eval.report import accuracy_summary, evaluate

    predictor = GroundTruthPredictor(seq)
    report, _ = evaluate(replay_bag(BAG, PerceptionPipeline(config(), predictor)))
    assert report["trajectory"]["ape_trans_m"]["max"] < 1e-6
    assert report["trajectory"]["scale"] == pytest.approx(1 / predictor.norm_scale, rel=1e-6)
    assert report["depth"]["abs_rel"] < 1e-6 and report["depth"]["delta1"] == 1.0
    # Each window's baselines agree with its depth (one scale for both, as chaining needs).
    assert report["windows"]["model"]["baseline_error_pct"] < 1e-3
    assert accuracy_summary(report)["model"]["window_baseline_error_pct"] < 1e-3


def test_cli_writes_report_plots_exports_and_recording(tmp_path, seq) -> None:
    import pycolmap

    from vggt_ros.eval import bags
    from vggt_ros.mapping.export.bundle import read_bundle

    out, rec = tmp_path / "out", tmp_path / "rec"
    args = build_parser().parse_args(
        [
            "eval",
            str(BAG),
            "--out",
            str(out),
            "--export",
            "--record",
            str(rec),
            "-q",
            "--tracks",
            "16",
            *PIPELINE_ARGS,
        ]
    )
    predictor = GroundTruthPredictor(seq, trans_noise=TRANS_NOISE, depth_noise=DEPTH_NOISE)
    assert run_eval(args, predictor=predictor) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["trajectory"]["ape_trans_m"]["rmse"] > 0 and report["dropped"]["windows"] == 0
    assert report["latency_ms"]["window"]["count"] == report["counts"]["windows"]
    assert report["rates"]["keyframe_ratio"] == pytest.approx(report["counts"]["keyframes"] / 16)
    assert "APE translation" in (out / "report.md").read_text()
    # The pose refinement's counters: every frame after a window's first was placed or kept.
    refinement = report["pose_refinement"]
    placed_or_kept = refinement["frames_refined"] + refinement["frames_not_refined"]
    # windows of 4 keyframes (more when re-anchored): at least 3 frames after each first one
    assert placed_or_kept >= 3 * report["counts"]["windows"] > 0 and refinement["refine_failures"] == 0
    measured = refinement["frames_refined_by_sift"] + refinement["frames_head_rotation"]
    assert 0 < measured <= refinement["frames_refined"]
    # the double's rotations are exact (only its steps are noisy): the head's rotations explain
    # the matches and are kept, with fitted steps
    assert refinement["frames_head_rotation"] > 0
    # Overlapping windows share frames and pairs: their keypoints and matches come from the cache.
    assert refinement["refine_keypoints_hits"] > 0 and refinement["refine_matches_hits"] > 0
    assert refinement["refine_keypoints_misses"] > 0
    assert "frames measured from correspondences" in (out / "report.md").read_text()
    assert "image work from the cache" in (out / "report.md").read_text()
    assert _evo_ape_rmse(out / "ground_truth.tum", out / "trajectory.tum") == pytest.approx(
        report["trajectory"]["ape_trans_m"]["rmse"], rel=1e-4
    )
    assert _evo_ape_rmse(out / "ground_truth.tum", out / "trajectory_chained.tum") == pytest.approx(
        report["loops"]["chained_ape_rmse_m"], rel=1e-4
    )
    for name in ("trajectory_top.png", "trajectory_error.png", "depth_error_hist.png", "depth_grid.png"):
        assert (out / name).stat().st_size > 5000, name
    exp = out / "export"
    bundle = read_bundle(exp / "keyframes.npz")
    assert bundle.num_keyframes == report["counts"]["keyframes"] and len(bundle.obs_track) > 0
    model = pycolmap.Reconstruction(str(exp / "colmap"))
    assert model.num_images() == bundle.num_keyframes and model.num_points3D() > 100
    assert (exp / "trajectory.tum").is_file() and (exp / "map.ply").is_file()
    assert len(list((exp / "images").glob("*.png"))) == bundle.num_keyframes
    topics = bags.bag_topics(rec)
    for topic in ("/vggt/depth/image", "/vggt/points", "/vggt/map", "/vggt/tracks", "/vggt/path", "/tf"):
        assert topic in topics, topic
    assert topics["/vggt/depth/image"].count == bundle.num_keyframes


def test_recorded_rate_mode_reports_queue_and_drops(seq) -> None:
    from vggt_ros.eval.report import evaluate

    predictor = GroundTruthPredictor(seq)
    options = ReplayOptions(rate=20.0, queue_size=1)  # 1.5 s of bag in ~0.08 s per frame
    result = replay_bag(BAG, PerceptionPipeline(config(), predictor), options)
    report, _ = evaluate(result)
    assert report["inputs"]["mode"] == "20x recorded rate"
    assert report["latency_ms"]["window_queue"]["count"] == len(result.windows)
    assert result.wall_s >= 1.5 / 20.0
    # Every window either ran (one predict call each) or was dropped at the full queue.
    assert predictor.calls == len(result.windows)
    assert report["dropped"]["frames"] >= report["dropped"]["windows"] >= 0


def test_rate_mode_warms_the_model_up_before_the_clock_starts(tmp_path, seq) -> None:
    """`--rate` replays time the steady state: the first windows at the bag's image shape
    (compilation, CUDA graph capture) run before the replay and are reported apart."""
    out = tmp_path / "out"
    args = build_parser().parse_args(
        ["eval", str(BAG), "--out", str(out), "-q", "--rate", "50", "--no-plots", *PIPELINE_ARGS]
    )
    predictor = GroundTruthPredictor(seq)
    assert run_eval(args, predictor=predictor) == 0
    report = json.loads((out / "report.json").read_text())
    warm = report["inputs"]["warm_up"]
    # Window 4 / stride 2, and 4 + 2 frames for a window re-anchored after a rejection.
    # The steady size runs last (a graphed window keeps the newest shape's CUDA graph).
    assert warm["windows"] == 2 and warm["frames"] == [6, 4] and warm["image_hw"] == [120, 160]
    assert predictor.window_sizes[:4] == [6, 6, 4, 4]
    assert warm["seconds"] >= 0
    # Four warm-up calls, then one per window the replay ran (none of them timed).
    assert predictor.calls == 4 + report["latency_ms"]["window"]["count"]
    to_poses = report["latency_ms"]["window_to_poses"]
    assert to_poses["count"] == report["counts"]["windows_accepted"]
    assert to_poses["p95"] <= to_poses["max"]
    # Every window's stages, for the slow ones (benchmarks/latency_summary.py).
    per_window = report["latency_ms"]["per_window"]
    assert len(per_window) == report["latency_ms"]["window"]["count"]
    assert all({"window_id", "accepted", "queue_ms", "poses_ms", "gc_ms"} <= set(w) for w in per_window)
    args = build_parser().parse_args(
        ["eval", str(BAG), "--out", str(tmp_path / "o2"), "-q", "--warmup-windows", "0", "--rate", "50"]
        + ["--switch-interval-ms", "0.7"]
    )
    predictor = GroundTruthPredictor(seq)
    original = sys.getswitchinterval()
    try:
        assert run_eval(args, predictor=predictor) == 0
        assert sys.getswitchinterval() == pytest.approx(0.0007)  # the replay ran with it
    finally:
        sys.setswitchinterval(original)
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["inputs"]["warm_up"] is None
    assert main(["eval", str(BAG), "--out", str(tmp_path / "o3"), "--warmup-windows", "-1"]) == 2


def test_warm_up_shapes_count_every_camera_of_a_rig(seq) -> None:
    """A window holds its keyframe times of every camera: two image topics double both shapes."""
    from vggt_ros.eval.replay import warm_up_predictor

    predictor = GroundTruthPredictor(seq)
    rig = ReplayOptions(image_topics=["/camera/image_raw", "/camera/image_raw"])
    warm = warm_up_predictor(BAG, predictor, 4, 2, 1, rig)
    assert warm["frames"] == [12, 8] and predictor.window_sizes == [12, 8]
    assert warm_up_predictor(BAG, predictor, 4, 2, 0) is None


def test_user_errors_are_one_line_exit_2(tmp_path, capsys) -> None:
    assert main(["eval", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "bag not found" in capsys.readouterr().err
    assert main(["eval", str(BAG), "--out", str(tmp_path / "o"), "--image-topic", "/nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "image topic /nope not in the bag" in err
    assert main(["eval", str(BAG), "--out", str(tmp_path / "o"), "--gt", "/camera/image_raw"]) == 2
    assert "expected geometry_msgs/msg/PoseStamped" in capsys.readouterr().err
    assert main(["eval", str(BAG), "--out", str(tmp_path / "o"), "--param", "window.bogus=1"]) == 2
    assert main(["generate", str(BAG)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_param_values_parse_like_ros_and_yaml():
    """`--param loop.enabled=false` (how ROS and YAML write booleans) gives a bool, as does
    Python's False; numbers stay numbers and bare words strings."""
    import argparse

    from vggt_ros.eval.commands import pipeline_config

    def config(*params: str):
        args = argparse.Namespace(
            window_size=None, window_stride=None, tracks=None, scale_source=None, param=list(params)
        )
        return pipeline_config(args)

    assert config("loop.enabled=false").loop.enabled is False
    assert config("loop.enabled=True").loop.enabled is True
    assert config("loop.enabled=False").loop.enabled is False
    assert config("keyframe.min_parallax_px=5.0").keyframe.min_parallax_px == 5.0


def test_eval_and_soak_load_the_model_without_its_point_head(tmp_path, monkeypatch) -> None:
    """The mapping pipeline unprojects depth and never reads the point map, so ``vggt-ros eval``
    and ``soak`` skip the point head (runner option ``point_head``; 5.4 of 63.8 ms on the H200)."""
    from vggt_ros.engine.predictor import Predictor

    seen = []

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(kwargs.get("runner_options"))
        raise RuntimeError("stop after loading")

    monkeypatch.setattr(Predictor, "from_checkpoint", spy)
    for command in ("eval", "soak"):
        args = build_parser().parse_args(
            [command, str(BAG), "--out", str(tmp_path / command), "-q", "--untrained"]
        )
        with pytest.raises(RuntimeError, match="stop after loading"):
            args.handler(args)
    assert [options["point_head"] for options in seen] == [False, False]


def test_frame_cache_as_in_the_node_same_results_and_counted(tmp_path, capsys) -> None:
    """`eval` keeps two windows of encoder tokens by default, as the node does: each keyframe is
    encoded once, the results are those without the cache (float32 on the CPU), and the report
    says how the cache was used."""
    common = ["--untrained", "--config", "vggt-tiny", "--device", "cpu", "--no-plots", "-q", *PIPELINE_ARGS]
    assert main(["eval", str(BAG), "--out", str(tmp_path / "cached"), *common]) == 0
    assert main(["eval", str(BAG), "--out", str(tmp_path / "plain"), "--frame-cache", "0", *common]) == 0
    cached = json.loads((tmp_path / "cached" / "report.json").read_text())
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    usage = cached["inputs"]["frame_cache"]
    assert usage["frames"] == 8  # two windows of 4 keyframes, one camera
    assert usage["hits"] > 0 and usage["misses"] >= cached["counts"]["keyframes"] and usage["stale"] == 0
    assert plain["inputs"]["frame_cache"] is None
    assert cached["trajectory"]["ape_trans_m"] == plain["trajectory"]["ape_trans_m"]
    assert cached["depth"]["abs_rel"] == plain["depth"]["abs_rel"]
    assert (tmp_path / "cached" / "trajectory.tum").read_text() == (
        tmp_path / "plain" / "trajectory.tum"
    ).read_text()
    capsys.readouterr()
    assert main(["eval", str(BAG), "--out", str(tmp_path / "small"), "--frame-cache", "2", *common]) == 2
    assert "--frame-cache = 2 cannot hold one window (4 frames" in capsys.readouterr().err
