"""Actions as FAST tokens: each history frame's motions from the ego poses (constant-velocity padding), motions <->
vocabulary ids (round trip within the FAST bound, invalid rows, skipped ids), fitting q01/q99 and the BPE."""
from __future__ import annotations

import math

import pytest
import torch

from policies.action_tokens import ActionTokenizer, fit_action_tokenizer, frame_motions
from policies.config import DriveVLAW0Config
from policies.motion import deltas_to_poses, poses_to_deltas
from tests.policies.checkpoints import driving_motion, micro_config

# A hand-made drive at a constant 2 m per 0.5 s step (4 m/s): forward then a left quarter turn, straight on,
# then a right eighth turn. Motions are (dx, dy, dyaw) in the frame of the pose before.
M1, M2, M3 = (2.0, 0.0, math.pi / 2), (2.0, 0.0, 0.0), (2.0, 0.0, -math.pi / 4)
DRIVE = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, math.pi / 2], [2.0, 2.0, math.pi / 2], [2.0, 4.0, math.pi / 4]],
                     dtype=torch.float64)


def _seen_from(poses: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """The same poses (N,3) expressed in the frame of `origin` (x, y, yaw)."""
    c, s = math.cos(float(origin[2])), math.sin(float(origin[2]))
    dx, dy = poses[:, 0] - origin[0], poses[:, 1] - origin[1]
    yaw = torch.remainder(poses[:, 2] - origin[2] + math.pi, 2 * math.pi) - math.pi
    return torch.stack([c * dx + s * dy, -s * dx + c * dy, yaw], -1)


@pytest.fixture(scope="module")
def config() -> DriveVLAW0Config:
    return micro_config()


@pytest.fixture(scope="module")
def tok(config) -> ActionTokenizer:
    return ActionTokenizer(config)


def test_frame_motions_of_a_hand_made_drive(config):
    assert (config.num_history_frames, config.num_past_actions, config.segment_action_steps) == (2, 3, 2)
    # Row 0: the drive as given; row 1: relative to its current pose (as the agent input gives it); row 2: an
    # arbitrary world frame. Motions are frame-free, so all three rows give the same.
    ego = torch.stack([DRIVE, _seen_from(DRIVE, DRIVE[-1]),
                       _seen_from(DRIVE, torch.tensor([10.0, -7.0, 2.0], dtype=torch.float64))])
    torch.testing.assert_close(ego[1, -1], torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    m = frame_motions(config, ego)
    assert m.past.shape == (3, 2, 3, 3) and m.to_next.shape == (3, 1, 2, 3)
    m1, m2, m3 = (torch.tensor(v, dtype=torch.float64) for v in (M1, M2, M3))
    # The earlier frame (1 s ago, pose 1) has only one motion before it: padded with that earliest motion.
    expected_past = torch.stack([torch.stack([m1, m1, m1]), torch.stack([m1, m2, m3])])
    expected_next = torch.stack([m2, m3])[None]  # the 2 motions from pose 1 (1 s ago) to pose 3 (now)
    for row in range(3):
        torch.testing.assert_close(m.past[row], expected_past, atol=1e-9, rtol=0)
        torch.testing.assert_close(m.to_next[row], expected_next, atol=1e-9, rtol=0)


def test_frame_motions_are_consistent_on_made_up_drives(config):
    ego, _ = driving_motion(16, seed=5)
    ego = ego.double()
    m = frame_motions(config, ego)
    assert m.past.shape == (16, 2, 3, 3) and m.to_next.shape == (16, 1, 2, 3)
    # The current frame's last two past motions are the action from the earlier frame to it ...
    torch.testing.assert_close(m.past[:, 1, -2:], m.to_next[:, 0])
    # ... and composing that action from the earlier frame's pose lands on the current pose.
    torch.testing.assert_close(deltas_to_poses(m.to_next[:, 0], ego[:, 1])[:, -1], ego[:, 3])
    # Constant-velocity padding: the earlier frame's past is its one real motion, three times.
    torch.testing.assert_close(m.past[:, 0], m.past[:, 1, :1].expand(-1, 3, -1))
    with pytest.raises(ValueError):
        frame_motions(config, ego[:, :1])


def test_encode_decode_round_trip_within_fast_bound(config, tok):
    _, plans = driving_motion(64, seed=3)
    motions = poses_to_deltas(plans.double())
    ids = tok.encode(motions)
    assert len(ids) == 64 and all(len(row) > 0 for row in ids)
    lo, hi = config.fast_id_range
    assert all(isinstance(i, int) and lo <= i < hi for row in ids for i in row)
    decoded, valid = tok.decode(ids, config.num_poses)
    assert decoded.shape == (64, config.num_poses, 3) and decoded.dtype == torch.float64
    assert bool(valid.all())
    low, high = torch.tensor(config.action_low, dtype=torch.float64), torch.tensor(config.action_high,
                                                                                    dtype=torch.float64)
    # FAST bound in normalised units (0.5 / scale * sqrt(T)), stretched back by half the q01..q99 range.
    bound = 0.5 / config.fast_scale * math.sqrt(config.num_poses) * (high - low) / 2
    error = (decoded - motions.clamp(low, high)).abs()
    assert 0 < float(error.max())  # quantisation happens ...
    assert bool((error <= bound + 1e-9).all())  # ... and stays within the bound
    # Fewer tokens than steps x 3 coefficients: BPE merges the runs of zeros of smooth plans.
    assert sum(len(row) for row in ids) / len(ids) < config.num_poses * 3


def test_ids_are_the_fast_tokens_counted_down_from_pad(config, tok):
    motions = poses_to_deltas(driving_motion(4, seed=1)[1].double())
    fast = [tok.fast.encode(tok.normalizer.normalize(m).numpy()) for m in motions]
    assert tok.encode(motions) == [[config.pad_id - 1 - k for k in row] for row in fast]


def test_decode_flags_invalid_rows_and_skips_non_fast_ids(config, tok):
    motions = poses_to_deltas(driving_motion(3, seed=2)[1].double())
    ids = tok.encode(motions)
    clean, valid = tok.decode(ids, config.num_poses)
    assert valid.tolist() == [True, True, True]
    eoa, image = config.special_id("<eoa>"), config.image_offset + 3
    word, pad = 5, config.pad_id
    noisy = [[eoa] + ids[0], ids[1][:1] + [image, word] + ids[1][1:], ids[2] + [pad, eoa]]
    decoded, valid = tok.decode(noisy, config.num_poses)
    assert valid.tolist() == [False, False, False]  # each row held a non-FAST id ...
    torch.testing.assert_close(decoded, clean)  # ... which was skipped
    truncated, empty = ids[0][:-1], []
    decoded, valid = tok.decode([truncated, empty, ids[2]], config.num_poses)
    assert valid.tolist() == [False, False, True]
    assert decoded.shape == (3, config.num_poses, 3) and torch.isfinite(decoded).all()
    # No tokens: every normalised value is 0, the middle of the q01..q99 range.
    middle = (torch.tensor(config.action_low, dtype=torch.float64) + torch.tensor(config.action_high,
                                                                                   dtype=torch.float64)) / 2
    torch.testing.assert_close(decoded[1], middle.expand(config.num_poses, 3))
    # Decoded motions stay inside [low, high] whatever the tokens (clipped to [-1, 1] before denormalising).
    lo, hi = config.fast_id_range
    junk = [list(range(lo, lo + 12)), [hi - 1] * 30]
    decoded, _ = tok.decode(junk, config.num_poses)
    assert bool((decoded >= torch.tensor(config.action_low, dtype=torch.float64) - 1e-12).all())
    assert bool((decoded <= torch.tensor(config.action_high, dtype=torch.float64) + 1e-12).all())


def test_unfitted_tokenizer_raises_a_clear_error():
    tok = ActionTokenizer(DriveVLAW0Config.preset("tiny"))
    with pytest.raises(ValueError, match="not fitted"):
        tok.encode(torch.zeros(1, 8, 3))
    with pytest.raises(ValueError, match="not fitted"):
        tok.decode([[100]], 8)


def test_decode_plan_composes_the_decoded_motions_into_poses(tok):
    _, plans = driving_motion(5, seed=4)
    ids = tok.encode(poses_to_deltas(plans.double()))
    motions, _ = tok.decode(ids, plans.shape[1])
    poses = tok.decode_plan(ids)
    assert poses.dtype == torch.float32
    torch.testing.assert_close(poses, deltas_to_poses(motions).float())
    # Composed from the current pose, the plan lands near the one encoded: FAST's rounding summed along it.
    assert (poses - plans).abs()[..., :2].max() < 1.0


def test_fit_action_tokenizer_bounds_are_the_plans_quantiles():
    base = DriveVLAW0Config.preset("tiny", fast_vocab_size=64)
    ego, plans = driving_motion(200, seed=7)
    # Ego motions 10x larger than any plan's: the bounds must come from the plans alone.
    fields = fit_action_tokenizer(base, ego * 10, plans)
    assert set(fields) == {"action_low", "action_high", "fast_tokenizer"}
    plan_motions = poses_to_deltas(plans.double()).reshape(-1, 3)
    q01 = torch.quantile(plan_motions, 0.01, dim=0)
    q99 = torch.quantile(plan_motions, 0.99, dim=0)
    torch.testing.assert_close(torch.tensor(fields["action_low"], dtype=torch.float64), q01)
    torch.testing.assert_close(torch.tensor(fields["action_high"], dtype=torch.float64), q99)
    config = DriveVLAW0Config.preset("tiny", fast_vocab_size=64, **fields)
    tok = ActionTokenizer(config)
    assert tok.fast is not None and tok.fast.vocab_size <= config.fast_vocab_size
    # Every chunk a sequence holds (past motions, action to the next frame, plan) encodes without clipping.
    m = frame_motions(config, ego.double() * 10)
    for chunks in (m.past[:, 0], m.past[:, 1], m.to_next[:, 0], poses_to_deltas(plans.double())):
        normalised = tok.normalizer.normalize(chunks).numpy()
        assert all(tok.fast.encode_with_status(chunk)[1] for chunk in normalised)
