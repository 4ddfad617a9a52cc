"""Baseline agents: constant velocity and human log replay, on generated scenes and through the environment."""
import numpy as np
import pytest

from agents.constant_velocity import ConstantVelocityAgent
from agents.human import HumanAgent
from scenarios.generator import generate_scene
from sim.agent_input import build_agent_input, history_indices
from sim.envs.navsim_env import NavsimSceneEnv
from sim.geometry import local_to_global
from sim.state import TrajectorySampling
from sim.world_view import WorldView


def agent_input_of(scene):
    steps = history_indices(scene.current_index)
    return build_agent_input(scene.ego_log[steps], int(scene.driving_command[scene.current_index]))


def test_constant_velocity_goes_straight_at_the_current_speed():
    scene = generate_scene("straight", 4)
    trajectory = ConstantVelocityAgent().compute_trajectory(agent_input_of(scene))
    speed = np.hypot(*scene.initial_ego_state[3:5])
    np.testing.assert_allclose(trajectory.poses[:, 0], speed * 0.5 * np.arange(1, 9))
    assert not trajectory.poses[:, 1:].any()
    other = ConstantVelocityAgent(TrajectorySampling(num_poses=40, interval=0.1)).compute_trajectory(agent_input_of(scene))
    assert other.poses.shape == (40, 3) and other.poses[-1, 0] == pytest.approx(4.0 * speed)


def test_human_agent_replays_the_logged_future():
    scene = generate_scene("intersection", 2)
    trajectory = HumanAgent().compute_trajectory(agent_input_of(scene), WorldView.from_log(scene))
    logged = scene.ego_log[scene.current_index + 5 :: 5][:8, :3]
    np.testing.assert_allclose(local_to_global(trajectory.poses, scene.initial_ego_state[:3]), logged, atol=1e-9)
    with pytest.raises(ValueError, match="plans from the world view"):
        HumanAgent().compute_trajectory(agent_input_of(scene))


def test_human_agent_tracked_by_the_environment_stays_on_its_log():
    scene = generate_scene("curve", 6)
    env = NavsimSceneEnv(scenes=[scene], cameras=False, privileged=True)
    _, info = env.reset(options={"scene_index": 0})
    trajectory = HumanAgent().compute_trajectory(info["agent_input"], info["world"])
    _, _, _, _, step_info = env.step(trajectory.poses)
    simulated = step_info["simulated_states"][::5, :2]
    logged = scene.ego_log[scene.current_index :: 5][: len(simulated), :2]
    assert np.max(np.linalg.norm(simulated - logged, axis=1)) < 1.0


def test_the_human_replay_holds_the_last_logged_pose_past_the_end_of_the_log():
    """A log of 12 steps (10 Hz) read from step 0 at 0.5 s: the poses at steps 5 and 10, then step 11 (the last)
    for every later pose; the log's rows are told apart by their x."""
    from agents.human import logged_poses

    ego_log = np.zeros((12, 11))
    ego_log[:, 0] = np.arange(12) * 10.0
    poses = logged_poses(ego_log, 0, np.zeros(3), TrajectorySampling())
    assert poses[:, 0].tolist() == [50.0, 100.0] + [110.0] * 6


def test_the_human_replay_refuses_an_interval_off_the_logs_10_hz_steps():
    from agents.human import logged_poses

    with pytest.raises(ValueError) as refused:
        logged_poses(np.zeros((80, 11)), 0, np.zeros(3), TrajectorySampling(num_poses=8, interval=0.25))
    assert str(refused.value) == "HumanAgent needs an interval that is a multiple of 0.1 s, got 0.25"
