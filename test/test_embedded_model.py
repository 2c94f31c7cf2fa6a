"""The compact model shipped in the package: identity, loading, and what it measurably learned."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vggt_ros.model.checkpoint import CheckpointError, load_model
from vggt_ros.model.checkpoint.formats import saved_image_size
from vggt_ros.model.embedded import DEFAULT_MODEL, choose_model

MAX_BYTES = 15_000_000  # the budget for the shipped file


def test_file_identity_size_and_metadata() -> None:
    path = DEFAULT_MODEL.verified_path()
    assert path.stat().st_size <= MAX_BYTES
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in list(f.keys())[:20]}
    assert meta["format"] == "vggt_ros.model/1" and meta["config"] == DEFAULT_MODEL.config
    assert dtypes == {torch.float16}
    assert Path(__file__).resolve().parents[1].joinpath(DEFAULT_MODEL.card).is_file()


def test_loads_strictly_into_its_config() -> None:
    model, info = load_model(DEFAULT_MODEL.verified_path(), config=DEFAULT_MODEL.config)
    assert info.trained and info.num_parameters == sum(p.numel() for p in model.parameters())
    assert not info.missing_keys and not info.unexpected_keys


def test_altered_or_missing_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / DEFAULT_MODEL.filename
    shutil.copy(DEFAULT_MODEL.path, copy)
    with copy.open("r+b") as f:
        f.seek(-100, 2)
        f.write(b"\x00" * 8)
    altered = replace(DEFAULT_MODEL, filename=str(copy))  # an absolute name replaces the folder
    with pytest.raises(CheckpointError, match="altered"):
        altered.verified_path()
    with pytest.raises(CheckpointError, match="missing"):
        replace(DEFAULT_MODEL, filename=str(tmp_path / "nope.safetensors")).verified_path()


def test_model_choice_rules() -> None:
    default = choose_model(None)
    assert (
        default.embedded is DEFAULT_MODEL and default.config == "vggt-compact" and default.image_size == 294
    )
    assert "vggt-compact-v10" in default.description and DEFAULT_MODEL.card in default.description
    ckpt = choose_model("facebook/VGGT-1B")
    assert ckpt.config == "vggt-1b" and ckpt.image_size == 518 and ckpt.embedded is None
    rnd = choose_model(None, "vggt-tiny", 140, untrained=True)
    assert rnd.untrained and rnd.source is None and rnd.image_size == 140 and "UNTRAINED" in rnd.description
    with pytest.raises(ValueError, match="choose one"):
        choose_model("x.pt", untrained=True)
    with pytest.raises(ValueError, match="embedded model is 'vggt-compact'"):
        choose_model(None, "vggt-1b")


def test_a_checkpoint_without_config_takes_the_config_saved_in_its_header(tmp_path: Path) -> None:
    """``--checkpoint run.safetensors`` alone loads a compact model the trainer exported (its header
    names the config); files without the field, torch files and repo ids keep vggt-1b."""
    copy = tmp_path / "exported.safetensors"
    shutil.copyfile(DEFAULT_MODEL.path, copy)
    saved = choose_model(str(copy))
    assert saved.config == "vggt-compact" and saved.image_size == DEFAULT_MODEL.image_size == 294
    assert "as saved in the file" in saved.description and "trained at 294 px" in saved.description
    assert choose_model(str(copy), "vggt-tiny").config == "vggt-tiny"  # an explicit config wins
    # Its size is the header's image_size; files exported before the field existed carry it as
    # the procedural width in their provenance (v5: 182), and files with neither get the config's.
    from safetensors.torch import load_file

    state = load_file(str(DEFAULT_MODEL.path))
    older = tmp_path / "older.safetensors"
    provenance = '{"data": {"procedural": {"height": 140, "width": 182}}}'
    save_file(state, str(older), metadata={"config": "vggt-compact", "provenance": provenance})
    assert saved_image_size(older) == 182 and choose_model(str(older)).image_size == 182
    plain = tmp_path / "plain.safetensors"
    save_file(state, str(plain), metadata={"config": "vggt-compact"})
    assert saved_image_size(plain) is None and choose_model(str(plain)).image_size == 182  # config img_size
    assert choose_model(str(older), image_size=518).image_size == 518
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(2)}, str(bare))
    assert choose_model(str(bare)).config == "vggt-1b"
    pickled = tmp_path / "weights.pt"
    torch.save({"x": torch.zeros(2)}, pickled)
    assert choose_model(str(pickled)).config == "vggt-1b"
    assert choose_model(str(tmp_path / "missing.safetensors")).config == "vggt-1b"


def demo_pipeline_settings() -> dict:
    """The pipeline's defaults with the demo's window settings (windows of 4, stride 2), flat."""
    from vggt_ros.eval.accuracy import DEMO_WINDOW_SETTINGS
    from vggt_ros.mapping import PipelineConfig

    flat = PipelineConfig().to_flat()
    flat.update({**DEMO_WINDOW_SETTINGS, "window.num_track_queries": 0})
    return flat


@pytest.fixture(scope="module")
def demo_accuracy() -> dict:
    """The accuracy table `make demo` prints: the bundled sequence's left camera through the
    pipeline with the demo's window settings, for the embedded model and for untrained weights,
    with the defaults ("pipeline") and without the pose refinement ("head")."""
    from vggt_ros.engine import Predictor
    from vggt_ros.eval.accuracy import synthetic_sequence_accuracy
    from vggt_ros.eval.synthetic import render_sequence, render_size
    from vggt_ros.mapping import PipelineConfig

    height, width = render_size(DEFAULT_MODEL.image_size)  # the demo renders at the model's size
    seq = render_sequence(num_frames=16, height=height, width=width, seed=0)
    flat = demo_pipeline_settings()
    choice = choose_model(None)
    trained = Predictor.from_checkpoint(choice.source, config=choice.config, device="cpu", target_size=width)
    torch.manual_seed(0)  # the untrained weights, whatever ran before
    untrained = Predictor.from_checkpoint(None, config=choice.config, device="cpu", target_size=width)
    torch.manual_seed(0)
    predictors = {"embedded": trained, "untrained": untrained}
    return {
        "pipeline": synthetic_sequence_accuracy(seq, predictors, PipelineConfig.from_flat(flat)),
        "head": synthetic_sequence_accuracy(
            seq, predictors, PipelineConfig.from_flat({**flat, "refine.enabled": False})
        ),
    }


def test_the_network_beats_the_baselines_by_a_stated_margin(demo_accuracy: dict) -> None:
    """vggt-compact-v10 learned relative depth and camera rotation. On the demo sequence (at its
    224x294 input), with the camera head's own poses (refinement off; measured 2026-12-07: window
    AbsRel 0.143 against 0.347 constant / 0.347 untrained; rotation 3.96 deg against 10.81
    identity / 9.92 untrained; APE 4.0 % against 31.3 / 14.1 %) it beats both baselines by a
    wide margin on all three (v9 0.152 / 3.83 / 3.8, v8 0.155 / 4.03 / 4.1; at 196x252: v7 0.170
    / 3.40 / 3.7, v6 0.175 / 3.44 / 4.5; at 140x182: v5 0.180 / 4.10 / 5.3; v4 0.192 / 3.89 /
    5.7; v3 0.196 / 4.05 / 5.9; v2 0.278 / 6.07 / 6.2; model card)."""
    rows = demo_accuracy["head"]
    model, untrained = rows["embedded"], rows["untrained"]
    constant = rows["constant depth / identity poses"]
    assert model["window_abs_rel"] <= 0.22

    def best_baseline(metric: str) -> float:
        return min(constant[metric], untrained[metric])

    assert model["window_abs_rel"] <= 0.65 * best_baseline("window_abs_rel")
    assert model["window_rotation_deg"] <= 0.45 * best_baseline("window_rotation_deg")
    assert model["ape_percent_of_length"] <= 0.4 * best_baseline("ape_percent_of_length")


def test_the_pipeline_with_the_network_beats_it_with_untrained_weights(demo_accuracy: dict) -> None:
    """With the defaults (pose refinement by PnP on the network's depth, the camera's own
    intrinsics) the trained network's path beats untrained weights' refined the same way by a
    wide margin: measured 2026-12-07, v10 rotation 0.96 deg / APE 2.9 % against untrained 9.17 /
    12.4 % (identity 10.81 / 31.3 %). On this one sequence the refinement gains little over v10's
    own head (2.9 against 4.0 %; v9: 2.9 against 3.8, v8: 3.2 against 4.1, v7: 3.7 against 3.7,
    v6: 2.4 against 4.5, v5 at 140x182 3.2 against 5.3); over more sequences it halves the path
    error (next test)."""
    rows, head = demo_accuracy["pipeline"], demo_accuracy["head"]
    model, untrained = rows["embedded"], rows["untrained"]
    assert model["window_rotation_deg"] <= 1.8
    assert model["window_rotation_deg"] <= 0.55 * head["embedded"]["window_rotation_deg"]
    assert model["ape_percent_of_length"] <= 4.0
    assert model["ape_percent_of_length"] <= 1.05 * head["embedded"]["ape_percent_of_length"]
    assert model["window_rotation_deg"] <= 0.3 * untrained["window_rotation_deg"]
    assert model["ape_percent_of_length"] <= 0.6 * untrained["ape_percent_of_length"]


def test_the_pose_refinement_beats_the_head_over_more_demo_sequences() -> None:
    """Three more sequences of the demo room (seeds 1-3, the demo's settings), the embedded
    model with the defaults against its camera head alone: measured 2026-12-07, v10 APE 2.62 /
    1.05 / 2.00 % against 5.45 / 2.34 / 4.15 % (ratio of the sums 0.48; rotation 1.46 / 0.63 /
    0.67 deg against 5.12 / 4.53 / 2.64); v9 2.56 / 1.34 / 1.89 against 5.50 / 2.32 / 3.88 (0.49);
    v8 2.91 / 1.63 / 2.20 against 5.94 / 2.60 / 3.88 (0.54); v7 (196x252) 1.64 / 1.32 / 1.39
    against 5.47 / 2.76 / 2.87. One sequence says little (the bundled one: 2.9 against 4.0 %);
    over the eight seeds 0-7 the ratio is 0.46 (1.95 against 4.27 %; v9 1.91 against 4.28, v8
    2.17 against 4.36, v7 1.68 against 3.85). The refined paths of the demo room are the 294-px
    models' weak spot: over 24 seeds v10 2.03, v9 2.07, v8 2.02, v7 1.68 % (docs/training.md,
    thirty-sixth to thirty-eighth sessions), hence the per-sequence cap of 3.2 % (v7's was 2.5)."""
    from vggt_ros.engine import Predictor
    from vggt_ros.eval.accuracy import synthetic_sequence_accuracy
    from vggt_ros.eval.synthetic import render_sequence, render_size
    from vggt_ros.mapping import PipelineConfig

    height, width = render_size(DEFAULT_MODEL.image_size)
    flat = demo_pipeline_settings()
    choice = choose_model(None)
    predictor = {
        "embedded": Predictor.from_checkpoint(
            choice.source, config=choice.config, device="cpu", target_size=width
        )
    }
    ape = {"pipeline": [], "head": []}
    rotation = {"pipeline": [], "head": []}
    for seed in (1, 2, 3):
        seq = render_sequence(num_frames=16, height=height, width=width, seed=seed)
        for mode, refine in (("pipeline", True), ("head", False)):
            config = PipelineConfig.from_flat({**flat, "refine.enabled": refine})
            row = synthetic_sequence_accuracy(seq, predictor, config)["embedded"]
            ape[mode].append(row["ape_percent_of_length"])
            rotation[mode].append(row["window_rotation_deg"])
    assert sum(ape["pipeline"]) <= 0.6 * sum(ape["head"])
    assert sum(rotation["pipeline"]) <= 0.5 * sum(rotation["head"])
    assert max(ape["pipeline"]) <= 3.2
