"""Shared pytest fixtures."""

import gc
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    """The read-only shared/ folder: inside the checkout (device copies) or beside it."""
    for candidate in (REPO_ROOT / "shared", REPO_ROOT.parent / "shared"):
        if (candidate / "fixtures" / "vggt_parity").is_dir():
            return candidate
    return REPO_ROOT / "test" / "fixtures"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    path = REPO_ROOT / "test" / "fixtures" / "vggt_parity"
    if not path.is_dir():
        path = _find_shared() / "fixtures" / "vggt_parity"
    return path


@pytest.fixture(autouse=True)
def _collector_unfrozen():
    """A node or replay freezes the objects alive after its warm-up (vggt_ros.mapping.interpreter);
    in one pytest process that would keep every earlier test's cycles: each test gives them back."""
    yield
    gc.unfreeze()


# Reduced-precision tests run bf16 matrix products on the CPU; on virtual machines that
# advertise AMX without enabling it those crash with SIGILL unless oneDNN is capped first.
from vggt_ros.engine.cpu_isa import make_cpu_bf16_safe  # noqa: E402

make_cpu_bf16_safe()
