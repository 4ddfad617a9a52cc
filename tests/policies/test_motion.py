"""SE(2) per-step motions: hand-computed examples, round trips (start pose, yaw wrap), quantile normaliser."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policies.motion import QuantileNormalizer, deltas_to_poses, poses_to_deltas, wrap_angle


def _angle_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return wrap_angle(a - b).abs()


def _random_poses(*batch: int, steps: int = 8, yaw0: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Random drives: yaw random walk around yaw0 (so it crosses +-pi when yaw0 = pi), forward steps."""
    g = torch.Generator().manual_seed(seed)
    yaw = yaw0 + torch.cumsum(torch.randn(*batch, steps, generator=g, dtype=torch.float64) * 0.4, dim=-1)
    speed = torch.rand(*batch, steps, generator=g, dtype=torch.float64) * 3
    x = torch.cumsum(speed * torch.cos(yaw), dim=-1)
    y = torch.cumsum(speed * torch.sin(yaw), dim=-1)
    return torch.stack([x, y, wrap_angle(yaw)], dim=-1)


def test_hand_computed_forward_then_turn():
    # 1 m forward, turn left 90 degrees on the spot, 1 m forward (now along +y).
    poses = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, math.pi / 2], [1.0, 1.0, math.pi / 2]], dtype=torch.float64)
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, math.pi / 2], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(poses_to_deltas(poses), expected)
    torch.testing.assert_close(deltas_to_poses(expected), poses)


def test_hand_computed_with_start_pose():
    # Start at (2, 3) facing +y: a forward step moves +y, a step to the left moves -x.
    start = torch.tensor([2.0, 3.0, math.pi / 2], dtype=torch.float64)
    deltas = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -math.pi / 2]], dtype=torch.float64)
    expected = torch.tensor([[2.0, 4.0, math.pi / 2], [1.0, 4.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(deltas_to_poses(deltas, start), expected)
    torch.testing.assert_close(poses_to_deltas(expected, start), deltas)


def test_dyaw_wraps_across_pi():
    poses = torch.tensor([[0.0, 0.0, 3.1], [0.0, 0.0, -3.1]], dtype=torch.float64)
    d = poses_to_deltas(poses)
    assert d[1, 2].item() == pytest.approx(2 * math.pi - 6.2)  # a small left turn, not -6.2 rad
    assert d[0, 2].item() == pytest.approx(3.1)


def test_wrap_angle_range():
    a = torch.tensor([-math.pi, math.pi, 3 * math.pi, -3 * math.pi, -1e-20, 0.0, 7.0], dtype=torch.float64)
    w = wrap_angle(a)
    assert (w > -math.pi).all() and (w <= math.pi).all()
    assert w[0].item() == pytest.approx(math.pi) and w[1].item() == pytest.approx(math.pi)
    assert w[6].item() == pytest.approx(7.0 - 2 * math.pi)


@pytest.mark.parametrize("yaw0", [0.0, math.pi, -math.pi + 0.05])
def test_round_trip_random_trajectories_with_start(yaw0):
    poses = _random_poses(4, 5, yaw0=yaw0)
    start = torch.tensor([1.5, -2.0, yaw0 - 0.1], dtype=torch.float64)  # broadcast over the (4, 5) batch
    deltas = poses_to_deltas(poses, start)
    assert deltas.shape == poses.shape
    assert (deltas[..., 2] > -math.pi).all() and (deltas[..., 2] <= math.pi).all()
    back = deltas_to_poses(deltas, start)
    torch.testing.assert_close(back[..., :2], poses[..., :2], atol=1e-9, rtol=0)
    assert _angle_diff(back[..., 2], poses[..., 2]).max() < 1e-9
    assert (back[..., 2] > -math.pi).all() and (back[..., 2] <= math.pi).all()
    # And the other way round, from arbitrary motions.
    torch.testing.assert_close(poses_to_deltas(deltas_to_poses(deltas, start), start), deltas, atol=1e-9, rtol=0)


def test_per_batch_start_and_step_lengths_are_preserved():
    poses = _random_poses(3, steps=6, seed=1)
    starts = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 1.0], [-1.0, 2.0, -2.5]], dtype=torch.float64)
    deltas = poses_to_deltas(poses, starts)
    # A rigid motion keeps distances: |(dx, dy)| is the distance between consecutive poses.
    prev = torch.cat([starts[:, None, :2], poses[:, :-1, :2]], dim=1)
    torch.testing.assert_close(deltas[..., :2].norm(dim=-1), (poses[..., :2] - prev).norm(dim=-1))
    torch.testing.assert_close(deltas_to_poses(deltas, starts)[..., :2], poses[..., :2])


def test_dtypes_and_numpy_inputs():
    poses = _random_poses(2, steps=4)
    d32 = poses_to_deltas(poses.float())
    assert d32.dtype == torch.float32
    torch.testing.assert_close(d32, poses_to_deltas(poses).float())
    d_np = poses_to_deltas(poses.numpy().astype(np.float32))
    assert isinstance(d_np, np.ndarray) and d_np.dtype == np.float32
    p_np = deltas_to_poses(poses_to_deltas(poses.numpy()), start=np.zeros(3))
    assert isinstance(p_np, np.ndarray) and p_np.dtype == np.float64
    np.testing.assert_allclose(p_np[..., :2], poses.numpy()[..., :2], atol=1e-9)


def test_empty_trajectory_and_bad_shapes():
    assert poses_to_deltas(torch.zeros(2, 0, 3)).shape == (2, 0, 3)
    assert deltas_to_poses(torch.zeros(0, 3)).shape == (0, 3)
    with pytest.raises(ValueError, match="T, 3"):
        poses_to_deltas(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="start"):
        deltas_to_poses(torch.zeros(4, 3), start=torch.zeros(2))


def test_quantile_normalizer_fit_matches_numpy_and_holds_floats():
    g = torch.Generator().manual_seed(0)
    spread = torch.tensor([2.0, 0.5, 0.1], dtype=torch.float64)
    samples = torch.randn(10, 7, 3, generator=g, dtype=torch.float64) * spread
    norm = QuantileNormalizer.fit(samples, 0.05, 0.95)
    flat = samples.reshape(-1, 3).numpy()
    np.testing.assert_allclose(norm.low, np.quantile(flat, 0.05, axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm.high, np.quantile(flat, 0.95, axis=0), rtol=1e-12)
    assert all(type(v) is float for v in norm.low + norm.high)
    assert isinstance(norm.low, tuple) and len(norm.low) == 3
    assert QuantileNormalizer.from_dict(norm.to_dict()) == norm


def test_quantile_normalizer_clips_and_inverts_inside_the_range():
    norm = QuantileNormalizer(low=(0.0, -1.0, -0.5), high=(4.0, 1.0, 0.5))
    x = torch.tensor([[2.0, 0.0, 0.0], [0.0, -1.0, -0.5], [4.0, 1.0, 0.5], [9.0, -7.0, 0.25]], dtype=torch.float32)
    y = norm.normalize(x)
    assert y.dtype == torch.float32
    expected = torch.tensor([[0.0, 0.0, 0.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.5]])
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(norm.denormalize(y[:3]), x[:3])
    # Inside the range the two are inverse; outside, denormalize gives the clipped bound.
    torch.testing.assert_close(norm.denormalize(y[3]), torch.tensor([4.0, -1.0, 0.25]))
    inside = torch.rand(5, 8, 3, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(norm.normalize(norm.denormalize(inside)), inside)
    y_np = norm.normalize(x.numpy())
    assert isinstance(y_np, np.ndarray) and y_np.dtype == np.float32


def test_quantile_normalizer_fit_widens_a_dimension_that_never_varies_to_min_range():
    samples = torch.randn(100, 3, dtype=torch.float64)
    samples[:, 2] = 0.25
    plain = QuantileNormalizer.fit(samples[:, [0, 1, 0]])
    norm = QuantileNormalizer.fit(samples, min_range=1e-3)
    assert norm.low[:2] == plain.low[:2] and norm.high[:2] == plain.high[:2]  # wide ranges are kept as fitted
    assert norm.low[2] == pytest.approx(0.25 - 5e-4) and norm.high[2] == pytest.approx(0.25 + 5e-4)


def test_quantile_normalizer_errors_name_the_dimension():
    samples = torch.randn(100, 3, dtype=torch.float64)
    samples[:, 2] = 0.25  # heading never changes: empty range
    with pytest.raises(ValueError, match=r"dimension 2 \(dyaw\)"):
        QuantileNormalizer.fit(samples)
    with pytest.raises(ValueError, match=r"dimension 0 \(dx\)"):
        QuantileNormalizer(low=(1.0, 0.0, 0.0), high=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        QuantileNormalizer.fit(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="low_q"):
        QuantileNormalizer.fit(torch.randn(10, 3), low_q=0.9, high_q=0.1)
    with pytest.raises(ValueError, match="missing"):
        QuantileNormalizer.from_dict({"low": [0, 0, 0]})
