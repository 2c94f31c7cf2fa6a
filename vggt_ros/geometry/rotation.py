"""Rotations: unit quaternions (x, y, z, w order, scalar last) and 3x3 rotation matrices.

Also home of :func:`numpy_io`, the single numpy<->torch adapter every geometry function uses, so
each function is written once against torch and still accepts numpy arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

F = TypeVar("F", bound=Callable[..., Any])


def _to_torch(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        # Integer and bool arrays become float64: every geometry op here is real-valued.
        if not np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float64)
        value = np.ascontiguousarray(value)
        if not value.flags.writeable:  # torch shares the memory and may not share a read-only one
            value = value.copy()
        return torch.from_numpy(value)
    return value


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    return value


def numpy_io(func: F) -> F:
    """Let a torch function take numpy arrays.

    numpy arguments become CPU tensors (dtype kept; integers become float64). When no argument
    was a torch tensor and at least one was a numpy array, tensor results (also inside a tuple)
    come back as numpy arrays; otherwise results stay torch.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = list(args) + list(kwargs.values())
        any_numpy = any(isinstance(v, np.ndarray) for v in values)
        any_torch = any(isinstance(v, torch.Tensor) for v in values)
        if not any_numpy:
            return func(*args, **kwargs)
        result = func(*(_to_torch(a) for a in args), **{k: _to_torch(v) for k, v in kwargs.items()})
        return result if any_torch else _to_numpy(result)

    return wrapper  # type: ignore[return-value]


def as_float_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when floating point, else converted to the default float dtype."""
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


@numpy_io
def quaternion_to_rotation_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions.

    Args:
        q: [..., 4] quaternions (x, y, z, w), scalar last. Need not be unit length: the matrix
            is that of ``q / |q|`` (network outputs are not normalised).

    Returns:
        [..., 3, 3] rotation matrices R such that ``R @ v`` rotates v by q.
    """
    q = as_float_tensor(q)
    x, y, z, w = q.unbind(-1)
    # 2/|q|^2 folds the normalisation into the usual unit-quaternion formula.
    s = 2.0 / (q * q).sum(-1)
    xx, yy, zz = s * x * x, s * y * y, s * z * z
    xy, xz, yz = s * x * y, s * x * z, s * y * z
    wx, wy, wz = s * w * x, s * w * y, s * w * z
    rows = (
        1.0 - yy - zz, xy - wz, xz + wy,
        xy + wz, 1.0 - xx - zz, yz - wx,
        xz - wy, yz + wx, 1.0 - xx - yy,
    )  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


@numpy_io
def rotation_matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Unit quaternions from rotation matrices.

    Args:
        matrix: [..., 3, 3] rotation matrices.

    Returns:
        [..., 4] unit quaternions (x, y, z, w), sign fixed so that w >= 0 (the official VGGT
        choice). At exactly 180 degrees (w == 0) the largest of x, y, z is positive.
    """
    R = as_float_tensor(matrix)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape [..., 3, 3], got {tuple(R.shape)}")
    m = R.unbind(-1)  # columns; m[j][..., i] = R[..., i, j]
    r00, r10, r20 = m[0].unbind(-1)
    r01, r11, r21 = m[1].unbind(-1)
    r02, r12, r22 = m[2].unbind(-1)

    # 4*q_k^2 for k = x, y, z, w. Solving for the largest component avoids dividing by a tiny one
    # (Shepperd's method); the other three follow from off-diagonal sums/differences.
    four_sq = torch.stack(
        (1.0 + r00 - r11 - r22, 1.0 - r00 + r11 - r22, 1.0 - r00 - r11 + r22, 1.0 + r00 + r11 + r22),
        dim=-1,
    )
    # Every candidate below is 4*q_k * q (xyzw); divide by 4*q_k = 2*sqrt(four_sq_k).
    a, b, c = r21 - r12, r02 - r20, r10 - r01  # 4 w x, 4 w y, 4 w z
    d, e, f = r01 + r10, r02 + r20, r12 + r21  # 4 x y, 4 x z, 4 y z
    candidates = torch.stack(
        (
            torch.stack((four_sq[..., 0], d, e, a), dim=-1),
            torch.stack((d, four_sq[..., 1], f, b), dim=-1),
            torch.stack((e, f, four_sq[..., 2], c), dim=-1),
            torch.stack((a, b, c, four_sq[..., 3]), dim=-1),
        ),
        dim=-2,
    )  # [..., 4 candidates, 4 components]
    # The floor only protects candidates that are not chosen (their four_sq may be <= 0).
    denom = 2.0 * four_sq.clamp_min(1e-12).sqrt()
    candidates = candidates / denom[..., None]
    best = four_sq.argmax(dim=-1)
    index = best[..., None, None].expand(best.shape + (1, 4))
    q = candidates.gather(-2, index).squeeze(-2)
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., 3:4] < 0, -q, q)
