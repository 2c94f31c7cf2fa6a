"""ROS-free mapping: keyframes, sliding windows, window chaining, metric scale, global map.

Entry point: :class:`PerceptionPipeline` (docs/pipeline_contract.md, docs/mapping.md). No rclpy
here: the node and the bag evaluator both drive the same pipeline.
"""

from vggt_ros.mapping.chaining import ChainOutcome, MappedKeyframe, WindowChainer
from vggt_ros.mapping.config import (
    SCALE_SOURCES,
    ChainingConfig,
    KeyframeConfig,
    LoopConfig,
    MapConfig,
    PipelineConfig,
    RefineConfig,
    ScaleConfig,
    WindowConfig,
)
from vggt_ros.mapping.frames import BODY_FROM_OPTICAL, map_anchor, map_to_odom
from vggt_ros.mapping.keyframes import KeyframeDecision, KeyframeSelector
from vggt_ros.mapping.pipeline import KeyframeInfo, PerceptionPipeline
from vggt_ros.mapping.rig import RigGrouper
from vggt_ros.mapping.scale import ScaleEstimator
from vggt_ros.mapping.types import (
    Frame,
    Keyframe,
    PointsMap,
    ScaleEstimate,
    Tracks,
    WindowJob,
    WindowPoses,
    WindowResult,
)
from vggt_ros.mapping.voxel_map import VoxelMap
from vggt_ros.mapping.window import WindowBuilder, select_query_points

__all__ = [
    "BODY_FROM_OPTICAL",
    "SCALE_SOURCES",
    "ChainOutcome",
    "ChainingConfig",
    "Frame",
    "Keyframe",
    "KeyframeConfig",
    "LoopConfig",
    "KeyframeDecision",
    "KeyframeInfo",
    "KeyframeSelector",
    "MapConfig",
    "MappedKeyframe",
    "PerceptionPipeline",
    "PipelineConfig",
    "PointsMap",
    "RigGrouper",
    "ScaleConfig",
    "ScaleEstimate",
    "ScaleEstimator",
    "Tracks",
    "VoxelMap",
    "WindowBuilder",
    "WindowChainer",
    "RefineConfig",
    "WindowConfig",
    "WindowJob",
    "WindowPoses",
    "WindowResult",
    "map_anchor",
    "map_to_odom",
    "select_query_points",
]
