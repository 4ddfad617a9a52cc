"""PDM-Closed's object forecast: NAVSIM's constant velocity, and lane following with braking and queues."""
import numpy as np
import pytest
import shapely

from agents.forecast import ObjectForecast, _straightest_chain, braking_between
from agents.lane_following_pdm import LaneFollowingPDMPlanner
from agents.pdm_closed import plan_to_local
from scenarios.generator import generate_scene
from scenarios.generator.roads import offset
from sim.envs.scene_scoring import SceneScorer
from sim.map import Lane, RoadMap
from sim.state import AgentSlice, AgentTracks, AgentType, TrajectorySampling
from sim.world_view import WorldView, logged_ego_state


def slice_of(xs, ys, headings, speeds, agent_type=AgentType.VEHICLE):
    xs, ys, headings, speeds = (np.asarray(v, dtype=np.float64) for v in (xs, ys, headings, speeds))
    n = len(xs)
    return AgentSlice(x=xs, y=ys, heading=headings, vx=speeds * np.cos(headings), vy=speeds * np.sin(headings),
                      valid=np.ones(n, dtype=bool), length=np.full(n, 4.6), width=np.full(n, 1.9),
                      height=np.full(n, 1.6), agent_type=np.full(n, int(agent_type), dtype=np.int8),
                      track_ids=[f"car_{i}" for i in range(n)])


def test_constant_velocity_moves_every_object_along_its_logged_velocity():
    agents = slice_of([0.0, 10.0], [0.0, 5.0], [0.3, -1.0], [5.0, 2.0])
    forecast = ObjectForecast.build(agents, "constant_velocity", braking=np.array([-3.0, -3.0]))
    x, y, heading, speed = forecast.at(2.0)
    np.testing.assert_allclose(x, agents.x + 2.0 * agents.vx)
    np.testing.assert_allclose(y, agents.y + 2.0 * agents.vy)
    np.testing.assert_allclose(heading, agents.heading)
    np.testing.assert_allclose(speed, [5.0, 2.0])  # NAVSIM ignores braking
    obs = forecast.observation(41)
    np.testing.assert_allclose(obs.vx[-1], agents.vx)


def test_no_objects_forecast_the_same_empty_arrays_as_objects_that_are_all_invalid():
    nobody = ObjectForecast.build(None, "constant_velocity")
    invalid = slice_of([1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [3.0, 3.0])
    invalid.valid[:] = False
    none_valid = ObjectForecast.build(invalid, "constant_velocity", braking=np.zeros(2))
    for field in ("x", "y", "heading", "speed", "direction", "braking", "length", "width", "agent_type"):
        got, want = getattr(nobody, field), getattr(none_valid, field)
        assert (got.shape, got.dtype) == (want.shape, want.dtype), field
    assert nobody.track_ids == []
    assert all(v.shape == (3, 0) for v in nobody.over(np.array([0.0, 1.0, 2.0])))


def test_a_braking_object_keeps_braking_until_it_stands():
    agents = slice_of([0.0], [0.0], [0.0], [4.0])
    forecast = ObjectForecast.build(agents, "lane_following", braking=np.array([-2.0]))
    assert forecast.at(1.0)[0][0] == pytest.approx(3.0)
    assert forecast.at(2.0)[0][0] == pytest.approx(4.0)
    assert forecast.at(4.0)[0][0] == pytest.approx(4.0)  # stands; never reverses
    assert forecast.at(4.0)[3][0] == 0.0


def test_braking_reads_the_speed_drop_since_the_world_views_last_decision():
    tracks = AgentTracks.empty(20, 3)
    tracks.valid[:] = True
    tracks.vx[:, 0] = np.linspace(10.0, 0.5, 20)  # braking
    tracks.vx[:, 1] = np.linspace(2.0, 8.0, 20)  # accelerating: not extrapolated
    tracks.valid[:12, 2] = False  # appeared 0.3 s ago: no rate yet
    rates = braking_between(tracks.at(15), tracks.at(10), 0.5)
    assert rates[0] == pytest.approx(-9.5 / 19 * 10)
    assert rates[1] == 0.0 and rates[2] == 0.0


def moving_cars_on_lanes(scene):
    now = scene.current_index
    agents = scene.agents.at(now)
    lanes = scene.map.nearest_lanes(np.stack([agents.x, agents.y, agents.heading], -1))
    dist = shapely.distance(scene.map.lane_centerlines[lanes], shapely.points(np.stack([agents.x, agents.y], -1)))
    return np.flatnonzero(agents.valid & (agents.speed > 3.0) & (dist < 0.5)), agents


def test_lane_following_keeps_vehicles_on_a_curve_where_constant_velocity_leaves_it():
    scene = generate_scene("curve", 1)
    cars, agents = moving_cars_on_lanes(scene)
    assert cars.size
    lane_following = ObjectForecast.build(agents, "lane_following", road_map=scene.map)
    straight_on = ObjectForecast.build(agents, "constant_velocity")
    drivable = shapely.union_all(scene.map.lane_polygons)
    inside = lambda f: shapely.contains_xy(drivable, *f.at(4.0)[:2])  # noqa: E731
    rows = (np.cumsum(agents.valid) - 1)[cars]  # forecast rows are the valid agents, in order
    on_map = lane_following.lane_s0[rows] + lane_following.travel(4.0)[rows] < lane_following.lane_paths.length
    rows = rows[on_map]  # beyond the map's lanes both forecasts go straight on
    assert rows.size >= 2
    assert inside(lane_following)[rows].all()
    assert not inside(straight_on)[rows].all()


def test_lane_following_starts_every_object_where_it_is_and_moves_it_by_its_travel_along_the_lane():
    scene = generate_scene("curve", 1)
    cars, agents = moving_cars_on_lanes(scene)
    forecast = ObjectForecast.build(agents, "lane_following", road_map=scene.map)
    rows = (np.cumsum(agents.valid) - 1)[cars]
    x, y, _, speed = forecast.at(0.0)
    np.testing.assert_allclose(x, agents.x[agents.valid], atol=1e-3)  # to the lane polyline's projection
    np.testing.assert_allclose(y, agents.y[agents.valid], atol=1e-3)
    np.testing.assert_allclose(speed[rows], agents.speed[cars])
    # 0.2 s on, still on their lanes: each car has moved its travel (the arc on a gentle curve is its chord)
    x1, y1, _, _ = forecast.at(0.2)
    moved = np.hypot(x1 - x, y1 - y)[rows]
    np.testing.assert_allclose(moved, forecast.travel(0.2)[rows], rtol=1e-3)


def test_a_car_behind_a_braking_lead_on_the_route_queues_behind_it():
    scene = generate_scene("straight", 0)
    ego = scene.initial_ego_state
    forward = np.array([np.cos(ego[2]), np.sin(ego[2])])
    lead, follower = ego[:2] + 30.0 * forward, ego[:2] + 15.0 * forward
    agents = slice_of([lead[0], follower[0]], [lead[1], follower[1]], [ego[2]] * 2, [4.0, 8.0])
    points = ego[:2] + np.arange(0.0, 100.0, 0.5)[:, None] * forward  # the route centreline, 0.5 m samples
    path = (points, np.full(len(points), ego[2]))
    forecast = ObjectForecast.build(agents, "lane_following", braking=np.array([-2.0, 0.0]), centre_path=path)
    x, y, _, speed = forecast.at(5.0)
    gap = np.linalg.norm([x[0] - x[1], y[0] - y[1]]) - 4.6
    assert 0.5 < gap < 1.5 and speed[1] == 0.0  # stopped a metre behind the lead's stopping point


def test_a_queue_longer_than_the_path_before_it_keeps_its_cars_at_the_path_start():
    """Forty standing cars packed 2 m apart from the path's start: the queue's limits fall below 0 m (more cars
    than room behind the stopped front one). They used to index the path with negative samples (the path's far
    end, or an IndexError in long queues); they stay at the start of the path."""
    scene = generate_scene("straight", 0)
    ego = scene.initial_ego_state
    forward = np.array([np.cos(ego[2]), np.sin(ego[2])])
    cars = ego[:2] + np.arange(40)[:, None] * 2.0 * forward
    agents = slice_of(cars[:, 0], cars[:, 1], [ego[2]] * 40, [0.0] * 40)
    points = ego[:2] + np.arange(0.0, 100.0, 0.5)[:, None] * forward
    forecast = ObjectForecast.build(agents, "lane_following", centre_path=(points, np.full(len(points), ego[2])))
    assert (forecast.queue_limit < -50).any()
    x, y, _, _ = forecast.at(3.0)
    along = (np.stack([x, y], -1) - ego[:2]) @ forward
    assert along.min() >= -1e-9 and along.max() <= 80.0


@pytest.mark.parametrize("family, seed", [("t_junction", 25), ("intersection", 24)])
def test_lane_following_pdm_drives_scenes_that_navsims_pdm_closed_fails(family, seed):
    """Scenes where NAVSIM's PDM-Closed (straight-line, constant-speed forecast) picks a proposal that collides or
    leaves the road, while the lane-following planner follows lanes, brakes and drives through. Both scored against
    the log."""
    scene = generate_scene(family, seed)
    scorer = SceneScorer(scene)
    sampling = TrajectorySampling()
    ego = logged_ego_state(scene.initial_ego_state)
    assert scorer.score(plan_to_local(scorer.pdm_closed.poses, ego, sampling), sampling.interval)[1] == 0.0
    lane_following = LaneFollowingPDMPlanner().plan_view(WorldView.from_log(scene))
    assert scorer.score(plan_to_local(lane_following.poses, ego, sampling), sampling.interval)[1] > 0.9


def test_a_lane_following_objects_scored_velocity_turns_with_its_lane():
    """On a curve the scorer sees each lane-following car moving along its forecast heading (the lane's), not along the
    velocity logged at the start, and the observation keeps the objects' own track ids."""
    scene = generate_scene("curve", 1)
    cars, agents = moving_cars_on_lanes(scene)
    forecast = ObjectForecast.build(agents, "lane_following", road_map=scene.map)
    assert forecast.lane_paths is not None and forecast.queue_limit is None  # lanes, no route queue
    obs = forecast.observation(41)
    rows = (np.cumsum(agents.valid) - 1)[cars]
    turned = np.abs(np.angle(np.exp(1j * (obs.heading[-1, rows] - obs.heading[0, rows])))) > 0.1
    assert turned.any()  # some car has turned with its lane by 4 s
    speed = np.hypot(obs.vx, obs.vy)
    np.testing.assert_allclose(obs.vx[:, rows], speed[:, rows] * np.cos(obs.heading[:, rows]), atol=1e-9)
    np.testing.assert_allclose(obs.vy[:, rows], speed[:, rows] * np.sin(obs.heading[:, rows]), atol=1e-9)
    assert obs.track_ids == [t for t, v in zip(agents.track_ids, agents.valid) if v]


def _polyline_lane(lane_id: str, points, successors=()) -> Lane:
    centre = np.asarray(points, dtype=np.float64)
    return Lane(lane_id, centre, offset(centre, 1.75), offset(centre, -1.75), 13.9, lane_id, tuple(successors))


def test_lane_following_takes_the_successor_whose_whole_lane_turns_least_until_it_has_the_length():
    """After lane a (10 m east), 'left' sets off straight but ends 63 degrees left; 'ahead' keeps 10 degrees right
    all along (51 m). Measured end to end, 'ahead' is the straighter; a + ahead (61 m) covers 40 m, so 'beyond' is
    not needed."""
    road = RoadMap([
        _polyline_lane("a", [(0.0, 0.0), (10.0, 0.0)], ("left", "ahead")),
        _polyline_lane("left", [(10.0, 0.0), (15.0, 0.0), (20.0, 5.0), (20.0, 20.0)]),
        _polyline_lane("ahead", [(10.0, 0.0), (60.0, -8.816)], ("beyond",)),
        _polyline_lane("beyond", [(60.0, -8.816), (100.0, -8.816)]),
    ])
    assert _straightest_chain(road, "a", 40.0) == ["a", "ahead"]
    assert _straightest_chain(road, "a", 70.0) == ["a", "ahead", "beyond"]
    assert _straightest_chain(road, "a", 5.0) == ["a"]
