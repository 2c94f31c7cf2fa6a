"""Camera geometry: pose encoding, projection, intrinsics under image transforms.

Torch-first: functions take tensors with arbitrary leading batch dims (numpy arrays work too and
give numpy back). Cameras use OpenCV axes; extrinsics are camera-from-world [..., 3, 4].
"""

from vggt_ros.geometry.camera import (
    camera_centers,
    camera_to_world,
    depth_to_camera_points,
    depth_to_world_points,
    invert_rigid,
    project_points,
    to_homogeneous,
)
from vggt_ros.geometry.intrinsics import ImageTransform, crop_intrinsics, scale_intrinsics
from vggt_ros.geometry.pose_encoding import (
    extrinsics_intrinsics_to_pose_encoding,
    pose_encoding_to_extrinsics_intrinsics,
)
from vggt_ros.geometry.rotation import quaternion_to_rotation_matrix, rotation_matrix_to_quaternion

__all__ = [
    "ImageTransform",
    "camera_centers",
    "camera_to_world",
    "crop_intrinsics",
    "depth_to_camera_points",
    "depth_to_world_points",
    "extrinsics_intrinsics_to_pose_encoding",
    "invert_rigid",
    "pose_encoding_to_extrinsics_intrinsics",
    "project_points",
    "quaternion_to_rotation_matrix",
    "rotation_matrix_to_quaternion",
    "scale_intrinsics",
    "to_homogeneous",
]
