"""Made-up ego drives and the preset configurations fitted on them, shared by the model benchmarks (a sequence needs a
fitted action tokenizer; the benchmarks have no data set to fit it on)."""
from __future__ import annotations

import torch

from policies.action_tokens import fit_action_tokenizer
from policies.config import DriveVLAW0Config

DRIVES = 400  # made-up drives an action tokenizer is fitted on


def made_up_drives(n: int = DRIVES, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(ego poses (n,4,3), plans (n,8,3)) in `dtype` (computed in float64): constant speed 0-12 m/s on gentle
    constant-curvature arcs, 0.5 s apart; the same drives on every call (seed 0)."""
    g = torch.Generator().manual_seed(0)
    speed, curvature = torch.rand(n, 1, generator=g) * 12, (torch.rand(n, 1, generator=g) - 0.5) * 0.04
    s = speed.double() * torch.arange(-3, 9, dtype=torch.float64) * 0.5
    heading = curvature.double() * s
    poses = torch.stack([s * torch.cos(heading / 2), s * torch.sin(heading / 2), heading], -1).to(dtype)
    return poses[:, :4], poses[:, 4:]


def with_fitted_tokenizer(config: DriveVLAW0Config, drives: tuple[torch.Tensor, torch.Tensor] | None = None
                          ) -> DriveVLAW0Config:
    """`config` with its action tokenizer (quantile bounds, FAST BPE) fitted on `drives` (default: `made_up_drives()`)."""
    return DriveVLAW0Config.from_dict({**config.to_dict(), **fit_action_tokenizer(config, *(drives or made_up_drives()))})
