"""Leaderboard route files: parsing, errors, densification on the real CARLA towns, closed-loop route scenes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely

from scenarios.carla_route_planner import RoadOption
from scenarios.leaderboard import DENSE_STEP_M, FarWaypointWarning, RouteFileError, densify, read_routes, town_for
from tests.conftest import require_fixture

ROUTE_FILES = {"routes_devtest.xml": 4, "routes_testing.xml": 26}


def _routes(name: str):
    return read_routes(require_fixture(f"carla/routes/{name}"))


def _town_dir() -> str:
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns (pip install 'w0sim[carla]')")
    return str(require_fixture("carla/maps/Town01.xodr").parent)


@pytest.mark.parametrize("name,count", ROUTE_FILES.items())
def test_route_files_parse(name, count):
    routes = _routes(name)
    assert len(routes) == count
    for route in routes:
        assert route.town.startswith("Town") and route.waypoints.shape[1] == 3 and len(route.waypoints) >= 2
    # CARLA's left-handed frame is mirrored: y and yaw change sign. Devtest route 0 starts at (338.70, 226.75), yaw 269.98.
    if name == "routes_devtest.xml":
        np.testing.assert_allclose(routes[0].waypoints[0], [338.7027893066406, -226.75003051757812,
                                                            -np.radians(269.9790954589844)])


def _write(tmp_path, text: str):
    path = tmp_path / "routes.xml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("<routes><route id='0' town='Town01'><waypoint x='1' y='2'/>", "not valid XML"),
    ("<scenarios/>", "expected <routes>"),
    ("<routes/>", "no <route>"),
    ("<routes><route id='0'><waypoint x='1' y='2'/><waypoint x='3' y='2'/></route></routes>", "'town'"),
    ("<routes><route id='7' town='Town01'><waypoint x='1' y='2'/></route></routes>", "route 7 has 1 waypoints"),
    ("<routes><route id='7' town='Town01'><waypoint x='1'/><waypoint x='3' y='2'/></route></routes>", "waypoint 0"),
])
def test_malformed_route_files_name_the_problem(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(RouteFileError, match=message) as info:
        read_routes(path)
    assert str(path) in str(info.value)


_TWO = "<waypoint x='1' y='2'/><waypoint x='30' y='2'/>"


@pytest.mark.parametrize("text,message", [
    ("<routes><route id='4' town='Town01'><waypoint x='nan' y='2'/><waypoint x='3' y='2'/></route></routes>",
     r"route 4: waypoint 0 has x='nan'"),
    ("<routes><route id='4' town='Town01'><waypoint x='1' y='2'/><waypoint x='3' y='inf'/></route></routes>",
     r"route 4: waypoint 1 has y='inf'"),
    ("<routes><route id='4' town='Town01'><waypoint x='1' y='2'/><waypoint x='1e300' y='2'/></route></routes>",
     r"route 4: waypoint 1 has x='1e300'.*within \+-1e\+06 m"),
    ("<routes><route id='4' town='Town01'><waypoint x='1' y='2' z='-1e9'/><waypoint x='9' y='2'/></route></routes>",
     r"route 4: waypoint 0 has z="),
    ("<routes><route id='4' town='Town01'><waypoint x='1' y='2' yaw='nan'/><waypoint x='9' y='2'/></route></routes>",
     r"route 4: waypoint 0 has yaw='nan'"),
    (f"<routes><route id='abc' town='Town01'>{_TWO}</route></routes>", "route id 'abc' is not a non-negative integer"),
    (f"<routes><route id='-1' town='Town01'>{_TWO}</route></routes>", "route id '-1'"),
    (f"<routes><route id='1.5' town='Town01'>{_TWO}</route></routes>", "route id '1.5'"),
    (f"<routes><route id='2' town='../../etc/x'>{_TWO}</route></routes>", r"route 2: town '\.\./\.\./etc/x' is not a town"),
    (f"<routes><route id='2' town='Town01'>{_TWO}</route><route id='2' town='Town02'>{_TWO}</route></routes>",
     "route id 2 is used by more than one route"),
    (f"<!DOCTYPE r [<!ENTITY a 'aaaa'>]><routes><route id='2' town='Town01'>{_TWO}</route></routes>", "DTD"),
    # The "repeated waypoint" route: every waypoint in one spot. CARLA's planner makes a route of no length
    # of it (2 points at one place), which is driven until the time limit: refused, naming the waypoints.
    ("<routes><route id='6' town='Town01'>" + "<waypoint x='283.69' y='194.78' z='0'/>" * 3 + "</route></routes>",
     r"route 6: its waypoints 0\.\.2 all lie within 0\.00 m of waypoint 0"),
    ("<routes><route id='6' town='Town01'><waypoint x='283.69' y='194.78'/><waypoint x='283.69' y='194.78'/>"
     "<waypoint x='282.4' y='194.78'/></route></routes>", r"route 6: its waypoints 0\.\.2 all lie within 1\.29 m"),
])
def test_implausible_route_files_are_refused_naming_route_and_waypoint(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(RouteFileError, match=message) as info:
        read_routes(path)
    assert str(path) in str(info.value)


def test_a_repeated_waypoint_is_a_zero_length_leg_as_in_carlas_planner(tmp_path):
    """Consecutive identical waypoints are allowed, as the Leaderboard allows them: CARLA's planner traces a leg of
    one point between them (checked against CARLA's own GlobalRoutePlanner on these routes: point-identical), so the
    dense route is the plain one with one point repeated, and its length is the same."""
    town = town_for(_town_dir(), "Town01")
    a, b, c = (283.69, 194.78, 0.0), (240.0, 194.9, 0.0), (200.0, 195.0, 0.0)
    plain = densify(town, read_routes(_route_xml(tmp_path, "Town01", [a, b, c]))[0])
    for repeated in ([a, a, b, c], [a, b, b, c]):
        dense = densify(town, read_routes(_route_xml(tmp_path, "Town01", repeated))[0])
        assert len(dense.points) == len(plain.points) + 1 and dense.lane_ids == plain.lane_ids
        same = np.flatnonzero(np.linalg.norm(np.diff(dense.points, axis=0), axis=1) == 0.0)
        assert len(same) == 1  # the one repeated point ...
        np.testing.assert_array_equal(np.delete(dense.points, same[0], axis=0), plain.points)  # ... and nothing else
        assert dense.length_m == pytest.approx(plain.length_m)


def test_missing_route_file(tmp_path):
    with pytest.raises(RouteFileError, match="no such route file"):
        read_routes(tmp_path / "absent.xml")


def test_a_route_naming_an_unknown_town_says_which_towns_exist(tmp_path):
    town_dir = _town_dir()
    with pytest.raises(RouteFileError, match=r"unknown town 'Town99'.*Town01"):
        town_for(town_dir, "Town99")


@pytest.mark.parametrize("name", ROUTE_FILES)
def test_every_route_densifies_into_the_planners_hops_along_a_connected_lane_chain(name):
    town_dir = _town_dir()
    for route in _routes(name):
        town = town_for(town_dir, route.town)
        dense = densify(town, route)
        town.road_map.route_polyline(dense.lane_ids)  # the lane chain is connected (raises otherwise)
        hops = np.linalg.norm(np.diff(dense.points, axis=0), axis=1)
        changes = np.isin(dense.road_options[1:], [RoadOption.CHANGELANELEFT, RoadOption.CHANGELANERIGHT])
        # 1 m hops; where one leg meets the next, or the trace resumes on the nearest sample of an edge, up to 3;
        # a lane change jumps five samples ahead onto the neighbour lane.
        assert 0.8 < np.median(hops) < 1.05 * DENSE_STEP_M  # 1 m along the lane, in 3-D
        assert hops[~changes].max() <= 3 * DENSE_STEP_M + 1e-3, f"route {route.route_id}: a hop of {hops[~changes].max():.2f} m"
        assert hops[changes].max(initial=0.0) < 8.5
        # CARLA snaps each waypoint to its nearest lane; every waypoint of these files is on a lane, so on the route.
        gaps = shapely.distance(shapely.points(route.waypoints[:, :2]), shapely.LineString(dense.points[:, :2]))
        assert gaps.max() < 2.5, f"route {route.route_id}: waypoint {int(gaps.argmax())} is {gaps.max():.1f} m off"
        assert set(dense.road_options.tolist()) <= {int(o) for o in RoadOption}


def _route_xml(tmp_path, town: str, points) -> Path:
    rows = "".join(f"<waypoint x='{x}' y='{y}' z='{z}'/>" for x, y, z in points)
    return _write(tmp_path, f"<routes><route id='3' town='{town}'>{rows}</route></routes>")


def _xyz(waypoint):
    location = waypoint.transform.location
    return location.x, location.y, location.z


def test_an_overpass_waypoint_keeps_the_route_on_its_own_level(tmp_path):
    """Town04: road 39 crosses over road 47 at (16.3, 9.6), 11 m up. Planned in 3-D, a route along the bridge
    stays on it; the same waypoint at ground level is snapped to the road below, and the route goes round."""
    import carla

    town = town_for(_town_dir(), "Town04")
    bridge = town.carla_map.get_waypoint(carla.Location(x=16.3, y=9.6, z=11.0))
    assert bridge.road_id == 39 and bridge.transform.location.z > 10
    ends = [_xyz(bridge.previous(40.0)[0]), _xyz(bridge), _xyz(bridge.next(40.0)[0])]
    upper = densify(town, read_routes(_route_xml(tmp_path, "Town04", ends))[0])
    assert upper.length_m < 90.0
    near = np.linalg.norm(upper.points[:, :2] - upper.points[len(upper.points) // 2, :2], axis=1) < 10
    assert upper.points[near, 2].min() > 10.0
    ground = ends[:1] + [(ends[1][0], ends[1][1], 0.0)] + ends[2:]
    lower = densify(town, read_routes(_route_xml(tmp_path, "Town04", ground))[0])
    assert lower.length_m > 2 * upper.length_m and lower.points[:, 2].min() < 1.0


def test_a_waypoint_far_from_every_lane_is_snapped_with_a_warning_naming_it(tmp_path):
    import carla

    town = town_for(_town_dir(), "Town01")
    route = _routes("routes_devtest.xml")[0]
    start = town.carla_map.get_waypoint(carla.Location(*route.carla_xyz[0]))
    middle = start.next(30.0)[0]
    right = middle.transform.get_right_vector()
    off = middle.transform.location + carla.Location(x=9.0 * right.x, y=9.0 * right.y)
    points = [_xyz(start), (off.x, off.y, off.z), _xyz(middle.next(30.0)[0])]
    far = read_routes(_route_xml(tmp_path, "Town01", points))[0]
    with pytest.warns(FarWaypointWarning, match=r"routes\.xml: route 3: waypoint 1 lies \d+\.\d m from the nearest"):
        dense = densify(town, far)
    assert len(dense.warnings) == 1 and dense.length_m < 90.0  # snapped beside the road: no detour


def test_a_carla_split_lists_the_routes_and_checks_their_towns(tmp_path):
    from scenarios.splits import SplitError, resolve_split

    town_dir = _town_dir()
    devtest = require_fixture("carla/routes/routes_devtest.xml")
    refs = resolve_split(f"carla:{devtest}", town_dir=town_dir)
    assert [r.token for r in refs] == [f"RouteScenario_{i}" for i in range(4)]
    assert [r.family for r in refs] == ["Town01", "Town03", "Town04", "Town06"]
    assert resolve_split(f"carla:{devtest}", limit=2, town_dir=town_dir)[1].load().token == "RouteScenario_1"
    with pytest.raises(SplitError, match="--town-dir"):
        resolve_split(f"carla:{devtest}")
    unknown = _write(tmp_path, "<routes><route id='5' town='Town99'><waypoint x='1' y='2'/><waypoint x='9' y='2'/>"
                               "</route></routes>")
    with pytest.raises(SplitError, match=r"routes\.xml: route 5 names town 'Town99'.*Town01") as info:
        resolve_split(f"carla:{unknown}", town_dir=town_dir)
    assert str(unknown) in str(info.value)
