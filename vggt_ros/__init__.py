"""vggt_ros: VGGT (Visual Geometry Grounded Transformer) for ROS 2 perception.

Layers (dependencies point down): model -> geometry -> engine -> mapping -> ros; eval and cli
use everything but ros. Only ``vggt_ros.ros`` imports rclpy.
"""

__version__ = "0.1.0"
