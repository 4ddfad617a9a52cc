"""Fuzz: random trajectories and controls (NaN, inf, huge, wrong shapes and dtypes) through the Gymnasium envs' `step`
and `w0sim score`: a clean failure (InvalidActionError, a failure reason, a failed row) or a valid result with finite
scores in [0, 1] and finite observations, never another exception or a NaN."""
from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.envs  # noqa: F401 - registers the envs
from scenarios.generator import generate_scene
from scenarios.scene import save_scene
from sim.envs.observation import InvalidActionError
from w0sim.score import ScoreInputError, TrajectorySpec, load_trajectories, score_trajectories

EXTREMES = [math.nan, math.inf, -math.inf, 1e300, -1e300, 1e30, 1e5, -1e4, 5e3, 1e-310, 0.0]
VALUES = st.one_of(st.floats(-60.0, 60.0), st.sampled_from(EXTREMES))


def straight_poses(rng_scale: float = 4.0) -> np.ndarray:
    return np.array([[rng_scale * i, 0.0, 0.0] for i in range(1, 9)])


@st.composite
def actions(draw, shape: tuple[int, ...]):
    """Mostly well-shaped float arrays near a plausible plan with a few bad entries; sometimes the wrong shape or
    dtype, or a ragged list."""
    kind = draw(st.sampled_from(["near", "near", "near", "random", "shape", "dtype", "ragged"]))
    if kind == "ragged":
        return [[1.0, 2.0, 3.0], [1.0]]
    if kind == "shape":
        bad = draw(st.sampled_from([(), (3,), (shape[0] - 1, *shape[1:]), (*shape, 1), (shape[0], 5), (0, 3)]))
        return np.zeros(bad)
    if kind == "random":
        return np.array(draw(st.lists(VALUES, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))).reshape(shape)
    base = straight_poses() if shape == (8, 3) else np.array([1.0, 0.0])
    for _ in range(draw(st.integers(0, 3))):
        index = tuple(draw(st.integers(0, n - 1)) for n in shape)
        base[index] = draw(VALUES)
    if kind == "dtype":
        target = draw(st.sampled_from([np.float32, np.float16, np.int64, bool, str, complex, object]))
        with np.errstate(all="ignore"):
            return base.astype(target)
    return base


@pytest.fixture(scope="module")
def scene():
    return generate_scene("straight", 1)


@pytest.fixture(scope="module")
def navsim_env(scene):
    return gym.make("w0sim/NavsimScene-v0", scenes=[scene], cameras=False)


@pytest.fixture(scope="module")
def scene_path(scene, tmp_path_factory):
    return save_scene(scene, tmp_path_factory.mktemp("fuzz_traj") / "straight.npz")


def assert_finite_observation(obs) -> None:
    for name, value in obs.items():
        assert np.isfinite(np.asarray(value, dtype=np.float64)).all(), name


@settings(max_examples=60)
@given(action=actions((8, 3)))
def test_navsim_env_step(navsim_env, action):
    navsim_env.reset(seed=0)
    try:
        obs, reward, terminated, truncated, info = navsim_env.step(action)
    except InvalidActionError as exc:
        assert "NavsimScene-v0 trajectory" in str(exc)
        return
    assert terminated and not truncated
    assert_finite_observation(obs)
    assert math.isfinite(reward) and 0.0 <= reward <= 1.0
    if info["valid"]:
        assert all(math.isfinite(v) for k, v in info["scores"].items() if k != "two_frame_extended_comfort")
        assert np.isfinite(info["simulated_states"]).all()
    else:
        assert info["failure_reason"] and reward == 0.0


@settings(max_examples=50)
@given(control=st.sampled_from(["trajectory", "trajectory", "direct"]), data=st.data())
def test_closed_loop_env_step(scene, control, data):
    env = gym.make("w0sim/ClosedLoop-v0", scenes=[scene], cameras=False, control=control)
    env.reset(seed=0)
    shape = (8, 3) if control == "trajectory" else (2,)
    for _ in range(data.draw(st.integers(1, 2))):
        action = data.draw(actions(shape))
        try:
            obs, reward, terminated, truncated, info = env.step(action)
        except InvalidActionError as exc:
            assert "ClosedLoop-v0" in str(exc)
            return
        assert_finite_observation(obs)
        assert math.isfinite(reward)
        assert np.isfinite(env.unwrapped.sim.ego).all()
        if "failure_reason" in info:
            assert terminated and info["failure_reason"]
        else:
            assert 0.0 <= info["driving_score"] <= 100.0
        if terminated or truncated:
            return


JSON_LEAVES = st.one_of(st.floats(-60.0, 60.0), st.sampled_from(EXTREMES), st.integers(-(2**70), 2**70),
                        st.booleans(), st.none(), st.text(max_size=3))
POSES = st.one_of(
    st.lists(st.lists(st.floats(-60.0, 60.0) | st.sampled_from(EXTREMES), min_size=3, max_size=3), max_size=10),
    st.lists(st.lists(JSON_LEAVES, max_size=4), max_size=4),
    JSON_LEAVES,
)
INTERVALS = st.one_of(st.just(0.5), st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 10**6),
                      st.booleans(), st.text(max_size=3), st.none())


@settings(max_examples=25)
@given(specs=st.lists(st.tuples(POSES, INTERVALS), min_size=1, max_size=4))
def test_score_rows(scene_path, specs):
    trajectories = [TrajectorySpec(f"t{i}", poses, interval) for i, (poses, interval) in enumerate(specs)]
    rows = score_trajectories(scene_path, trajectories).rows
    assert len(rows) == len(specs)
    for row in rows:
        if row["valid"]:
            assert math.isfinite(row["score"]) and 0.0 <= row["score"] <= 1.0, row
        else:
            assert row["reason"] and math.isnan(row["score"]), row


@settings(max_examples=30)
@given(document=st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=4) | st.integers(),
                             lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                          max_size=3), max_leaves=8))
def test_trajectories_files_load_or_are_refused(tmp_path_factory, document):
    path = tmp_path_factory.getbasetemp() / "trajectories.json"
    path.write_text(json.dumps(document))
    try:
        specs = load_trajectories(path)
    except ScoreInputError as exc:
        assert str(path) in str(exc)
        return
    assert specs and all(isinstance(spec.name, str) for spec in specs)
