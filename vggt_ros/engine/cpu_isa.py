"""Keep reduced-precision CPU inference from dying with SIGILL in some virtual machines.

Some hypervisors advertise Intel AMX in CPUID but do not enable its register state, so the
first bf16 matrix product oneDNN dispatches to AMX kills the process with an illegal
instruction (seen on this project's CI-class machines). oneDNN reads ``ONEDNN_MAX_CPU_ISA``
once, at its first kernel, so capping the ISA must happen before any matrix product runs.
:func:`make_cpu_bf16_safe` probes bf16 in a child process and caps the ISA when the probe
crashes; it costs one short subprocess and only runs when reduced precision is asked for on CPU.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

logger = logging.getLogger(__name__)

ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
SAFE_ISA = "AVX512_CORE_BF16"  # the newest ISA below AMX; a cap, harmless on older CPUs
_PROBE = "import torch; a = torch.ones(32, 32, dtype=torch.bfloat16); float((a @ a).sum())"
_checked = False


def bf16_probe_crashes() -> bool:
    """True when a bf16 matrix product dies with SIGILL in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=120, check=False)
    return result.returncode in (-signal.SIGILL, 128 + signal.SIGILL)


def make_cpu_bf16_safe() -> None:
    """Cap oneDNN below AMX when AMX is advertised but unusable (once per process)."""
    global _checked
    if _checked or ISA_VARIABLE in os.environ:
        return
    _checked = True
    if bf16_probe_crashes():
        os.environ[ISA_VARIABLE] = SAFE_ISA
        logger.warning(
            "this CPU advertises AMX but bf16 matrix products crash with SIGILL (a virtual machine "
            "without AMX state?); capping oneDNN with %s=%s",
            ISA_VARIABLE,
            SAFE_ISA,
        )
