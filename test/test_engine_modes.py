"""Inference modes and the stage-wise runner: numerics against float32, memory policy, bench."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from vggt_ros.cli import main
from vggt_ros.engine.cuda_graphs import GraphStage, WindowGraphs
from vggt_ros.engine.modes import MODES, get_mode
from vggt_ros.engine.runner import ModelRunner
from vggt_ros.engine.timing import NullTimer
from vggt_ros.eval.bench import BenchCase, query_grid, relative_errors, synthetic_frames
from vggt_ros.model import VGGT, VGGT_TINY
from vggt_ros.model.seeded import seeded_weights_for

FAST_MODE_TOLERANCE = 2e-2  # DESIGN.md section 5: every fast mode within 2e-2 of float32


def _seeded_tiny(cfg=VGGT_TINY) -> VGGT:
    model = VGGT(cfg)
    model.load_state_dict(seeded_weights_for(model, seed=0))
    return model


@pytest.fixture(scope="module")
def case_inputs():
    case = BenchCase(frames=3, height=140, width=182, tracks=8)
    return synthetic_frames(case), query_grid(case.tracks, case.height, case.width)


@pytest.fixture(scope="module")
def fp32_reference(case_inputs):
    images, queries = case_inputs
    return ModelRunner(_seeded_tiny(), "cpu", "fp32").run(images, queries)


@pytest.mark.parametrize("mode", ["official", "bf16", "fp16"])
def test_fast_modes_stay_within_tolerance_of_fp32(mode, case_inputs, fp32_reference):
    images, queries = case_inputs
    out = ModelRunner(_seeded_tiny(), "cpu", mode).run(images, queries)
    errors = relative_errors(out, fp32_reference)
    for key in ("pose_enc", "depth", "world_points", "track"):
        assert errors[key] < FAST_MODE_TOLERANCE, (mode, errors)
    # Reduced precision really happened (a mode silently running fp32 would show 0 error).
    assert errors["depth"] > 1e-6, (mode, errors)
    # Pose guesses accumulate in float32 even where the camera head's products are 16-bit.
    assert out["pose_enc"].dtype == torch.float32


def test_fp32_runner_equals_model_forward(case_inputs, fp32_reference):
    images, queries = case_inputs
    model = _seeded_tiny().eval()
    with torch.no_grad():
        direct = model(images, query_points=queries)
    for key in ("pose_enc", "depth", "world_points", "track", "vis"):
        torch.testing.assert_close(fp32_reference[key], direct[key], rtol=0, atol=0)


def test_reduced_modes_store_matmul_weights_and_keep_norms_in_float32():
    runner = ModelRunner(_seeded_tiny(), "cpu", "bf16")
    block = runner.model.aggregator.global_blocks[0]
    assert block.attn.qkv.weight.dtype == torch.bfloat16
    assert block.mlp.fc2.weight.dtype == torch.bfloat16
    assert block.norm1.weight.dtype == torch.float32
    assert block.ls1.gamma.dtype == torch.float32
    assert runner.model.aggregator.camera_token.dtype == torch.float32
    camera = runner.model.camera_head
    assert camera.trunk[0].attn.qkv.weight.dtype == torch.bfloat16  # 0.9 GB read per window at 1B
    assert camera.token_norm.weight.dtype == torch.float32
    assert runner.model.track_head.tracker.query_ref_token.dtype == torch.float32  # pixel coordinates
    convs = [m for m in runner.model.depth_head.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.dtype == torch.bfloat16 for c in convs)


def test_official_mode_keeps_every_layer_and_bf16_only_what_heads_read():
    cfg = dataclasses.replace(
        VGGT_TINY,
        aggregator=dataclasses.replace(VGGT_TINY.aggregator, depth=6),
        dpt=dataclasses.replace(VGGT_TINY.dpt, layer_indices=(1, 2, 3, 5)),
    )
    images = torch.rand(1, 2, 3, 56, 56)
    official = ModelRunner(_seeded_tiny(cfg), "cpu", "official")
    layers = official.model.aggregate(images, False, official.mode.keep_all_layers, official.mode.keep_dtype)
    assert sorted(layers) == [0, 1, 2, 3, 4, 5]
    assert all(t.dtype == torch.float32 for t in layers.values())
    fast = ModelRunner(_seeded_tiny(cfg), "cpu", "bf16")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # as the runner runs it
        layers = fast.model.aggregate(images, False, fast.mode.keep_all_layers, fast.mode.keep_dtype)
    assert sorted(layers) == [1, 2, 3, 5]
    assert all(t.dtype == torch.bfloat16 for t in layers.values())


def test_runner_times_each_stage(case_inputs):
    from vggt_ros.engine.timing import StageTimer

    images, queries = case_inputs
    timer = StageTimer(torch.device("cpu"))
    ModelRunner(_seeded_tiny(), "cpu", "fp32").run(images, queries, timer=timer)
    assert set(timer.results()) == {"aggregator", "camera", "depth", "points", "tracks"}
    assert all(ms > 0 for ms in timer.results().values())


def test_graph_sections_compute_the_eager_function(case_inputs, fp32_reference):
    """The sections the runner replays as CUDA graphs on GPUs (camera head, tracker) split and
    regroup the heads' work; on the CPU the graph wrapper calls through, so the same wiring
    must reproduce the eager outputs exactly."""
    images, queries = case_inputs
    runner = ModelRunner(_seeded_tiny(), "cpu", "fp32")
    model = runner.model
    with torch.inference_mode():
        batched, batched_queries = model.batched_inputs(images, queries)
        layers = model.aggregate(batched, True)
        tracks, vis, conf = runner._graphed_track_section()(layers, tuple(images.shape[-2:]), batched_queries)
        encodings = runner._graphed_camera_section()(layers)
    assert len(tracks) == model.track_head.tracker.iterations
    torch.testing.assert_close(tracks[-1], fp32_reference["track"], rtol=0, atol=0)
    torch.testing.assert_close(vis, fp32_reference["vis"], rtol=0, atol=0)
    torch.testing.assert_close(conf, fp32_reference["conf"], rtol=0, atol=0)
    torch.testing.assert_close(encodings[-1], fp32_reference["pose_enc"], rtol=0, atol=0)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown inference mode 'int4'"):
        get_mode("int4")
    assert {"fp32", "official", "bf16", "fp16"} <= set(MODES)


def test_bench_command_on_cpu_with_tiny_config(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench", "--config", "vggt-tiny", "--device", "cpu", "--frames", "1,2", "--sizes", "140x140",
            "--tracks", "0,4", "--modes", "official:eager,bf16", "--repeats", "2", "--warmup", "1",
            "--accuracy", "2x140x140x4", "--json", str(out), "-q",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert len(rows) == 2 * 2 * 2  # modes x frame counts x track counts
    assert {r["mode"] for r in rows} == {"official", "bf16"}
    for row in rows:
        assert row["error"] is None and row["total_ms"] > 0
        stages = row["stages_ms"]
        assert {"preprocess", "aggregator", "camera", "depth", "points", "postprocess"} <= set(stages)
        assert ("tracks" in stages) == (row["tracks"] > 0)
        assert list(stages)[0] == "preprocess" and list(stages)[-1] == "postprocess"  # in run order
        network = sum(ms for name, ms in stages.items() if name not in ("preprocess", "postprocess"))
        assert network <= row["total_ms"] * 1.05  # the network total holds its stages
        assert row["end_to_end_ms"] >= row["total_ms"] + stages["preprocess"] + stages["postprocess"] - 1.0
    assert report["accuracy"]["bf16/eager"]["depth"] < FAST_MODE_TOLERANCE
    printed = capsys.readouterr().out
    assert "| mode | backend | frames |" in printed and "mode vs fp32" in printed
    assert "| preprocess ms | aggregator ms |" in printed and "| tracks ms | postprocess ms |" in printed


def test_bench_stride_times_the_steady_state_with_the_frame_cache(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench", "--config", "vggt-tiny", "--device", "cpu", "--frames", "4", "--sizes", "140x140",
            "--stride", "2", "--modes", "official:eager,fp32:eager", "--repeats", "3", "--warmup", "1",
            "--accuracy", "none", "--json", str(out), "-q",
        ]
    )  # fmt: skip
    assert code == 0
    rows = {r["mode"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["official"]["stride"] == rows["fp32"]["stride"] == 2
    # The reference recipe has no cache; ours encodes only the 2 new frames of each window.
    assert not rows["official"]["frame_cache"] and rows["fp32"]["frame_cache"]
    assert "encoder" in rows["fp32"]["stages_ms"] and "encoder" not in rows["official"]["stages_ms"]
    printed = capsys.readouterr().out
    assert "| stride | frame cache |" in printed and "per new keyframe ms" in printed
    assert main(["bench", "--frames", "4", "--stride", "4", "--device", "cpu", "-q"]) == 2


def test_bench_measures_sparse_attention_against_the_exact_reference(tmp_path):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench", "--config", "vggt-tiny", "--device", "cpu", "--frames", "4", "--sizes", "56x70",
            "--modes", "fp32:eager", "--option", "global_key_stride=2", "--repeats", "1", "--warmup", "1",
            "--accuracy", "4x56x70", "--json", str(out), "-q",
        ]
    )  # fmt: skip
    assert code == 0
    errors = json.loads(out.read_text())["accuracy"]["fp32/eager"]
    # fp32 against fp32: the only difference is the approximation, which the reference lacks.
    assert 0.0 < errors["depth"] < 0.5


def test_bench_official_baseline_stays_exact_under_approximate_options(monkeypatch):
    """--option global_key_stride speeds up our modes only: the official row is the exact
    official recipe, so the printed speed-up is against exact inference."""
    import vggt_ros.eval.bench as bench

    seen: dict[str, dict] = {}
    real = bench.Predictor

    def recording(model, **kwargs):
        seen[kwargs["inference_mode"]] = dict(kwargs["runner_options"])
        return real(model, **kwargs)

    monkeypatch.setattr(bench, "Predictor", recording)
    code = main(
        [
            "bench", "--config", "vggt-tiny", "--device", "cpu", "--frames", "4", "--sizes", "56x70",
            "--modes", "official:eager,fp32:eager", "--option", "global_key_stride=2", "--repeats", "1",
            "--warmup", "1", "--accuracy", "none", "-q",
        ]
    )  # fmt: skip
    assert code == 0
    assert "global_key_stride" not in seen["official"]
    assert seen["fp32"]["global_key_stride"] == 2


def test_unknown_runner_option_is_refused():
    with pytest.raises(ValueError, match="unknown runner option.*graph_windw"):
        ModelRunner(_seeded_tiny(), "cpu", "bf16", options={"graph_windw": False})


def test_window_graphs_stay_out_of_cpu_runs():
    """Whole-window CUDA graphs are a GPU feature: CPU runners never build them, and the graph
    wrapper hands CPU inputs back to the caller to run eagerly."""
    assert ModelRunner(_seeded_tiny(), "cpu", "bf16")._window_graphs is None
    graphs = WindowGraphs()
    stage = GraphStage("noop", lambda state: None)
    for _ in range(3):  # a repeated shape would be captured on a GPU
        assert graphs.replay({"x": torch.ones(2)}, [stage], NullTimer().stage) is None
    assert not graphs._graphs
