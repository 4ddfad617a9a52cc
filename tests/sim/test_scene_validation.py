"""The Scene value checks itself (sim.scene.validate_scene, limits in sim.limits): scenes built in code are held to
the same bounds as scene files, and maps refuse implausible geometry before anything is built from it."""
import dataclasses
import re

import numpy as np
import pytest
import shapely

from scenarios.generator import FAMILIES, generate_scene
from sim import limits
from sim.map import Area, MapError, RoadMap
from sim.scene import SceneValidationError, validate_scene


@pytest.fixture(scope="module")
def scene():
    return generate_scene("intersection", 2)


def rebuilt(scene, **changes):
    return dataclasses.replace(scene, **changes)


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_scenes_pass(family):
    validate_scene(generate_scene(family, 5))


def test_non_finite_and_implausible_ego_logs_are_refused(scene):
    for column, value, fragment in ((0, np.nan, "ego_log x / y holds non-finite"),
                                    (2, np.inf, "ego_log heading holds non-finite"),
                                    (5, 1e6, "ego_log dynamics (acceleration, steering, yaw rate) holds 1e+06"),
                                    (1, 2e7, "+-1e+07 m")):
        ego = scene.ego_log.copy()
        ego[7, column] = value
        with pytest.raises(SceneValidationError, match=f"scene {scene.token}: ") as info:
            rebuilt(scene, ego_log=ego)
        assert fragment in str(info.value)


def test_codes_outside_their_enums_are_refused(scene):
    with pytest.raises(SceneValidationError, match=r"driving_command holds -1, outside 0..3"):
        rebuilt(scene, driving_command=np.full(scene.num_steps, -1, np.int8))
    types = scene.agents.agent_type.copy()
    types[0] = 42
    with pytest.raises(SceneValidationError, match=r"agents.agent_type holds 42, outside 0..6"):
        rebuilt(scene, agents=dataclasses.replace(scene.agents, agent_type=types))
    with pytest.raises(SceneValidationError, match=r"light_status has dtype float64"):
        rebuilt(scene, light_status=scene.light_status.astype(np.float64))


def test_signal_plans_must_continue_the_scene_lights(scene):
    plans = scene.metadata["signal_plans"]
    assert plans, "the intersection family has signal plans"
    swapped = [dict(plans[0], light_ids=list(reversed(plans[0]["light_ids"])))] + plans[1:]
    with pytest.raises(SceneValidationError, match="signal_plans' light ids"):
        rebuilt(scene, metadata={**scene.metadata, "signal_plans": swapped})
    frozen = [dict(plans[0], green_s=0.0, yellow_s=0.0, all_red_s=0.0)] + plans[1:]
    with pytest.raises(SceneValidationError, match="longer than 0 s"):
        rebuilt(scene, metadata={**scene.metadata, "signal_plans": frozen})
    with pytest.raises(SceneValidationError, match="route_roadblocks"):
        rebuilt(scene, metadata={**scene.metadata, "route_roadblocks": "rb1"})


def test_agents_and_route_points_far_from_the_map_are_refused(scene):
    x = scene.agents.x.copy()
    valid = scene.agents.valid
    x[valid[:, 0], 0] += 1e5
    with pytest.raises(SceneValidationError, match=r"agents \(valid\) point .* from the bounding box"):
        rebuilt(scene, agents=dataclasses.replace(scene.agents, x=x))
    x = scene.agents.x.copy()
    x[~valid[:, 0], 0] = 1e5  # invalid entries are not positions: only the absolute bound applies to them
    if (~valid[:, 0]).any():
        rebuilt(scene, agents=dataclasses.replace(scene.agents, x=x))
    route = np.array([[0.0, 0.0, 0.0], [3e4, 0.0, 0.0]])
    with pytest.raises(SceneValidationError, match="route_points point"):
        rebuilt(scene, route_points=route)


def test_a_misshapen_array_is_refused_naming_its_shape_and_the_expected_one(scene):
    """route_points must be (M, 3) floats: the message shows the shape found and '*' for the free dimension."""
    with pytest.raises(SceneValidationError, match=re.escape("route_points has shape (4, 2), expected (*, 3)")):
        rebuilt(scene, route_points=np.zeros((4, 2)))
    with pytest.raises(SceneValidationError, match="route_points has dtype int64, expected float"):
        rebuilt(scene, route_points=np.zeros((4, 3), dtype=np.int64))


def test_maps_refuse_implausible_geometry(scene):
    lane = dataclasses.replace(scene.map.lanes[0], successors=(), predecessors=())
    RoadMap([lane], [Area("a", "roadblock", lane.polygon())])  # as it is: a plausible one-lane map
    for line, fragment in ((np.array([[0.0, 0.0], [np.nan, 1.0]]), "non-finite"),
                           (np.array([[0.0, 0.0], [1e8, 1.0]]), "beyond the bound +-1e+07 m"),
                           (np.zeros((1, 2)), "expected (K >= 2, 2)"),
                           (np.array([["a", "b"], ["c", "d"]]), "expected real numbers")):
        broken = dataclasses.replace(lane, left_boundary=line)
        with pytest.raises(MapError, match=rf"lane {lane.id!r} left_boundary") as info:
            RoadMap([broken], name="m")
        assert fragment in str(info.value)
    with pytest.raises(MapError, match="speed_limit"):
        RoadMap([dataclasses.replace(lane, speed_limit=float("nan"))])
    with pytest.raises(MapError, match="area 'a' polygon is a LineString"):
        RoadMap([lane], [Area("a", "roadblock", shapely.LineString([(0, 0), (1, 1)]))])


def test_invalid_drivable_polygons_are_repaired_and_an_unrepairable_map_names_them(scene, monkeypatch):
    bowtie = shapely.Polygon([(1000, 0), (1010, 10), (1010, 0), (1000, 10)])  # 1 km from the lanes
    other = shapely.Polygon([(1005, 0), (1015, 10), (1015, 0), (1005, 10)])
    areas = [Area("bow", "roadblock", bowtie), Area("tie", "carpark", other)]
    with pytest.raises(shapely.errors.GEOSException):  # what the drivable area met before
        shapely.union_all([bowtie, other, *scene.map.lane_polygons])
    drivable = RoadMap(list(scene.map.lanes), areas).drivable_area
    # Both triangles of a bowtie are drivable, the notch between them is not.
    assert drivable.is_valid and shapely.contains_xy(drivable, [1009.0, 1001.0, 1002.0, 1014.0],
                                                     [5.0, 5.0, 1.0, 5.0]).tolist() == [True, True, False, True]
    monkeypatch.setattr(shapely, "make_valid", lambda geometries: geometries)  # a repair that does not help
    with pytest.raises(MapError, match=r"cannot be combined .*area 'bow' \(Self-intersection"):
        RoadMap(list(scene.map.lanes), areas).drivable_area


def test_limits_are_the_ones_checked(scene, monkeypatch):
    """The bounds are read from sim.limits when a scene is checked (one place to change them)."""
    monkeypatch.setattr(limits, "MAX_SPEED_MPS", 1.0)
    with pytest.raises(SceneValidationError, match=r"bound \+-1 m/s|bound 1 m/s"):
        validate_scene(scene)
