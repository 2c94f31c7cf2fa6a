"""Node services: ``~/reset`` (clear the map; apply changed mapping parameters), ``~/save_map``
(PLY/PCD) and ``~/export_keyframes`` (COLMAP model, TUM trajectory and a keyframe bundle: the
SLAM warm start). They stay available while a lifecycle node is inactive (the map is kept).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from std_srvs.srv import Trigger

from vggt_ros.ros.node_parameters import ConfigError
from vggt_ros.srv import ExportKeyframes, SaveMap


class ServicesMixin:
    """Service callbacks."""

    def _output_path(self, given: str, default_name: str) -> Path:
        base = Path(os.path.expanduser(self._p["output_dir"]))
        path = Path(os.path.expanduser(given)) if given else base / default_name
        return path if path.is_absolute() else base / path

    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._pipeline_lock:
            self._generation += 1
            with self._queue_cv:
                dropped = len(self._queue)
                self._queue.clear()
            with self._map_lock:
                try:
                    cfg = self._mapping_config()
                except ConfigError as exc:
                    response.success, response.message = False, f"reset refused: {exc}"
                    return response
                if cfg != self._pipeline_cfg:
                    from vggt_ros.mapping import PerceptionPipeline

                    self.pipeline = PerceptionPipeline(cfg, self.predictor)
                    self._pipeline_cfg = cfg
                else:
                    self.pipeline.reset()
                self._keyframes.clear()
                self._last_stamp_ns.clear()
                self._last_map_to_odom = None
        self.stats.count("resets")
        self._publish_map(self.get_clock().now().to_msg())
        response.success = True
        response.message = f"map, keyframes and trajectory cleared ({dropped} queued window(s) discarded)"
        self.get_logger().info(response.message)
        return response

    def _srv_save_map(self, request: SaveMap.Request, response: SaveMap.Response) -> SaveMap.Response:
        path = self._output_path(request.path, f"map_{int(time.time())}.ply")
        if path.suffix.lower() not in (".ply", ".pcd"):
            response.success, response.message = False, f"{path.name}: the file must end in .ply or .pcd"
            return response
        try:
            with self._map_lock:
                self.pipeline.refresh_map()  # a loop's correction may still wait for its rebuild
                n = len(self.pipeline.global_map)
                if n == 0:
                    response.success, response.message = False, "the map is empty (no window processed yet)"
                    return response
                written = self.pipeline.global_map.save(path)
        except (OSError, ValueError) as exc:
            response.success, response.message = False, f"could not write {path}: {exc}"
            return response
        response.success, response.path, response.num_points = True, str(Path(written).resolve()), n
        response.message = f"wrote {n} points to {response.path}"
        self.get_logger().info(response.message)
        return response

    def _srv_export(
        self, request: ExportKeyframes.Request, response: ExportKeyframes.Response
    ) -> ExportKeyframes.Response:
        out = self._output_path(request.directory, f"export_{int(time.time())}")
        try:
            from vggt_ros.mapping.export.bundle import KeyframeBundle, write_bundle
            from vggt_ros.mapping.export.colmap import write_colmap
            from vggt_ros.mapping.export.trajectory import Trajectory, write_tum
        except ImportError as exc:
            response.success, response.message = False, f"exports unavailable: {exc}"
            return response
        with self._map_lock:
            poses = self.pipeline.keyframe_poses()
            scale = self.pipeline.scale
            ids = [k for k in self._keyframes if k in poses]
            records = [self._keyframes[k] for k in ids]
            cam_to_map = np.stack([poses[k] for k in ids]) if ids else np.zeros((0, 4, 4))
        if not ids:
            response.success, response.message = False, "no keyframes to export yet"
            return response
        try:
            import cv2

            out.mkdir(parents=True, exist_ok=True)
            order = np.argsort([r.stamp for r in records], kind="stable")
            records = [records[i] for i in order]
            ids = [ids[i] for i in order]
            cam_to_map = cam_to_map[order]
            images = None
            if len({r.image_hw for r in records}) == 1 and all(r.jpeg for r in records):
                images = np.stack(
                    [
                        cv2.cvtColor(
                            cv2.imdecode(np.frombuffer(r.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
                        )
                        for r in records
                    ]
                )
            bundle = KeyframeBundle(
                keyframe_ids=np.asarray(ids, np.int64),
                stamps=np.asarray([r.stamp for r in records]),
                camera_ids=np.asarray([r.camera_id for r in records]),
                cam_to_map=cam_to_map,
                intrinsics=np.stack([r.intrinsics for r in records]),
                image_hw=np.asarray([r.image_hw for r in records], np.int64),
                model_intrinsics=np.stack([r.model_intrinsics for r in records]),
                depth=np.stack([r.depth for r in records]),
                depth_conf=np.stack([r.depth_conf for r in records]),
                scale=np.array([scale.value, scale.sigma]),
                scale_metric=bool(scale.metric),
                scale_source=str(scale.source),
                images=images,
            )
            colmap_dir = out / "colmap"
            names = [f"{r.camera_id}_{int(round(r.stamp * 1e9))}.jpg" for r in records]
            write_colmap(colmap_dir, bundle, names=names, text=True)
            (colmap_dir / "images").mkdir(parents=True, exist_ok=True)
            for name, r in zip(names, records):
                if r.jpeg:
                    (colmap_dir / "images" / name).write_bytes(r.jpeg)
            ref = self.cameras[0].name
            sel = [i for i, r in enumerate(records) if r.camera_id == ref] or list(range(len(records)))
            tum = write_tum(
                out / "trajectory.tum",
                Trajectory(bundle.stamps[sel], cam_to_map[sel]),
                comment=f"vggt_ros keyframes of camera {records[sel[0]].camera_id}: optical frame in "
                f"{self._p['map_frame']} ({'metres' if scale.metric else 'normalized units'})",
            )
            write_bundle(out / "keyframes.npz", bundle)
        except Exception as exc:  # noqa: BLE001 - report any export failure to the caller
            response.success, response.message = False, f"export failed: {type(exc).__name__}: {exc}"
            return response
        response.success = True
        response.colmap_dir, response.tum_path = str(colmap_dir.resolve()), str(Path(tum).resolve())
        response.num_keyframes = len(ids)
        response.message = f"exported {len(ids)} keyframes to {out.resolve()}"
        self.get_logger().info(response.message)
        return response
