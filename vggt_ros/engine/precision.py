"""Device and numeric precision selection, and the context inference runs in.

Weights stay float32; reduced precision comes from autocast, as the official VGGT README runs it
(bf16 autocast with float32 weights). That keeps one copy of the weights valid for every
precision and lets numerically sensitive ops (norms, softmax) stay in float32 under autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp8")
# fp8 is named by the e4m3 dtype of its matrix products; everything else in it computes in bf16
# (vggt_ros.engine.fp8).
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a usable torch.device.

    Args:
        spec: "auto" (first CUDA GPU if there is one, else CPU), "cpu", "cuda" or "cuda:N", or a
            torch.device.

    Raises:
        ValueError: unknown spec, CUDA asked for but not available, or N out of range.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"unsupported device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {spec!r} requested but CUDA is not available (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); use --device cpu or install a CUDA build of torch"
        )
    index = 0 if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {spec!r} requested but only {count} CUDA device(s) are visible")
    return torch.device("cuda", index)


def resolve_precision(spec: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Pick the compute dtype for ``device``.

    Args:
        spec: "auto", "fp32", "bf16", "fp16", "fp8" (or a torch float dtype).
        device: the resolved device.

    Returns:
        torch.float32, torch.bfloat16, torch.float16 or torch.float8_e4m3fn (fp8: the trunk's
        linears in e4m3, the rest in bf16; Ada/Hopper GPUs only). "auto" gives bf16 on CUDA GPUs that
        support it (Ampere and newer), fp16 on older CUDA GPUs, fp32 on CPU (CPU autocast is
        slower than fp32 on most CPUs and gains nothing here).

    Raises:
        ValueError: unknown spec, bf16 requested on a CUDA GPU without bf16 support, or fp8 on a
            device without e4m3 matrix products (the message says why).
    """
    if isinstance(spec, torch.dtype):
        if spec not in _NAMES:
            raise ValueError(f"unsupported precision {spec}; use one of {PRECISIONS}")
        name = _NAMES[spec]
    else:
        name = str(spec).strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {spec!r}; use one of {PRECISIONS}")
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "fp8":
        from vggt_ros.engine.fp8 import fp8_unsupported_reason

        reason = fp8_unsupported_reason(device)
        if reason is not None:
            raise ValueError(reason)
    if name == "bf16" and device.type == "cuda":
        with torch.cuda.device(device):
            if not torch.cuda.is_bf16_supported():
                raise ValueError(
                    f"bf16 requested but {torch.cuda.get_device_name(device)} lacks it; use fp16"
                )
    return _DTYPES[name]


def precision_name(dtype: torch.dtype) -> str:
    """torch dtype -> "fp32" | "bf16" | "fp16" | "fp8"."""
    return _NAMES[dtype]


@contextlib.contextmanager
def inference_context(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast to ``dtype`` on ``device`` when it is not fp32."""
    if dtype == torch.float8_e4m3fn:  # fp8: e4m3 products inside bf16 autocast
        dtype = torch.bfloat16
    with torch.inference_mode():
        if dtype == torch.float32:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings measure it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
