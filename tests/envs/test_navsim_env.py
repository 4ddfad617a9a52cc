"""`w0sim/NavsimScene-v0`: API conformance, physics of the tracked trajectory, malformed actions, scene sources."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim.envs  # noqa: F401 - registers the ids
from scenarios.scene import save_scene
from sim.envs.frames import EXECUTED_COLOUR
from sim.envs.navsim_env import NavsimSceneEnv
from sim.envs.observation import InvalidActionError
from sim.geometry import global_to_local
from sim.render.bev import bev_pixels
from sim.state import StateIndex
from sim.world_view import logged_ego_state
from tests.envs.helpers import fresh_scene, logged_future_trajectory, obs_equal, straight_trajectory

NUM_STATES = 41  # 4 s at 10 Hz, the initial state included


@pytest.fixture(scope="module")
def straight_scene():
    return fresh_scene("straight", 0)


def make_env(scene=None, **kwargs) -> NavsimSceneEnv:
    kwargs.setdefault("cameras", False)
    return NavsimSceneEnv(scenes=None if scene is None else [scene], **kwargs)


# --- API conformance ------------------------------------------------------------------------------


def test_check_env_passes_with_cameras():
    env = gym.make("w0sim/NavsimScene-v0")
    assert isinstance(env.unwrapped, NavsimSceneEnv)
    assert "cameras" in env.observation_space.spaces
    check_env(env.unwrapped)


def test_reset_observation_and_info(straight_scene):
    env = make_env(straight_scene, cameras=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["cameras"].shape == (4, env.camera.height, env.camera.width, 3)
    assert obs["cameras"].dtype == np.uint8
    # The current frame is the origin of the ego frame; history lies behind the ego.
    np.testing.assert_allclose(obs["ego_poses"][-1], 0.0, atol=1e-6)
    assert (np.diff(obs["ego_poses"][:, 0]) > 0).all()
    assert obs["driving_command"].sum() == 1
    assert info["token"] == straight_scene.token
    assert info["family"] == "straight"
    np.testing.assert_array_equal(info["agent_input"].ego_state, straight_scene.initial_ego_state)


@pytest.mark.parametrize("family", ["intersection", "merge"])
def test_the_observation_holds_what_the_log_allows_and_nothing_of_the_future(family):
    """NAVSIM's agent sees the current and three past frames only: rewriting everything after the current step
    (ego, traffic, lights, commands) leaves observation and agent input bit for bit the same (cameras included),
    while moving one past frame's traffic changes the cameras."""
    scene = fresh_scene(family, 0)
    assert scene.agents.valid[: scene.current_index + 1].any()  # traffic in view, so the cameras can tell

    def observe(s):
        obs, info = make_env(s, cameras=True).reset(options={"scene_index": 0})
        return obs, info["agent_input"]

    obs, agent_input = observe(scene)
    future = fresh_scene(family, 0)
    after = slice(scene.current_index + 1, None)
    future.ego_log[after, StateIndex.X] += 7.0
    future.ego_log[after, StateIndex.VELOCITY_X] *= 0.5
    for name in ("x", "y"):
        getattr(future.agents, name)[after] += 3.0
    future.agents.valid[after] = ~future.agents.valid[after]
    future.light_status[after] = (future.light_status[after] + 1) % 3  # green -> yellow -> red -> green
    future.driving_command[after] = (future.driving_command[after] + 1) % 4
    future_obs, future_input = observe(future)
    assert obs_equal(obs, future_obs) and agent_input == future_input

    past = fresh_scene(family, 0)
    past.agents.x[scene.current_index - 5] += 3.0  # half a second back: the third of the four frames
    past_obs, _ = observe(past)
    assert not np.array_equal(past_obs["cameras"], obs["cameras"])
    np.testing.assert_array_equal(past_obs["cameras"][-1], obs["cameras"][-1])


def test_observation_without_cameras_has_no_camera_key(straight_scene):
    env = make_env(straight_scene)
    obs, _ = env.reset(seed=0)
    assert "cameras" not in obs and "cameras" not in env.observation_space.spaces
    assert env.observation_space.contains(obs)


def test_returned_cameras_are_copies(straight_scene):
    env = make_env(straight_scene, cameras=True)
    obs, _ = env.reset(seed=0)
    original = obs["cameras"].copy()
    obs["cameras"][:] = 0
    obs2, _, _, _, _ = env.step(straight_trajectory(8.0))
    np.testing.assert_array_equal(obs2["cameras"], original)


# --- physics ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["straight", "curve", "intersection", "t_junction", "merge"])
def test_logged_future_is_reproduced(family):
    scene = fresh_scene(family, 0)
    env = make_env(scene)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(logged_future_trajectory(scene).astype(np.float32))
    assert terminated and not truncated
    assert info["valid"] is True and "failure_reason" not in info
    # The reward is the PDMS of the logged (human) future: within [0, 1] and reported with its sub-scores.
    assert 0.0 <= reward <= 1.0 and info["scores"]["score"] == reward
    states = info["simulated_states"]
    assert states.shape == (NUM_STATES, len(StateIndex))
    # Tracking starts from the ego state a log holds: pose, velocity, acceleration; steering and yaw rates 0.
    np.testing.assert_array_equal(states[0], logged_ego_state(scene.initial_ego_state))
    assert not states[0, StateIndex.STEERING_ANGLE:].any()
    logged = scene.ego_log[scene.current_index : scene.current_index + NUM_STATES]
    error = np.hypot(*(states[:, :2] - logged[:, :2]).T)
    assert error.max() < 1.5, f"simulated ego drifts {error.max():.2f} m from its own log"
    # The planned trajectory, back in the global frame, is the logged future itself.
    steps = scene.current_index + 5 * np.arange(1, 9)
    np.testing.assert_allclose(info["trajectory_global"][:, :2], scene.ego_log[steps, :2], atol=1e-3)


def test_straight_10mps_trajectory_ends_near_40m():
    scene = fresh_scene("curve", 0)
    ci = scene.current_index
    scene.ego_log[ci, StateIndex.VELOCITY_X] = 10.0
    scene.ego_log[ci, StateIndex.VELOCITY_Y :] = 0.0
    env = make_env(scene)
    env.reset(seed=0)
    _, _, _, _, info = env.step(straight_trajectory(10.0))
    states = info["simulated_states"]
    end = global_to_local(states[-1, :3], scene.initial_ego_state[:3])
    assert end[0] == pytest.approx(40.0, abs=1.0)
    assert abs(end[1]) < 0.3 and abs(end[2]) < 0.05
    assert states[-1, StateIndex.VELOCITY_X] == pytest.approx(10.0, abs=0.5)
    # The planned end pose is exactly 40 m ahead.
    planned_end = global_to_local(info["trajectory_global"][-1], scene.initial_ego_state[:3])
    np.testing.assert_allclose(planned_end, [40.0, 0.0, 0.0], atol=1e-4)
    # Progress along the heading is monotone (no reversing).
    along = global_to_local(states[:, :3], scene.initial_ego_state[:3])[:, 0]
    assert (np.diff(along) >= -1e-9).all()


def test_stop_trajectory_brakes():
    scene = fresh_scene("straight", 1)
    env = make_env(scene)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros((8, 3), np.float32))
    states = info["simulated_states"]
    assert states[-1, StateIndex.VELOCITY_X] < 0.5 * scene.initial_ego_state[StateIndex.VELOCITY_X]


# --- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_episode_with_cameras():
    a, b = NavsimSceneEnv(), NavsimSceneEnv()
    obs_a, info_a = a.reset(seed=123)
    obs_b, info_b = b.reset(seed=123)
    assert info_a["token"] == info_b["token"]
    assert obs_equal(obs_a, obs_b)
    action = straight_trajectory(7.0)
    step_a, step_b = a.step(action), b.step(action)
    assert obs_equal(step_a[0], step_b[0])
    assert step_a[1:4] == step_b[1:4]
    np.testing.assert_array_equal(step_a[4]["simulated_states"], step_b[4]["simulated_states"])
    np.testing.assert_array_equal(step_a[4]["trajectory_global"], step_b[4]["trajectory_global"])


def test_different_seeds_give_different_scenes():
    env = make_env()
    tokens = {env.reset(seed=seed)[1]["token"] for seed in range(6)}
    assert len(tokens) == 6


def test_step_is_deterministic_for_the_same_action(straight_scene):
    env = make_env(straight_scene)
    action = straight_trajectory(9.0)
    action[:, 1] = np.linspace(0.0, 1.5, 8)
    runs = []
    for _ in range(2):
        env.reset(seed=5)
        runs.append(env.step(action)[4]["simulated_states"])
    np.testing.assert_array_equal(runs[0], runs[1])
    env.reset(seed=5)
    other = env.step(straight_trajectory(3.0))[4]["simulated_states"]
    assert not np.allclose(other, runs[0])


# --- malformed actions ---------------------------------------------------------------------------


@pytest.mark.parametrize("action", [np.zeros((7, 3)), np.zeros((8, 2)), np.zeros(24), np.zeros((1, 8, 3)), 3.0])
def test_wrong_shape_raises_naming_expected_shape(straight_scene, action):
    env = make_env(straight_scene)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"\(8, 3\)"):
        env.step(action)
    # A programming error does not consume the episode: a correct action still works.
    _, _, terminated, _, info = env.step(straight_trajectory(5.0))
    assert terminated and info["valid"]


@pytest.mark.parametrize("action", ["forward", [["a", "b", "c"]] * 8, {"x": 1}, object()])
def test_non_numeric_action_raises(straight_scene, action):
    env = make_env(straight_scene)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"\(8, 3\)"):
        env.step(action)


def test_invalid_action_error_is_a_value_error():
    assert issubclass(InvalidActionError, ValueError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_trajectory_fails_the_episode(straight_scene, bad):
    env = make_env(straight_scene)
    obs0, _ = env.reset(seed=0)
    action = straight_trajectory(5.0)
    action[3, 1] = bad
    obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated and reward == 0.0
    assert info["valid"] is False
    assert "non-finite" in info["failure_reason"]
    assert "simulated_states" not in info and "trajectory_global" not in info
    assert obs_equal(obs, obs0)
    with pytest.raises(RuntimeError):
        env.step(straight_trajectory(5.0))


def test_step_after_end_and_before_reset_raise(straight_scene):
    env = make_env(straight_scene)
    with pytest.raises(RuntimeError):
        env.step(straight_trajectory(5.0))
    env.reset(seed=0)
    env.step(straight_trajectory(5.0))
    with pytest.raises(RuntimeError):
        env.step(straight_trajectory(5.0))
    env.reset(seed=0)  # a reset starts a new episode
    assert env.step(straight_trajectory(5.0))[4]["valid"]


# --- scene sources -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    scenes = [fresh_scene("straight", 0), fresh_scene("curve", 1), fresh_scene("merge", 2)]
    for name, scene in zip(["b.npz", "a.npz", "c.npz"], scenes):
        save_scene(scene, folder / name)
    (folder / "notes.txt").write_text("not a scene")
    # Sorted file order: a (curve 1), b (straight 0), c (merge 2).
    return folder, [scenes[1].token, scenes[0].token, scenes[2].token]


def test_directory_source_with_scene_index(scene_dir):
    folder, tokens = scene_dir
    for kind in (folder, str(folder)):
        env = NavsimSceneEnv(scenes=kind, cameras=False)
        assert len(env.source) == 3
        for i, token in enumerate(tokens):
            _, info = env.reset(seed=0, options={"scene_index": i})
            assert info["token"] == token
    env = NavsimSceneEnv(scenes=folder, cameras=False)
    drawn = {env.reset(seed=seed)[1]["token"] for seed in range(12)}
    assert drawn <= set(tokens) and len(drawn) > 1
    for outside in (3, -1):
        with pytest.raises(IndexError, match=f"scene_index {outside} is outside 0..2"):
            env.reset(options={"scene_index": outside})


def test_list_source_mixes_scenes_and_paths(scene_dir):
    folder, tokens = scene_dir
    scene = fresh_scene("intersection", 4)
    env = NavsimSceneEnv(scenes=[scene, folder / "c.npz", str(folder / "a.npz")], cameras=False)
    expected = [scene.token, tokens[2], tokens[0]]
    for i, token in enumerate(expected):
        _, info = env.reset(options={"scene_index": i})
        assert info["token"] == token
    other = fresh_scene("curve", 9)
    _, info = env.reset(options={"scene": other})
    assert info["token"] == other.token


def test_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NavsimSceneEnv(scenes=tmp_path / "missing", cameras=False)
    with pytest.raises(FileNotFoundError, match=r"\*\.npz"):
        NavsimSceneEnv(scenes=tmp_path, cameras=False)
    with pytest.raises(ValueError, match="empty"):
        NavsimSceneEnv(scenes=[], cameras=False)
    with pytest.raises(ValueError, match="roundabout"):
        NavsimSceneEnv(families=["roundabout"], cameras=False)
    with pytest.raises(ValueError):
        NavsimSceneEnv(render_mode="human")


def test_family_filter():
    env = NavsimSceneEnv(families=["merge"], cameras=False)
    assert {env.reset(seed=s)[1]["family"] for s in range(4)} == {"merge"}


# --- render -----------------------------------------------------------------------------------------


def test_render_rgb_array_before_and_after_step(straight_scene):
    env = make_env(straight_scene, render_mode="rgb_array")
    assert env.render() is None  # nothing to show before the first reset
    env.reset(seed=0)
    before = env.render()
    assert before.ndim == 3 and before.shape[2] == 3 and before.dtype == np.uint8
    env.step(straight_trajectory(8.0))
    after = env.render()
    assert after.shape == before.shape and after.dtype == np.uint8
    assert not np.array_equal(before, after), "planned / executed paths are not drawn after the step"


def test_render_after_a_step_draws_the_executed_path_along_the_simulated_states(straight_scene):
    """The BEV half of the frame shows the tracked (simulated) ego path in the executed colour, drawn over the plan:
    no such pixels before the step, and after it they all lie on the simulated states' path."""
    env = make_env(straight_scene, render_mode="rgb_array")
    env.reset(seed=0)
    bev_config = env.frames.bev
    assert not (env.render()[:, -bev_config.width:] == EXECUTED_COLOUR).all(-1).any()
    executed = env.step(straight_trajectory(8.0))[4]["simulated_states"]
    bev = env.render()[:, -bev_config.width:]
    rows, cols = np.nonzero((bev == EXECUTED_COLOUR).all(-1))
    assert len(rows) > 100
    dense = np.concatenate([np.linspace(a, b, 20) for a, b in zip(executed[:-1, :2], executed[1:, :2])])
    path = bev_pixels(dense, straight_scene.initial_ego_state, bev_config)  # (col, row)
    gap = np.linalg.norm(np.stack([cols, rows], -1)[:, None] - path[None], axis=-1).min(1)
    assert gap.max() < 2.0


def test_render_none_mode_returns_none(straight_scene):
    env = make_env(straight_scene)
    env.reset(seed=0)
    assert env.render() is None
    env.step(straight_trajectory(8.0))
    assert env.render() is None


def test_the_metric_cache_and_the_agent_input_hold_navsims_float32_ego_dynamics():
    """NAVSIM's EgoStatus stores velocity and acceleration as float32: its metric cache starts the simulation from
    those values (a 2e-7 m/s difference moved simulated states by 2e-7 m and flipped a TTC knife edge)."""
    from sim.agent_input import build_agent_input

    state = np.zeros(11)
    state[:7] = [2005.123456789, 12284.987654321, 0.0463936, 7.468912345678, 0.1234567891, -0.333333333333, 0.2]
    state[7:] = 1.0
    logged = logged_ego_state(state)
    np.testing.assert_array_equal(logged[:3], state[:3])  # the pose stays float64, as NAVSIM's
    np.testing.assert_array_equal(logged[3:7], state[3:7].astype(np.float32))
    assert logged[3] != state[3] and (logged[7:] == 0).all()
    agent_input = build_agent_input(np.tile(state, (4, 1)), 1)
    np.testing.assert_array_equal(agent_input.ego_velocity[-1], state[3:5].astype(np.float32))
    np.testing.assert_array_equal(agent_input.ego_acceleration[-1], state[5:7].astype(np.float32))


def test_epdms_applies_navsims_human_filter_by_default():
    """merge seed 5: the logged future itself breaks a rule EPDMS filters by the human's result. NAVSIM's default
    (the filter on) forgives it, as the env does unless told otherwise."""
    scene = fresh_scene("merge", 5)
    rewards = {}
    for name, kwargs in {"default": {}, "off": {"human_filter": False}}.items():
        env = make_env(scene, pdm_version="v2.2", **kwargs)
        env.reset(seed=0)
        rewards[name] = env.step(logged_future_trajectory(scene))[1]
    assert rewards["default"] > 0.9 and rewards["off"] == 0.0
