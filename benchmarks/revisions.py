"""Import a module of this repository as it was at an earlier git revision, for the A/B
benchmarks that time today's code against it in one process (chaining_align.py,
robust_fit.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_at(revision: str, path_in_repo: str, name: str) -> types.ModuleType:
    """``path_in_repo`` as it was at ``revision``, imported under the module name ``name``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path_in_repo}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
