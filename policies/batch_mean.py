"""Losses over the global batch: the mean when each process holds a share whose token counts differ, and their precision.

Rows hold different numbers of labelled tokens (FAST plans vary in length), so the mean over one process's share
is not its part of the mean over the global batch, and averaging the processes' gradients (DDP, FSDP, DeepSpeed)
would weight tokens by which process holds them. `batch_mean` divides the share's sum by the global batch's
weight instead, times the process count that the gradient average divides by again: N processes then step as one
process on the same global batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def batch_mean(total: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`total` / `weight` of the global batch (module docstring); `weight` carries no gradient."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        summed = weight.detach().clone()
        dist.all_reduce(summed)
        return total * dist.get_world_size() / summed
    return total / weight.detach()


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 if it is in a lower precision (bf16 / fp16 logits), else as it is: a float64 model's losses stay
    float64, so that a sum over other rows rounds no differently than in float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
