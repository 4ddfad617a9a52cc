"""Traffic behaviours: IDM following, red-light stops, merges, signal plans, walkers, log replay."""
import numpy as np
import pytest

from scenarios.generator.roads import MapBuilder, straight
from sim.state import AgentTracks, TrafficLightStatus
from sim.traffic import AgentPaths, CrosswalkWalkers, IDMTraffic, Obstacles, SignalPlan, attach_to_lanes, log_replay


def single_lane(length=400.0, light=False):
    builder = MapBuilder("lane")
    a = builder.add_road("a", straight(np.zeros(2), 0.0, length / 2), 1, 0, 15.0)
    b = builder.add_road("b", straight(np.array([length / 2 + 10, 0.0]), 0.0, length / 2), 1, 0, 15.0)
    builder.connect(a.forward[0], b.forward[0], "j", traffic_light="tl" if light else None)
    return builder.build(), [a.forward[0], f"{a.forward[0]}__{b.forward[0]}", b.forward[0]]


def make_traffic(road_map, chain, s, v, desired, light_ids=()):
    n = len(s)
    return IDMTraffic(road_map, AgentPaths.build(road_map, [chain] * n), s=np.array(s, float), v=np.array(v, float),
                      desired_speed=np.full(n, desired), length=np.full(n, 4.6), width=np.full(n, 1.9), light_ids=list(light_ids))


def test_follower_keeps_a_gap_behind_a_slow_leader():
    road_map, chain = single_lane()
    traffic = make_traffic(road_map, chain, [0.0, 40.0], [14.0, 3.0], 14.0)
    traffic.desired_speed[1] = 3.0
    min_gap = np.inf
    for _ in range(300):
        traffic.step(0.1)
        min_gap = min(min_gap, traffic.s[1] - traffic.s[0] - 4.6)
    assert min_gap > 2.0  # never closer than IDM's minimum gap
    assert abs(traffic.v[0] - 3.0) < 0.3  # and settles at the leader's speed


def test_a_step_given_accelerations_applies_them_instead_of_its_own():
    """The scene generator computes accelerations with the lights and walkers, records them, then steps with them."""
    road_map, chain = single_lane()
    traffic = make_traffic(road_map, chain, [0.0, 40.0], [10.0, 8.0], 14.0)
    applied = traffic.step(0.5, accelerations=np.array([-4.0, 2.0]))
    assert applied.tolist() == [-4.0, 2.0]
    assert traffic.v.tolist() == [8.0, 9.0]
    assert traffic.s.tolist() == pytest.approx([0.0 + 0.5 * (10.0 + 8.0) * 0.5, 40.0 + 0.5 * (8.0 + 9.0) * 0.5])


def test_idm_follows_the_published_model_step_by_step():
    """Treiber's IDM, a = a_max [1 - (v/v0)^4 - (s*/gap)^2] with s* = s0 + v T + v dv / (2 sqrt(a_max b)), constants
    s0 2 m, T 1.5 s, a_max 1.5, b 3, integrated by hand (speed clipped at 0, trapezoidal position) for a follower
    closing on a leader at a steady 5 m/s; the first acceleration is also worked out on paper."""
    road_map, chain = single_lane()
    traffic = make_traffic(road_map, chain, [0.0, 30.0], [10.0, 5.0], 14.0)
    traffic.desired_speed[1] = 5.0  # the leader is at its desired speed: it neither speeds up nor slows
    # gap 30 - 4.6 = 25.4; s* = 2 + 15 + 10 * 5 / (2 sqrt 4.5) = 28.785; a = 1.5 (1 - (10/14)^4 - (28.785/25.4)^2)
    assert traffic.accelerations(Obstacles.none(), None)[0] == pytest.approx(-0.8169, abs=1e-3)
    s, v, lead_s = 0.0, 10.0, 30.0
    for _ in range(60):
        traffic.step(0.1)
        gap = lead_s - s - 4.6
        s_star = 2.0 + 1.5 * v + v * (v - 5.0) / (2.0 * np.sqrt(1.5 * 3.0))
        a = 1.5 * (1.0 - (v / 14.0) ** 4 - (s_star / gap) ** 2)
        v_next = max(v + max(a, -8.0) * 0.1, 0.0)
        s, v, lead_s = s + 0.5 * (v + v_next) * 0.1, v_next, lead_s + 0.5
        assert traffic.s[0] == pytest.approx(s, abs=1e-9) and traffic.v[0] == pytest.approx(v, abs=1e-9)
        assert traffic.s[1] == pytest.approx(lead_s, abs=1e-9) and traffic.v[1] == 5.0


def test_free_agent_reaches_its_desired_speed():
    road_map, chain = single_lane()
    traffic = make_traffic(road_map, chain, [0.0], [0.0], 10.0)
    for _ in range(300):
        traffic.step(0.1)
    assert abs(traffic.v[0] - 10.0) < 0.2


def test_red_light_stops_the_agent_before_the_junction_and_green_releases_it():
    road_map, chain = single_lane(light=True)
    traffic = make_traffic(road_map, chain, [100.0], [10.0], 10.0, light_ids=["tl"])
    red = np.array([TrafficLightStatus.RED])
    for _ in range(200):
        traffic.step(0.1, light_status=red)
    stop_line = road_map.lane(chain[0]).length
    front = traffic.s[0] + 2.3
    assert traffic.v[0] < 0.1 and stop_line - 3.0 < front <= stop_line
    for _ in range(100):
        traffic.step(0.1, light_status=np.array([TrafficLightStatus.GREEN]))
    assert traffic.s[0] > stop_line + 10


def test_a_red_light_holds_the_agent_its_min_gap_before_a_stop_line_set_back_from_the_junction():
    """The stop line sits stop_line_setback (1 m) before the light's lane; IDM at rest keeps s0 (2 m) to it, so the
    agent's front settles 3 m before the junction entry."""
    road_map, chain = single_lane(light=True)
    traffic = make_traffic(road_map, chain, [100.0], [10.0], 10.0, light_ids=["tl"])
    for _ in range(300):
        traffic.step(0.1, light_status=np.array([TrafficLightStatus.RED]))
    entry = road_map.lane(chain[0]).length
    assert traffic.v[0] == pytest.approx(0.0, abs=1e-3)
    assert entry - (traffic.s[0] + 2.3) == pytest.approx(1.0 + 2.0, abs=0.05)


def test_agent_brakes_for_an_obstacle_in_its_corridor():
    road_map, chain = single_lane()
    traffic = make_traffic(road_map, chain, [0.0], [12.0], 12.0)
    x, y, _ = traffic.poses()
    cone = Obstacles(np.array([x[0] + 60.0]), np.array([y[0]]), np.zeros(1), np.zeros(1), np.array([0.5]), np.array([0.5]))
    for _ in range(200):
        traffic.step(0.1, cone)
    x, _, _ = traffic.poses()
    assert x[0] + 2.3 < cone.x[0] - 0.25 and traffic.v[0] < 0.1


@pytest.mark.parametrize("turned", [0.0, np.pi / 2])
def test_agent_stops_behind_a_static_obstacle_parked_along_or_across_its_lane(turned):
    """A 4.6 x 1.9 m box parked on the lane 70 m ahead (along it, or turned across it): the agent comes to rest
    behind the box's near face, at least IDM's 2 m minimum gap from it and not far back (within 8 m)."""
    road_map, chain = single_lane()
    paths = AgentPaths.build(road_map, [chain])
    x, y, heading = paths.pose_at(np.array([120.0]))
    parked = Obstacles(x, y, heading + turned, np.zeros(1), np.array([4.6]), np.array([1.9]))
    traffic = IDMTraffic(road_map, paths, s=np.array([50.0]), v=np.array([10.0]), desired_speed=np.array([10.0]),
                         length=np.full(1, 4.6), width=np.full(1, 1.9), static_obstacles=parked)
    for _ in range(300):
        traffic.step(0.1)
    near_face = 120.0 - (2.3 if turned == 0.0 else 0.95)
    assert traffic.v[0] == pytest.approx(0.0, abs=1e-3)
    assert 2.0 <= near_face - (traffic.s[0] + 2.3) <= 8.0


def merging_lanes(light_on_b: str | None = None):
    """Lanes "a" and "b" merge into "m" through connectors "a__m" and "b__m"."""
    builder = MapBuilder("merge")
    a = builder.add_lane("a", straight(np.array([0.0, 0.0]), 0.0, 100.0), 15.0, "a")
    b = builder.add_lane("b", straight(np.array([0.0, -10.0]), 0.3, 100.0), 15.0, "b")
    m = builder.add_lane("m", straight(np.array([130.0, 0.0]), 0.0, 200.0), 15.0, "m")
    builder.connect(a, m, "j")
    builder.connect(b, m, "j", traffic_light=light_on_b)
    return builder.build()


def test_merging_lanes_zip_instead_of_colliding():
    road_map = merging_lanes()
    chains = [["a", "a__m", "m"], ["b", "b__m", "m"]]
    traffic = IDMTraffic(road_map, AgentPaths.build(road_map, chains), s=np.array([50.0, 50.0]), v=np.array([10.0, 10.0]),
                         desired_speed=np.array([10.0, 10.0]), length=np.full(2, 4.6), width=np.full(2, 1.9))
    for _ in range(300):
        traffic.step(0.1)
        x, y, _ = traffic.poses()
        assert np.hypot(x[0] - x[1], y[0] - y[1]) > 4.6  # never overlap


def test_signal_plan_cycles_green_yellow_red_and_never_greens_two_phases():
    plan = SignalPlan(("a", "b"), (("a",), ("b",)), green_s=10, yellow_s=3, all_red_s=1)
    status = plan.status_at(np.arange(0, 28, 0.1))
    assert status[0].tolist() == [TrafficLightStatus.GREEN, TrafficLightStatus.RED]
    assert status[110].tolist() == [TrafficLightStatus.YELLOW, TrafficLightStatus.RED]
    assert status[135].tolist() == [TrafficLightStatus.RED, TrafficLightStatus.RED]
    assert status[150].tolist() == [TrafficLightStatus.RED, TrafficLightStatus.GREEN]
    assert not ((status == TrafficLightStatus.GREEN).sum(axis=1) > 1).any()
    assert SignalPlan.from_dict(plan.as_dict()) == plan
    # each state begins exactly at its time: yellow at 10 s, all red at 13 s, the next phase green at 14 s
    G, Y, R = TrafficLightStatus.GREEN, TrafficLightStatus.YELLOW, TrafficLightStatus.RED
    assert plan.status_at(np.array([10.0, 13.0, 14.0, 28.0])).tolist() == [[Y, R], [R, R], [R, G], [G, R]]


def test_walkers_wait_for_traffic_then_cross():
    walkers = CrosswalkWalkers(np.array([[0.0, -8.0]]), np.array([[0.0, 8.0]]), np.array([1.2]), np.array([0.0]))
    car = np.array([[-8.0, 0.0]])
    walkers.step(0.1, 1.0, car, np.array([10.0]))
    assert walkers.progress[0] == 0.0  # a car is near and moving
    for k in range(200):
        walkers.step(0.1, 1.0 + k * 0.1, np.zeros((0, 2)), np.zeros(0))
    x, y, _, speed = walkers.state()
    assert y[0] == 8.0 and speed[0] == 0.0


def test_log_replay_extends_at_constant_velocity():
    tracks = AgentTracks.empty(3, 1)
    tracks.x[:, 0] = [0.0, 1.0, 2.0]
    tracks.vx[:, 0] = 10.0
    tracks.valid[:] = True
    assert log_replay(tracks, 1).x[0] == 1.0
    assert log_replay(tracks, 5).x[0] == 2.0 + 3 * 0.1 * 10.0


def test_log_replay_extrapolates_both_velocity_components_and_keeps_the_last_frames_box():
    """Past the log's end an agent moves on at its last (vx, vy): 0.5 s after (1, 2) at (3, -4) m/s it is at (2.5, 0)."""
    tracks = AgentTracks.empty(3, 1)
    tracks.x[:, 0], tracks.y[:, 0] = [0.0, 0.5, 1.0], [4.0, 3.0, 2.0]
    tracks.vx[:, 0], tracks.vy[:, 0], tracks.heading[:, 0] = 3.0, -4.0, -0.9273
    tracks.valid[:] = True
    tracks.length[:], tracks.width[:], tracks.height[:] = 4.5, 1.9, 1.6
    later = log_replay(tracks, 2 + 5)
    assert later.x[0] == pytest.approx(2.5) and later.y[0] == pytest.approx(0.0)
    assert (later.vx[0], later.vy[0], later.heading[0]) == (3.0, -4.0, -0.9273)
    assert (later.length[0], later.width[0], later.height[0], bool(later.valid[0])) == (4.5, 1.9, 1.6, True)


def test_agent_tracks_refuse_fields_of_the_wrong_shape_naming_the_field_and_both_shapes():
    fields = {name: getattr(AgentTracks.empty(3, 2), name) for name in AgentTracks.TIME_FIELDS + AgentTracks.TRACK_FIELDS}
    with pytest.raises(ValueError, match=r"AgentTracks\.vy has shape \(3, 1\), expected \(3, 2\)"):
        AgentTracks(**{**fields, "vy": np.zeros((3, 1))})
    with pytest.raises(ValueError, match=r"AgentTracks\.width has shape \(3,\), expected \(2,\)"):
        AgentTracks(**{**fields, "width": np.zeros(3)})
    with pytest.raises(ValueError, match=r"AgentTracks\.track_ids has 1 ids for 2 tracks"):
        AgentTracks(**fields, track_ids=["only_one"])
    assert AgentTracks(**fields).track_ids == ["agent_0", "agent_1"]


def test_attach_to_lanes_follows_the_logged_branch():
    from tests.sim.test_map import two_way_road_with_branch
    road_map = two_way_road_with_branch()
    tracks = AgentTracks.empty(40, 1)
    tracks.valid[:] = True
    tracks.x[:, 0] = np.linspace(80.0, 112.0, 40)
    tracks.y[:, 0] = np.where(tracks.x[:, 0] > 100, -1.75 - (tracks.x[:, 0] - 100) * 1.5, -1.75)
    chains, s, lateral = attach_to_lanes(road_map, tracks, 0, np.array([0]))
    assert chains[0][:3] == ["main_f0", "main_f0__side_f0", "side_f0"]
    assert abs(s[0] - 80.0) < 1e-6 and abs(lateral[0]) < 1e-6


def test_red_light_on_a_merging_lane_does_not_stop_traffic_already_past_it():
    # Only "b"'s connector has a light, and it is red.
    road_map = merging_lanes(light_on_b="tl_b")
    traffic = IDMTraffic(road_map, AgentPaths.build(road_map, [["a", "a__m", "m"]]), s=np.array([60.0]), v=np.array([10.0]),
                         desired_speed=np.array([10.0]), length=np.full(1, 4.6), width=np.full(1, 1.9), light_ids=["tl_b"])
    for _ in range(100):
        traffic.step(0.1, light_status=np.array([TrafficLightStatus.RED]))
    assert traffic.v[0] > 9.0 and traffic.s[0] > 140.0


def test_agent_paths_drive_a_lane_change_along_the_route_polyline():
    from tests.sim.test_map import two_lane_road

    road_map = two_lane_road()
    chain = ["a_f0", "a_f1", *road_map.lane("a_f1").successors]
    paths = AgentPaths.build(road_map, [chain])
    polyline = road_map.route_polyline(chain)
    assert paths.length[0] == pytest.approx(np.sum(np.linalg.norm(np.diff(polyline, axis=0), axis=1)), abs=0.5)
    x, y, _ = paths.pose_at(np.array([10.0, 95.0]), np.array([0, 0]))
    assert y[0] == pytest.approx(road_map.lane("a_f0").centerline[0, 1], abs=1e-6)
    assert y[1] == pytest.approx(road_map.lane("a_f1").centerline[0, 1], abs=1e-6)
    lanes = paths.lane_at(np.array([10.0]))[0], paths.lane_at(np.array([95.0]))[0]
    assert [road_map.lanes[k].id for k in lanes] == ["a_f0", "a_f1"]
