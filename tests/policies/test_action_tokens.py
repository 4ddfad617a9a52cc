"""Action / ego-state tokenizers: id ranges, round-trip error within half a bin, clipping, vectorised batches."""
from __future__ import annotations

import math

import pytest
import torch

from policies.action_tokens import ActionTokenizer, StateTokenizer
from policies.config import DriveVLAW0Config


@pytest.fixture()
def config() -> DriveVLAW0Config:
    return DriveVLAW0Config.preset("tiny")


def _random_poses(config: DriveVLAW0Config, *batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(*batch, config.num_poses, 3, generator=g, dtype=torch.float64)
    ranges = torch.tensor([config.action_x_range, config.action_y_range, config.action_heading_range],
                          dtype=torch.float64)
    return ranges[:, 0] + u * (ranges[:, 1] - ranges[:, 0])


def test_round_trip_within_half_bin(config):
    tok = ActionTokenizer(config)
    poses = _random_poses(config, 5, 2)
    ids = tok.encode(poses)
    assert ids.shape == (5, 2, config.num_action_tokens) and ids.dtype == torch.long
    assert int(ids.min()) >= config.action_offset and int(ids.max()) < config.image_offset
    back = tok.decode(ids, dtype=torch.float64)
    assert back.shape == poses.shape
    assert torch.all((back - poses).abs() <= tok.bin_width / 2 + 1e-9)


def test_token_order_and_allowed_ranges(config):
    tok = ActionTokenizer(config)
    ids = tok.encode(_random_poses(config, 3))
    for step in range(config.num_action_tokens):
        lo, hi = tok.allowed_range(step)
        assert torch.all((ids[:, step] >= lo) & (ids[:, step] < hi))


def test_out_of_range_values_are_clipped(config):
    tok = ActionTokenizer(config)
    poses = torch.zeros(1, config.num_poses, 3)
    poses[0, 0] = torch.tensor([1e3, -1e3, math.pi])
    back = tok.decode(tok.encode(poses))
    assert back[0, 0, 0] == pytest.approx(config.action_x_range[1] - tok.bin_width[0].item() / 2, abs=1e-5)
    assert back[0, 0, 1] == pytest.approx(config.action_y_range[0] + tok.bin_width[1].item() / 2, abs=1e-5)
    with pytest.raises(ValueError):
        tok.decode(torch.zeros(1, config.num_action_tokens, dtype=torch.long))


def test_state_tokens(config):
    tok = StateTokenizer(config)
    speed, accel, command = torch.tensor([0.0, 12.3, 50.0]), torch.tensor([-1.0, 0.5, 9.0]), torch.tensor([0, 1, 3])
    ids = tok.encode(speed, accel, command)
    assert ids.shape == (3, 3)
    assert torch.all((ids[:, 0] >= config.speed_offset) & (ids[:, 0] < config.accel_offset))
    assert torch.all((ids[:, 1] >= config.accel_offset) & (ids[:, 1] < config.command_offset))
    assert torch.all((ids[:, 2] >= config.command_offset) & (ids[:, 2] < config.action_offset))
    s, a, c = tok.decode(ids)
    width = (config.state_speed_range[1] - config.state_speed_range[0]) / config.state_speed_bins
    assert abs(float(s[1]) - 12.3) <= width / 2 + 1e-6
    assert torch.equal(c, command)
    with pytest.raises(ValueError):
        tok.encode(speed, accel, torch.tensor([0, 1, 4]))
