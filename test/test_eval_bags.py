"""Rosbag round trips with ``rosbags`` (rosbag2 sqlite3 / mcap, ROS 1) and message codecs."""

from __future__ import annotations

import numpy as np
import pytest

from vggt_ros.eval import bags

RNG = np.random.default_rng(0)
POSE = bags.matrix_from_tq([1.0, -2.0, 0.5], [0.1, 0.2, 0.3, 0.9])


def write_everything(writer: bags.BagWriter, rgb: np.ndarray, depth: np.ndarray, xyz: np.ndarray) -> None:
    s = writer.store
    K = np.array([[100.0, 0, 2.0], [0, 101.0, 1.5], [0, 0, 1]])
    writer.write("/tf_static", bags.tf_message(s, [bags.transform_stamped(s, POSE, 1.0, "base", "cam")]))
    writer.write("/image", bags.image_message(s, rgb, 1.25, "cam"))
    writer.write("/depth", bags.image_message(s, depth, 1.25, "cam"))
    writer.write("/info", bags.camera_info_message(s, K, 4, 5, 1.25, "cam"))
    writer.write("/odom", bags.odometry(s, POSE, 1.5, "odom", "base", (1, 2, 3), (0, 0, 1)))
    writer.write("/pose", bags.pose_stamped(s, POSE, 1.5, "world"))
    writer.write("/tf", bags.tf_message(s, [bags.transform_stamped(s, POSE, 1.5, "odom", "base")]))
    writer.write(
        "/cloud", bags.pointcloud2_message(s, xyz, np.full((3, 3), 7, np.uint8), np.arange(3.0), 2.0, "map")
    )
    writer.write("/path", bags.path_message(s, [1.0, 2.0], [POSE, np.eye(4)], "map"))
    writer.write("/jpeg", bags.compressed_message(s, rgb, 2.0, "cam", "png"))


@pytest.mark.parametrize(("name", "storage"), [("r2", "sqlite3"), ("r2m", "mcap"), ("r1.bag", "sqlite3")])
def test_round_trip_every_message_kind(tmp_path, name: str, storage: str) -> None:
    rgb = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    depth = RNG.uniform(0.5, 5.0, (4, 5)).astype(np.float32)
    xyz = RNG.normal(size=(3, 3)).astype(np.float32)
    path = tmp_path / name
    with bags.BagWriter(path, storage=storage) as writer:
        write_everything(writer, rgb, depth, xyz)
    topics = bags.bag_topics(path)
    assert topics["/image"] == bags.TopicInfo("sensor_msgs/msg/Image", 1)
    assert topics["/tf"].msgtype == "tf2_msgs/msg/TFMessage"
    got = {topic: (t, msg) for topic, _, t, msg in bags.read_messages(path)}
    assert got["/image"][0] == 1_250_000_000  # bag time = header stamp
    np.testing.assert_array_equal(bags.rgb_from_image(got["/image"][1]), rgb)
    np.testing.assert_array_equal(bags.depth_from_image(got["/depth"][1]), depth)
    K, hw = bags.intrinsics_from_camera_info(got["/info"][1])
    assert hw == (4, 5) and K[0, 0] == 100.0 and K[1, 2] == 1.5
    for topic in ("/odom", "/pose"):
        np.testing.assert_allclose(bags.matrix_from_msg(got[topic][1]), POSE, atol=1e-12)
    tr = got["/tf"][1].transforms[0]
    assert (tr.header.frame_id, tr.child_frame_id) == ("odom", "base")
    np.testing.assert_allclose(bags.matrix_from_msg(tr), POSE, atol=1e-12)
    assert bags.stamp_of(got["/odom"][1]) == 1.5
    assert got["/odom"][1].twist.twist.angular.z == 1.0
    cloud = bags.arrays_from_pointcloud2(got["/cloud"][1])
    np.testing.assert_array_equal(cloud["xyz"], xyz)
    np.testing.assert_array_equal(cloud["rgb"], np.full((3, 3), 7))
    np.testing.assert_array_equal(cloud["confidence"], [0, 1, 2])
    assert len(got["/path"][1].poses) == 2
    np.testing.assert_array_equal(bags.rgb_from_compressed(got["/jpeg"][1]), rgb)


def test_compressed_bag_reads_back(tmp_path) -> None:
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    with bags.BagWriter(tmp_path / "z", compress=True) as writer:
        writer.write("/image", bags.image_message(writer.store, rgb, 3.0, "cam"))
    assert any(p.suffix == ".zstd" for p in (tmp_path / "z").iterdir())
    ((_, _, _, msg),) = list(bags.read_messages(tmp_path / "z"))
    np.testing.assert_array_equal(bags.rgb_from_image(msg), rgb)


def test_image_encodings_decode_to_rgb() -> None:
    s = bags.typestore()
    rgb = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    for enc, arr in (
        ("bgr8", rgb[..., ::-1]),
        ("rgba8", np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])),
        ("bgra8", np.dstack([rgb[..., ::-1], np.zeros(rgb.shape[:2], np.uint8)])),
    ):
        msg = bags.image_message(s, np.ascontiguousarray(arr), 0.0, "c", enc)
        np.testing.assert_array_equal(bags.rgb_from_image(msg), rgb, err_msg=enc)
    gray = rgb[..., 0].copy()
    np.testing.assert_array_equal(
        bags.rgb_from_image(bags.image_message(s, gray, 0.0, "c")), np.dstack([gray] * 3)
    )
    mono16 = (gray.astype(np.uint16) << 8) | 0x7F
    np.testing.assert_array_equal(
        bags.rgb_from_image(bags.image_message(s, mono16, 0.0, "c", "mono16"))[..., 0], gray
    )
    # A flat colour survives every Bayer pattern (the demosaic mapping is right, not swapped).
    flat = np.zeros((8, 8, 3), np.uint8)
    flat[:] = (200, 100, 30)
    patterns = {"bayer_rggb8": "RGGB", "bayer_bggr8": "BGGR", "bayer_gbrg8": "GBRG", "bayer_grbg8": "GRBG"}
    for enc, pattern in patterns.items():
        mosaic = np.zeros((8, 8), np.uint8)
        for k, ch in enumerate(pattern):
            mosaic[k // 2 :: 2, k % 2 :: 2] = flat[0, 0, "RGB".index(ch)]
        out = bags.rgb_from_image(bags.image_message(s, mosaic, 0.0, "c", enc))
        np.testing.assert_array_equal(out[2:-2, 2:-2], flat[2:-2, 2:-2], err_msg=enc)
    # UYVY with neutral chroma (U = V = 128) is gray, brighter where Y is larger.
    uyvy = np.full((2, 4, 2), 128, np.uint8)
    uyvy[..., 1] = [[50, 50, 200, 200], [50, 50, 200, 200]]
    out = bags.rgb_from_image(bags.image_message(s, uyvy, 0.0, "c", "yuv422")).astype(int)
    assert np.abs(out - out[..., :1]).max() <= 1 and out[0, 3, 0] > out[0, 0, 0] + 100


def test_padded_rows_big_endian_and_millimetre_depth() -> None:
    s = bags.typestore()
    depth_mm = np.array([[1000, 0], [2500, 65535]], np.uint16)
    msg = bags.image_message(s, depth_mm, 0.0, "c", "16UC1")
    # Re-pack big-endian with 3 bytes of padding per row.
    rows = depth_mm.astype(">u2").view(np.uint8).reshape(2, 4)
    msg.data = np.concatenate([rows, np.zeros((2, 3), np.uint8)], axis=1).ravel()
    msg.step, msg.is_bigendian = 7, 1
    d = bags.depth_from_image(msg)
    assert d[0, 0] == 1.0 and np.isnan(d[0, 1]) and d[1, 0] == 2.5
    msg.step = 3
    with pytest.raises(bags.BagError, match="step"):
        bags.depth_from_image(msg)
    msg.encoding = "weird"
    with pytest.raises(bags.BagError, match="unsupported encoding"):
        bags.rgb_from_image(msg)


def test_clear_errors_for_bad_bags_and_topics(tmp_path) -> None:
    with pytest.raises(bags.BagError, match="bag not found"):
        bags.bag_topics(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    with pytest.raises(bags.BagError, match="cannot read bag"):
        bags.bag_topics(tmp_path / "junk")
    with bags.BagWriter(tmp_path / "b") as writer:
        writer.write("/a", bags.pose_stamped(writer.store, np.eye(4), 1.0, "w"))
        with pytest.raises(bags.BagError, match="already carries"):
            writer.write("/a", bags.odometry(writer.store, np.eye(4), 1.0, "w", "b"))
    with pytest.raises(bags.BagError, match=r"topic\(s\) /nope not in .*it has: /a"):
        list(bags.read_messages(tmp_path / "b", ["/nope"]))
    with pytest.raises(bags.BagError, match="exists already"):
        bags.BagWriter(tmp_path / "b")
