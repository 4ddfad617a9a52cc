"""RoadMap: construction errors, point queries, lane matching and routes on a hand-made map."""
import numpy as np
import pytest

from scenarios.generator.roads import MapBuilder, straight
from sim.map import Lane, MapError, RoadMap


def two_way_road_with_branch() -> RoadMap:
    builder = MapBuilder("test")
    main = builder.add_road("main", straight(np.zeros(2), 0.0, 100.0), 1, 1, 10.0)
    exit_road = builder.add_road("exit", straight(np.array([120.0, 0.0]), 0.0, 50.0), 1, 0, 10.0)
    side = builder.add_road("side", straight(np.array([110.0, -15.0]), -np.pi / 2, 50.0), 1, 0, 10.0)
    builder.connect(main.forward[0], exit_road.forward[0], "j")
    builder.connect(main.forward[0], side.forward[0], "j")
    return builder.build()


def test_points_on_road_are_drivable_and_off_road_are_not():
    road_map = two_way_road_with_branch()
    drivable = road_map.is_drivable(np.array([[50.0, -1.75], [50.0, 1.75], [50.0, -30.0], [130.0, -1.0]]))
    assert drivable.tolist() == [True, True, False, True]


def test_nearest_lane_respects_heading():
    road_map = two_way_road_with_branch()
    # Same spot between the two directions; the heading decides.
    idx = road_map.nearest_lanes(np.array([[50.0, 0.2, 0.0], [50.0, 0.2, np.pi]]))
    assert [road_map.lanes[i].id for i in idx] == ["main_f0", "main_b0"]


def test_lanes_at_and_projection():
    road_map = two_way_road_with_branch()
    pts, lanes = road_map.lanes_at(np.array([[30.0, -1.75]]))
    assert [road_map.lanes[i].id for i in lanes] == ["main_f0"]
    s = road_map.project(lanes, np.array([[30.0, -1.75]]))
    assert s[0] == pytest.approx(30.0, abs=1e-6)


def test_route_through_a_junction_gives_a_connected_polyline():
    road_map = two_way_road_with_branch()
    route = ["main_f0", "main_f0__side_f0", "side_f0"]
    assert all(b in road_map.successors(a) for a, b in zip(route, route[1:]))
    polyline = road_map.route_polyline(route)
    assert np.all(np.linalg.norm(np.diff(polyline, axis=0), axis=1) < 3.0)  # connected, no jumps


def test_bad_maps_are_rejected_with_the_lane_named():
    line = np.array([[0.0, 0.0], [10.0, 0.0]])
    lane = Lane("a", line, line + [0, 1], line - [0, 1], 10.0, "g", successors=("missing",))
    with pytest.raises(MapError, match="'a' links to unknown lane 'missing'"):
        RoadMap([lane])
    with pytest.raises(MapError, match="no lane 'nope'"):
        two_way_road_with_branch().lane("nope")


def two_lane_road() -> RoadMap:
    """Two forward lanes (f0 right, f1 left) over 100 m, then one more section of each."""
    builder = MapBuilder("lanes")
    first = builder.add_road("a", straight(np.zeros(2), 0.0, 100.0), 2, 0, 10.0)
    second = builder.add_road("b", straight(np.array([100.0, 0.0]), 0.0, 100.0), 2, 0, 10.0)
    for k in range(2):
        builder.connect(first.forward[k], second.forward[k], "j")
    return builder.build()


def test_a_route_may_change_to_a_parallel_lane():
    road_map = two_lane_road()
    lanes = {lane.id: lane for lane in road_map.lanes}
    f0, f1 = "a_f0", "a_f1"
    assert road_map.is_lane_change(f0, f1) and not road_map.is_lane_change(f0, f0)
    after = next(iter(lanes[f1].successors))
    polyline = road_map.route_polyline([f0, f1, after])
    y0, y1 = lanes[f0].centerline[0, 1], lanes[f1].centerline[0, 1]
    # Starts on the lane it leaves, ends the section on the lane it enters, moves across smoothly in between.
    assert polyline[0, 1] == pytest.approx(y0) and polyline[0, 0] == pytest.approx(0.0)
    at_100 = polyline[np.argmin(np.abs(polyline[:, 0] - 100.0)), 1]
    assert at_100 == pytest.approx(y1)
    assert np.all(np.abs(np.diff(polyline[:, 1])) <= 0.1 * np.abs(y1 - y0) + 1e-9)
    assert np.all(np.diff(polyline[:, 0]) >= 0)
    # A lane that is neither a successor nor a parallel lane still breaks the route.
    with pytest.raises(MapError, match="does not follow"):
        road_map.route_polyline([after, f0])


def _straight_lane(lane_id: str, x0: float, x1: float, y: float, group: str, successors=()) -> Lane:
    centre = np.stack([np.linspace(x0, x1, 11), np.full(11, y)], -1)
    return Lane(lane_id, centre, centre + [0, 1.75], centre - [0, 1.75], 10.0, group, successors=successors)


def test_a_lane_change_after_a_successor_joins_the_route_without_a_repeated_point():
    """A -> B (successor, meeting at x = 50) -> C (parallel to B): the lane change starts where A ends, and that
    shared point appears once, as at every other join."""
    road_map = RoadMap([_straight_lane("A", 0.0, 50.0, 0.0, "g1", ("B",)), _straight_lane("B", 50.0, 100.0, 0.0, "g2"),
                        _straight_lane("C", 50.0, 100.0, 3.5, "g2")], name="change")
    polyline = road_map.route_polyline(["A", "B", "C"])
    assert polyline[0].tolist() == [0.0, 0.0] and polyline[-1].tolist() == [100.0, 3.5]
    assert np.count_nonzero(np.all(polyline == [50.0, 0.0], axis=1)) == 1
    assert np.linalg.norm(np.diff(polyline, axis=0), axis=1).min() > 0.0
