"""Actions as the official code represents them: per-step SE(2) motions, quantile-normalised, as FAST tokens.

drivevla_w0_paper.md §2.4: a motion is (dx, dy, dyaw) of one 0.5 s step in the frame of the pose before it;
`action_low` / `action_high` (q01 / q99 over the training data) map it to [-1, 1]; the FAST tokenizer (DCT +
BPE, `policies.fast_tokens`) turns a chunk of motions into a few tokens, which sit at the top of the text
range of the vocabulary (`DriveVLAW0Config.fast_to_id`).

Each frame of a sequence has its past motions (the `num_past_actions` steps before it) and, except the current
frame, the action to the next frame (`segment_action_steps` steps); the current frame's action is the plan.
The agent input holds 4 ego poses 0.5 s apart (NAVSIM's 1.5 s history), so the earlier frame's past motions
reach back beyond it: the missing steps repeat the earliest motion there is (constant-velocity padding),
in training and driving alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from policies.config import DriveVLAW0Config
from policies.fast_tokens import FastActionTokenizer
from policies.motion import QuantileNormalizer, deltas_to_poses, poses_to_deltas

MIN_RANGE = 1e-3  # the narrowest fitted range of a motion quantity (m or rad)


@dataclass
class FrameMotions:
    """Per frame of the history (oldest first): its past motions (B,F,num_past_actions,3) and the action to the
    next frame (B,F-1,segment_action_steps,3), all unnormalised (m, m, rad)."""

    past: torch.Tensor
    to_next: torch.Tensor


def frame_motions(config: DriveVLAW0Config, ego_poses: torch.Tensor) -> FrameMotions:
    """The motions of each history frame from the ego poses (B,N,3) 0.5 s apart relative to the current pose
    (last), as the agent input gives them (module docstring)."""
    c = config
    per_frame = round(c.frame_interval_s / c.pose_interval_s)
    deltas = poses_to_deltas(ego_poses[:, 1:], ego_poses[:, 0])  # (B,N-1,3), oldest first, the last ends now
    n = deltas.shape[1]
    if n < 1:
        raise ValueError("ego_poses needs at least 2 poses to give a motion")
    past, to_next = [], []
    for f in range(c.num_history_frames):
        end = n - (c.num_history_frames - 1 - f) * per_frame  # deltas[:end] end at frame f
        index = torch.arange(end - c.num_past_actions, end).clamp(0, n - 1)
        past.append(deltas[:, index])
        if f < c.num_history_frames - 1:
            index = torch.arange(end, end + c.segment_action_steps).clamp(0, n - 1)
            to_next.append(deltas[:, index])
    return FrameMotions(torch.stack(past, 1), torch.stack(to_next, 1) if to_next else deltas[:, :0, None])


class ActionTokenizer:
    """Motions <-> vocabulary ids of FAST tokens, with the config's quantile normalisation."""

    def __init__(self, config: DriveVLAW0Config) -> None:
        self.config = config
        self.normalizer = QuantileNormalizer(tuple(config.action_low), tuple(config.action_high))
        self.fast = FastActionTokenizer.from_json(config.fast_tokenizer) if config.fast_tokenizer else None

    def _fitted(self) -> FastActionTokenizer:
        if self.fast is None:
            raise ValueError("the configuration's FAST tokenizer is not fitted (fit_action_tokenizer on the data)")
        return self.fast

    def encode(self, motions: torch.Tensor) -> list[list[int]]:
        """(B,T,3) motions -> per row, the vocabulary ids of its FAST tokens (lengths differ)."""
        fast = self._fitted()
        chunks = self.normalizer.normalize(motions.detach().double().cpu()).numpy()
        return [[self.config.fast_to_id(k) for k in fast.encode(chunk)] for chunk in chunks]

    def decode(self, ids: list[list[int]], steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, vocabulary ids (FAST range; others are skipped) -> ((B,steps,3) float64 motions, (B,) bool:
        the tokens decoded to exactly steps x 3 coefficients)."""
        fast = self._fitted()
        rows, valid = [], []
        for row in ids:
            tokens = [self.config.id_to_fast(i) for i in row if self._is_fast(i)]
            chunk, ok = fast.decode_with_status(tokens, steps, 3)
            rows.append(chunk)
            valid.append(ok and len(tokens) == len(row))
        normalised = torch.from_numpy(np.stack(rows)).clamp(-1, 1)
        return self.normalizer.denormalize(normalised), torch.tensor(valid)

    def _is_fast(self, token_id: int) -> bool:
        lo, hi = self.config.fast_id_range
        return lo <= token_id < hi

    def decode_plan(self, ids: list[list[int]]) -> torch.Tensor:
        """Per row, a plan's vocabulary ids -> (B,num_poses,3) float32 poses in the current ego frame (its decoded
        motions composed from the current pose)."""
        motions, _ = self.decode(ids, self.config.num_poses)
        return deltas_to_poses(motions).float()


def fit_action_tokenizer(config: DriveVLAW0Config, ego_poses: torch.Tensor, plans: torch.Tensor) -> dict:
    """Config fields of an action tokenizer fitted on training data (ego_poses (N,4,3), plans (N,P,3) poses):
    `action_low` / `action_high` are the q01 / q99 of the plans' motions (the official norm_stats), the FAST
    BPE is trained on every chunk a sequence holds (past motions, actions to the next frame, plans)."""
    plan_motions = poses_to_deltas(plans.double())
    # A quantity that never varies in the data (e.g. dyaw on straight roads only) gets a small range around its value.
    normalizer = QuantileNormalizer.fit(plan_motions, min_range=MIN_RANGE)
    motions = frame_motions(config, ego_poses.double())
    chunks = [motions.past.flatten(0, 1), motions.to_next.flatten(0, 1), plan_motions]
    normalised = [normalizer.normalize(c).numpy() for c in chunks if c.numel()]
    fast = FastActionTokenizer.fit([row for block in normalised for row in block], config.fast_vocab_size,
                                   config.fast_scale)
    return {"action_low": normalizer.low, "action_high": normalizer.high, "fast_tokenizer": fast.to_json()}


__all__ = ["ActionTokenizer", "FrameMotions", "fit_action_tokenizer", "frame_motions"]
