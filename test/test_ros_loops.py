"""The node closes a loop and republishes the corrected path, map and loop markers (a real node
process over DDS; its predictor is the drifting ground-truth fake of test/fake_predictor_node.py)."""

from __future__ import annotations

import signal
import time

import numpy as np
from ros_helpers import (
    REPO_ROOT,
    SESSION,
    TINY_PARAMS,
    Listener,
    NodeProcess,
    diagnostics_values,
    require_ros,
    wait_for,
)

require_ros()

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from vggt_ros.eval.synthetic import render_sequence  # noqa: E402
from vggt_ros.ros import conversions as conv  # noqa: E402

NS = f"/{SESSION}/vggt_loops"
PARAMS = {
    **{k: v for k, v in TINY_PARAMS.items() if not k.startswith("model.")},
    "model.untrained": True,  # (replaced by the fake in fake_predictor_node.py)
    "model.config": "vggt-tiny",
    "model.device": "cpu",
    "cameras": ["cam"],
    "camera.cam.topic": "loops/image",
    "camera.cam.camera_info_topic": "loops/camera_info",
    "window.size": 6,
    "window.stride": 3,
    "window.num_track_queries": 0,
    "keyframe.min_parallax_px": 12.0,
    "keyframe.max_interval_s": 10.0,
    "keyframe.min_interval_s": 0.0,
    "queue.size": 50,
    # The fake's per-pixel noise alone puts a window's chaining residual at the default
    # threshold (0.030-0.033 over 16 fake seeds, 0-2 rejected windows a run); this test is about
    # loops, so chaining gets headroom.
    "chaining.max_residual": 0.06,
    "chaining.min_inlier_ratio": 0.3,
    "chaining.inlier_threshold": 0.1,
    # Every published frame reaches the node, however busy the machine: with the default sensor
    # QoS (best effort, keep last 5) a slow CI runner dropped frames, the keyframes thinned out
    # and no loop was found in 120 s.
    "qos_overrides": {
        f"/{SESSION}/loops/image": {"subscription": {"reliability": "reliable", "depth": 200}},
        f"/{SESSION}/loops/camera_info": {"subscription": {"reliability": "reliable", "depth": 200}},
    },
}


def test_node_closes_a_loop_and_republishes_the_corrected_path() -> None:
    from fake_predictor_node import SEQUENCE

    seq = render_sequence(**SEQUENCE)
    listener = Listener("vggt_loops_listener")
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    listener.subscribe(PathMsg, f"{NS}/path")
    listener.subscribe(MarkerArray, f"{NS}/loops/markers", latched)
    listener.subscribe(DiagnosticArray, "/diagnostics")
    pub = listener.node.create_publisher(Image, f"/{SESSION}/loops/image", 200)
    info = listener.node.create_publisher(CameraInfo, f"/{SESSION}/loops/camera_info", 200)
    node = NodeProcess(
        PARAMS,
        extra_args=["-r", "__node:=vggt_loops"],
        executable=REPO_ROOT / "test" / "fake_predictor_node.py",
    )
    try:
        wait_for(lambda: "ready:" in node.log(), 120, "start-up", node)
        wait_for(lambda: pub.get_subscription_count() > 0, 30, "the node's image subscription", node)
        # The qos_overrides parameters reached the subscription (the default is best effort).
        (sub_info,) = listener.node.get_subscriptions_info_by_topic(f"/{SESSION}/loops/image")
        assert sub_info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        time.sleep(1.0)
        for i in range(seq.num_frames):
            header = conv.make_header(100.0 + i / 10.0, "cam_optical")
            info.publish(conv.camera_info(seq.intrinsics, seq.height, seq.width, header))
            pub.publish(conv.rgb_to_image(seq.images[i], "rgb8", header))
            time.sleep(0.05)
        markers = wait_for(
            lambda: [m for m in listener.get(f"{NS}/loops/markers") if m.markers[0].points],
            120,
            "a closed loop",
            node,
        )
        lines = markers[-1].markers[0]
        assert lines.type == lines.LINE_LIST and len(lines.points) % 2 == 0 and lines.header.frame_id == "map"
        for a, b in zip(lines.points[0::2], lines.points[1::2]):  # old and new keyframe of a loop
            assert np.linalg.norm([a.x - b.x, a.y - b.y, a.z - b.z]) < 1.0
        v = wait_for(
            lambda: (
                diagnostics_values(listener.get("/diagnostics"), f"{NS}: loops").get("loops_accepted", "0")
                != "0"
            ),
            30,
            "loop diagnostics",
            node,
        )
        assert v
        # The path published after the loop moved the keyframes it published before.
        paths = listener.get(f"{NS}/path")
        first = {conv.stamp_to_sec(p.header.stamp): p.pose.position for p in paths[len(paths) // 2].poses}
        last = {conv.stamp_to_sec(p.header.stamp): p.pose.position for p in paths[-1].poses}
        common = sorted(set(first) & set(last))
        moved = [
            np.linalg.norm([first[t].x - last[t].x, first[t].y - last[t].y, first[t].z - last[t].z])
            for t in common
        ]
        assert common and max(moved) > 1e-3, moved
        assert "loop" in node.log() and "closed" in node.log()
    finally:
        code = node.stop(signal.SIGINT)
        listener.close()
    assert code == 0, node.log()[-3000:]
