"""TUM RGB-D and EuRoC folder layouts -> rosbag2, on tiny folders written from the renderer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vggt_ros.eval import bags
from vggt_ros.eval.datasets import DatasetError, convert_dataset, detect_kind, tum_intrinsics
from vggt_ros.eval.generate import GT_POSE_TOPIC, LEFT, RIGHT
from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.mapping.export.trajectory import Trajectory, write_tum


@pytest.fixture(scope="module")
def seq():
    return render_sequence(4, 48, 64, seed=5, second_camera_baseline=0.11)


def read(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for topic, _, _, msg in bags.read_messages(path):
        out.setdefault(topic, []).append(msg)
    return out


def make_tum(folder: Path, seq) -> list[float]:
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    stamps = [1305031102.0 + 0.1 * k for k in range(seq.num_frames)]
    rgb_lines, depth_lines = ["# color images"], ["# depth"]
    for k, t in enumerate(stamps):
        cv2.imwrite(str(folder / "rgb" / f"{t:.6f}.png"), cv2.cvtColor(seq.images[k], cv2.COLOR_RGB2BGR))
        raw = np.clip(np.rint(seq.depth[k] * 5000), 0, 65535).astype(np.uint16)
        raw[0, 0] = 0  # a missing measurement
        cv2.imwrite(str(folder / "depth" / f"{t + 0.004:.6f}.png"), raw)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.004:.6f} depth/{t + 0.004:.6f}.png")
    (folder / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (folder / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    write_tum(folder / "groundtruth.txt", Trajectory(np.array(stamps), seq.cam_to_world))
    return stamps


def test_tum_folder_to_bag(tmp_path, seq) -> None:
    folder = tmp_path / "rgbd_dataset_freiburg3_fake"
    stamps = make_tum(folder, seq)
    assert detect_kind(folder) == "tum"
    summary = convert_dataset(folder, tmp_path / "bag")
    assert (summary.frames, summary.depth, summary.ground_truth) == (4, 4, 4)
    got = read(tmp_path / "bag")
    np.testing.assert_array_equal(np.stack([bags.rgb_from_image(m) for m in got[LEFT.image]]), seq.images)
    depth = bags.depth_from_image(got[LEFT.depth][1])
    assert np.isnan(depth[0, 0]) and np.nanmax(np.abs(depth - seq.depth[1])) <= 0.5 / 5000 + 1e-6
    K, hw = bags.intrinsics_from_camera_info(got[LEFT.info][0])
    np.testing.assert_array_equal(K, tum_intrinsics(folder)[0])
    assert hw == (48, 64) and K[0, 0] == 535.4
    np.testing.assert_allclose([bags.stamp_of(m) for m in got[GT_POSE_TOPIC]], stamps)
    np.testing.assert_allclose(bags.matrix_from_msg(got[GT_POSE_TOPIC][2]), seq.cam_to_world[2], atol=1e-8)


def make_euroc(root: Path, seq) -> None:
    mav = root / "mav0"
    # Body (IMU) frame: the left camera sits 5 cm in front of it, same orientation.
    body_from_cam = {"cam0": np.eye(4), "cam1": np.eye(4)}
    body_from_cam["cam0"][0, 3] = 0.05
    body_from_cam["cam1"][:3, 3] = [0.05 + 0.11, 0.0, 0.0]
    stamps_ns = [1403636579763555584 + 50_000_000 * k for k in range(seq.num_frames)]
    K = seq.intrinsics
    for name, view in (("cam0", seq), ("cam1", seq.right)):
        (mav / name / "data").mkdir(parents=True)
        lines = ["#timestamp [ns],filename"]
        for k, t in enumerate(stamps_ns):
            cv2.imwrite(
                str(mav / name / "data" / f"{t}.png"), cv2.cvtColor(view.images[k], cv2.COLOR_RGB2GRAY)
            )
            lines.append(f"{t},{t}.png")
        (mav / name / "data.csv").write_text("\n".join(lines) + "\n")
        T = ", ".join(f"{v:.12g}" for v in body_from_cam[name].ravel())
        (mav / name / "sensor.yaml").write_text(
            "%YAML:1.0\nsensor_type: camera\ncamera_model: pinhole\n"
            f"intrinsics: [{K[0, 0]}, {K[1, 1]}, {K[0, 2]}, {K[1, 2]}]\n"
            "distortion_model: radial-tangential\ndistortion_coefficients: [0.0, 0.0, 0.0, 0.0]\n"
            f"resolution: [{seq.width}, {seq.height}]\nT_BS:\n  cols: 4\n  rows: 4\n  data: [{T}]\n"
        )
    gt = mav / "state_groundtruth_estimate0"
    gt.mkdir()
    rows = [
        "#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z []"
    ]
    for k, t in enumerate(stamps_ns):
        body = seq.cam_to_world[k] @ np.linalg.inv(body_from_cam["cam0"])
        tr, q = bags.tq_from_matrix(body)
        rows.append(",".join(str(v) for v in (t, *tr, q[3], q[0], q[1], q[2])))
    (gt / "data.csv").write_text("\n".join(rows) + "\n")


def test_euroc_folder_to_bag(tmp_path, seq) -> None:
    make_euroc(tmp_path / "MH_fake", seq)
    assert detect_kind(tmp_path / "MH_fake") == "euroc"
    summary = convert_dataset(tmp_path / "MH_fake", tmp_path / "bag")
    assert (summary.frames, summary.ground_truth) == (4, 4)
    got = read(tmp_path / "bag")
    gray = cv2.cvtColor(seq.right.images[3], cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(bags.rgb_from_image(got[RIGHT.image][3])[..., 0], gray)
    info = got[RIGHT.info][0]
    assert info.p[3] == pytest.approx(-seq.intrinsics[0, 0] * 0.11)
    # Ground truth is the left camera's optical pose (body pose composed with T_BS).
    for k in range(4):
        np.testing.assert_allclose(
            bags.matrix_from_msg(got[GT_POSE_TOPIC][k]), seq.cam_to_world[k], atol=1e-9
        )
    statics = {t.child_frame_id for t in got["/tf_static"][0].transforms}
    assert statics == {LEFT.frame, RIGHT.frame}


def test_unknown_layout_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DatasetError, match="neither a TUM RGB-D folder"):
        detect_kind(tmp_path)
