"""Trajectory anchors and the anchor head of the query expert: the paper's anchor variant (Table 1, 90.2 PDMS), Hydra-MDP style.

As the official `Emu3QFormer` with `anchor` on (drivevla_w0_paper.md §4.3): K anchor trajectories (k-means centres
of training plans, absolute x, y, yaw) are NeRF-encoded (10 frequencies), lifted by an MLP, mixed by a transformer
encoder, then query the expert's final hidden states (state token and `anchor_queries` queries) through a
transformer decoder; an MLP scores each anchor. The target distribution is a softmax over anchors of
0.1 x log softmax(-L2(anchor, ground truth)) + log NC + log DAC + log(5 TTC + 2 C + 5 EP); the official per-anchor PDM
sub-scores come from an offline file that was not released, so here the target is the imitation term alone (the
PDM terms are then constants and cancel in the softmax). Loss: symmetric KL; inference: the best-scored anchor.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from policies.config import DriveVLAW0Config

IMITATION_WEIGHT = 0.1  # the official reward weight of the L2 term
FREQUENCIES = 10  # NeRF positional-encoding frequencies per coordinate (official)
KL_EPS = 1e-6


def fit_anchors(plans: torch.Tensor, k: int, seed: int = 0, iterations: int = 50) -> torch.Tensor:
    """(k, P, 3) k-means centres (k-means++ start from `seed`, Lloyd iterations) of plans (N, P, 3) in the ego frame."""
    x = plans.reshape(len(plans), -1).double()
    if k > len(x):
        raise ValueError(f"{k} anchors from {len(x)} plans: give at least as many plans as anchors")
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(1, k):  # k-means++: the next centre with probability proportional to the squared distance
        d2 = torch.cdist(x, centres).min(1).values ** 2
        centres = torch.cat([centres, x[torch.multinomial(d2 / d2.sum(), 1, generator=g)]])
    for _ in range(iterations):
        nearest = torch.cdist(x, centres).argmin(1)
        counts = torch.bincount(nearest, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, nearest, x)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres.view(k, *plans.shape[1:]).to(plans.dtype)


def positional_encoding(trajectories: torch.Tensor) -> torch.Tensor:
    """(K, P, 3) -> (K, P * 3 * 2 * FREQUENCIES): per coordinate sin(2^f pi v) for f < FREQUENCIES, then cos."""
    freqs = (2.0 ** torch.arange(FREQUENCIES, device=trajectories.device, dtype=trajectories.dtype)) * math.pi
    scaled = trajectories.flatten(1)[..., None] * freqs
    return torch.cat([scaled.sin(), scaled.cos()], -1).flatten(1)


def anchor_targets(anchors: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """(B, K) target distribution: softmax of 0.1 x log softmax(-L2(anchor, plan)) (module docstring)."""
    distances = torch.cdist(poses.flatten(1).float()[:, None], anchors.flatten(1).float()[None])[:, 0]
    return torch.softmax(IMITATION_WEIGHT * torch.log_softmax(-distances, -1), -1)


def symmetric_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of (KL(target || pred) + KL(pred || target)) / 2, with the official eps inside the logs."""
    pred = torch.softmax(logits.float(), -1)
    log_ratio = torch.log(pred + KL_EPS) - torch.log(target + KL_EPS)
    return (0.5 * ((pred - target) * log_ratio).sum(-1)).mean()


class AnchorHead(nn.Module):
    """Anchor encoder and scorer (module docstring): (K,P,3) anchors and (B,N,He) expert states -> (B,K) logits."""

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__()
        he = config.expert_hidden_size
        features = config.num_poses * 3 * 2 * FREQUENCIES

        def layer(kind):
            return kind(d_model=he, nhead=config.anchor_heads, dim_feedforward=he, dropout=0.0, batch_first=True)

        self.anchor_in = nn.Sequential(nn.Linear(features, he), nn.ReLU(), nn.Linear(he, he))
        self.encoder = nn.TransformerEncoder(layer(nn.TransformerEncoderLayer), config.anchor_layers,
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(layer(nn.TransformerDecoderLayer), config.anchor_layers)
        self.score = nn.Sequential(nn.Linear(he, he), nn.ReLU(), nn.Linear(he, 1))

    def forward(self, anchors: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        queries = self.anchor_in(positional_encoding(anchors.to(states.dtype)))
        queries = self.encoder(queries[None]).expand(states.shape[0], -1, -1)
        return self.score(self.decoder(queries, states)).squeeze(-1)


__all__ = ["AnchorHead", "anchor_targets", "fit_anchors", "positional_encoding", "symmetric_kl"]
