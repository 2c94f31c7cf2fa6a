"""The VGGT network, its named configurations and checkpoint I/O."""

from vggt_ros.model.config import CONFIGS, VGGT_1B, VGGT_SMALL, VGGT_TINY, VGGTConfig, get_config
from vggt_ros.model.vggt import VGGT

__all__ = ["CONFIGS", "VGGT", "VGGT_1B", "VGGT_SMALL", "VGGT_TINY", "VGGTConfig", "get_config"]
