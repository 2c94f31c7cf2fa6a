"""``python -m vggt_ros.model.checkpoint SRC DST.safetensors [--dtype bf16] [--config vggt-1b]``."""

import sys

from vggt_ros.model.checkpoint.saving import main

sys.exit(main())
