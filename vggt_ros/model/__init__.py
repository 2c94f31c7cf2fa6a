"""The VGGT network, its named configurations and checkpoint I/O."""

from vggt_ros.model.checkpoint import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    HubCheckpointError,
    UnsafeCheckpointError,
    WeightsInfo,
    convert_checkpoint,
    file_identity,
    load_model,
    load_state_dict_file,
    load_weights_into,
    save_checkpoint,
)
from vggt_ros.model.config import CONFIGS, VGGT_1B, VGGT_SMALL, VGGT_TINY, VGGTConfig, get_config
from vggt_ros.model.vggt import VGGT

__all__ = [
    "CONFIGS",
    "VGGT",
    "VGGT_1B",
    "VGGT_SMALL",
    "VGGT_TINY",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "HubCheckpointError",
    "UnsafeCheckpointError",
    "VGGTConfig",
    "WeightsInfo",
    "convert_checkpoint",
    "file_identity",
    "get_config",
    "load_model",
    "load_state_dict_file",
    "load_weights_into",
    "save_checkpoint",
]
