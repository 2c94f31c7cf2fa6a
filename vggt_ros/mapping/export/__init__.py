"""SLAM warm-start exports of the mapped keyframes (ROS-free, so the node and ``eval`` share them).

* :mod:`.bundle`: the keyframe bundle ``keyframes.npz`` (format ``vggt_ros.keyframes/1``).
* :mod:`.colmap`: a COLMAP model (cameras, images, points3D with tracks) via pycolmap
  (imported lazily by the writer and reader).
* :mod:`.trajectory`: stamped trajectories, TUM files, stamp association and interpolation.
"""

from vggt_ros.mapping.export.bundle import FORMAT, KeyframeBundle, read_bundle, write_bundle
from vggt_ros.mapping.export.colmap import ColmapModel, read_colmap, write_colmap
from vggt_ros.mapping.export.trajectory import Trajectory, associate, interpolate, read_tum, write_tum

__all__ = [
    "FORMAT",
    "ColmapModel",
    "KeyframeBundle",
    "Trajectory",
    "associate",
    "interpolate",
    "read_bundle",
    "read_colmap",
    "read_tum",
    "write_bundle",
    "write_colmap",
    "write_tum",
]
