"""Short names for a checkpoint file's content: :func:`file_identity` (fast or sha256)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

IdentityMethod = Literal["fast", "sha256"]

_MIB = 1 << 20


def file_identity(path: str | os.PathLike[str], method: IdentityMethod = "fast") -> str:
    """A short (16 hex digits) name for a file's content.

    - ``sha256``: hash of the whole content, streamed in chunks. Exact and portable (the same
      bytes anywhere give the same name), but reads the whole file: about 10 s for VGGT-1B's 5 GB.
    - ``fast``: hash of (size, modification time, first MiB, last MiB); milliseconds for any size.
      It changes whenever the file is rewritten or replaced, and also when the same bytes are
      copied without keeping the mtime. It does not see an in-place edit in the middle of a file
      that keeps size and mtime (deliberate tampering, not something a training run does).
      Files of at most 2 MiB are hashed whole.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        if method == "sha256":
            for chunk in iter(lambda: f.read(8 * _MIB), b""):
                digest.update(chunk)
        elif method == "fast":
            stat = os.fstat(f.fileno())
            digest.update(f"fast:{stat.st_size}:{stat.st_mtime_ns}:".encode())
            digest.update(f.read(_MIB))
            if stat.st_size > _MIB:
                f.seek(max(stat.st_size - _MIB, _MIB))
                digest.update(f.read(_MIB))
        else:
            raise ValueError(f"unknown identity method {method!r} (use 'fast' or 'sha256')")
    return digest.hexdigest()[:16]
