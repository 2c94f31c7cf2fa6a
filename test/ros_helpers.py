"""Helpers for the ROS tests: the colcon install space, an isolated DDS domain, the node as a
separate process, and a listener node that records what it publishes.

The tests need ``make ros`` (or ``.ci/run``) to have built the package with colcon into
``<repo>/install`` (or ``$VGGT_ROS_INSTALL``) and ``install/setup.sh`` sourced (``make test`` does
both). Without rclpy or the install space they are skipped, except under CI (``CI`` set), where
that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL = Path(os.environ.get("VGGT_ROS_INSTALL", REPO_ROOT / "install"))
NODE_EXE = INSTALL / "vggt_ros" / "lib" / "vggt_ros" / "perception_node"

# One DDS domain per test session, discovery on this machine only, and a namespace of its own in
# case another session on this machine drew the same domain.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
SESSION = f"t{os.getpid()}"
# Every node process's working folder (parameters, log, outputs) lives under one folder per test
# session, removed when the session's interpreter exits: a folder per node left behind in /tmp
# added up to hundreds over many runs.
_WORK_ROOT = tempfile.TemporaryDirectory(prefix="vggt_ros_nodes_")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def require_ros() -> None:
    """Skip (fail under CI) unless rclpy, the built interfaces and the node executable exist."""
    problem = None
    try:
        import importlib

        importlib.import_module("rclpy")
        importlib.import_module("vggt_ros.ros")  # extends vggt_ros.__path__ to the install space
        importlib.import_module("vggt_ros.msg")
    except ImportError as exc:
        problem = f"ROS 2 Python or the built vggt_ros interfaces are not importable ({exc}); run `make test`"
    if problem is None and not NODE_EXE.exists():
        problem = f"{NODE_EXE} missing: build with `make ros` (colcon)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem, allow_module_level=True)


def write_params(params: dict[str, Any], folder: Path | None = None) -> Path:
    """A ROS 2 parameter YAML for every node name (``/**``)."""
    import yaml

    folder = Path(folder or tempfile.mkdtemp(prefix="vggt_ros_params_"))
    path = folder / f"params_{len(list(folder.glob('params_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    return path


TINY_PARAMS: dict[str, Any] = {
    "model.config": "vggt-tiny",
    "model.device": "cpu",
    "model.precision": "fp32",
    "model.image_size": 196,
    "model.untrained": True,
    "window.size": 3,
    "window.stride": 1,
    "window.num_track_queries": 16,
    "keyframe.min_interval_s": 0.0,
    "keyframe.max_interval_s": 0.05,
    "keyframe.min_parallax_px": 1000.0,
    "map_publish_period_s": 0.0,
    "diagnostics_period_s": 0.5,
    "map.voxel_size_m": 0.02,
    "chaining.max_residual": 1000.0,
    "chaining.min_inlier_ratio": 0.0,
}


class NodeProcess:
    """``perception_node`` from the install space as a child process (own process group)."""

    def __init__(
        self,
        params: dict[str, Any],
        extra_args: list[str] | None = None,
        base_config: bool = True,
        node_args: list[str] | None = None,
        executable: Path = NODE_EXE,
    ):
        """``extra_args`` follow ``--ros-args`` (remappings...); ``node_args`` are the
        executable's own options (``--lifecycle``...); ``executable`` another entry point of the
        same node (a test double of a part of it)."""
        self.workdir = Path(tempfile.mkdtemp(prefix="node_", dir=_WORK_ROOT.name))
        files = [REPO_ROOT / "config" / "perception.yaml"] if base_config else []
        files.append(write_params(params, self.workdir))
        cmd = [sys.executable, str(executable), *(node_args or []), "--ros-args", "-r", f"__ns:=/{SESSION}"]
        for f in files:
            cmd += ["--params-file", str(f)]
        cmd += extra_args or []
        self.log_path = self.workdir / "node.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Signal the node and wait; kills it (and fails the caller's assertion) when it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                self._log.close()
                raise AssertionError(f"node did not stop within {timeout} s:\n{self.log()[-3000:]}") from None
        self._log.close()
        return self.proc.returncode


class Listener:
    """A test-side node that records messages per topic and calls services (spun in a thread)."""

    def __init__(self, name: str = "vggt_test_listener") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.messages: dict[str, list[Any]] = defaultdict(list)
        self._lock = threading.Lock()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException, Exception):  # shutting down
            self.executor.spin()

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 50) -> None:
        def cb(msg: Any, topic: str = topic) -> None:
            with self._lock:
                self.messages[topic].append(msg)

        self.node.create_subscription(msg_type, topic, cb, qos)

    def get(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.messages[topic])

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def call(
        self, srv_type: Any, name: str, request: Any, timeout: float = 60.0, resend_after: float | None = None
    ) -> Any:
        """Call a service and wait for its answer.

        ``resend_after``: for idempotent requests (e.g. get_state), send the request again when
        no answer came within this many seconds. DDS can report a service as available before
        the client's response reader is matched, and a response sent then is lost for good
        (seen once in CI on a loaded 2-core machine: get_state unanswered for 60 s).
        """
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        sent = time.monotonic()
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
            if resend_after is not None and time.monotonic() - sent > resend_after:
                future, sent = client.call_async(request), time.monotonic()
        assert future.done(), f"service {name} did not answer within {timeout} s"
        self.node.destroy_client(client)
        return future.result()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, node: NodeProcess | None = None) -> Any:
    """Poll ``predicate`` until truthy; on time-out fail with ``what`` and the node's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if node is not None and not node.alive():
            raise AssertionError(
                f"node exited ({node.proc.returncode}) waiting for {what}:\n{node.log()[-4000:]}"
            )
        time.sleep(0.05)
    if node is not None and node.alive():
        node.proc.send_signal(signal.SIGUSR1)  # thread stacks into the log
        time.sleep(1.0)
    tail = node.log()[-8000:] if node is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def diagnostics_values(msgs: list[Any], status_name_part: str) -> dict[str, str]:
    """Key/values of the newest diagnostics status whose name contains ``status_name_part``."""
    for arr in reversed(msgs):
        for st in arr.status:
            if status_name_part in st.name:
                return {kv.key: kv.value for kv in st.values}
    return {}
