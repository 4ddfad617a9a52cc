"""BatchNoise: the random draws of a training loss, made so that a sample's noise does not depend on which process computes it.

A training step on N processes gives each one a contiguous share of the global batch. Each draw is made for the
whole global batch from the step's generator (seeded alike on every process) and the share's rows are kept, so a
sample gets the noise a 1-process run of the same global batch gives it, and the N-process step computes the same
losses and gradients as that run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchNoise:
    """Draws for a (share of a) batch: `rows` is this share's slice of a global batch of `total` samples; None
    draws for the local batch as it is (one process, or a caller with no global batch)."""

    generator: torch.Generator | None = None
    rows: slice | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        if (self.rows is None) != (self.total is None):
            raise ValueError("BatchNoise needs both rows and total (a share of a global batch), or neither")

    def _global(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.rows is None:
            return tuple(shape)
        expected = len(range(*self.rows.indices(self.total)))
        if shape[0] != expected:
            raise ValueError(f"a draw for {shape[0]} samples, but this share of the global batch has {expected}")
        return (self.total, *shape[1:])

    def _share(self, drawn: torch.Tensor) -> torch.Tensor:
        return drawn if self.rows is None else drawn[self.rows]

    def randn(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self._share(torch.randn(self._global(shape), generator=self.generator, device=device, dtype=dtype))

    def rand(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self._share(torch.rand(self._global(shape), generator=self.generator, device=device, dtype=dtype))

    def randint(self, high: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return self._share(torch.randint(0, high, self._global(shape), generator=self.generator, device=device))


__all__ = ["BatchNoise"]
