"""PDM-Closed's IDM proposals: path offsets, speed fractions, leads and red lights."""
import numpy as np

from agents.pdm_proposals import ProposalConfig, idm_proposals
from scenarios.generator import generate_scene
from sim.geometry import global_to_local
from sim.route import route_from_ego, route_index_from_ego
from sim.state import AgentSlice, AgentType, TrafficLightStatus


def free_straight_scene():
    scene = generate_scene("straight", 0)
    return scene, scene.initial_ego_state


def one_agent(x, y, heading, speed=0.0):
    return AgentSlice(x=np.array([x]), y=np.array([y]), heading=np.array([heading]), vx=np.array([speed * np.cos(heading)]),
                      vy=np.array([speed * np.sin(heading)]), valid=np.array([True]), length=np.array([4.6]),
                      width=np.array([1.9]), height=np.array([1.6]), agent_type=np.array([AgentType.VEHICLE]), track_ids=["lead"])


def test_fifteen_proposals_offset_major_with_faster_fractions_going_further():
    scene, ego = free_straight_scene()
    poses = idm_proposals(scene.map, scene.route, ego, None, scene.light_ids, None)
    assert poses.shape == (15, 51, 3) and np.isfinite(poses).all()
    np.testing.assert_allclose(poses[:, 0], np.broadcast_to(ego[:3], (15, 3)))
    local = global_to_local(poses[:, -1], ego[:3])
    # Within each lateral offset, distance grows with the speed fraction.
    for row in range(3):
        assert np.all(np.diff(local[row * 5 : row * 5 + 5, 0]) > 0)
    # The centerline first, then the paths 1 m to either side (straight road, ego on its lane centre).
    np.testing.assert_allclose(local[[0, 5, 10], 1] - local[0, 1], [0.0, -1.0, 1.0], atol=0.05)


def test_proposals_stop_behind_a_stopped_vehicle():
    scene, ego = free_straight_scene()
    # 50 m ahead: enough to stop from ~12.6 m/s with PDM's 3 m/s^2 braking limit.
    ahead = ego[:2] + 50.0 * np.array([np.cos(ego[2]), np.sin(ego[2])])
    config = ProposalConfig(horizon_steps=120)
    poses = idm_proposals(scene.map, scene.route, ego, one_agent(*ahead, ego[2]), scene.light_ids, None, config)
    front = global_to_local(poses[5:10, -1], ego[:3])[:, 0] + config.vehicle.front_length
    assert np.all(front < 50.0 - 2.3) and np.all(front > 50.0 - 2.3 - 6.0)


def test_proposals_stop_at_a_red_light_on_the_route():
    scene = generate_scene("intersection", 3)  # the ego approaches a signalised junction
    ego = scene.initial_ego_state
    red = np.full(len(scene.light_ids), TrafficLightStatus.RED, dtype=np.int8)
    green = np.full(len(scene.light_ids), TrafficLightStatus.GREEN, dtype=np.int8)
    config = ProposalConfig(horizon_steps=150)
    stopped = idm_proposals(scene.map, scene.route, ego, None, scene.light_ids, red, config)
    moving = idm_proposals(scene.map, scene.route, ego, None, scene.light_ids, green, config)
    entry = scene.map.lane(scene.route[1]).centerline[0]  # the junction connector starts at the stop line
    line_x = global_to_local(np.array([[*entry, ego[2]]]), ego[:3])[0, 0]
    assert global_to_local(stopped[9, -1:], ego[:3])[0, 0] + config.vehicle.front_length < line_x
    assert global_to_local(moving[9, -1:], ego[:3])[0, 0] > line_x + 10.0


def test_a_vehicle_ahead_queues_at_the_red_light_so_the_proposals_stop_behind_it():
    scene = generate_scene("intersection", 3)
    ego = scene.initial_ego_state
    red = np.full(len(scene.light_ids), TrafficLightStatus.RED, dtype=np.int8)
    entry = scene.map.lane(scene.route[1]).centerline[0]
    line_x = global_to_local(np.array([[*entry, ego[2]]]), ego[:3])[0, 0]
    # A car 12 m ahead in the ego's lane, still driving at 8 m/s towards the red line.
    lane = scene.map.lane(scene.route[0])
    s = scene.map.project([scene.map.lane_index[lane.id]], ego[None, :2])[0] + 12.0
    point = _point_at(lane.centerline, s)
    car = one_agent(point[0], point[1], ego[2], speed=8.0)
    config = ProposalConfig(horizon_steps=150)
    poses = idm_proposals(scene.map, scene.route, ego, car, scene.light_ids, red, config)
    front = global_to_local(poses[5:10, -1], ego[:3])[:, 0] + config.vehicle.front_length
    # The car waits at the line, so the ego's front stays a car length (4.6 m) behind it.
    assert np.all(front < line_x - 4.6)


def _point_at(line, s):
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))])
    return np.array([np.interp(s, cum, line[:, 0]), np.interp(s, cum, line[:, 1])])


def test_a_route_that_comes_back_past_the_ego_is_planned_one_pass_at_a_time():
    scene, ego = free_straight_scene()
    here = scene.route[0]
    others = [lane.id for lane in scene.map.lanes if lane.id not in scene.route]
    looped = [here, *others[:2], here, others[2]]  # the route passes the ego's lane again later
    assert route_index_from_ego(scene.map, looped, ego) == 0  # the first pass, not the second
    assert route_from_ego(scene.map, looped, ego) == looped[:3]  # planned up to the second pass
    assert route_index_from_ego(scene.map, looped[1:], ego) == 2  # once past the first pass, the second
