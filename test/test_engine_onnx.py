"""ONNX export of every section, checked against PyTorch with onnxruntime (CPU).

Each export is traced once with 2 frames and then run with other frame counts, which proves
the frame axis is dynamic in the graph, not just declared. Parity is max|ort - torch| /
max|torch| < 1e-4 in float32.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from vggt_ros.engine import onnx_export  # noqa: E402
from vggt_ros.model import VGGT  # noqa: E402
from vggt_ros.model.seeded import seeded_weights_for  # noqa: E402

IMAGE_HW = (28, 42)  # 2 x 3 patches: non-square, so the encoder's position table is resampled
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model() -> VGGT:
    m = VGGT("vggt-tiny")
    m.load_state_dict(seeded_weights_for(m, seed=3))
    return m.eval()


@pytest.fixture(scope="module")
def exports(model: VGGT, tmp_path_factory: pytest.TempPathFactory) -> dict[str, onnx_export.ExportedSection]:
    root = tmp_path_factory.mktemp("onnx")
    return {
        name: onnx_export.export_section(model, name, root / f"{name}.onnx", IMAGE_HW, max_frames=16)
        for name in ("aggregator", "camera", "depth", "points")
    }


@pytest.mark.parametrize(
    ("section", "frame_counts"),
    [("aggregator", (1, 2, 5)), ("camera", (1, 3)), ("depth", (2, 3)), ("points", (1, 4))],
)
def test_onnxruntime_matches_pytorch_for_several_frame_counts(model, exports, section, frame_counts):
    for frames in frame_counts:
        errors = onnx_export.onnxruntime_parity(model, exports[section], frames)
        assert set(errors) == set(exports[section].outputs)
        worst = max(errors.values())
        assert worst < TOLERANCE, f"{section} with {frames} frames: {errors}"


def test_frame_axis_is_symbolic_and_other_axes_fixed(exports):
    for section in exports.values():
        graph = onnx.load(str(section.path), load_external_data=False).graph
        for value in graph.input:
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert dims[0] == 1 and isinstance(dims[1], str), (section.name, value.name, dims)
            expected = [d for i, d in enumerate(section.input_shapes[value.name]) if i != 1]
            assert [d for i, d in enumerate(dims) if i != 1] == expected
        assert [v.name for v in graph.output] == list(section.outputs)


def test_section_names_and_shapes(model, exports):
    agg = exports["aggregator"]
    assert agg.inputs == ("images",)
    assert agg.outputs == tuple(f"layer_{i}" for i in sorted(model.layers_needed(with_tracks=True)))
    assert agg.shapes_for(3) == {"images": (1, 3, 3, *IMAGE_HW)}
    tokens = model.aggregator.patch_start_idx + (IMAGE_HW[0] // 14) * (IMAGE_HW[1] // 14)
    width = 2 * model.config.embed_dim
    for head in ("depth", "points"):
        assert exports[head].outputs == ("values", "conf")
        assert exports[head].max_frames == model.depth_head.frames_chunk_size
        assert set(exports[head].shapes_for(2).values()) == {(1, 2, tokens, width)}
    assert exports["camera"].outputs == tuple(f"pose_enc_{k}" for k in range(model.camera_head.iterations))


def test_exports_have_nothing_tensorrt_cannot_take(exports):
    for section in exports.values():
        assert onnx_export.tensorrt_incompatibilities(section.path) == [], section.name


def test_export_leaves_the_eager_model_untouched(model, exports, tmp_path):
    """Tracing runs the model's own code under fake tensors; its shape caches must stay real."""
    images = torch.rand(1, 2, 3, *IMAGE_HW, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = model(images)
        onnx_export.export_section(model, "depth", tmp_path / "depth.onnx", IMAGE_HW, max_frames=4)
        after = model(images)
    for key in ("depth", "world_points", "pose_enc"):
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)


def test_float32_copy_of_a_reduced_precision_model(model):
    half = VGGT("vggt-tiny")
    half.load_state_dict(model.state_dict())
    half.aggregator.frame_blocks.to(torch.bfloat16)
    copy = onnx_export.float32_copy(half)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in copy.parameters())
    stored = half.aggregator.frame_blocks[0].attn.qkv.weight
    torch.testing.assert_close(copy.aggregator.frame_blocks[0].attn.qkv.weight, stored.float())
    assert copy.aggregator.image_mean.device.type == "cpu"


def test_unknown_section_and_bad_size_are_refused(model, tmp_path):
    with pytest.raises(ValueError, match="cannot be exported"):
        onnx_export.export_section(model, "tracks", tmp_path / "t.onnx", IMAGE_HW, 4)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        onnx_export.export_aggregator(model, tmp_path / "a.onnx", (30, 42))


def test_relative_error_is_scale_aware():
    import numpy as np

    ref = np.array([0.0, 100.0])
    assert onnx_export.relative_error(ref + 0.01, ref) == pytest.approx(1e-4)
    assert onnx_export.relative_error(np.zeros(2), np.zeros(2)) == 0.0
