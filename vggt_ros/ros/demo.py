"""``demo_node``: perception_node end to end on a bundled synthetic sequence, in one process.

A publisher node streams a procedurally rendered two-camera sequence (raw rgb8 + camera_info on
the left camera, jpeg on the right) over DDS to a real ``PerceptionNode``; the demo then saves the
map (PLY) and exports the keyframes (COLMAP + TUM) to ``--out`` and prints what was published.

    python -m vggt_ros.ros.demo [--checkpoint FILE_OR_REPO | --untrained] [--out out/demo_node]

Without ``--checkpoint`` it runs the compact model embedded in the package (see
docs/model_card_compact.md for what it has learned); ``--untrained`` runs random weights (the
pipeline only). With a VGGT-1B checkpoint use ``--device cuda`` on a GPU (slow on a CPU).

Afterwards it prints the accuracy of the same weights on the bundled sequence (its left camera,
replayed through the same pipeline as ``vggt-ros eval``) next to untrained random weights and
a constant-depth / identity-pose baseline: window depth AbsRel, window rotation error and the
chained trajectory's APE as a percentage of its length.
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
    ap.add_argument("--checkpoint", default="", help="checkpoint file or Hugging Face repo id (VGGT-1B)")
    ap.add_argument("--untrained", action="store_true", help="random weights (vggt-tiny): the pipeline only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--out", default="out/demo_node")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the accuracy table")
    args = ap.parse_args(argv)
    if args.checkpoint and args.untrained:
        ap.error("--checkpoint and --untrained exclude each other")

    from vggt_ros.eval.accuracy import DEMO_WINDOW_SETTINGS
    from vggt_ros.eval.synthetic import render_sequence, render_size
    from vggt_ros.model.embedded import DEFAULT_MODEL

    out = Path(args.out).resolve()
    large = bool(args.checkpoint)
    if args.untrained:
        print("NOTE: --untrained: running on UNTRAINED random weights (vggt-tiny). Every topic is published,")
        print("      but the geometry is meaningless.")
    if large:
        h, w = 294, 392
    elif args.untrained:
        h, w = 140, 182
    else:  # the embedded model's own input size (224x294 for vggt-compact-v10)
        h, w = render_size(DEFAULT_MODEL.image_size)
    seq = render_sequence(num_frames=args.frames, height=h, width=w, seed=0, second_camera_baseline=0.2)
    overrides = {
        "model.checkpoint": args.checkpoint,
        "model.config": "vggt-tiny" if args.untrained else "",
        "model.untrained": args.untrained,
        "model.device": args.device,
        "model.image_size": 196 if args.untrained else 0,
        "cameras": ["left", "right"],
        "camera.left.topic": "/demo/left/image_raw",
        "camera.left.camera_info_topic": "/demo/left/camera_info",
        "camera.left.frame_id": "left_optical",
        "camera.right.topic": "/demo/right/image_raw/compressed",
        "camera.right.transport": "compressed",
        "camera.right.frame_id": "right_optical",
        **DEMO_WINDOW_SETTINGS,
        "window.num_track_queries": 32,
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
        deadline = time.monotonic() + (600 if large else 60)
        while time.monotonic() < deadline and (node.queue_depth() or counts["points"] == 0):
            ex.spin_once(timeout_sec=0.1)
        for _ in range(20):
            ex.spin_once(timeout_sec=0.05)
        from vggt_ros.srv import ExportKeyframes, SaveMap

        saved = node._srv_save_map(SaveMap.Request(path="map.ply"), SaveMap.Response())
        exported = node._srv_export(ExportKeyframes.Request(directory="export"), ExportKeyframes.Response())
        print(f"model: {node.model_description}")
        print(f"published: {dict(counts)}")
        print(f"save_map: {saved.message}")
        print(f"export_keyframes: {exported.message}")
        if args.untrained:
            print("(UNTRAINED weights: the geometry above is meaningless)")
        if not args.no_accuracy:
            _print_accuracy(node, seq)
        return 0 if counts["points"] else 1
    finally:
        node.shutdown()
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        pub.destroy_node()
        rclpy.try_shutdown()


def _print_accuracy(node: PerceptionNode, seq: object) -> None:
    """Accuracy of the node's weights, of untrained weights of the same architecture and of the
    constant/identity baseline on the bundled sequence's left camera (same pipeline settings)."""
    import torch

    from vggt_ros.engine import Predictor
    from vggt_ros.eval.accuracy import format_accuracy_table, synthetic_sequence_accuracy

    torch.manual_seed(0)  # the same untrained weights every run, so the table is reproducible
    untrained = Predictor.from_checkpoint(
        None,
        config=node.predictor.runner.model.config.name,
        device=str(node.predictor.device),
        target_size=node.predictor.target_size,
    )
    name = node.predictor.weights.get("model") or node.predictor.weights.get("source") or "untrained"
    predictors = {f"{name} (this run)": node.predictor, "untrained random weights": untrained}
    from vggt_ros.mapping import PipelineConfig

    # The node's window and keyframe settings, for the one (left) camera replayed here.
    flat = PipelineConfig().to_flat()
    node_flat = node._pipeline_cfg.to_flat()
    shared = ("window.size", "window.stride", "window.num_track_queries", "keyframe.", "chaining.")
    flat.update({k: v for k, v in node_flat.items() if k.startswith(shared)})
    rows = synthetic_sequence_accuracy(seq, predictors, PipelineConfig.from_flat(flat))
    # The same without the pose refinement: what the network's camera head gives on its own
    # (the refinement places frames by PnP on any depth, untrained weights' included).
    head_only = synthetic_sequence_accuracy(
        seq, predictors, PipelineConfig.from_flat({**flat, "refine.enabled": False})
    )
    table = {}
    for name in predictors:
        table[name] = rows.pop(name)
        table[f"{name}, camera head only"] = head_only[name]
    table.update(rows)  # the constant-depth / identity-pose baseline
    rows = table
    print("")
    print("accuracy on the bundled sequence (left camera; vggt-ros eval's metrics):")
    print(format_accuracy_table(rows))


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
