"""Actions through the Gymnasium envs (issue 15): 1e300 poses, NaN, inf and implausible values end the episode with a
failure reason (never NaN observations); non-numeric or mis-shaped actions are an InvalidActionError."""
import gymnasium as gym
import numpy as np
import pytest

import sim.envs  # noqa: F401 - registers the envs
from scenarios.generator import generate_scene
from sim.envs.observation import InvalidActionError, action_problem, check_action

STRAIGHT = np.array([[4.0 * i, 0.0, 0.0] for i in range(1, 9)])


@pytest.fixture(scope="module")
def scene():
    return generate_scene("straight", 1)


def finite_observation(obs) -> bool:
    return all(np.isfinite(np.asarray(value, dtype=np.float64)).all() for value in obs.values())


def poses_with(row: int, column: int, value: float) -> np.ndarray:
    poses = STRAIGHT.copy()
    poses[row, column] = value
    return poses


@pytest.mark.parametrize("value, fragment", [(1e300, "x 1e+300 at [3, 0] is beyond the plausibility bound"),
                                             (np.nan, "non-finite values at [[3, 0]]"),
                                             (-1e5, "x -100000 at [3, 0]")])
def test_closed_loop_trajectory_beyond_bounds_fails_the_episode_with_finite_observations(scene, value, fragment):
    env = gym.make("w0sim/ClosedLoop-v0", scenes=[scene], cameras=False)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(poses_with(3, 0, value))
    assert terminated and not truncated and reward == 0.0
    assert fragment in info["failure_reason"] and finite_observation(obs)


def test_closed_loop_direct_control_beyond_bounds_fails(scene):
    env = gym.make("w0sim/ClosedLoop-v0", scenes=[scene], cameras=False, control="direct")
    env.reset(seed=0)
    obs, _, terminated, _, info = env.step(np.array([1e300, 0.0]))
    assert terminated and "acceleration 1e+300" in info["failure_reason"] and finite_observation(obs)
    env.reset(seed=0)
    obs, _, terminated, _, info = env.step(np.array([2.0, 0.1]))  # within the control space: drives on
    assert not terminated and "failure_reason" not in info and finite_observation(obs)


def test_navsim_trajectory_beyond_bounds_is_invalid_and_a_plausible_one_scores(scene):
    env = gym.make("w0sim/NavsimScene-v0", scenes=[scene], cameras=False)
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step(poses_with(2, 2, 1e6))
    assert terminated and reward == 0.0 and not info["valid"] and "heading 1e+06" in info["failure_reason"]
    env.reset(seed=0)
    obs, reward, _, _, info = env.step(poses_with(7, 0, 900.0))  # implausible to drive, but within the bound
    assert info["valid"] and 0.0 <= reward <= 1.0 and finite_observation(obs)


@pytest.mark.parametrize("action, fragment", [(np.full((8, 3), "1.0"), "numeric"), (np.ones((8, 3), bool), "numeric"),
                                              ([[1.0, 2.0], [3.0]], "numeric"), (np.zeros((8, 2)), "shape (8, 2)"),
                                              (np.zeros((8, 3), complex), "numeric")])
def test_non_numeric_or_mis_shaped_actions_raise(action, fragment):
    with pytest.raises(InvalidActionError, match=r"expected|numeric") as info:
        check_action(action, (8, 3), "test")
    assert fragment in str(info.value)


def test_action_problem_bounds_by_the_last_axis():
    assert action_problem(STRAIGHT, "t") is None
    assert "heading" in action_problem(poses_with(0, 2, 2e3), "t")
    assert "steering rate 200" in action_problem(np.array([0.0, 200.0]), "t")
    assert action_problem(np.array([0.0, 200.0]), "t", bounds=(1.0, 1e3)) is None
