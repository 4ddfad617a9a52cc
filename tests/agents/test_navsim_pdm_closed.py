"""NAVSIM's PDM-Closed (the EP reference): path sampling, route correction, on-route lanes, IDM unroll, human filter.

Per-token agreement with NAVSIM's own code is the opt-in reference suite (tests/reference); these tests pin the
behaviours that suite found and that the lane-following planner does differently.
"""
from dataclasses import replace

import numpy as np
import pytest
import shapely

from agents.navsim_path import NavsimPath, discrete_path
from agents.navsim_pdm_closed import NavsimPDMClosedConfig, NavsimPDMClosedPlanner
from agents.navsim_route import centerline_lanes, correct_route, roadblock_graph, route_lanes, starting_lane
from agents.pdm_closed import PDMClosedAgent, plan_to_local
from agents.pdm_proposals import plan_proposals
from scenarios.generator import generate_scene
from sim.envs.navsim_env import NavsimSceneEnv
from sim.envs.scene_scoring import SceneScorer
from sim.route import route_lane_groups
from sim.state import AgentSlice, AgentType, TrajectorySampling
from sim.world_view import WorldView
from tests.scene_tracks import with_standing_car


def test_path_keeps_the_vertex_two_lanes_share_and_clips_distances():
    first = discrete_path(np.array([[0.0, 0.0], [10.0, 0.0]]))
    second = discrete_path(np.array([[10.0, 0.0], [10.0, 10.0]]))
    path = NavsimPath(np.concatenate([first, second]))
    assert path.length == pytest.approx(20.0) and len(path.progress) == 4  # the shared vertex stays, twice
    poses = path.interpolate([-1.0, 5.0, 10.0, 15.0, 99.0])
    assert np.isfinite(poses).all()
    np.testing.assert_allclose(poses[0], [1e-5, 0.0, 0.0], atol=1e-12)  # clipped to 1e-5, not 0
    np.testing.assert_allclose(poses[2, :2], [10.0, 0.0])
    assert poses[2, 2] == pytest.approx(0.0)  # at the joint: the first lane's last heading
    np.testing.assert_allclose(poses[3], [10.0, 5.0, np.pi / 2])
    np.testing.assert_allclose(poses[4, :2], [10.0, 10.0])


def test_route_correction_splices_in_the_roadblock_the_ego_starts_on():
    scene = generate_scene("intersection", 5)
    graph = roadblock_graph(scene.map)
    full = route_lane_groups(scene.map, scene.route)
    ego = scene.initial_ego_state[:3]
    assert correct_route(graph, ego, full) == full
    assert correct_route(graph, ego, full[1:]) == full  # started off-route: found backwards from the route
    gap = [full[0], full[2]]  # the junction's roadblock connector left out: filled in
    assert correct_route(graph, ego, gap) == full


def test_on_route_lanes_are_every_lane_of_the_route_roadblocks():
    scene = generate_scene("merge", 5)
    graph = roadblock_graph(scene.map)
    lanes = route_lanes(graph, route_lane_groups(scene.map, scene.route))
    assert set(scene.route) < set(lanes)
    assert {"main_c_f0", "main_a_f0__main_c_f0"} <= set(lanes)  # lanes beside the ego's, in its roadblocks


def _straight_world(objects: AgentSlice | None, speed: float = 10.0) -> WorldView:
    scene = generate_scene("straight", 5)
    ego = np.zeros(11)
    lane = scene.map.lane(scene.route[0])
    ego[:2] = lane.centerline[0] + np.array([20.0, 0.0])
    ego[3] = speed
    return WorldView(scene.map, list(scene.route), ego, objects, None, 0.5, [], np.zeros(0, np.int8), ego[None], 0)


def test_first_idm_step_brakes_against_a_lead_at_progress_zero():
    """NAVSIM updates the lead every second step and starts from a zero lead array: the first step brakes hard."""
    config = NavsimPDMClosedConfig()
    plan = NavsimPDMClosedPlanner(config).plan_view(_straight_world(None))
    step = np.diff(plan.poses[:3, 0])
    assert step[0] == pytest.approx(1.0)  # v0 * dt
    assert step[1] == pytest.approx((10.0 - config.decel_max * 0.1) * 0.1)  # braked at the decel limit


def test_proposals_stop_behind_a_stopped_car_on_the_centerline():
    world = _straight_world(None)
    x, y = world.ego_state[0] + 30.0, world.ego_state[1]
    car = AgentSlice(*(np.array([v]) for v in (x, y, 0.0, 0.0, 0.0)), np.array([True]), np.array([4.5]),
                     np.array([2.0]), np.array([1.5]), np.array([int(AgentType.VEHICLE)], np.int8), ["car"])
    plan = NavsimPDMClosedPlanner().plan_view(replace(world, agents=car))
    front = plan.poses[-1, 0] + 4.049  # rear axle to front bumper
    assert front < x - 2.25 + 0.5  # stopped behind the car's rear
    assert plan.poses[-1, 0] > world.ego_state[0]


def test_pdm_closed_agent_drives_the_reference_the_scorer_normalises_by():
    scene = generate_scene("t_junction", 3)
    env = NavsimSceneEnv(scenes=[scene], cameras=False, privileged=True)
    _, info = env.reset(seed=0)
    trajectory = PDMClosedAgent().compute_trajectory(info["agent_input"], info["world"])
    reference = SceneScorer(scene).pdm_closed.poses
    np.testing.assert_array_equal(trajectory.poses, plan_to_local(reference, info["world"].ego_state, TrajectorySampling()))


def test_v2_human_filter_is_on_by_default_and_can_be_switched_off():
    """A car stopped on the logged path 2 s ahead: the logged human runs into it too (NC 0), so NAVSIM's filter
    counts the agent's collision column as met; off, the agent's collision stands."""
    scene = _with_stopped_car_on_the_logged_path(generate_scene("straight", 3), seconds_ahead=2.0)
    default, unfiltered = SceneScorer(scene, "v2.2"), SceneScorer(scene, "v2.2", human_filter=False)
    poses = _constant_velocity(scene)
    rows, score = default.score(poses, 0.5)
    rows_off, score_off = unfiltered.score(poses, 0.5)
    assert rows_off.no_at_fault_collisions[0] == 0.0 and score_off == 0.0
    assert rows.no_at_fault_collisions[0] == 1.0 and score > 0.0
    assert SceneScorer(scene, "v1.1").human_poses is None  # v1.1 has no filter


def _with_stopped_car_on_the_logged_path(scene, seconds_ahead: float):
    step = scene.current_index + int(round(seconds_ahead / 0.1))
    x, y, heading = scene.ego_log[step, :3]
    centre = np.array([x, y]) + 1.461 * np.array([np.cos(heading), np.sin(heading)])
    return with_standing_car(scene, centre[0], centre[1], heading, "stopped_car")


def _constant_velocity(scene) -> np.ndarray:
    speed = abs(scene.initial_ego_state[3])
    return np.stack([(np.arange(8) + 1) * 0.5 * speed, np.zeros(8), np.zeros(8)], 1)


def test_an_ego_off_every_roadblock_starts_from_the_nearest_one():
    """No roadblock within the 1 m candidate box of the rear axle: the candidates are the nearest roadblock and the
    nearest connector (NAVSIM's fallback), and the route is corrected from them."""
    scene = generate_scene("intersection", 5)
    graph = roadblock_graph(scene.map)
    full = route_lane_groups(scene.map, scene.route)
    ego = scene.initial_ego_state[:3] + np.array([0.0, -10.0, 0.0])  # 10 m right of the start lane, beside the road
    assert graph.near(ego[:2], 1.0) == []
    distance = {b.id: b.polygon.distance(shapely.Point(ego[:2])) for b in graph.blocks.values()}
    roadblock, connector = graph.nearest(ego[:2], False), graph.nearest(ego[:2], True)
    assert roadblock == full[0] and not graph.blocks[roadblock].is_connector
    assert graph.blocks[connector].is_connector
    assert distance[connector] == min(d for b, d in distance.items() if graph.blocks[b].is_connector)
    assert correct_route(graph, ego, full) == full


def test_an_idm_step_follows_navsims_idm_policy_worked_by_hand():
    """One unroll step between lead searches (odd t keeps the lead): ego 12 m/s at 5 m, lead 6 m/s at 40 m with
    a 2 m rear, target 15 m/s. s* = 1 + 12 x 1.5 + 12 (12 - 6) / (2 sqrt(1.5 x 3)) = 35.970; gap 40 - 5 - 2 = 33;
    a = 1.5 (1 - (12/15)^10 - (35.970/33)^2) = 1.5 (1 - 0.1074 - 1.1881) = -0.4433; then x += 0.1 v and v += 0.1 a."""
    from agents.navsim_pdm_closed import _ProposalGenerator

    config = NavsimPDMClosedConfig()
    path = NavsimPath(discrete_path(np.array([[0.0, 0.0], [100.0, 0.0]])))
    generator = _ProposalGenerator([path], np.array([15.0]), None, np.zeros(11), config)
    generator.idm[0, 2] = [5.0, 12.0]
    generator.lead[0, 2] = [40.0, 6.0, 2.0]
    generator._step(0, [0], 3)
    s_star = 1.0 + 12.0 * 1.5 + 12.0 * 6.0 / (2.0 * np.sqrt(4.5))
    acc = 1.5 * (1.0 - 0.8 ** 10 - (s_star / 33.0) ** 2)
    assert acc == pytest.approx(-0.4433, abs=1e-4)
    assert generator.idm[0, 3].tolist() == pytest.approx([5.0 + 1.2, 12.0 + 0.1 * acc])
    np.testing.assert_allclose(generator.poses[0, 3], [6.2, 0.0, 0.0], atol=1e-9)


def test_a_substring_from_a_vertexs_own_arc_length_starts_at_that_vertex():
    """NAVSIM's PDMPath.substring keeps the vertices with start <= progress <= end: a substring from 0 begins at the
    path's first vertex, and one from 10 m at the vertex there."""
    path = NavsimPath(discrete_path(np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]])))
    assert list(path.substring(0.0, 25.0).coords) == [(0.0, 0.0), (10.0, 0.0), (20.0, 0.0)]
    assert list(path.substring(10.0, 30.0).coords) == [(10.0, 0.0), (20.0, 0.0), (30.0, 0.0)]


def test_the_centerline_lanes_are_the_successor_chain_from_the_start_lane_through_the_turn():
    """Intersection 5: from arm 2's lane 0 the route turns onto arm 3; the centerline is the lane, the connector of
    the turn and the lane it ends on, each the successor of the one before."""
    scene = generate_scene("intersection", 5)
    graph = roadblock_graph(scene.map)
    full = route_lane_groups(scene.map, scene.route)
    lanes = route_lanes(graph, full)
    chain = centerline_lanes(graph, full, lanes, "arm2_b0")
    assert chain == ["arm2_b0", "arm2_b0__arm3_f1", "arm3_f1"]
    assert all(b in graph.successors(a) for a, b in zip(chain, chain[1:]))


def test_an_ego_on_no_route_lane_plans_from_the_route_lane_nearest_its_footprint():
    scene = generate_scene("intersection", 5)
    graph = roadblock_graph(scene.map)
    lanes = route_lanes(graph, route_lane_groups(scene.map, scene.route))
    centre = scene.initial_ego_state[:2] + np.array([0.0, -10.0])  # beside the road, on no lane
    footprint = shapely.Point(centre).buffer(1.0)
    road_map = scene.map
    assert not any(road_map.lane_polygons[road_map.lane_index[lane]].contains(shapely.Point(centre)) for lane in lanes)
    nearest = min(lanes, key=lambda lane: road_map.lane_polygons[road_map.lane_index[lane]].distance(footprint))
    assert starting_lane(graph, lanes, [], scene.initial_ego_state[:3], footprint, centre) == nearest


def test_proposals_of_an_ego_at_rest_start_from_rest():
    """IDM from 0 m/s with at most 1.5 m/s² over 0.1 s steps: after two steps the speed is at most 0.3 m/s, so the
    proposals move at most 0.03 m in their second step (a start at 1 m/s would move 0.1 m)."""
    scene = generate_scene("straight", 0)
    ego = np.array(scene.initial_ego_state, dtype=float)
    ego[3] = 0.0
    poses, _ = plan_proposals(scene.map, scene.route, ego, None, [], None)
    assert np.linalg.norm(poses[:, 2, :2] - poses[:, 1, :2], axis=-1).max() <= 0.03 + 1e-9
