"""NavsimScene-v0 rewards: PDMS / EPDMS against the scene's PDM-Closed reference, failed rows, baselines."""
import numpy as np
import pytest

from agents.constant_velocity import ConstantVelocityAgent
from agents.human import HumanAgent
from agents.pdm_closed import PDMClosedAgent
from metrics.pdm_agent import score_agent
from scenarios.generator import generate_scene
from sim.envs.navsim_env import NavsimSceneEnv


@pytest.fixture(scope="module")
def straight_scene():
    return generate_scene("straight", 5000)


@pytest.mark.parametrize("version", ["v1.1", "v2.2"])
def test_reward_is_the_pdm_score_of_the_trajectory(straight_scene, version):
    env = NavsimSceneEnv(scenes=[straight_scene], cameras=False, pdm_version=version, privileged=True)
    _, info = env.reset(options={"scene_index": 0})
    trajectory = HumanAgent().compute_trajectory(info["agent_input"], info["world"])
    _, reward, terminated, _, step_info = env.step(trajectory.poses)
    assert terminated and 0.9 < reward <= 1.0
    scorer = env._scorer
    rows = score_agent(trajectory.poses, 0.5, scorer.reference, scorer.context, version)
    assert step_info["scores"]["score"] == pytest.approx(reward)
    assert step_info["scores"]["no_at_fault_collisions"] == rows.no_at_fault_collisions[0] == 1.0
    np.testing.assert_array_equal(step_info["simulated_states"], rows.states[0])


def test_leaving_the_road_scores_zero_and_nan_is_a_failed_row(straight_scene):
    env = NavsimSceneEnv(scenes=[straight_scene], cameras=False)
    _, info = env.reset(options={"scene_index": 0})
    off_road = np.stack([np.arange(1, 9) * 4.0, -np.arange(1, 9) * 3.0, np.full(8, -0.6)], -1)  # veer right, off the road
    _, reward, _, _, step_info = env.step(off_road)
    assert reward == 0.0 and step_info["scores"]["drivable_area_compliance"] == 0.0
    env.reset(options={"scene_index": 0})
    bad = np.full((8, 3), np.nan)
    _, reward, terminated, _, step_info = env.step(bad)
    assert reward == 0.0 and terminated and not step_info["valid"] and "non-finite" in step_info["failure_reason"]


def test_pdm_closed_and_baselines_on_a_free_straight_road(straight_scene):
    env = NavsimSceneEnv(scenes=[straight_scene], cameras=False, privileged=True)
    rewards = {}
    for agent in (ConstantVelocityAgent(), HumanAgent(), PDMClosedAgent()):
        _, info = env.reset(options={"scene_index": 0})
        trajectory = agent.compute_trajectory(info["agent_input"], info["world"])
        assert trajectory.poses.shape == (8, 3) and np.isfinite(trajectory.poses).all()
        rewards[agent.name()] = env.step(trajectory.poses)[1]
    assert all(0.0 <= r <= 1.0 for r in rewards.values())


def test_pdm_closed_drives_a_free_road_cleanly_against_a_reference_that_really_moves(straight_scene):
    """PDM-Closed is also the scene's progress reference, so its own progress is 1 by construction; what can fail is
    everything else: no collision, on the road, no TTC violation, comfortable, and a reference that covers real
    distance (an ego told to stand still, which the tracker brakes from its current speed, then makes a fraction of
the reference's progress; a degenerate reference would give it full progress)."""
    env = NavsimSceneEnv(scenes=[straight_scene], cameras=False, privileged=True, pdm_version="v1.1")
    _, info = env.reset(options={"scene_index": 0})
    trajectory = PDMClosedAgent().compute_trajectory(info["agent_input"], info["world"])
    scores = env.step(trajectory.poses)[4]["scores"]
    for metric in ("no_at_fault_collisions", "drivable_area_compliance", "time_to_collision_within_bound", "comfort"):
        assert scores[metric] == 1.0, metric
    assert np.hypot(*trajectory.poses[-1, :2]) > 20.0  # metres in the 4 s horizon
    env.reset(options={"scene_index": 0})
    standing = np.zeros((8, 3))
    _, reward, _, _, step_info = env.step(standing)
    assert step_info["scores"]["ego_progress"] < 0.5 and reward < 0.8


def test_unknown_pdm_version_is_rejected():
    with pytest.raises(ValueError, match="pdm_version must be None or one of"):
        NavsimSceneEnv(cameras=False, pdm_version="v3")


def test_the_v1_1_reward_is_navsims_pdms_formula_of_its_subscores():
    """PDMS = NC x DAC x (5 EP + 5 TTC + 2 C) / 12 (NAVSIM v1.1), computed here from the sub-scores the env reports,
    for constant velocity on generated scenes where the weighted terms are not all 1 (a reward made of the
    multiplicative metrics alone, or with a weight changed, fails this)."""
    scenes = [generate_scene(family, seed) for family in ("straight", "curve", "merge") for seed in (0, 1, 2)]
    env = NavsimSceneEnv(scenes=scenes, cameras=False, pdm_version="v1.1")
    partial = 0
    for index in range(len(scenes)):
        _, info = env.reset(options={"scene_index": index})
        trajectory = ConstantVelocityAgent().compute_trajectory(info["agent_input"])
        _, reward, _, _, step_info = env.step(trajectory.poses)
        s = step_info["scores"]
        weighted = (5 * s["ego_progress"] + 5 * s["time_to_collision_within_bound"] + 2 * s["comfort"]) / 12
        expected = s["no_at_fault_collisions"] * s["drivable_area_compliance"] * weighted
        assert reward == pytest.approx(expected, abs=1e-12), f"scene {index}: {s}"
        partial += 0.0 < reward and weighted < 1.0
    assert partial >= 2  # the weighted part mattered on some scenes
