"""Procedural generator: determinism, map validity per family, plausible logs (no crashes between agents)."""
import numpy as np
import pytest
import shapely

from scenarios.generator import FAMILIES, GeneratorConfig, generate_scene
from scenarios.scene import scene_to_arrays
from sim.geometry import box_corners, ego_corners
from sim.scene import DRIVING_COMMANDS
from sim.state import AgentType


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_scene_other_seed_other_scene(family):
    a, b, c = generate_scene(family, 7), generate_scene(family, 7), generate_scene(family, 8)
    arrays_a, arrays_b, arrays_c = scene_to_arrays(a)[1], scene_to_arrays(b)[1], scene_to_arrays(c)[1]
    assert all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a)
    assert a.token == b.token != c.token
    assert not np.array_equal(arrays_a["ego_log"], arrays_c["ego_log"])


@pytest.mark.parametrize("family", FAMILIES)
def test_map_is_connected_and_lanes_lie_on_the_road(family):
    scene = generate_scene(family, 1)
    road_map = scene.map
    for lane in road_map.lanes:
        for succ in lane.successors:
            gap = np.linalg.norm(lane.centerline[-1] - road_map.lane(succ).centerline[0])
            assert gap < 0.1, f"{lane.id} -> {succ} leaves a {gap:.2f} m gap"
        # The centerline lies in its own polygon and on drivable ground.
        mid = lane.centerline[1:-1] if len(lane.centerline) > 2 else lane.centerline.mean(0, keepdims=True)
        assert shapely.contains_xy(lane.polygon(), mid[:, 0], mid[:, 1]).all(), lane.id
        assert road_map.is_drivable(mid).all(), lane.id
    # Route lanes chain through the graph.
    road_map.route_polyline(scene.route)


@pytest.mark.parametrize("family", FAMILIES)
def test_log_is_plausible(family):
    config = GeneratorConfig()
    scene = generate_scene(family, 2, config)
    assert scene.num_steps == config.num_steps and scene.current_index == 15
    ego = scene.ego_log
    assert np.isfinite(ego).all()
    # The ego moves like a car: no jumps, speed consistent with displacement, on the road.
    step = np.linalg.norm(np.diff(ego[:, :2], axis=0), axis=1)
    assert np.allclose(step, 0.05 * (ego[1:, 3] + ego[:-1, 3]), atol=0.05)
    assert scene.map.is_drivable(ego[:, :2]).all()
    assert set(np.unique(scene.driving_command)) <= set(range(len(DRIVING_COMMANDS)))
    # No vehicle overlaps the ego, and moving vehicles do not overlap each other.
    tracks = scene.agents
    for t in range(0, scene.num_steps, 5):
        v = tracks.valid[t]
        boxes = shapely.polygons(box_corners(tracks.x[t], tracks.y[t], tracks.heading[t], tracks.length, tracks.width))
        assert not shapely.intersects(shapely.Polygon(ego_corners(ego[t])), boxes[v]).any()
        moving = v & (np.hypot(tracks.vx[t], tracks.vy[t]) > 0.5) & (tracks.agent_type == AgentType.VEHICLE)
        tree = shapely.STRtree(boxes[moving])
        i, j = tree.query(boxes[moving], predicate="intersects")
        assert (i == j).all()


def test_requested_vehicle_count_and_families_all_present():
    scene = generate_scene("intersection", 0, GeneratorConfig(num_vehicles=20))
    movers = (scene.agents.agent_type == AgentType.VEHICLE) | (scene.agents.agent_type == AgentType.BICYCLE)
    parked = np.array([t.startswith("parked") for t in scene.agents.track_ids])
    assert (movers & ~parked).sum() == 20
    with pytest.raises(ValueError, match="unknown scene family 'roundabout'"):
        generate_scene("roundabout", 0)


@pytest.mark.parametrize("family", ["intersection", "merge"])
def test_a_repetition_keeps_map_route_and_ego_and_redraws_the_traffic(family):
    """Repetition k of a generated route (a closed-loop run's `--repetitions`): the same map, route lanes and ego
    speeds, other road users and signal phases from (seed, k); repetition 0 is the scene itself."""
    base = generate_scene(family, 5)
    first, second = generate_scene(family, 5, repetition=1), generate_scene(family, 5, repetition=2)
    for rep in (first, second):
        assert [lane.id for lane in rep.map.lanes] == [lane.id for lane in base.map.lanes]
        assert rep.route == base.route and rep.token == base.token and rep.metadata["repetition"] > 0
    agents = [s.agents.x[s.current_index, s.agents.valid[s.current_index]] for s in (base, first, second)]
    assert len({tuple(np.round(a, 6)) for a in agents}) == 3  # each repetition has its own traffic
    # Same repetition, same scene: a repetition is reproducible.
    assert np.array_equal(generate_scene(family, 5, repetition=1).agents.x, first.agents.x)
    if family == "intersection":  # a signalised junction: its phase offsets are redrawn too
        offsets = [[p["offset_s"] for p in s.metadata["signal_plans"]] for s in (base, first, second)]
        assert offsets[0] != offsets[1] != offsets[2]
    with pytest.raises(ValueError, match="repetition"):
        generate_scene(family, 5, repetition=-1)


def test_a_repetition_without_other_road_users_drives_the_same_ego():
    """The ego's speeds are drawn as in repetition 0: alone on the road, its log is the same in every repetition."""
    alone = GeneratorConfig(num_vehicles=0, max_pedestrians=0)
    logs = [generate_scene("straight", 5, alone, repetition=k).ego_log for k in range(3)]
    assert np.array_equal(logs[0], logs[1]) and np.array_equal(logs[0], logs[2])
