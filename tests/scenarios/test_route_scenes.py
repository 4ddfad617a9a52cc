"""Closed-loop scenes from Leaderboard routes on CARLA towns: start, traffic, lights, route span, a full drive."""
from __future__ import annotations

import numpy as np
import pytest

from metrics.leaderboard.criteria import route_length
from scenarios.leaderboard import densify, read_routes, town_for
from scenarios.route_scenes import EGO_CLEARANCE_M, route_scene
from scenarios.scene import load_scene, save_scene
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.scene import STEP_S
from tests.conftest import require_fixture


@pytest.fixture(scope="module")
def town01_route():
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns (pip install 'w0sim[carla]')")
    route = read_routes(require_fixture("carla/routes/routes_devtest.xml"))[0]
    town = town_for(str(require_fixture("carla/maps/Town01.xodr").parent), route.town)
    return route, town


def test_the_ego_stands_at_the_first_waypoint_among_seeded_traffic(town01_route):
    route, town = town01_route
    scene = route_scene(route, town, seed=0)
    assert scene.token == "RouteScenario_0" and scene.metadata["town"] == "Town01"
    ego = scene.initial_ego_state
    assert np.linalg.norm(ego[:2] - route.waypoints[0, :2]) < 2.0 and ego[3] == 0.0
    now = scene.agents.at(scene.current_index)
    assert now.valid.sum() >= 10
    assert np.hypot(now.x - ego[0], now.y - ego[1]).min() > EGO_CLEARANCE_M - 1e-6
    # Town01's signals run the lights of the route's junctions.
    assert scene.light_ids and any(scene.map.lane(lane).traffic_light in scene.light_ids for lane in scene.route)
    again, other = route_scene(route, town, seed=0), route_scene(route, town, seed=1)
    np.testing.assert_array_equal(again.agents.x, scene.agents.x)
    assert other.agents.x.shape != scene.agents.x.shape or not np.array_equal(other.agents.x, scene.agents.x)


def test_spawned_traffic_has_driven_its_history_at_its_own_constant_velocity(town01_route):
    """Before the start each vehicle moved at its logged speed along its heading: each 0.1 s step of its past is
    v * dt along (cos h, sin h), ending where it stands now."""
    route, town = town01_route
    agents = route_scene(route, town, seed=0).agents
    assert agents.valid.all() and agents.x.shape[0] > 1
    speed = np.hypot(agents.vx, agents.vy)
    assert (speed > 0.0).all()
    np.testing.assert_allclose(agents.vx, speed * np.cos(agents.heading), rtol=0, atol=1e-9)
    np.testing.assert_allclose(agents.vy, speed * np.sin(agents.heading), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.diff(agents.x, axis=0), agents.vx[1:] * STEP_S, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.diff(agents.y, axis=0), agents.vy[1:] * STEP_S, rtol=0, atol=1e-9)
    # Not all lanes near the route run east-west: both coordinates of the past are checked.
    assert np.abs(agents.vy).max() > 1.0 and np.abs(agents.vx).max() > 1.0


def test_a_route_scene_survives_its_file_format(town01_route, tmp_path):
    route, town = town01_route
    scene = route_scene(route, town, seed=0)
    loaded = load_scene(save_scene(scene, tmp_path / "route.npz"))
    assert loaded.route == scene.route
    np.testing.assert_array_equal(loaded.route_points, scene.route_points)
    np.testing.assert_array_equal(loaded.agents.x, scene.agents.x)


def test_the_episode_scores_the_dense_route_between_first_and_last_waypoint(town01_route):
    route, town = town01_route
    dense = densify(town, route)
    env = ClosedLoopEnv(scenes=[route_scene(route, town, seed=0)], cameras=False)
    _, info = env.reset(seed=0)
    assert info["route_length_m"] == pytest.approx(dense.length_m, abs=1.0)
    assert env.leaderboard.route_length == route_length(dense.points)  # the record's length, measured as the LB does


def test_past_the_log_the_driving_command_follows_the_route(town01_route):
    """The route starts northwards and turns left (west) after ~30 m, when the 1.5 s log is long over."""
    from agents.pdm_closed import PDMClosedAgent
    from sim.scene import DRIVING_COMMANDS

    route, town = town01_route
    scene = route_scene(route, town, seed=0)
    env = ClosedLoopEnv(scenes=[scene], cameras=False, privileged=True)
    _, info = env.reset(seed=0)
    agent = PDMClosedAgent()
    commands = []
    for _ in range(24):  # 12 s
        obs, _, terminated, truncated, info = env.step(agent.compute_trajectory(info["agent_input"], info["world"]).poses)
        commands.append(DRIVING_COMMANDS[int(np.argmax(obs["driving_command"]))])
    assert env.sim.step_index > scene.num_steps and not (terminated or truncated)
    assert commands[0] == "straight" and "left" in commands and "right" not in commands
