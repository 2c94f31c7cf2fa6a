"""The inference worker: a bounded queue of windows and one thread that runs them.

``PerceptionPipeline.process`` (VGGT, chaining, scale, map) runs here, never in a callback.
A window can be interrupted between network blocks (forward pre-hooks that check a flag), which is
what lets deactivation, cleanup and shutdown take effect at once instead of after the window; an
interrupted window is dropped and counted (``windows.interrupted``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from torch import nn

from vggt_ros.engine.predictor import warm_up_window_shapes
from vggt_ros.mapping import interpreter

INTERRUPTIBLE = ("TransformerBlock", "PatchEncoder", "DPTHead", "CameraHead", "TrackHead")


class WindowInterruptedError(RuntimeError):
    """Raised inside the network when the node stops while a window is being inferred."""


def install_interrupt_hooks(model: nn.Module, flag: threading.Event) -> list[Any]:
    """Forward pre-hooks on every block of the network that raise :class:`WindowInterruptedError`
    once ``flag`` is set. Returns the hook handles (``handle.remove()`` undoes them)."""

    def check(_module: nn.Module, _inputs: Any) -> None:
        if flag.is_set():
            raise WindowInterruptedError("the node is stopping")

    handles = []
    for module in model.modules():
        # Every transformer block (encoder, aggregator, camera head) and every head: tens of
        # milliseconds apart on a CPU, and a check costs a microsecond.
        if type(module).__name__ in INTERRUPTIBLE:
            handles.append(module.register_forward_pre_hook(check))
    return handles


class WorkerMixin:
    """The window queue and the worker thread."""

    busy_window: int | None = None  # id of the window being inferred, for /diagnostics

    def _start_worker(self) -> None:
        self._stop.clear()
        self._interrupt.clear()
        self._worker = threading.Thread(target=self._work, name="vggt_inference", daemon=True)
        self._worker.start()

    def _stop_worker(self, wait_s: float) -> bool:
        """Stop the worker: drop queued windows, interrupt the running one, wait up to ``wait_s``.

        Returns True when the thread has ended.
        """
        self._stop.set()
        self._interrupt.set()
        with self._queue_cv:
            dropped = len(self._queue)
            self._queue.clear()
            self._queue_cv.notify_all()
        if dropped:
            self.stats.count("drop.stopped", dropped)
        worker = getattr(self, "_worker", None)
        if worker is None:
            return True
        worker.join(wait_s)
        return not worker.is_alive()

    def _enqueue(self, generation: int, job: Any) -> None:
        with self._queue_cv:
            if len(self._queue) >= int(self._p["queue.size"]):
                if self._p["queue.drop_policy"] == "newest":
                    self.stats.count("drop.queue_full")
                    self._warn("queue", "inference queue full: dropped the newest window (queue.drop_policy)")
                    return
                self._queue.popleft()
                self.stats.count("drop.queue_full")
                self._warn("queue", "inference queue full: dropped the oldest waiting window")
            self._queue.append((generation, job, time.monotonic()))
            self.stats.count("windows.queued")
            self._queue_cv.notify()

    def _work(self) -> None:
        """Worker thread: process queued windows and publish their outputs until stopped."""
        while not self._stop.is_set():
            with self._queue_cv:
                if not self._queue:
                    self._queue_cv.wait(0.2)
                    continue
                generation, job, queued_at = self._queue.popleft()
            self.stats.stage("queue_wait", (time.monotonic() - queued_at) * 1e3)
            if generation != self._generation:
                self.stats.count("drop.reset")
                continue
            self.busy_window = getattr(job, "window_id", -1)
            try:
                self._warm_up_window_shapes(job)
                t0 = time.perf_counter()
                sent: list[bool] = []

                def poses_first(poses: Any, generation: int = generation, sent: list = sent) -> None:
                    # TF, odometry and path leave before the map stage (planners wait for them).
                    if generation == self._generation:
                        self._publish_poses(poses)
                        sent.append(True)

                with self._map_lock:
                    result = self.pipeline.process(job, on_poses=poses_first)
                    if generation != self._generation:
                        continue
                    self._remember_keyframes(job, result)
                self.stats.set("inference_ms", (time.perf_counter() - t0) * 1e3)
                self.stats.tick("inference")
                self._record_window_stages(result)
                self._publish_result(job, result, poses_published=bool(sent))
            except WindowInterruptedError:
                self.stats.count("windows.interrupted")
                self.get_logger().info(f"window {self.busy_window} interrupted (stopping) and dropped")
                break
            except Exception as exc:  # noqa: BLE001 - a failed window must not kill the worker
                if self._stop.is_set() or not self.context.ok():
                    break  # shutting down: publishers are gone
                self.stats.count("windows.failed")
                text = f"{type(exc).__name__}: {exc}"
                self._warn(
                    f"failed.{text[:40]}", f"window {getattr(job, 'window_id', '?')} failed: {text}", 5.0
                )
            finally:
                self.busy_window = None

    def _warm_up_window_shapes(self, job: Any) -> None:
        """Before the first window with compiled sections or on a GPU: run the real window
        shapes once (the window's size, and the size a window re-anchored after a rejection
        has), so that compilation and CUDA graph capture happen now and not in the middle of a
        run. Measured on the H200 (docs/benchmarks.md, "Latency"): a re-anchored 12-frame window
        compiled mid-replay stalled the worker 22 s and 32 windows were dropped."""
        if getattr(self, "_warmed_predictor", None) is self.predictor:
            return  # once per predictor: a reconfigured node (new weights or backend) warms again
        self._warmed_predictor = self.predictor
        device = str(getattr(self.predictor, "device", "cpu"))
        if self._inference_backend() != "eager" or device.startswith("cuda"):
            self._run_warm_up_windows(job)
        # Start-up's objects (model, compiled graphs, warm-up) are never walked by the
        # collector again: a full collection of them would stall a window (interpreter.py).
        frozen = interpreter.freeze_survivors()
        self.stats.set("gc_frozen_objects", frozen)

    def _run_warm_up_windows(self, job: Any) -> None:
        """The real window shapes, once each (``warm_up_window_shapes``); eager CPU windows cost
        the same every time and skip this."""
        plain = len(job.keyframes)
        cameras = len({kf.camera_id for kf in job.keyframes})
        anchored = plain + self.pipeline.config.window.overlap * cameras
        image = job.keyframes[0].frame.image
        t0 = time.perf_counter()
        try:
            stride = self.pipeline.config.window.stride * cameras  # new frames a steady window adds
            warm_up_window_shapes(self.predictor, image, (plain, anchored), new_frames=stride)
        except WindowInterruptedError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the later windows time
            self._warn("warm_up", f"warm-up at the real window shapes failed: {type(exc).__name__}: {exc}")
            return
        seconds = time.perf_counter() - t0
        self.stats.set("warm_up_s", seconds)
        self.get_logger().info(
            f"warmed up at {image.shape[0]}x{image.shape[1]}, windows of {anchored} and {plain} frames: "
            f"{seconds:.1f} s"
        )

    def _record_window_stages(self, result: Any) -> None:
        """The pipeline's own stage timings of a window, as latency stages (stats.LATENCY_STAGES)."""
        t = result.timings or {}
        for stage, key in (
            ("preprocess", "predictor_preprocess_ms"),
            ("network", "predictor_inference_ms"),
            ("postprocess", "predictor_postprocess_ms"),
        ):
            if key in t:
                self.stats.stage(stage, t[key])
        if "gc_ms" in t:  # collector pauses on the way to the poses (inside the stages above)
            self.stats.stage("gc", t["gc_ms"])
        # "chaining": from the network's output to the window's poses (refinement, fit, scale).
        chaining = [t[k] for k in ("refine_ms", "chain_ms", "scale_ms") if k in t]
        if chaining:
            self.stats.stage("chaining", sum(chaining))
        if "map_ms" in t:  # after TF, odometry and path went out (pipeline on_poses): back end, map
            self.stats.stage("map", t["map_ms"] + t.get("back_end_ms", 0.0))
        if result.loops:
            self.stats.stage("loops", t.get("loop_ms", 0.0))

    def queue_depth(self) -> int:
        with self._queue_cv:
            return len(self._queue)
