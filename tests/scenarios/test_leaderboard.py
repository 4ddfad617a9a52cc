"""Leaderboard route files: parsing, errors, densification on the real CARLA towns, closed-loop route scenes."""
from __future__ import annotations

import numpy as np
import pytest
import shapely

from scenarios.leaderboard import DENSE_STEP_M, RouteFileError, _candidates, densify, read_routes, town_for
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


def test_missing_route_file(tmp_path):
    with pytest.raises(RouteFileError, match="no such route file"):
        read_routes(tmp_path / "absent.xml")


def test_a_route_naming_an_unknown_town_says_which_towns_exist(tmp_path):
    town_dir = _town_dir()
    with pytest.raises(RouteFileError, match=r"unknown town 'Town99'.*Town01"):
        town_for(town_dir, "Town99")


@pytest.mark.parametrize("name", ROUTE_FILES)
def test_every_route_densifies_into_a_connected_route_through_its_waypoints(name):
    town_dir = _town_dir()
    lengths = []
    for route in _routes(name):
        town = town_for(town_dir, route.town)
        dense = densify(town.road_map, route.waypoints, f"route {route.route_id}")
        # Connected: every lane is a successor of the one before (route_polyline checks), 1 m hops.
        town.road_map.route_polyline(dense.lane_ids)
        hops = np.linalg.norm(np.diff(dense.points, axis=0), axis=1)
        assert hops.max() <= DENSE_STEP_M + 1e-6, f"route {route.route_id}: a hop of {hops.max():.2f} m"
        assert abs(hops.sum() - dense.length_m) < 0.05 * dense.length_m + 1.0
        # The route passes every waypoint on one of the lanes it may lie on; the path passes it within two lane
        # widths (a lane change blends over its lane, so it may pass a waypoint in the lane it is leaving).
        on_route = {town.road_map.lane_index[lane] for lane in dense.lane_ids}
        missed = [k for k, w in enumerate(route.waypoints) if not on_route & set(_candidates(town.road_map, w, ""))]
        assert not missed, f"route {route.route_id}: the lanes of waypoints {missed} are not on the route"
        waypoints = shapely.points(route.waypoints[:, :2])
        gaps = shapely.distance(waypoints, shapely.LineString(dense.points))
        assert gaps.max() < 8.0, f"route {route.route_id}: waypoint {int(gaps.argmax())} is {gaps.max():.1f} m off the route"
        assert np.linalg.norm(dense.points[-1] - route.waypoints[-1, :2]) < 4.0
        lengths.append(dense.length_m)
    if name == "routes_testing.xml":
        # CARLA's own global route planner makes these routes 0.56 to 3.69 km long (measured offline, see
        # shared/specs/carla_eval.md section 4.4); detours from a wrongly matched waypoint would show here.
        assert min(lengths) == pytest.approx(560.0, abs=15.0) and max(lengths) == pytest.approx(3690.0, abs=40.0)


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
