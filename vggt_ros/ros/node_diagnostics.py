"""/diagnostics of the node: one status per camera (rate, bad frames by kind) and one for
inference (model, device, queue, drops, failures, latency, stage timings, GPU memory, state),
one for the back end (loops) and one for latency (p50 / p95 / max of each stage, image to TF).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from vggt_ros.mapping.pipeline import REFINEMENT_COUNTERS


class DiagnosticsMixin:
    """The diagnostics timer callback."""

    def _publish_diagnostics(self) -> None:
        counts, rates, values, lat = self.stats.snapshot()
        stamp = self.get_clock().now().to_msg()
        arr = DiagnosticArray()
        arr.header.stamp = stamp
        hw = str(getattr(self.predictor, "device", "none"))

        def kv(pairs: Sequence[tuple[str, Any]]) -> list[KeyValue]:
            return [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in pairs]

        for cam in self.cameras:
            p = f"input.{cam.name}."
            errors = sum(v for k, v in counts.items() if k.startswith(p) and k != p + "received")
            st = DiagnosticStatus(
                name=f"{self.get_fully_qualified_name()}: camera {cam.name}", hardware_id=hw
            )
            rate = rates.get(f"input.{cam.name}", 0.0)
            st.level = DiagnosticStatus.WARN if errors or rate == 0.0 else DiagnosticStatus.OK
            st.message = f"{rate:.1f} Hz, {errors} bad frame(s)" if rate else "no images"
            st.values = kv(
                [
                    ("topic", self.resolve_topic_name(cam.topic)),
                    ("transport", cam.transport),
                    ("frame_id", self._frame_ids.get(cam.name, "")),
                    ("rate_hz", rate),
                    ("received", counts.get(p + "received", 0)),
                    ("decode_errors", counts.get(p + "decode_error", 0)),
                    ("out_of_order", counts.get(p + "out_of_order", 0)),
                    ("repeated_stamps", counts.get(p + "repeated_stamp", 0)),
                    ("camera_info_size_mismatch", counts.get(p + "camera_info_size_mismatch", 0)),
                    ("other_errors", counts.get(p + "error", 0)),
                ]
            )
            arr.status.append(st)

        st = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: inference", hardware_id=hw)
        trained = bool(getattr(self.predictor, "weights", {}).get("trained", True))
        drops = counts.get("drop.queue_full", 0)
        failed = counts.get("windows.failed", 0)
        st.level = DiagnosticStatus.OK
        msgs = []
        if not trained:
            st.level, msgs = DiagnosticStatus.WARN, ["UNTRAINED WEIGHTS"]
        if drops:
            st.level = DiagnosticStatus.WARN
            msgs.append(f"{drops} window(s) dropped (queue full)")
        if failed:
            st.level = DiagnosticStatus.ERROR
            msgs.append(f"{failed} window(s) failed")
        worker = self._worker
        if worker is not None and not worker.is_alive() and not self._stop.is_set():
            st.level = DiagnosticStatus.ERROR
            msgs.append("inference thread died")
        if self.lifecycle_state != "active":
            msgs.append(f"lifecycle state {self.lifecycle_state}: not taking images")
        st.message = "; ".join(msgs) or "ok"
        pairs: list[tuple[str, Any]] = [
            ("model", self.model_description),
            ("lifecycle_state", self.lifecycle_state),
            ("inference_busy", self.busy_window is not None),
            ("windows_interrupted", counts.get("windows.interrupted", 0)),
            ("weights_trained", trained),
            ("device", hw),
            ("precision", self._precision_name()),
            ("inference_backend", self._inference_backend()),
            ("tf_backend", self.tf.backend),
            ("inference_rate_hz", rates.get("inference", 0.0)),
            ("queue_depth", self.queue_depth()),
            ("queue_size", self._p["queue.size"]),
            ("dropped_windows_queue_full", drops),
            ("dropped_frames_total", sum(v for k, v in counts.items() if k.startswith("drop."))),
            ("windows_processed", counts.get("windows.processed", 0)),
            ("windows_accepted", counts.get("windows.accepted", 0)),
            ("windows_rejected", counts.get("windows.rejected", 0)),
            ("windows_failed", failed),
            ("latency_ms_last", lat[-1] if lat else float("nan")),
            ("latency_ms_mean", float(np.mean(lat)) if lat else float("nan")),
        ]
        pairs += sorted(values.items())
        pairs += self._frame_cache()
        pairs += self._pose_refinement()
        pairs.append(("global_attention", self._global_attention()))
        runner = getattr(self.predictor, "runner", None)
        pairs.append(("mirror_depth", bool(getattr(runner, "mirror_depth", False))))
        pairs += self._gpu_memory()
        st.values = kv(pairs)
        arr.status.append(st)
        arr.status.append(self._loops_status(hw, kv))
        arr.status.append(self._latency_status(hw, kv))
        self.pub_diag.publish(arr)

    def _loops_status(self, hw: str, kv: Any) -> DiagnosticStatus:
        """The back end: loop candidates verified / closed / rejected and the pose graph's size."""
        st = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: loops", hardware_id=hw)
        stats = self.pipeline.back_end_stats if self.pipeline is not None else {"enabled": 0}
        if not stats.get("enabled"):
            st.level, st.message = DiagnosticStatus.OK, "loop closure off (loop.enabled)"
        else:
            st.level = DiagnosticStatus.OK
            st.message = (
                f"{stats['loops_accepted']} closed, {stats['loops_rejected']} rejected of "
                f"{stats['loops_verified']} verified"
            )
        st.values = kv(sorted(stats.items()))
        return st

    def _latency_status(self, hw: str, kv: Any) -> DiagnosticStatus:
        """p50 / p95 / max milliseconds of every stage of the recent windows' way from image to
        TF (stats.LATENCY_STAGES), newest 200 of each."""
        st = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: latency", hardware_id=hw)
        summary = self.stats.stage_summary()
        st.level = DiagnosticStatus.OK
        total = summary.get("image_to_tf")
        if total and total["count"]:
            st.message = (
                f"image to TF p50 {total['p50']:.0f} ms, p95 {total['p95']:.0f} ms, "
                f"max {total['max']:.0f} ms over {total['count']} windows"
            )
        else:
            st.message = "no window published yet"
        pairs: list[tuple[str, Any]] = []
        for stage, q in summary.items():
            pairs += [(f"{stage}_ms_{k}", q[k]) for k in ("p50", "p95", "max")]
            pairs.append((f"{stage}_count", q["count"]))
        # The process's GIL switch interval (gil_switch_interval_ms; the interpreter's 5 ms unless
        # set) and the objects frozen out of the collector's reach after the warm-up.
        pairs.append(("gil_switch_interval_ms", round(sys.getswitchinterval() * 1e3, 3)))
        pairs.append(("gc_frozen_objects", gc.get_freeze_count()))
        st.values = kv(pairs)
        return st

    def _pose_refinement(self) -> list[tuple[str, Any]]:
        """Frames whose camera_info intrinsics were used (window.calibrated_intrinsics) and the
        window pose refinement's counts (refine.*; docs/mapping.md)."""
        stats = self.pipeline.stats if self.pipeline is not None else {}
        return [(key, stats.get(key, 0)) for key in REFINEMENT_COUNTERS]

    def _frame_cache(self) -> list[tuple[str, Any]]:
        """Encoder-token reuse across windows (model.frame_cache)."""
        cache = getattr(getattr(self.predictor, "runner", None), "frame_cache", None)
        if cache is None:
            return [("frame_cache", "off")]
        st = cache.stats
        return [
            ("frame_cache", f"{len(cache)}/{cache.capacity} frames"),
            ("frame_cache_hits", st.hits),
            ("frame_cache_misses", st.misses),
            ("frame_cache_stale", st.stale),
        ]

    def _global_attention(self) -> str:
        """Exact, or the sparse keys' stride and weighting (model.global_key_stride, approximate)."""
        model = getattr(getattr(self.predictor, "runner", None), "model", None)
        aggregator = getattr(model, "aggregator", None)
        stride = int(getattr(aggregator, "global_key_stride", 0) or 0)
        if stride <= 1:
            return "exact"
        weighted = "weighted" if getattr(aggregator, "global_key_weighting", True) else "unweighted"
        return f"sparse keys, 1 in {stride}, {weighted} (approximate)"

    def _gpu_memory(self) -> list[tuple[str, Any]]:
        device = getattr(self.predictor, "device", None)
        if device is None or getattr(device, "type", "cpu") != "cuda":
            return [("gpu_memory_allocated_mb", "n/a (cpu)"), ("gpu_memory_peak_mb", "n/a (cpu)")]
        import torch

        return [
            ("gpu_memory_allocated_mb", torch.cuda.memory_allocated(device) / 2**20),
            ("gpu_memory_reserved_mb", torch.cuda.memory_reserved(device) / 2**20),
            ("gpu_memory_peak_mb", torch.cuda.max_memory_allocated(device) / 2**20),
        ]
