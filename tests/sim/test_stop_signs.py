"""Stop signs in the road map, their scene-file round trip, and the RunningStopTest monitor on its own."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import shapely

from scenarios.generator import generate_scene
from scenarios.scene import load_scene, save_scene, scene_to_arrays
from sim.envs.events import StopSignMonitor
from sim.geometry import PACIFICA
from sim.map import MapError, RoadMap, StopSign
from sim.state import STATE_SIZE

# generate_scene("straight", 0): road_f0 runs +x along y = -1.75, road_b0 runs -x along y = +1.75.
STOP_X = 101.0


def sign_on(lane_id: str, road_map: RoadMap, x: float = STOP_X, sign_id: str = "stop_0") -> StopSign:
    """A stop sign whose 4 m x 3 m trigger covers lane `lane_id` around x, the sign post at the lane's right."""
    y = float(road_map.lane(lane_id).centerline[0, 1])
    side = -2.5 if y < 0 else 2.5
    return StopSign(sign_id, np.array([x, y + side]), shapely.box(x - 2.0, y - 1.5, x + 2.0, y + 1.5), (lane_id,))


def with_signs(road_map: RoadMap, signs: list[StopSign]) -> RoadMap:
    return RoadMap(road_map.lanes, road_map.areas, name=road_map.name, stop_signs=signs)


@pytest.fixture(scope="module")
def straight_map() -> RoadMap:
    return generate_scene("straight", 0).map


def ego_state(centre_x: float, speed: float, y: float = -1.75, heading: float = 0.0) -> np.ndarray:
    """Ego state row whose box centre is at (centre_x, y)."""
    state = np.zeros(STATE_SIZE)
    offset = PACIFICA.rear_axle_to_center
    state[0], state[1], state[2], state[3] = centre_x - offset * np.cos(heading), y - offset * np.sin(heading), heading, speed
    return state


def first_affected(monitor: StopSignMonitor, xs, speed: float = 10.0) -> float | None:
    for x in xs:
        monitor.update(ego_state(x, speed))
        if monitor.target is not None:
            return x
    return None


def run(monitor: StopSignMonitor, xs, speeds) -> list[tuple[int, str]]:
    hits = []
    for k, (x, v) in enumerate(zip(xs, speeds)):
        hits.extend((k, h) for h in monitor.update(ego_state(x, v)))
    return hits


# --- map -------------------------------------------------------------------------------------------


def test_map_keeps_stop_signs_and_defaults_to_none(straight_map):
    assert straight_map.stop_signs == []
    sign = sign_on("road_f0", straight_map)
    assert with_signs(straight_map, [sign]).stop_signs == [sign]


def test_unknown_lane_or_duplicate_id_is_a_map_error(straight_map):
    bad = StopSign("stop_9", np.zeros(2), shapely.box(0, 0, 1, 1), ("no_such_lane",))
    with pytest.raises(MapError, match=r"map 'straight'.*stop sign 'stop_9'.*no_such_lane"):
        RoadMap(straight_map.lanes, straight_map.areas, name="straight", stop_signs=[bad])
    sign = sign_on("road_f0", straight_map)
    with pytest.raises(MapError, match="duplicate stop sign ids"):
        with_signs(straight_map, [sign, sign])
    with pytest.raises(MapError, match="stop sign 'flat'.*trigger"):
        with_signs(straight_map, [StopSign("flat", np.zeros(2), shapely.Polygon(), ())])


def test_scene_files_round_trip_stop_signs(tmp_path):
    scene = generate_scene("straight", 0)
    plain = save_scene(scene, tmp_path / "plain.npz")
    # A map without stop signs writes exactly what it wrote before stop signs existed.
    header, arrays = scene_to_arrays(scene)
    assert "stop_signs" not in header["map"] and not any(name.startswith("stop_sign") for name in arrays)
    assert load_scene(plain).map.stop_signs == []

    signs = [sign_on("road_f0", scene.map), sign_on("road_b0", scene.map, x=40.0, sign_id="stop_1")]
    scene.map = with_signs(scene.map, signs)
    path = save_scene(scene, tmp_path / "signs.npz")
    loaded = load_scene(path).map.stop_signs
    assert [s.id for s in loaded] == ["stop_0", "stop_1"]
    for a, b in zip(signs, loaded):
        assert np.array_equal(a.position, b.position) and a.lane_ids == b.lane_ids
        assert a.trigger.equals_exact(b.trigger, 0.0)
    assert save_scene(load_scene(path), tmp_path / "again.npz").read_bytes() == path.read_bytes()


# --- monitor ---------------------------------------------------------------------------------------


def test_driving_through_a_stop_is_reported_once_when_leaving_the_volume(straight_map):
    monitor = StopSignMonitor(with_signs(straight_map, [sign_on("road_f0", straight_map)]))
    xs = np.arange(60.0, 140.0, 1.0)
    hits = run(monitor, xs, np.full(xs.size, 10.0))
    assert [h for _, h in hits] == ["stop_0"]
    # Affected from when the enlarged trigger (x 98.6..103.4) holds a lane point 0..4 m ahead and its centre
    # is within 4 m (x >= 97); reported on the first step whose lane points are all past it.
    assert xs[hits[0][0]] == 104.0
    assert monitor.target is None


def test_the_sign_affects_the_ego_within_4_m_of_the_trigger_centre(straight_map):
    road = with_signs(straight_map, [sign_on("road_f0", straight_map)])
    assert first_affected(StopSignMonitor(road), np.arange(90.0, 110.0, 0.25)) == 97.0
    # A trigger 2 m long seen from afar: its centre must be within 4 m, however early the lane points reach it.
    small = StopSign("s", np.array([STOP_X, -4.25]), shapely.box(STOP_X - 1, -3.25, STOP_X + 1, -0.25), ("road_f0",))
    assert first_affected(StopSignMonitor(with_signs(straight_map, [small])), np.arange(90.0, 110.0, 0.25)) == 97.0


def test_stopping_inside_the_volume_is_not_an_infraction(straight_map):
    monitor = StopSignMonitor(with_signs(straight_map, [sign_on("road_f0", straight_map)]))
    xs = np.concatenate([np.arange(80.0, 100.0, 1.0), [100.0, 100.0], np.arange(100.0, 130.0, 1.0)])
    speeds = np.where(np.arange(xs.size) == 21, 0.05, 10.0)
    assert run(monitor, xs, speeds) == []
    # Slow, but never below 0.1 m/s, is still running the stop.
    monitor = StopSignMonitor(with_signs(straight_map, [sign_on("road_f0", straight_map)]))
    assert [h for _, h in run(monitor, xs, np.where(speeds < 1, 0.1, speeds))] == ["stop_0"]


def test_stopping_before_the_sign_affects_the_ego_does_not_count(straight_map):
    monitor = StopSignMonitor(with_signs(straight_map, [sign_on("road_f0", straight_map)]))
    xs = np.concatenate([np.arange(80.0, 90.0, 1.0), [90.0], np.arange(90.0, 130.0, 1.0)])
    speeds = np.where(np.arange(xs.size) == 10, 0.0, 10.0)
    assert [h for _, h in run(monitor, xs, speeds)] == ["stop_0"]


def test_a_sign_on_the_opposite_lane_is_never_a_candidate(straight_map):
    monitor = StopSignMonitor(with_signs(straight_map, [sign_on("road_b0", straight_map)]))
    for x in np.arange(60.0, 140.0, 1.0):
        assert monitor.update(ego_state(x, 10.0)) == []
        assert monitor.target is None
    # Its own traffic (driving -x on road_b0) is affected by it.
    monitor = StopSignMonitor(with_signs(straight_map, [sign_on("road_b0", straight_map)]))
    hits = [h for x in np.arange(140.0, 60.0, -1.0) for h in monitor.update(ego_state(x, 10.0, y=1.75, heading=np.pi))]
    assert hits == ["stop_0"]


def test_reversing_through_the_volume_is_ignored(straight_map):
    monitor = StopSignMonitor(with_signs(straight_map, [sign_on("road_f0", straight_map)]))
    for x in np.arange(120.0, 80.0, -0.5):
        assert monitor.update(ego_state(x, -3.0)) == []
        assert monitor.target is None


def test_a_map_without_signs_costs_nothing(straight_map):
    monitor = StopSignMonitor(straight_map)
    assert monitor.sign_ids == [] and monitor.centres.shape == (0, 2)
    assert all(monitor.update(ego_state(x, 10.0)) == [] for x in np.arange(60.0, 140.0, 1.0))


def quarter_turned(road_map: RoadMap) -> RoadMap:
    """`road_map` rotated 90 degrees anticlockwise about the origin: (x, y) -> (-y, x)."""
    turn = lambda xy: np.stack([-xy[..., 1], xy[..., 0]], axis=-1)  # noqa: E731
    lanes = [dataclasses.replace(lane, centerline=turn(lane.centerline), left_boundary=turn(lane.left_boundary),
                                 right_boundary=turn(lane.right_boundary)) for lane in road_map.lanes]
    areas = [dataclasses.replace(area, polygon=shapely.transform(area.polygon, turn)) for area in road_map.areas]
    signs = [dataclasses.replace(sign, position=turn(np.asarray(sign.position)), trigger=shapely.transform(sign.trigger, turn))
             for sign in road_map.stop_signs]
    return RoadMap(lanes, areas, name=road_map.name, stop_signs=signs)


def test_the_monitor_measures_from_the_box_centre_whatever_the_heading(straight_map):
    # The same road and sign turned to run +y: the ego's box centre lies ahead of its rear axle along its heading,
    # so the sign affects it from the same distance (centre at 97 m) and it is reported once the lane points ahead
    # have all left the enlarged trigger (past 103.4 m).
    road = quarter_turned(with_signs(straight_map, [sign_on("road_f0", straight_map)]))
    monitor = StopSignMonitor(road)
    affected, hits = None, []
    for s in np.arange(60.0, 140.0, 0.25):
        hits.extend((s, h) for h in monitor.update(ego_state(1.75, 10.0, y=s, heading=np.pi / 2)))
        affected = s if affected is None and monitor.target is not None else affected
    assert affected == 97.0
    assert hits == [(103.5, "stop_0")]
