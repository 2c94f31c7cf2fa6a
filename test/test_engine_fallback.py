"""TensorRT backend: fallback when unavailable, option resolution, and the build path.

TensorRT is not installable here, so the build path runs against a small stand-in ``tensorrt``
module defined below (test double only). It mimics just what the backend calls, records it, and
"parses" the real ONNX exports with the onnx package, so the test sees the true tensor names.
It proves what the backend asks TensorRT for (flags, profiles, I/O types) and how it uses the
cache; it proves nothing about TensorRT itself.
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from vggt_ros.engine import tensorrt_backend as trt_backend
from vggt_ros.engine.engine_cache import EngineCache, FrameProfile
from vggt_ros.engine.modes import get_mode
from vggt_ros.engine.runner import BackendContext, BackendUnavailableError, ModelRunner
from vggt_ros.model import VGGT

IMAGE_HW = (28, 42)


@pytest.fixture
def model() -> VGGT:
    torch.manual_seed(0)
    return VGGT("vggt-tiny").eval()


# --- fallback through ModelRunner --------------------------------------------------------------


def _no_real_tensorrt() -> None:
    if "tensorrt" in sys.modules or importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("a real tensorrt is installed here")


def test_auto_on_cpu_ends_on_eager_with_a_log_line(model, caplog):
    _no_real_tensorrt()
    with caplog.at_level(logging.INFO, logger="vggt_ros.engine.runner"):
        runner = ModelRunner(model, "cpu", "fp32", backend="auto")
    assert runner.backend == "eager"
    assert "backend eager on cpu" in caplog.text


def test_tensorrt_then_torch_on_cpu_logs_why_tensorrt_is_unavailable(model, caplog):
    _no_real_tensorrt()
    with caplog.at_level(logging.WARNING, logger="vggt_ros.engine.runner"):
        runner = ModelRunner(model, "cpu", "fp32", backend=("tensorrt", "torch"))
    assert runner.backend == "torch"  # torch.compile wraps lazily: nothing compiles here
    assert len(runner.fallback_log) == 1
    assert (
        "backend tensorrt unavailable (the tensorrt Python package is not installed)"
        in runner.fallback_log[0]
    )
    assert runner.fallback_log[0] in caplog.text


def test_tensorrt_alone_falls_back_to_eager(model):
    _no_real_tensorrt()
    runner = ModelRunner(model, "cpu", "fp32", backend="tensorrt")
    assert runner.backend == "eager" and "tensorrt" in runner.fallback_log[0]
    assert runner.sections["aggregator"] == runner.model.aggregate


def test_with_tensorrt_importable_a_cpu_device_is_the_reason(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    runner = ModelRunner(model, "cpu", "fp32", backend="tensorrt")
    assert runner.backend == "eager"
    assert "TensorRT needs a CUDA device" in runner.fallback_log[0]
    ctx = BackendContext(runner.model, runner.mode, torch.device("cpu"), {}, {"image_hw": IMAGE_HW})
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        trt_backend.build_tensorrt_sections(ctx)


def test_old_tensorrt_is_refused(monkeypatch):
    old = FakeTensorRT()
    old.__version__ = "8.6.2"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(BackendUnavailableError, match="needs TensorRT 10"):
        trt_backend.import_tensorrt()


# --- options -----------------------------------------------------------------------------------


def test_options_need_an_image_size_and_map_modes_to_precisions():
    with pytest.raises(BackendUnavailableError, match="image_hw"):
        trt_backend.resolve_options({}, get_mode("fp16"))
    with pytest.raises(BackendUnavailableError, match="tracks"):
        trt_backend.resolve_options({"image_hw": IMAGE_HW, "tensorrt_sections": ["tracks"]}, get_mode("fp16"))
    with pytest.raises(BackendUnavailableError, match="bad TensorRT options"):
        trt_backend.resolve_options(
            {"image_hw": IMAGE_HW, "min_frames": 9, "max_frames": 4}, get_mode("fp16")
        )
    expected = {
        "fp32": ("fp32", torch.float32),
        "official": ("bf16", torch.float32),
        "bf16": ("bf16", torch.bfloat16),
        "fp16": ("fp16", torch.float16),
    }
    for mode, (precision, io_dtype) in expected.items():
        opts = trt_backend.resolve_options({"image_hw": IMAGE_HW}, get_mode(mode))
        assert (opts.precision, opts.io_dtype) == (precision, io_dtype)
        assert opts.profile == FrameProfile(1, 8, 32, *IMAGE_HW)
        assert opts.sections == ("aggregator", "depth", "points")


def test_head_profiles_are_capped_at_the_chunk_size_and_start_at_one(model):
    profile = FrameProfile(2, 8, 32, *IMAGE_HW)
    assert trt_backend.section_profile(model, "aggregator", profile) == profile
    chunk = model.depth_head.frames_chunk_size
    assert trt_backend.section_profile(model, "depth", profile) == FrameProfile(
        1, min(8, chunk), chunk, *IMAGE_HW
    )


def test_weights_fingerprint_follows_the_weights(model):
    first = trt_backend.weights_fingerprint(model)
    assert first == trt_backend.weights_fingerprint(model) and first.startswith("sha256:")
    with torch.no_grad():
        model.depth_head.norm.bias[0] += 1e-3
    assert trt_backend.weights_fingerprint(model) != first


# --- build path against the stand-in ------------------------------------------------------------


class FakeTensorRT(types.ModuleType):
    """Stand-in for the parts of the TensorRT 10 Python API the backend calls."""

    def __init__(self) -> None:
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        self.__version__ = "10.3.0"
        self.calls: list[tuple] = []
        self.builds: list[dict] = []
        fake = self
        self.DataType = SimpleNamespace(FLOAT="FLOAT", HALF="HALF", BF16="BF16")
        self.BuilderFlag = SimpleNamespace(
            FP16="FP16", BF16="BF16", TF32="TF32", PREFER_PRECISION_CONSTRAINTS="PPC"
        )
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.LayerType = SimpleNamespace(NORMALIZATION="NORMALIZATION", OTHER="OTHER")
        self.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

        class Logger:
            WARNING = "WARNING"

            def __init__(self, severity: str) -> None:
                self.severity = severity

        class Tensor:
            def __init__(self, name: str) -> None:
                self.name, self.dtype = name, "FLOAT"

        class Layer:
            def __init__(self, kind: str) -> None:
                self.type, self.precision, self.num_outputs, self.output_types = kind, None, 1, {}

            def set_output_type(self, index: int, dtype: str) -> None:
                self.output_types[index] = dtype

        class Network:
            def __init__(self) -> None:
                self.inputs, self.outputs, self.layers = [], [], []

            num_inputs = property(lambda self: len(self.inputs))
            num_outputs = property(lambda self: len(self.outputs))
            num_layers = property(lambda self: len(self.layers))

            def get_input(self, i):
                return self.inputs[i]

            def get_output(self, i):
                return self.outputs[i]

            def get_layer(self, i):
                return self.layers[i]

        class OnnxParser:
            num_errors = 0

            def __init__(self, network: Network, logger: Logger) -> None:
                self.network = network

            def parse_from_file(self, path: str) -> bool:
                import onnx

                graph = onnx.load(path, load_external_data=False).graph
                self.network.inputs = [Tensor(v.name) for v in graph.input]
                self.network.outputs = [Tensor(v.name) for v in graph.output]
                self.network.layers = [
                    Layer("NORMALIZATION" if n.op_type == "LayerNormalization" else "OTHER")
                    for n in graph.node
                ]
                fake.calls.append(("parse", path))
                return True

        class Config:
            def __init__(self) -> None:
                self.flags, self.cleared, self.profiles, self.pools = set(), set(), [], {}

            def set_flag(self, flag):
                self.flags.add(flag)

            def clear_flag(self, flag):
                self.cleared.add(flag)

            def set_memory_pool_limit(self, pool, size):
                self.pools[pool] = size

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

        class Profile:
            def __init__(self) -> None:
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger: Logger) -> None:
                fake.calls.append(("builder",))

            def create_network(self, flags: int) -> Network:
                return Network()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> bytes:
                record = {
                    "flags": config.flags,
                    "cleared": config.cleared,
                    "shapes": config.profiles[0].shapes,
                    "io": {t.name: t.dtype for t in network.inputs + network.outputs},
                    "pinned": [layer.precision for layer in network.layers if layer.type == "NORMALIZATION"],
                    "pools": config.pools,
                }
                fake.builds.append(record)
                return f"engine:{sorted(record['io'])}".encode()

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes):
                fake.calls.append(("deserialize", bytes(data)))
                return None if data.startswith(b"bad") else SimpleNamespace(data=bytes(data))

        self.Logger, self.Builder, self.OnnxParser, self.Runtime = Logger, Builder, OnnxParser, Runtime


def _prepare(fake, model, tmp_path, mode="bf16", **options):
    options = {"image_hw": IMAGE_HW, "weights_identity": "test-weights", **options}
    opts = trt_backend.resolve_options(options, get_mode(mode))
    cache = EngineCache(tmp_path / "cache")
    engines = trt_backend.prepare_engines(
        fake, model, opts, ("Fake GPU", "8.7"), cache, fake.Runtime(None), tmp_path / "onnx"
    )
    return engines, cache


def test_builds_with_flags_profiles_and_io_types_then_reuses_the_cache(model, tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")
    fake = FakeTensorRT()
    engines, cache = _prepare(fake, model, tmp_path, "bf16", max_frames=16, workspace_gb=2)
    assert set(engines) == {"aggregator", "depth", "points"}
    assert len(fake.builds) == 3 and len(list(cache.entries())) == 3
    agg, depth, _ = fake.builds
    assert agg["flags"] == {"BF16", "PPC"} and agg["pools"] == {"WORKSPACE": 2 * 2**30}
    assert agg["pinned"] and set(agg["pinned"]) == {"FLOAT"}  # norms stay float32
    assert agg["shapes"] == {"images": tuple((1, f, 3, *IMAGE_HW) for f in (1, 8, 16))}
    assert agg["io"]["images"] == "FLOAT"
    assert {v for k, v in agg["io"].items() if k.startswith("layer_")} == {"BF16"}
    chunk = model.depth_head.frames_chunk_size
    tokens = model.aggregator.patch_start_idx + (IMAGE_HW[0] // 14) * (IMAGE_HW[1] // 14)
    expected = tuple((1, f, tokens, 2 * model.config.embed_dim) for f in (1, min(8, chunk), chunk))
    assert set(depth["shapes"].values()) == {expected}
    assert depth["io"]["values"] == depth["io"]["conf"] == "FLOAT"

    # Start-up again: every engine comes from the cache, nothing is exported or built.
    monkeypatch.setattr(trt_backend.onnx_export, "export_section", _must_not_export)
    fake_again = FakeTensorRT()
    again, _ = _prepare(fake_again, model, tmp_path, "bf16", max_frames=16, workspace_gb=2)
    assert fake_again.builds == [] and ("builder",) not in fake_again.calls
    assert {k: v.data for k, v in again.items()} == {k: v.data for k, v in engines.items()}


def _must_not_export(*args, **kwargs):
    raise AssertionError("a cached engine must not be exported again")


def test_fp32_clears_tf32_and_a_key_change_rebuilds(model, tmp_path):
    pytest.importorskip("onnxscript")
    fake = FakeTensorRT()
    _prepare(fake, model, tmp_path, "fp32", tensorrt_sections=["aggregator"])
    assert fake.builds[0]["flags"] == set() and fake.builds[0]["cleared"] == {"TF32"}
    assert set(fake.builds[0]["io"].values()) == {"FLOAT"}
    _prepare(fake, model, tmp_path, "fp16", tensorrt_sections=["aggregator"])  # precision changed
    _prepare(fake, model, tmp_path, "fp16", tensorrt_sections=["aggregator"], max_frames=24)  # profile
    assert [b["flags"] for b in fake.builds] == [set(), {"FP16", "PPC"}, {"FP16", "PPC"}]
    assert len(list(EngineCache(tmp_path / "cache").entries())) == 3


def test_an_engine_tensorrt_refuses_is_rebuilt_once(model, tmp_path):
    fake = FakeTensorRT()
    opts = trt_backend.resolve_options({"image_hw": IMAGE_HW, "weights_identity": "w"}, get_mode("fp16"))
    cache = EngineCache(tmp_path)
    key = trt_backend.EngineKey("aggregator", "w", "Fake", "8.7", "10.3.0", "fp16", opts.profile)
    cache.store(key, b"bad engine from another TensorRT build")
    engine = trt_backend.load_engine(fake, fake.Runtime(None), cache, key, lambda: b"fresh engine")
    assert engine.data == b"fresh engine" and cache.lookup(key) == b"fresh engine"
    with pytest.raises(BackendUnavailableError, match="deserialise"):
        cache.invalidate(key)
        trt_backend.load_engine(fake, fake.Runtime(None), cache, key, lambda: b"bad again")


def test_build_failures_become_unavailable_with_the_reason(model, monkeypatch, tmp_path):
    """On a CUDA machine, an export or build error must fall back, not raise (simulated here)."""
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(trt_backend, "gpu_identity", lambda device: ("Fake GPU", "8.7"))

    def broken(*args, **kwargs):
        raise RuntimeError("ONNX parser rejected aggregator.onnx: unsupported op")

    monkeypatch.setattr(trt_backend, "prepare_engines", broken)
    options = {"image_hw": IMAGE_HW, "cache_dir": str(tmp_path)}
    ctx = BackendContext(model, get_mode("fp16"), torch.device("cuda"), {}, options)
    with pytest.raises(
        BackendUnavailableError, match="building TensorRT engines failed: RuntimeError: ONNX parser"
    ):
        trt_backend.build_tensorrt_sections(ctx)
