"""CARLA towns (OpenDRIVE fixtures) load into valid RoadMaps with lanes, links, areas and lights at junctions."""
from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
import pytest
import shapely

from scenarios.opendrive import OpenDriveError, Town, carla_to_local, load_town, local_to_carla, parse_xodr
from scenarios.opendrive.signals import STOP_TRIGGER_LENGTH_M
from scenarios.opendrive.town import _import_carla
from tests.conftest import require_fixture

TOWNS = ("Town01", "Town02", "Town03", "Town04", "Town05", "Town06", "Town07", "Town10HD")
SIGNALLED = ("Town01", "Town02", "Town04", "Town06", "Town07", "Town10HD")


def _xodr(name: str):
    return require_fixture(f"carla/maps/{name}.xodr")


@lru_cache(maxsize=None)
def _load(name: str) -> Town:
    return load_town(_xodr(name))


@pytest.fixture(params=TOWNS)
def town(request) -> Town:
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    return _load(request.param)


def test_town_loads_into_a_road_map(town: Town) -> None:
    road_map = town.road_map
    kinds = {area.kind for area in road_map.areas}
    assert len(road_map.lanes) > 50 and {"roadblock", "intersection"} <= kinds
    connectors = [lane for lane in road_map.lanes if lane.is_connector]
    assert connectors and all(lane.id in town.junction_of for lane in connectors)
    assert np.all(road_map.speed_limits > 0)
    assert town.signal_plans and town.lights


def test_centerlines_lie_inside_their_lane_polygons(town: Town) -> None:
    polygons = town.road_map.lane_polygons
    assert shapely.is_valid(polygons).all()
    inside = shapely.contains(shapely.buffer(polygons, 1e-6), town.road_map.lane_centerlines)
    assert inside.all(), [lane.id for lane, ok in zip(town.road_map.lanes, inside) if not ok][:5]


def test_left_boundary_is_left_of_the_driving_direction(town: Town) -> None:
    for lane in town.road_map.lanes:
        direction = np.diff(lane.centerline, axis=0)
        offset = lane.left_boundary[:-1] - lane.centerline[:-1]
        cross = direction[:, 0] * offset[:, 1] - direction[:, 1] * offset[:, 0]
        assert np.median(cross) > 0, lane.id


def test_successor_links_connect(town: Town) -> None:
    road_map = town.road_map
    for lane in road_map.lanes:
        for nxt in lane.successors:
            gap = np.linalg.norm(lane.centerline[-1] - road_map.lane(nxt).centerline[0])
            assert gap < 0.1, (lane.id, nxt, gap)
            assert lane.id in road_map.lane(nxt).predecessors


def test_lights_control_junction_entries(town: Town) -> None:
    road_map = town.road_map
    plan_lights = {light for plan in town.signal_plans for light in plan.light_ids}
    assert plan_lights == set(town.lights)
    for plan in town.signal_plans:
        assert plan.phases == tuple((light,) for light in plan.light_ids)  # CARLA: one light green at a time
        assert (plan.green_s, plan.yellow_s, plan.all_red_s) == (10.0, 3.0, 2.0)
        junctions = {town.junction_of[lane_id] for light in plan.light_ids for lane_id in town.lights[light]}
        assert len(junctions) == 1
    for light, lane_ids in town.lights.items():
        for lane_id in lane_ids:
            lane = road_map.lane(lane_id)
            assert lane.is_connector and lane.traffic_light == light
            assert any(not road_map.lane(p).is_connector for p in lane.predecessors)  # entered from a road


@pytest.mark.parametrize("name", SIGNALLED)
def test_lights_sit_where_the_map_references_them(name: str) -> None:
    """Each traffic-light reference point (road, lane, s) lies in a connector lane that light controls."""
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    town, carla_map = _load(name), parse_xodr(_xodr(name), name)
    references = carla_map.get_all_landmarks_of_type("1000001")
    assert references and not town.synthesised_lights
    for landmark in references:
        lane_number = landmark.get_lane_validities()[0][0]
        loc = carla_map.get_waypoint_xodr(landmark.road_id, lane_number, landmark.s).transform.location
        x, y, _ = carla_to_local(loc.x, loc.y, 0.0)
        polygons = [town.road_map.lane(lane_id).polygon() for lane_id in town.lights[f"tl_{landmark.id}"]]
        assert min(p.distance(shapely.Point(x, y)) for p in polygons) < 0.01, landmark.id


def test_town_without_signals_gets_lights_at_big_junctions() -> None:
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    town = _load("Town03")
    assert town.synthesised_lights and len(town.signal_plans) >= 5
    for plan in town.signal_plans:
        assert len(plan.light_ids) >= 4  # one light per incoming road, at crossroads


def test_speed_limits_and_stop_signs_from_landmarks() -> None:
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    limits_kmh = set(np.round(_load("Town04").road_map.speed_limits * 3.6))
    assert {30.0, 90.0} <= limits_kmh
    road_map = _load("Town07").road_map
    assert road_map.stop_signs
    for sign in road_map.stop_signs:
        lanes = [road_map.lane(lane_id) for lane_id in sign.lane_ids]
        assert any(lane.is_connector for lane in lanes)
        approach = [lane for lane in lanes if not lane.is_connector]
        assert all(sign.trigger.distance(shapely.Point(lane.centerline[-1])) < 0.1 for lane in approach)


def test_stop_triggers_are_rectangles_as_long_as_the_trigger_along_the_approach_and_as_wide_as_its_lane() -> None:
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    road_map = _load("Town07").road_map
    assert road_map.stop_signs
    for sign in road_map.stop_signs:
        (approach,) = [road_map.lane(i) for i in sign.lane_ids if not road_map.lane(i).is_connector]
        corners = np.asarray(sign.trigger.exterior.coords)
        assert len(corners) == 5, sign.id  # four corners, closed
        edges = np.roll(corners[:4], -1, axis=0) - corners[:4]
        sides = np.linalg.norm(edges, axis=1)
        turns = np.einsum("ij,ij->i", edges, np.roll(edges, -1, axis=0)) / (sides * np.roll(sides, -1))
        np.testing.assert_allclose(turns, 0.0, atol=1e-9, err_msg=sign.id)  # four right angles
        lane_width = max(np.linalg.norm(approach.left_boundary[-1] - approach.right_boundary[-1]), 1.0)
        np.testing.assert_allclose(sides, [STOP_TRIGGER_LENGTH_M, lane_width] * 2, atol=1e-6, err_msg=sign.id)
        assert sign.trigger.area == pytest.approx(STOP_TRIGGER_LENGTH_M * lane_width, abs=1e-6)
        direction = approach.centerline[-1] - approach.centerline[-2]
        direction /= np.linalg.norm(direction)
        assert abs(edges[0] @ direction) / sides[0] == pytest.approx(1.0, abs=1e-5), sign.id  # length along the lane


def test_crosswalks_from_the_map() -> None:
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    crosswalks = _load("Town10HD").road_map.area_layer("crosswalk")[1]
    assert len(crosswalks) == 16 and all(4.0 < p.area < 200.0 for p in crosswalks)


def test_frame_round_trip() -> None:
    rng = np.random.default_rng(0)
    x, y, heading = rng.uniform(-500, 500, 50), rng.uniform(-500, 500, 50), rng.uniform(-np.pi, np.pi, 50)
    cx, cy, yaw = local_to_carla(x, y, heading)
    assert np.allclose(cy, -y) and np.allclose(yaw, -np.degrees(heading))
    back = carla_to_local(cx, cy, yaw)
    assert np.allclose(np.stack(back), np.stack([x, y, heading]))
    # CARLA yaw 90 deg points along +y_carla (to the right), i.e. -y in our frame: heading -pi/2.
    assert np.isclose(carla_to_local(0.0, 0.0, 90.0)[2], -np.pi / 2)


def test_missing_and_non_opendrive_files(tmp_path) -> None:
    with pytest.raises(OpenDriveError, match="does not exist"):
        load_town(tmp_path / "nowhere.xodr")
    not_xodr = tmp_path / "notes.xodr"
    not_xodr.write_text("hello, not a road network")
    with pytest.raises(OpenDriveError, match="not an OpenDRIVE file"):
        load_town(not_xodr)
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    broken = tmp_path / "broken.xodr"
    broken.write_text('<?xml version="1.0"?><OpenDRIVE><header/><road id="x"></OpenDRIVE>')
    with pytest.raises(OpenDriveError, match="broken.xodr"):
        load_town(broken)


def test_missing_carla_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "carla", None)  # makes `import carla` raise ImportError
    with pytest.raises(OpenDriveError, match=r"pip install 'w0sim\[carla\]'"):
        _import_carla()
