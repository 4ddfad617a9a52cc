"""Action and ego-state tokenizers: uniform bins per quantity, mapped into their ranges of the unified vocabulary.

A trajectory (B, num_poses, 3) of ego-frame poses (x, y, heading) becomes num_poses*3 tokens in the
order x1 y1 h1 x2 y2 h2 ...; each quantity has its own id block of `action_bins` ids, so a token
says which quantity it is and decoding needs no position bookkeeping. Values outside a range are
clipped to it; inside, the round-trip error is at most half a bin.
"""
from __future__ import annotations

import torch

from policies.config import COMMANDS, DriveVLAW0Config


def _to_bins(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """Uniform binning of `values` on [lo, hi] (broadcast), clipped to [0, bins-1]."""
    scaled = (values - lo) / (hi - lo) * bins
    return scaled.floor().clamp_(0, bins - 1).long()


def _bin_centres(index: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    return lo + (index.to(lo.dtype) + 0.5) * (hi - lo) / bins


class ActionTokenizer:
    """(…, num_poses, 3) poses <-> (…, num_poses*3) token ids in [action_offset, image_offset)."""

    def __init__(self, config: DriveVLAW0Config) -> None:
        self.bins = config.action_bins
        self.num_poses = config.num_poses
        self.offset = config.action_offset
        # Python floats, not tensors: a tokenizer built inside from_pretrained's meta-device
        # initialisation would otherwise hold data-less meta tensors.
        self._ranges = (config.action_x_range, config.action_y_range, config.action_heading_range)

    def _range(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(3,) float64 lower and upper bounds of x, y, heading."""
        lo, hi = torch.tensor(self._ranges, dtype=torch.float64, device=device).unbind(1)
        return lo, hi

    @property
    def bin_width(self) -> torch.Tensor:
        """(3,) bin width of x, y, heading."""
        lo, hi = self._range()
        return (hi - lo) / self.bins

    def encode(self, poses: torch.Tensor) -> torch.Tensor:
        """(…, P, 3) float -> (…, P*3) long ids."""
        lo, hi = self._range(poses.device)
        index = _to_bins(poses.double(), lo, hi, self.bins)
        dim_offset = torch.arange(3, device=poses.device) * self.bins
        return (index + dim_offset + self.offset).flatten(-2)

    def decode(self, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(…, P*3) long ids -> (…, P, 3) bin centres."""
        ids = ids.unflatten(-1, (-1, 3))
        dim_offset = torch.arange(3, device=ids.device) * self.bins
        index = ids - self.offset - dim_offset
        if bool(((index < 0) | (index >= self.bins)).any()):
            raise ValueError("action ids outside their x / y / heading blocks of the vocabulary")
        lo, hi = self._range(ids.device)
        return _bin_centres(index, lo, hi, self.bins).to(dtype)

    def allowed_range(self, step: int) -> tuple[int, int]:
        """[start, stop) of the ids the `step`-th action token may take (x, y, heading cycle)."""
        start = self.offset + (step % 3) * self.bins
        return start, start + self.bins


class StateTokenizer:
    """Ego state (speed m/s, acceleration m/s^2, command index) -> (B, 3) ids, one token each."""

    def __init__(self, config: DriveVLAW0Config) -> None:
        self.config = config

    def encode(self, speed: torch.Tensor, accel: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
        c = self.config
        if bool(((command < 0) | (command >= len(COMMANDS))).any()):
            raise ValueError(f"driving command index outside 0..{len(COMMANDS) - 1} ({COMMANDS})")
        s_lo, s_hi = (torch.tensor(v, dtype=torch.float64, device=speed.device) for v in c.state_speed_range)
        a_lo, a_hi = (torch.tensor(v, dtype=torch.float64, device=accel.device) for v in c.state_accel_range)
        speed_id = _to_bins(speed.double(), s_lo, s_hi, c.state_speed_bins) + c.speed_offset
        accel_id = _to_bins(accel.double(), a_lo, a_hi, c.state_accel_bins) + c.accel_offset
        return torch.stack([speed_id, accel_id, command.long() + c.command_offset], dim=-1)

    def decode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(…, 3) ids -> (speed bin centre, acceleration bin centre, command index)."""
        c = self.config
        lo = torch.tensor([c.state_speed_range[0], c.state_accel_range[0]], dtype=torch.float64)
        hi = torch.tensor([c.state_speed_range[1], c.state_accel_range[1]], dtype=torch.float64)
        speed = _bin_centres(ids[..., 0] - c.speed_offset, lo[0], hi[0], c.state_speed_bins)
        accel = _bin_centres(ids[..., 1] - c.accel_offset, lo[1], hi[1], c.state_accel_bins)
        return speed.float(), accel.float(), ids[..., 2] - c.command_offset
