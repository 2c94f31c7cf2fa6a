"""perception_node as a robot runs it: instant shutdown mid-inference, the managed lifecycle,
start-up checks of parameter combinations, resolved topic names, track markers, RViz and
Foxglove views. Real node processes over DDS (CPU)."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
import yaml
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
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vggt_ros.msg import KeypointTracks  # noqa: E402
from vggt_ros.srv import SaveMap  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from vggt_ros.eval.synthetic import render_sequence  # noqa: E402
from vggt_ros.ros import conversions as conv  # noqa: E402

NS = f"/{SESSION}/vggt_perception"
TOPIC = f"/{SESSION}/solo/image_raw"
H, W = 140, 182
SOLO = {
    **TINY_PARAMS,
    "cameras": ["front"],
    "camera.front.topic": "solo/image_raw",  # relative: resolves to /<namespace>/solo/image_raw
    "camera.front.camera_info_topic": "",
}


@pytest.fixture(scope="module")
def seq():
    return render_sequence(num_frames=10, height=H, width=W, seed=4)


@pytest.fixture(scope="module")
def listener():
    lis = Listener("vggt_lifecycle_listener")
    lis.subscribe(DiagnosticArray, "/diagnostics")
    lis.subscribe(Image, f"{NS}/depth/image")
    lis.subscribe(KeypointTracks, f"{NS}/tracks")
    lis.subscribe(MarkerArray, f"{NS}/tracks/markers")
    lis.pub = lis.node.create_publisher(Image, TOPIC, 10)
    yield lis
    lis.close()


def _feed(listener, seq, start: int, count: int, period: float = 0.1) -> int:
    """Publish ``count`` frames with increasing stamps; returns the next index."""
    for i in range(start, start + count):
        header = conv.make_header(2000.0 + 0.2 * i, "front_optical")
        listener.pub.publish(conv.rgb_to_image(seq.images[i % seq.num_frames], "rgb8", header))
        time.sleep(period)
    return start + count


def _inference(listener) -> dict[str, str]:
    return diagnostics_values(listener.get("/diagnostics"), f"{NS}: inference")


def _connected(listener, node) -> None:
    wait_for(lambda: listener.pub.get_subscription_count() > 0, 30, "the node's image subscription", node)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_inference_exits_within_one_second(listener, seq, sig) -> None:
    """The worst case of the tests: the compact model on 4-frame windows at 518 px on the CPU
    (seconds per window). The signal lands while a window is being inferred."""
    params = {k: v for k, v in SOLO.items() if not k.startswith("model.")}
    params.update({"model.device": "cpu", "model.image_size": 518, "window.size": 4, "window.stride": 1})
    node = NodeProcess(params)
    try:
        wait_for(lambda: "ready:" in node.log(), 180, "start-up", node)
        _connected(listener, node)
        listener.clear()
        i = 0
        deadline = time.monotonic() + 120
        while _inference(listener).get("inference_busy") != "True" and time.monotonic() < deadline:
            i = _feed(listener, seq, i, 2)
        assert _inference(listener).get("inference_busy") == "True", node.log()[-3000:]
        t0 = time.monotonic()
        code = node.stop(sig, timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if node.alive():
            node.stop(signal.SIGKILL)
    assert code == 0, node.log()[-3000:]
    assert elapsed < 1.0, f"took {elapsed:.2f} s to exit\n{node.log()[-3000:]}"
    log = node.log()
    assert "Traceback" not in log and ("interrupted" in log or "dropped" in log), log[-3000:]


def _change(listener, transition: int, ns: str = NS) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition))
    return listener.call(ChangeState, f"{ns}/change_state", request).success


def _state(listener, ns: str = NS) -> str:
    answer = listener.call(GetState, f"{ns}/get_state", GetState.Request(), resend_after=5.0)
    return answer.current_state.label


def test_lifecycle_transitions_in_and_out_of_order(listener, seq, tmp_path) -> None:
    node = NodeProcess({**SOLO, "output_dir": str(tmp_path)}, node_args=["--lifecycle"])
    try:
        wait_for(lambda: "lifecycle node up" in node.log(), 120, "start-up", node)
        assert _state(listener) == "unconfigured"
        assert not _change(listener, Transition.TRANSITION_ACTIVATE)  # out of order: refused
        assert _state(listener) == "unconfigured" and node.alive()

        assert _change(listener, Transition.TRANSITION_CONFIGURE)
        assert _state(listener) == "inactive"
        assert "loaded and warmed up in" in node.log()
        assert not _change(listener, Transition.TRANSITION_CONFIGURE)  # already configured

        assert _change(listener, Transition.TRANSITION_ACTIVATE)
        assert _state(listener) == "active" and "ready:" in node.log()
        _connected(listener, node)
        i = 0
        deadline = time.monotonic() + 90
        while not listener.get(f"{NS}/depth/image") and time.monotonic() < deadline:
            i = _feed(listener, seq, i, 3)
        assert listener.get(f"{NS}/depth/image"), node.log()[-3000:]

        assert _change(listener, Transition.TRANSITION_DEACTIVATE)
        assert _state(listener) == "inactive"
        time.sleep(0.5)
        before = len(listener.get(f"{NS}/depth/image"))
        i = _feed(listener, seq, i, 6)
        time.sleep(2.0)
        assert len(listener.get(f"{NS}/depth/image")) == before  # paused: nothing comes out
        saved = listener.call(SaveMap, f"{NS}/save_map", SaveMap.Request(path="kept.ply"))
        assert saved.success and saved.num_points > 0  # the map survived deactivation
        v = _inference(listener)
        assert v.get("lifecycle_state") == "inactive"

        assert _change(listener, Transition.TRANSITION_CLEANUP)
        assert _state(listener) == "unconfigured" and "model and map freed" in node.log()
        assert _change(listener, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert _state(listener) == "finalized"
    finally:
        code = node.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in node.log(), node.log()[-3000:]


def test_lifecycle_autostart_and_refused_configuration(listener) -> None:
    node = NodeProcess(SOLO, node_args=["--lifecycle", "--autostart"])
    try:
        wait_for(lambda: "ready:" in node.log(), 120, "autostart", node)
        assert _state(listener) == "active"
    finally:
        assert node.stop(signal.SIGTERM) == 0
    # A configuration refused by the start-up checks fails the transition, with its reason. (A
    # node name of its own: DDS may still list the stopped node's services for a while.)
    bad = NodeProcess(
        {**SOLO, "model.image_size": 112, "window.num_track_queries": 8},
        extra_args=["-r", "__node:=vggt_refused"],
        node_args=["--lifecycle"],
    )
    ns = f"/{SESSION}/vggt_refused"
    try:
        wait_for(lambda: "lifecycle node up" in bad.log(), 120, "start-up", bad)
        assert not _change(listener, Transition.TRANSITION_CONFIGURE, ns)
        assert _state(listener, ns) == "unconfigured"
        assert "below the 128 px the track head needs" in bad.log()
    finally:
        assert bad.stop(signal.SIGINT) == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model.image_size": 112, "window.num_track_queries": 8}, "below the 128 px the track head needs"),
        ({"scale.source": "odometry"}, "scale.source = odometry needs odom_topic"),
        ({"scale.source": "depth"}, "scale.source = depth needs metric_depth_topic"),
        ({"window.rig_cameras": ["front", "back"]}, "not in cameras"),
        (
            {"model.checkpoint": "/no/such/model.safetensors", "model.untrained": False},
            "cannot load the model",
        ),
    ],
)
def test_start_up_refuses_combinations_that_would_fail(params, message) -> None:
    node = NodeProcess({**SOLO, **params})
    assert node.wait(120) == 2, node.log()[-3000:]
    assert "refused parameter" in node.log() and message in node.log(), node.log()[-3000:]


def test_ready_line_and_diagnostics_name_resolved_topics_and_markers_match_tracks(listener, seq) -> None:
    node = NodeProcess({**SOLO, "publish_track_markers": True, "window.num_track_queries": 12})
    try:
        wait_for(lambda: "ready:" in node.log(), 120, "start-up", node)
        assert TOPIC in node.log()  # "solo/image_raw" as resolved in the node's namespace
        _connected(listener, node)
        listener.clear()
        i = 0
        deadline = time.monotonic() + 90
        while (
            not (listener.get(f"{NS}/tracks") and listener.get(f"{NS}/tracks/markers"))
            and time.monotonic() < deadline
        ):
            i = _feed(listener, seq, i, 3)
        cam = diagnostics_values(listener.get("/diagnostics"), f"{NS}: camera front")
        assert cam.get("topic") == TOPIC
        tracks = {conv.stamp_to_sec(t.header.stamp): t for t in listener.get(f"{NS}/tracks")}
        matched = 0
        for array in listener.get(f"{NS}/tracks/markers"):
            marker = array.markers[0]
            t = tracks.get(conv.stamp_to_sec(marker.header.stamp))
            if t is None:
                continue
            matched += 1
            assert marker.header.frame_id == t.header.frame_id and marker.ns == "vggt_tracks"
            pts = np.asarray(t.points, np.float32).reshape(-1, 3)[np.asarray(t.has_point, bool)]
            got = np.array([[p.x, p.y, p.z] for p in marker.points], np.float32).reshape(-1, 3)
            np.testing.assert_allclose(got, pts, rtol=1e-6, atol=1e-6)
            assert len(marker.colors) == len(marker.points)
        assert matched, node.log()[-3000:]
        # Every topic the RViz and Foxglove views show exists on the running node.
        names = {n for n, _ in listener.node.get_topic_names_and_types()}
        for topic in _view_topics():
            assert topic.replace("/vggt_perception/", f"{NS}/") in names or topic == "/diagnostics", topic
    finally:
        assert node.stop(signal.SIGINT) == 0


def _view_topics() -> set[str]:
    rviz = yaml.safe_load((REPO_ROOT / "config" / "vggt_ros.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d}
    fox = json.loads((REPO_ROOT / "config" / "vggt_ros.foxglove.json").read_text())
    for cfg in fox["configById"].values():
        topics |= set(cfg.get("topics", {}))
        topics |= {v for k, v in cfg.get("imageMode", {}).items() if k == "imageTopic"}
        topics |= {cfg[k] for k in ("topicPath", "topicToRender") if k in cfg}
    return topics


def test_views_show_every_output_and_reference_only_defined_panels() -> None:
    rviz = yaml.safe_load((REPO_ROOT / "config" / "vggt_ros.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    classes = {d["Class"].split("/")[-1] for d in displays}
    assert {"TF", "PointCloud2", "Path", "MarkerArray", "Image"} <= classes
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
    by_topic = {d["Topic"]["Value"]: d for d in displays if "Topic" in d}
    assert by_topic["/vggt_perception/map"]["Topic"]["Durability Policy"] == "Transient Local"
    expected = {"map", "points", "path", "tracks/markers", "depth/image"}
    assert {f"/vggt_perception/{t}" for t in expected} <= set(by_topic)
    fox = json.loads((REPO_ROOT / "config" / "vggt_ros.foxglove.json").read_text())

    def panels(node):
        return [node] if isinstance(node, str) else panels(node["first"]) + panels(node["second"])

    assert set(panels(fox["layout"])) == set(fox["configById"])
    assert {
        f"/vggt_perception/{t}" for t in ("map", "path", "tracks/markers", "depth/image")
    } <= _view_topics()
