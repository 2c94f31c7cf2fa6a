"""ROS 2 side of vggt_ros: the perception node, message codecs, TF, parameters, diagnostics.

The only package that imports rclpy or ROS messages. The generated interfaces (``vggt_ros.msg``,
``vggt_ros.srv``) live in the colcon install space, next to an installed copy of the library; when
the library is imported from a source checkout instead (``pip install -e``, tests), the install
space's ``vggt_ros`` directory is added to the package path here so both halves resolve.
"""

from __future__ import annotations

import os
import sys

import vggt_ros as _pkg


def _extend_package_path() -> None:
    """Add every ``vggt_ros`` directory on sys.path that holds generated msg/ to ``vggt_ros.__path__``."""
    paths = list(getattr(_pkg, "__path__", []))
    for entry in sys.path:
        candidate = os.path.join(entry or os.getcwd(), "vggt_ros")
        if os.path.isdir(os.path.join(candidate, "msg")) and candidate not in paths:
            paths.append(candidate)
    _pkg.__path__[:] = paths  # type: ignore[index]


_extend_package_path()
