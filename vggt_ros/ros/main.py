"""The ``perception_node`` executable: the plain node, or the managed lifecycle node with
``--lifecycle`` (``ros2 run vggt_ros perception_node``).

Kept apart from :mod:`vggt_ros.ros.node` so that the node and the lifecycle node (which builds
on it) do not import each other.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from vggt_ros.ros.lifecycle_node import PerceptionLifecycleNode
from vggt_ros.ros.node import NODE_NAME, PerceptionNode
from vggt_ros.ros.node_parameters import ConfigError


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The executable's own options (ROS arguments are left to rclpy)."""
    from rclpy.utilities import remove_ros_args

    def flag(text: str) -> bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")

    ap = argparse.ArgumentParser(prog="perception_node", description="VGGT perception node")
    ap.add_argument(
        "--lifecycle", type=flag, nargs="?", const=True, default=False, help="run as a managed lifecycle node"
    )
    ap.add_argument(
        "--autostart",
        type=flag,
        nargs="?",
        const=True,
        default=False,
        help="lifecycle: configure and activate",
    )
    return ap.parse_args(remove_ros_args(list(argv))[1:])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; exit 0 on a clean shutdown, 2 on a refused parameter.

    ``--lifecycle`` runs the managed lifecycle node (unconfigured until told; ``--autostart``
    configures and activates it at once). Shutdown is immediate: a window being inferred is
    interrupted and dropped, and if the network cannot be interrupted within
    ``SHUTDOWN_WAIT_S`` the process still exits (status 0) without waiting for it.
    """
    argv = list(sys.argv if argv is None else argv)
    options = _parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    rclpy.init(args=argv)
    node: Any = None
    executor = MultiThreadedExecutor(num_threads=4)
    exit_code = [0]  # what the process exits with once the node exists (set on an error below)
    try:
        try:
            if options.lifecycle:
                node = PerceptionLifecycleNode(autostart=options.autostart)
            else:
                node = PerceptionNode()
        except ConfigError as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"refused parameter: {exc}")
            return 2
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:
            # A SIGINT/SIGTERM that shuts the context down while the executor is building its
            # wait set makes rclpy raise (RCLError) instead of returning: still a clean stop.
            if rclpy.ok():
                import traceback

                traceback.print_exc()
                exit_code[0] = 1
                raise
        return 0
    finally:
        if node is not None:
            node.stop()
            executor.shutdown(timeout_sec=0.2)
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
        if node is not None:
            # ROS is shut down and nothing is being written. Unloading PyTorch and the
            # interpreter's other modules would take about a second, and a worker still inside
            # native code can hang it: leave now, with the status the caller gets from us.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exit_code[0])


if __name__ == "__main__":
    raise SystemExit(main())
