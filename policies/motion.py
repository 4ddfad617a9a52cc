"""SE(2) per-step motions <-> poses, and per-dimension quantile normalisation of those motions to [-1, 1].

A trajectory of poses (x, y, yaw) in one frame becomes per-step motions (dx, dy, dyaw): step k is pose k
seen from pose k-1 (pose -1 is a start pose, by default the origin). Such motions are nearly stationary
along a trajectory, which is what the FAST action tokenizer wants as input once normalised to [-1, 1].

Every function takes torch tensors or numpy arrays and returns the same kind; the maths runs in float64
and the result has the input's dtype (float64 for non-floating input) and device.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

ArrayLike = TypeVar("ArrayLike", torch.Tensor, np.ndarray)

_DIM_NAMES = ("dx", "dy", "dyaw")


def _as_float64(x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool, torch.dtype | np.dtype]:
    """(float64 tensor, was numpy, dtype to return)."""
    if isinstance(x, np.ndarray):
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), True, dtype
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    dtype = x.dtype if x.is_floating_point() else torch.float64
    return x.to(torch.float64), False, dtype


def _restore(x: torch.Tensor, was_numpy: bool, dtype: torch.dtype | np.dtype) -> torch.Tensor | np.ndarray:
    return x.numpy().astype(dtype, copy=False) if was_numpy else x.to(dtype)


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Angles wrapped to (-pi, pi]."""
    wrapped = math.pi - torch.remainder(math.pi - angle, 2 * math.pi)
    # remainder can round up to exactly 2*pi for tiny negative inputs, which would give -pi.
    return torch.where(wrapped <= -math.pi, wrapped + 2 * math.pi, wrapped)


def _start_like(poses: torch.Tensor, start: torch.Tensor | np.ndarray | None) -> torch.Tensor:
    """`start` (..., 3) as a float64 (..., 1, 3) tensor broadcast against poses (..., T, 3)."""
    if start is None:
        return poses.new_zeros(poses.shape[:-2] + (1, 3))
    start_t = torch.as_tensor(start).to(dtype=torch.float64, device=poses.device)
    if start_t.shape[-1:] != (3,):
        raise ValueError(f"start must have shape (..., 3), got {tuple(start_t.shape)}")
    start_t = start_t.unsqueeze(-2)
    shape = torch.broadcast_shapes(start_t.shape[:-2], poses.shape[:-2]) + (1, 3)
    return start_t.expand(shape)


def _check_trajectory(x: torch.Tensor, name: str) -> None:
    if x.dim() < 2 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., T, 3), got {tuple(x.shape)}")


def poses_to_deltas(poses: ArrayLike, start: torch.Tensor | np.ndarray | None = None) -> ArrayLike:
    """(..., T, 3) poses (x, y, yaw) -> (..., T, 3) per-step motions (dx, dy, dyaw) in the previous pose's frame."""
    p, was_numpy, dtype = _as_float64(poses)
    _check_trajectory(p, "poses")
    start_t = _start_like(p, start)
    p = p.expand(start_t.shape[:-2] + p.shape[-2:])
    # Slicing keeps T = 0 trajectories empty.
    prev = torch.cat([start_t, p[..., :-1, :]], dim=-2)[..., : p.shape[-2], :]
    ddx, ddy = p[..., 0] - prev[..., 0], p[..., 1] - prev[..., 1]
    cos, sin = torch.cos(prev[..., 2]), torch.sin(prev[..., 2])
    # Rotate the world-frame displacement by -yaw of the previous pose.
    dx = cos * ddx + sin * ddy
    dy = -sin * ddx + cos * ddy
    dyaw = wrap_angle(p[..., 2] - prev[..., 2])
    return _restore(torch.stack([dx, dy, dyaw], dim=-1), was_numpy, dtype)


def deltas_to_poses(deltas: ArrayLike, start: torch.Tensor | np.ndarray | None = None) -> ArrayLike:
    """(..., T, 3) per-step motions -> (..., T, 3) poses, composed from `start` (default the origin)."""
    d, was_numpy, dtype = _as_float64(deltas)
    _check_trajectory(d, "deltas")
    start_t = _start_like(d, start)
    d = d.expand(start_t.shape[:-2] + d.shape[-2:])
    # Unwrapped headings: cos/sin do not care, and the cumulative sum stays exact enough in float64.
    yaw = start_t[..., 2] + torch.cumsum(d[..., 2], dim=-1)
    prev_yaw = torch.cat([start_t[..., 2], yaw[..., :-1]], dim=-1)[..., : d.shape[-2]]
    cos, sin = torch.cos(prev_yaw), torch.sin(prev_yaw)
    step_x = cos * d[..., 0] - sin * d[..., 1]
    step_y = sin * d[..., 0] + cos * d[..., 1]
    x = start_t[..., 0] + torch.cumsum(step_x, dim=-1)
    y = start_t[..., 1] + torch.cumsum(step_y, dim=-1)
    return _restore(torch.stack([x, y, wrap_angle(yaw)], dim=-1), was_numpy, dtype)


def _quantiles(samples: torch.Tensor, q: float) -> torch.Tensor:
    """Per-column linear-interpolation quantile of (N, 3) samples (torch.quantile caps N at 2**24 elements)."""
    ordered = samples.sort(dim=0).values
    pos = q * (ordered.shape[0] - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, ordered.shape[0] - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


@dataclass(frozen=True)
class QuantileNormalizer:
    """Maps each of (dx, dy, dyaw) from its [low, high] quantile range to [-1, 1], clipping outside."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def __post_init__(self) -> None:
        # Plain Python floats only: a normaliser built under a meta-device context must hold no tensors.
        low = tuple(float(v) for v in self.low)
        high = tuple(float(v) for v in self.high)
        if len(low) != 3 or len(high) != 3:
            raise ValueError(f"low and high need 3 values each, got {len(low)} and {len(high)}")
        for i, (lo, hi) in enumerate(zip(low, high)):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"dimension {i} ({_DIM_NAMES[i]}): low={lo} and high={hi} must be finite")
            if hi <= lo:
                raise ValueError(f"dimension {i} ({_DIM_NAMES[i]}): high={hi} <= low={lo}; the range is empty")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def fit(cls, deltas: torch.Tensor | np.ndarray, low_q: float = 0.01, high_q: float = 0.99,
            min_range: float = 0.0) -> QuantileNormalizer:
        """Per-dimension `low_q` / `high_q` quantiles over all leading dims of (..., 3) samples; a dimension whose
        range is narrower than `min_range` (one that never varies in the data) is widened to it about its centre."""
        if not 0.0 <= low_q < high_q <= 1.0:
            raise ValueError(f"need 0 <= low_q < high_q <= 1, got low_q={low_q}, high_q={high_q}")
        x, _, _ = _as_float64(deltas)
        if x.dim() < 1 or x.shape[-1] != 3:
            raise ValueError(f"samples must have shape (..., 3), got {tuple(x.shape)}")
        x = x.reshape(-1, 3).cpu()
        if x.shape[0] == 0:
            raise ValueError("cannot fit a QuantileNormalizer on zero samples")
        if not torch.isfinite(x).all():
            raise ValueError("samples contain NaN or infinite values")
        low, high = _quantiles(x, low_q), _quantiles(x, high_q)
        half = ((min_range - (high - low)) / 2).clamp(min=0)
        return cls(low=tuple((low - half).tolist()), high=tuple((high + half).tolist()))

    def _bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.tensor(self.low, dtype=torch.float64, device=like.device)
        high = torch.tensor(self.high, dtype=torch.float64, device=like.device)
        return low, high

    def normalize(self, x: ArrayLike) -> ArrayLike:
        """(..., 3) motions -> [-1, 1], clipped outside [low, high]."""
        t, was_numpy, dtype = _as_float64(x)
        low, high = self._bounds(t)
        return _restore((2 * (t - low) / (high - low) - 1).clamp(-1.0, 1.0), was_numpy, dtype)

    def denormalize(self, y: ArrayLike) -> ArrayLike:
        """(..., 3) values in [-1, 1] -> motions in [low, high]; the inverse of normalize inside the range."""
        t, was_numpy, dtype = _as_float64(y)
        low, high = self._bounds(t)
        return _restore((t + 1) / 2 * (high - low) + low, was_numpy, dtype)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-friendly {"low": [...], "high": [...]}."""
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[float]]) -> QuantileNormalizer:
        """Inverse of to_dict."""
        missing = [k for k in ("low", "high") if k not in data]
        if missing:
            raise ValueError(f"QuantileNormalizer data is missing {missing}")
        return cls(low=tuple(data["low"]), high=tuple(data["high"]))
