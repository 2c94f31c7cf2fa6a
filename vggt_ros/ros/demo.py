"""``demo_node``: perception_node end to end on a bundled synthetic sequence, in one process.

A publisher node streams a procedurally rendered two-camera sequence (raw rgb8 + camera_info on
the left camera, jpeg on the right) over DDS to a real ``PerceptionNode``; the demo then saves the
map (PLY) and exports the keyframes (COLMAP + TUM) to ``--out`` and prints what was published.

    python -m vggt_ros.ros.demo [--checkpoint FILE_OR_REPO] [--out out/demo_node]

Without ``--checkpoint`` no VGGT weights can be had offline: the demo says so and runs the tiny
configuration on UNTRAINED random weights, so every stage and topic shows but the geometry is
meaningless. With a checkpoint it runs VGGT-1B (slow on CPU: use ``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from vggt_ros.ros import conversions as conv
from vggt_ros.ros.node import PerceptionNode


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 when at least one window was published."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="", help="VGGT-1B checkpoint file or Hugging Face repo id")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--out", default="out/demo_node")
    args = ap.parse_args(argv)

    from vggt_ros.eval.synthetic import render_sequence

    out = Path(args.out).resolve()
    trained = bool(args.checkpoint)
    if not trained:
        print("NOTE: no VGGT checkpoint given and none can be downloaded here: running on UNTRAINED random")
        print("      weights (vggt-tiny). Every topic is published, but the geometry is meaningless.")
    size = 518 if trained else 196
    h, w = (294, 392) if trained else (140, 196)
    seq = render_sequence(num_frames=args.frames, height=h, width=w, seed=0, second_camera_baseline=0.2)
    overrides = {
        "model.checkpoint": args.checkpoint,
        "model.config": "vggt-1b" if trained else "vggt-tiny",
        "model.allow_untrained": not trained,
        "model.device": args.device,
        "model.image_size": size,
        "cameras": ["left", "right"],
        "camera.left.topic": "/demo/left/image_raw",
        "camera.left.camera_info_topic": "/demo/left/camera_info",
        "camera.left.frame_id": "left_optical",
        "camera.right.topic": "/demo/right/image_raw/compressed",
        "camera.right.transport": "compressed",
        "camera.right.frame_id": "right_optical",
        "window.size": 4,
        "window.stride": 2,
        "window.num_track_queries": 32,
        "keyframe.max_interval_s": 0.15,
        "map_publish_period_s": 0.0,
        "output_dir": str(out),
    }
    rclpy.init()
    node = PerceptionNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    pub = rclpy.create_node("vggt_demo_camera")
    counts: Counter[str] = Counter()
    for topic in ("depth/image", "points", "map", "tracks", "odometry", "path"):
        node.create_subscription(
            _type_of(node, topic),
            f"~/{topic}",
            lambda _m, t=topic: counts.update([t]),
            10,
        )
    left = pub.create_publisher(Image, "/demo/left/image_raw", 10)
    info = pub.create_publisher(CameraInfo, "/demo/left/camera_info", 10)
    right = pub.create_publisher(CompressedImage, "/demo/right/image_raw/compressed", 10)
    ex = MultiThreadedExecutor(num_threads=4)
    ex.add_node(node)
    ex.add_node(pub)
    try:
        for i in range(seq.num_frames):
            header = conv.make_header(100.0 + i * 0.2, "left_optical")
            info.publish(conv.camera_info(seq.intrinsics, h, w, header))
            left.publish(conv.rgb_to_image(seq.images[i], "rgb8", header))
            right.publish(
                conv.rgb_to_compressed(seq.right.images[i], "jpeg", conv.make_header(header.stamp, ""))
            )
            ex.spin_once(timeout_sec=0.05)
            t_end = time.monotonic() + 0.2
            while time.monotonic() < t_end:
                ex.spin_once(timeout_sec=0.02)
        deadline = time.monotonic() + (600 if trained else 60)
        while time.monotonic() < deadline and (node.queue_depth() or counts["points"] == 0):
            ex.spin_once(timeout_sec=0.1)
        for _ in range(20):
            ex.spin_once(timeout_sec=0.05)
        from vggt_ros.srv import ExportKeyframes, SaveMap

        saved = node._srv_save_map(SaveMap.Request(path="map.ply"), SaveMap.Response())
        exported = node._srv_export(ExportKeyframes.Request(directory="export"), ExportKeyframes.Response())
        print(f"published: {dict(counts)}")
        print(f"save_map: {saved.message}")
        print(f"export_keyframes: {exported.message}")
        if not trained:
            print("(UNTRAINED weights: the geometry above is meaningless)")
        return 0 if counts["points"] else 1
    finally:
        node.shutdown()
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        pub.destroy_node()
        rclpy.try_shutdown()


def _type_of(node: PerceptionNode, topic: str) -> type:
    return {
        "depth/image": node.pub_depth.msg_type,
        "tracks": node.pub_tracks.msg_type,
        "points": node.pub_points.msg_type,
        "map": node.pub_map.msg_type,
        "odometry": node.pub_odom.msg_type,
        "path": node.pub_path.msg_type,
    }[topic]


if __name__ == "__main__":
    raise SystemExit(main())
