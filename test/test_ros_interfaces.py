"""Codecs, static TF, parameter tables, the parameter file and the launch file (in-process).

The launch packages do not install here, so the launch file runs against small stand-ins for
``launch`` / ``launch_ros`` that record what it builds; the test checks that every parameter it
sets and every parameter in config/perception.yaml is one the node declares.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from ros_helpers import REPO_ROOT, require_ros

require_ros()

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from vggt_ros.ros import conversions as conv  # noqa: E402
from vggt_ros.ros.params import NODE_PARAMS, camera_param_specs, mapping_param_specs, validate_node_value  # noqa: E402
from vggt_ros.ros.tf import StaticTree  # noqa: E402


def _blocks(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    small = (rng.random((h // 4, w // 4, 3)) * 255).astype(np.uint8)
    return np.repeat(np.repeat(small, 4, 0), 4, 1)


@pytest.mark.parametrize("encoding", conv.SUPPORTED_ENCODINGS)
def test_every_encoding_decodes(encoding):
    rgb = _blocks()
    out = conv.image_to_rgb(conv.rgb_to_image(rgb, encoding))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    if encoding.startswith(("mono", "8UC1", "16UC1")):
        ref = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, 2)
    else:
        ref = rgb
    err = np.abs(out.astype(int) - ref.astype(int))
    # bayer and 4:2:2 are lossy at block edges only; the bulk must match
    assert np.median(err) <= 1 and np.mean(err) < 25, (encoding, np.median(err), np.mean(err))
    # a flat colour comes back exactly (a wrong channel order or bayer pattern would not)
    flat = np.empty((16, 16, 3), np.uint8)
    flat[:] = (200, 30, 90)
    got = conv.image_to_rgb(conv.rgb_to_image(flat, encoding))
    want = ref[:1, :1] if ref is not rgb else None
    if want is None:
        assert np.abs(got.astype(int) - flat).max() <= 2, (encoding, got[8, 8])


def test_row_padding_and_big_endian():
    rgb = _blocks()
    msg = conv.rgb_to_image(rgb, "rgb8")
    padded = np.zeros((48, msg.step + 8), np.uint8)
    padded[:, : msg.step] = np.frombuffer(bytes(msg.data), np.uint8).reshape(48, -1)
    msg.step, msg.data = msg.step + 8, padded.tobytes()
    assert np.array_equal(conv.image_to_rgb(msg), rgb)
    m16 = conv.rgb_to_image(rgb, "mono16")
    be = np.frombuffer(bytes(m16.data), "<u2").astype(">u2")
    m16.data, m16.is_bigendian = be.tobytes(), 1
    assert np.array_equal(conv.image_to_rgb(m16), conv.image_to_rgb(conv.rgb_to_image(rgb, "mono16")))


def test_bad_images_raise_decode_error():
    rgb = _blocks()
    msg = conv.rgb_to_image(rgb, "bgr8")
    msg.data = bytes(msg.data)[:100]
    with pytest.raises(conv.DecodeError, match="truncated"):
        conv.image_to_rgb(msg)
    with pytest.raises(conv.DecodeError, match="unsupported encoding"):
        conv.image_to_rgb(Image(height=2, width=2, step=6, encoding="xyz", data=bytes(12)))
    with pytest.raises(conv.DecodeError, match="corrupt"):
        conv.compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"))
    with pytest.raises(conv.DecodeError, match="compressedDepth"):
        conv.compressed_to_rgb(CompressedImage(format="16UC1; compressedDepth", data=b"x"))
    assert np.array_equal(conv.compressed_to_rgb(conv.rgb_to_compressed(rgb, "png")), rgb)
    flat = np.empty((32, 48, 3), np.uint8)
    flat[:] = (200, 30, 90)
    out = conv.compressed_to_rgb(conv.rgb_to_compressed(flat, "jpeg"))
    assert out.shape == flat.shape and np.abs(out.astype(int) - flat).max() <= 4


def test_pointcloud_and_transforms():
    rng = np.random.default_rng(1)
    xyz, rgb, conf = rng.random((50, 3)), (rng.random((50, 3)) * 255).astype(np.uint8), rng.random(50)
    xyz[3] = np.nan
    pc = conv.pointcloud2(xyz, rgb, conf, conv.make_header(12.5, "map"))
    arr = conv.read_pointcloud2(pc)
    assert pc.width == 49 and pc.is_dense
    keep = np.ones(50, bool)
    keep[3] = False
    assert np.allclose(np.stack([arr["x"], arr["y"], arr["z"]], 1), xyz[keep], atol=1e-6)
    assert np.array_equal(conv.unpack_rgb(arr["rgb"]), rgb[keep])
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.array([0.3, -0.2, 1.0]))[0]
    T[:3, 3] = [1, -2, 3]
    assert np.allclose(conv.transform_to_matrix(conv.transform_stamped(T, "a", "b", 1.0).transform), T)
    assert conv.stamp_to_sec(conv.sec_to_stamp(1234.000000001)) == pytest.approx(1234.000000001, abs=1e-9)


def test_static_tree_composes_chains():
    tree = StaticTree()
    a = np.eye(4)
    a[:3, 3] = [1, 0, 0]
    b = np.eye(4)
    b[:3, :3] = cv2.Rodrigues(np.array([0, 0, np.pi / 2]))[0]
    tree.add("base_link", "camera_link", a)
    tree.add("camera_link", "camera_optical", b)
    T = tree.lookup("base_link", "camera_optical")
    assert np.allclose(T, a @ b)
    assert np.allclose(tree.lookup("camera_optical", "base_link"), np.linalg.inv(a @ b))
    assert tree.lookup("base_link", "unknown") is None


def _declared(cameras: list[str]) -> set[str]:
    names = set(NODE_PARAMS) | set(mapping_param_specs()) | {"export.max_keyframes"}
    for cam in cameras:
        names |= set(camera_param_specs(cam))
    return names


def test_parameter_file_names_only_declared_parameters_with_valid_values():
    data = yaml.safe_load((REPO_ROOT / "config" / "perception.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    unknown = set(params) - _declared(params["cameras"])
    assert not unknown, unknown
    for name, value in params.items():
        if name in NODE_PARAMS:
            assert validate_node_value(name, value, NODE_PARAMS[name]) is None, name
    from vggt_ros.mapping import PipelineConfig

    PipelineConfig.from_flat({k: v for k, v in params.items() if k in mapping_param_specs()})
    for name, (_default, doc) in mapping_param_specs().items():
        assert doc, f"mapping parameter {name} has no description"


def test_node_parameter_specs_are_described_and_valid():
    for name, spec in NODE_PARAMS.items():
        assert spec.description, name
        assert validate_node_value(name, spec.default, spec) is None, name
    assert "multiple of 14" in validate_node_value("model.image_size", 500, NODE_PARAMS["model.image_size"])
    assert "below its minimum" in validate_node_value("queue.size", 0, NODE_PARAMS["queue.size"])
    assert "tensorrt" in validate_node_value("model.backend", "tensorrt", NODE_PARAMS["model.backend"])


class _Rec:
    """Stand-in for launch classes: records its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _load_launch(monkeypatch):
    mods = {
        "launch": {"LaunchDescription": _Rec},
        "launch.actions": {"DeclareLaunchArgument": _Rec},
        "launch.substitutions": {"LaunchConfiguration": _Rec, "PathJoinSubstitution": _Rec},
        "launch_ros": {},
        "launch_ros.actions": {"Node": _Rec},
        "launch_ros.parameter_descriptions": {"ParameterValue": _Rec},
        "launch_ros.substitutions": {"FindPackageShare": _Rec},
    }
    for name, attrs in mods.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(
        "perception_launch", REPO_ROOT / "launch" / "perception.launch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_passes_only_declared_parameters(monkeypatch):
    launch = _load_launch(monkeypatch)
    desc = launch.generate_launch_description()
    entities = desc.args[0]
    declared = {e.args[0] for e in entities if "default_value" in e.kwargs}
    for required in ("checkpoint", "params_file", "image_topic", "device", "precision", "namespace"):
        assert required in declared
    node = entities[-1]
    assert node.kwargs["package"] == "vggt_ros" and node.kwargs["executable"] == "perception_node"
    assert node.kwargs["name"] == "vggt_perception"
    params_file, overrides = node.kwargs["parameters"]
    assert set(overrides) <= set(NODE_PARAMS), set(overrides) - set(NODE_PARAMS)
    assert set(launch.PARAMETER_ARGUMENTS.values()) == set(overrides)
    assert set(launch.PARAMETER_ARGUMENTS) <= declared
    # remapped topics are the ones the default parameter file subscribes to
    params = yaml.safe_load((REPO_ROOT / "config" / "perception.yaml").read_text())["/**"]["ros__parameters"]
    first = params["cameras"][0]
    subscribed = {params[f"camera.{first}.topic"], params[f"camera.{first}.camera_info_topic"]}
    assert {src for src, _ in node.kwargs["remappings"]} == subscribed
    # lifecycle / autostart reach the executable's own options, which its parser accepts
    assert set(launch.EXECUTABLE_ARGUMENTS) <= declared
    options = node.kwargs["arguments"][0::2]
    assert options == list(launch.EXECUTABLE_ARGUMENTS.values())
    from vggt_ros.ros.main import _parse_args

    parsed = _parse_args(["perception_node", "--lifecycle", "true", "--autostart", "false", "--ros-args"])
    assert parsed.lifecycle is True and parsed.autostart is False
    # the executable and launch/config are installed by CMake
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert "scripts/perception_node" in cmake and "launch config" in cmake
    assert Path(REPO_ROOT / "scripts" / "perception_node").stat().st_mode & 0o111


def test_colcon_install_carries_the_embedded_model() -> None:
    """A robot's colcon install has the shipped model file, byte for byte (make ros built it)."""
    from vggt_ros.model.checkpoint import file_identity
    from vggt_ros.model.embedded import DEFAULT_MODEL

    if not (REPO_ROOT / "install").is_dir():
        pytest.skip("no colcon install/ (run make ros)")
    pattern = f"vggt_ros/lib/python3*/site-packages/vggt_ros/model/weights/{DEFAULT_MODEL.filename}"
    installed = list((REPO_ROOT / "install").glob(pattern))
    assert len(installed) == 1, "CMakeLists.txt must install vggt_ros/model/weights/*.safetensors"
    assert DEFAULT_MODEL.sha256.startswith(file_identity(installed[0], "sha256"))
