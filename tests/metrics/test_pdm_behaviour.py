"""Behaviour tests of the PDM scorer on small hand-built scenes (no fixtures needed)."""
from __future__ import annotations

import numpy as np
import pytest
import shapely

from metrics.comfort import two_frame_extended_comfort
from metrics.observation import Observation
from metrics.pdm import PDMRows, ScoringContext, apply_human_filter, final_score, score_states
from metrics.pdm_agent import PDMReference, score_agent
from metrics.scoring_map import ScoringMap
from sim.map import Area, Lane, RoadMap
from sim.state import AgentTracks, AgentType, ego_state

START = ego_state(vx=10.0)


def _straight_map() -> ScoringMap:
    """A 3.5 m lane (y in [-1.75, 1.75]) and a 7 m opposite lane to the right, one roadblock each, x in [-60, 200]."""
    box = lambda y0, y1: shapely.box(-60.0, y0, 200.0, y1)  # noqa: E731
    return ScoringMap(["rb1", "rb2", "lane1", "lane2"], ["ROADBLOCK", "ROADBLOCK", "LANE", "LANE"],
                      np.array([box(-1.75, 1.75), box(-8.75, -1.75), box(-1.75, 1.75), box(-8.75, -1.75)]),
                      ["lane1"])


def _observation(objects=(), steps: int = 51) -> Observation:
    records = [dict(token=f"obj{i}", type="VEHICLE", heading=0.0, length=4.7, width=2.0, vx=0.0, vy=0.0,
                    t_start=0.0, t_end=5.0) | o for i, o in enumerate(objects)]
    return Observation.from_constant_velocity_records(records, steps)


def _context(objects=(), steps: int = 51) -> ScoringContext:
    return ScoringContext(_straight_map(), _observation(objects, steps), np.stack([np.arange(-60.0, 201.0),
                                                                                   np.zeros(261)], -1))


def _reference() -> PDMReference:
    poses = np.stack([np.arange(51) * 1.0, np.zeros(51), np.zeros(51)], -1)  # 10 m/s straight ahead
    return PDMReference.from_global_poses(START, poses)


def _cv(speed=10.0, lateral=0.0) -> np.ndarray:
    t = np.arange(1, 9) * 0.5
    return np.stack([speed * t, lateral * np.minimum(t / 2.0, 1.0), np.zeros(8)], -1)


@pytest.mark.parametrize("version", ["v1.1", "v2.2"])
def test_clean_drive_scores_one_and_all_scores_are_in_unit_interval(version):
    steps = 51 if version == "v1.1" else 41
    ctx = _context(steps=steps)
    row = score_agent(_cv(), 0.5, _reference(), ctx, version)
    assert row.valid.tolist() == [True]
    assert final_score(row, 1.0)[0] == pytest.approx(1.0, abs=1e-12)
    for poses in (_cv(3.0), _cv(12.0, -3.5), _cv(8.0, 2.5), np.zeros((8, 3))):
        row = score_agent(poses, 0.5, _reference(), ctx, version)
        for name in ("no_at_fault_collisions", "drivable_area_compliance", "ego_progress",
                     "time_to_collision_within_bound", "score"):
            value = getattr(row, name)[0]
            assert 0.0 <= value <= 1.0, (name, value)


def test_leaving_the_drivable_area_gives_dac_zero():
    row = score_agent(_cv(10.0, 6.0), 0.5, _reference(), _context())  # 6 m to the left: off every roadblock
    assert row.drivable_area_compliance[0] == 0.0 and row.score[0] == 0.0
    assert row.ego_areas[0, :, 1].any() and not row.ego_areas[0, 0, 1]


def test_driving_through_a_stopped_vehicle_gives_nc_zero():
    ctx = _context([dict(x0=20.0, y0=0.0)])
    row = score_agent(_cv(), 0.5, _reference(), ctx)
    assert row.no_at_fault_collisions[0] == 0.0 and row.score[0] == 0.0
    assert row.time_to_collision_within_bound[0] == 0.0
    assert row.ttc_time_idx[0] < row.collision_time_idx[0] < 41


def test_static_object_collision_gives_nc_half_and_rear_end_by_others_is_not_at_fault():
    cone = dict(type="TRAFFIC_CONE", x0=20.0, y0=0.0, length=0.5, width=0.5)
    assert score_agent(_cv(), 0.5, _reference(), _context([cone])).no_at_fault_collisions[0] == 0.5
    # A faster car from behind hits the ego: active rear collision, not at fault. (TTC still fails: the
    # footprint projected 0.9 s ahead meets the chaser, whose centre is then ahead of the unprojected rear axle.)
    chaser = dict(x0=-12.0, y0=0.0, vx=16.0)
    row = score_agent(_cv(), 0.5, _reference(), _context([chaser]))
    assert row.no_at_fault_collisions[0] == 1.0 and row.time_to_collision_within_bound[0] == 0.0


def test_oncoming_lane_costs_ddc_and_lane_keeping():
    t = np.arange(1, 9) * 0.5
    poses = np.stack([10 * t, -3.5 * np.minimum(t, 1.0), np.zeros(8)], -1)
    v1 = score_agent(poses, 0.5, _reference(), _context())
    assert v1.driving_direction_compliance[0] == 0.0 and v1.score[0] > 0.9  # weight 0 in v1.1
    v2 = score_agent(poses, 0.5, _reference(), _context(steps=41), "v2.2")
    assert v2.driving_direction_compliance[0] == 0.0 and v2.lane_keeping[0] == 0.0 and v2.score[0] == 0.0


def test_red_lights_from_map_and_2hz_status():
    from metrics.observation import red_mask_from_2hz
    red = red_mask_from_2hz(np.array([[False], [False], [False], [False], [True], [True], [True], [True], [True]]))
    assert red.shape == (41, 1) and not red[:20].any() and red[20:].all()
    smap = _straight_map()
    obs = _observation(steps=41).with_red_lights(["lane1"], [smap.polygon_of("lane1")], red)
    assert obs.red_light_ids == ["lane1"] and obs.red_mask.sum() == 21
    ctx = ScoringContext(smap, obs, np.stack([np.arange(-60.0, 201.0), np.zeros(261)], -1))
    assert score_agent(_cv(), 0.5, _reference(), ctx, "v2.2").traffic_light_compliance[0] == 0.0
    with pytest.raises(ValueError, match="cover"):
        red_mask_from_2hz(np.zeros((3, 1)))


def test_red_light_on_the_ego_path_gives_tlc_zero():
    smap = _straight_map()
    light = shapely.box(30.0, -1.75, 40.0, 1.75)
    obs = Observation.from_constant_velocity_records([], 41, red_lights=[("red_light_c1", light, 1.0)])
    ctx = ScoringContext(smap, obs, np.stack([np.arange(-60.0, 201.0), np.zeros(261)], -1))
    row = score_agent(_cv(), 0.5, _reference(), ctx, "v2.2")
    assert row.traffic_light_compliance[0] == 0.0 and row.score[0] == 0.0


@pytest.mark.parametrize("poses, interval, reason", [
    (np.full((8, 3), np.nan), 0.5, "non-finite"),
    (np.where(np.arange(24).reshape(8, 3) == 5, np.inf, 1.0), 0.5, "non-finite"),
    (np.zeros((8, 2)), 0.5, "shape"),
    (np.zeros((2, 8, 3)), 0.5, "shape"),
    (np.zeros((0, 3)), 0.5, "empty"),
    ([[1.0, "a", 0.0]], 0.5, "numeric"),
    (np.zeros((8, 3)), 0.0, "interval"),
    (np.zeros((8, 3)), float("nan"), "interval"),
    (np.full((8, 3), 1e39), 0.5, "float32"),
])
@pytest.mark.parametrize("version", ["v1.1", "v2.2"])
def test_invalid_trajectories_give_a_failed_row(poses, interval, reason, version):
    row = score_agent(poses, interval, _reference(), _context(steps=51 if version == "v1.1" else 41), version)
    assert isinstance(row, PDMRows) and len(row) == 1
    assert row.valid.tolist() == [False] and reason in row.reason[0]
    assert np.isnan(row.score[0]) and np.isnan(row.no_at_fault_collisions[0])
    assert np.isnan(final_score(row)[0])


def test_a_failed_row_is_shaped_like_a_scored_one():
    """Failed and scored rows concatenate into one table: a failed row (made without a scene, as `w0sim score` does)
    has a scored row's 41 states and ego-area flags."""
    scored = score_agent(np.zeros((8, 3)), 0.5, _reference(), _context(steps=41), "v2.2")
    failed = PDMRows.failed("v2.2", "no scene")
    assert failed.states.shape == scored.states.shape and failed.ego_areas.shape == scored.ego_areas.shape
    assert failed.weighted_metrics.shape == scored.weighted_metrics.shape


def test_score_states_rejects_bad_arrays():
    ctx = _context()
    with pytest.raises(ValueError, match="shape"):
        score_states(np.zeros((41, 11)), ctx)
    with pytest.raises(ValueError, match="non-finite"):
        score_states(np.full((1, 41, 11), np.nan), ctx)
    with pytest.raises(ValueError, match="version"):
        score_states(np.zeros((1, 41, 11)), ctx, "v3")


def test_batch_rows_are_scored_like_single_rows_apart_from_ep_normalisation():
    ctx = _context([dict(x0=30.0, y0=0.0, vx=5.0)])
    ref = _reference()
    rows = [score_agent(p, 0.5, ref, ctx) for p in (_cv(), _cv(14.0), _cv(10.0, 3.0))]
    from sim.dynamics import interpolate_trajectory_states, simulate
    refs = np.concatenate([ref.reference_states[None]] + [interpolate_trajectory_states(START, p, 0.5)
                                                            for p in (_cv(), _cv(14.0), _cv(10.0, 3.0))])
    batch = score_states(simulate(START, refs), ctx)
    for i, row in enumerate(rows, start=1):
        for name in ("no_at_fault_collisions", "drivable_area_compliance", "time_to_collision_within_bound",
                     "comfort", "driving_direction_compliance"):
            assert getattr(batch, name)[i] == getattr(row, name)[0], name


def test_initial_overlaps_are_removed_only_in_v2():
    ctx = _context([dict(x0=2.0, y0=0.0, vx=10.0)], steps=51)  # overlaps the ego at t = 0 and moves along
    assert score_agent(_cv(), 0.5, _reference(), ctx, "v1.1").no_at_fault_collisions[0] == 0.0
    ctx2 = _context([dict(x0=2.0, y0=0.0, vx=10.0)], steps=41)
    assert score_agent(_cv(), 0.5, _reference(), ctx2, "v2.2").no_at_fault_collisions[0] == 1.0


def test_human_filter_resets_zero_columns_and_recomputes_the_product():
    ctx = _context(steps=41)
    t = np.arange(1, 9) * 0.5
    oncoming = np.stack([10 * t, -3.5 * np.minimum(t, 1.0), np.zeros(8)], -1)
    plain = score_agent(oncoming, 0.5, _reference(), ctx, "v2.2")
    filtered = score_agent(oncoming, 0.5, _reference(), ctx, "v2.2", human_poses=oncoming)
    assert plain.multiplicative_metrics_prod[0] == 0.0
    assert filtered.driving_direction_compliance[0] == 1.0 and filtered.lane_keeping[0] == 1.0
    assert filtered.multiplicative_metrics_prod[0] == 1.0 and filtered.score[0] == plain.score[0]  # stale
    assert final_score(filtered, 1.0)[0] > 0.9
    with pytest.raises(ValueError, match="v2.2"):
        apply_human_filter(score_agent(oncoming, 0.5, _reference(), _context()), plain)


def test_extended_comfort_detects_a_changed_plan():
    from sim.dynamics import track_trajectories
    now = track_trajectories(START, _cv(), 0.5)[0]
    assert two_frame_extended_comfort(now, now) == 1.0
    swerve = track_trajectories(START, _cv(10.0, 3.0), 0.5)[0]
    assert two_frame_extended_comfort(swerve, now) == 0.0
    with pytest.raises(ValueError, match="delta_s"):
        two_frame_extended_comfort(now, now, delta_s=1.0)


def test_an_objects_first_appearance_speed_is_read_where_it_first_appears():
    """nuPlan's is_track_stopped reads a track's first appearance: a car appearing at step 2 at (3, 4) m/s is moving
    (5 m/s), though its rows before it appeared hold zeros; a track that never appears counts as stopped."""
    tracks = AgentTracks.empty(4, 3)
    tracks.valid[:, 0], tracks.vx[:, 0] = True, 10.0
    tracks.valid[2:, 1], tracks.vx[2:, 1], tracks.vy[2:, 1] = True, 3.0, 4.0
    tracks.length[:], tracks.width[:] = 4.0, 2.0
    obs = Observation.from_agent_tracks(tracks)
    assert obs.first_speed.tolist() == [10.0, 5.0, 0.0]
    assert obs.is_stopped.tolist() == [False, False, True]


def test_scoring_map_from_road_map_and_observation_from_agent_tracks():
    line = lambda y: np.stack([np.linspace(0, 100, 11), np.full(11, y)], -1)  # noqa: E731
    lanes = [Lane("a", line(0.0), line(1.75), line(-1.75), 15.0, "rb"),
             Lane("c", line(3.5), line(5.25), line(1.75), 15.0, "rbc", is_connector=True)]
    road = RoadMap(lanes, [Area("rb", "roadblock", shapely.box(0, -1.75, 100, 5.25)),
                           Area("x", "crosswalk", shapely.box(0, 0, 1, 1))])
    smap = ScoringMap.from_road_map(road, ["a"])
    assert smap.tokens == ["rb", "a", "c"] and smap.types == ["ROADBLOCK", "LANE", "LANE_CONNECTOR"]
    assert smap.on_route.tolist() == [False, True, False]
    inside = smap.points_in_polygons(np.array([[50.0, 0.0], [50.0, 1.75], [50.0, 9.0]]))
    # strict containment: the lane border y = 1.75 is inside neither lane
    assert inside.tolist() == [[True, True, False], [True, False, False], [False, False, False]]
    tracks = AgentTracks.empty(41, 1)
    tracks.x[:] = 40.0
    tracks.valid[:] = True
    tracks.length[:], tracks.width[:] = 4.0, 2.0
    tracks.agent_type[:] = int(AgentType.PEDESTRIAN)
    obs = Observation.from_agent_tracks(tracks)
    assert obs.is_agent.tolist() == [True] and obs.is_stopped.tolist() == [True]
    with pytest.raises(ValueError, match="red_light"):
        Observation.from_agent_tracks(AgentTracks(tracks.x, tracks.y, tracks.heading, tracks.vx, tracks.vy,
                                                  tracks.valid, tracks.length, tracks.width, tracks.height,
                                                  tracks.agent_type, ["red_light_1"]))
    far = ScoringMap.from_road_map(road, ["a"], center_xy=(250.0, 0.0), radius=100.0)  # only x >= 150 m kept
    assert far.tokens == []
    near = ScoringMap.from_road_map(road, ["a"], center_xy=(180.0, 0.0), radius=100.0)
    assert near.tokens == ["rb", "a", "c"]
    with pytest.raises(ValueError, match="unknown layer"):
        ScoringMap(["a"], ["ROAD"], np.array([shapely.box(0, 0, 1, 1)]))


def test_savgol_operator_matches_scipy_and_comfort_matches_a_literal_transcription():
    from scipy.signal import savgol_filter

    from metrics.comfort import _savgol, comfort_checks, phase_unwrap
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 41)).cumsum(axis=-1)
    for window, poly, deriv in ((41, 2, 0), (8, 2, 0), (15, 2, 1), (5, 3, 2), (5, 2, 1)):
        expected = savgol_filter(y, window, poly, deriv=deriv, delta=0.1, axis=-1)
        np.testing.assert_allclose(_savgol(y, window, poly, deriv, 0.1), expected, rtol=0, atol=1e-9)
    states = np.zeros((4, 41, 11))
    states[..., 5] = rng.normal(0, 1.5, (4, 41)).cumsum(axis=-1) * 0.3
    states[..., 2] = rng.normal(0, 0.05, (4, 41)).cumsum(axis=-1)
    for version, (acc_w, jerk_w) in (("v1.1", (41, 41)), ("v2.2", (8, 15))):
        lon = states[..., 5] + (0.0 if version == "v1.1" else 1.461 * (states[..., 9] ** 2 + states[..., 10]))
        def sg(v, w, p=2, d=0):
            return np.round(savgol_filter(v, min(w, 41), p, deriv=d, delta=0.1 if d else 1.0), 8)

        mag = np.hypot(states[..., 5], states[..., 6])
        heading = phase_unwrap(states[..., 2])
        literal = np.stack([
            np.all((sg(lon, acc_w) > -4.05) & (sg(lon, acc_w) < 2.40), -1),
            np.all(np.abs(sg(states[..., 6], acc_w)) < 4.89, -1),
            np.all(np.abs(np.round(savgol_filter(savgol_filter(mag, 8, 2), jerk_w, 2, 1, 0.1), 8)) < 8.37, -1),
            np.all(np.abs(np.round(savgol_filter(savgol_filter(lon, 8, 2), jerk_w, 2, 1, 0.1), 8)) < 4.13, -1),
            np.all(np.abs(sg(heading, 5, 3, 2)) < 1.93, -1),
            np.all(np.abs(sg(heading, 5, 2, 1)) < 0.95, -1),
        ], -1)
        assert comfort_checks(states, version).tolist() == literal.tolist()
        assert 0 < literal.sum() < literal.size  # the random states exercise both outcomes


def test_v2_intersections_exempt_ddc_and_lane_keeping():
    """Inside an INTERSECTION polygon the oncoming distance (v2 DDC) and lane-keeping run are not counted."""
    base = _straight_map()
    smap = ScoringMap(base.tokens + ["ix"], base.types + ["INTERSECTION"],
                      np.append(base.polygons, shapely.box(-10.0, -8.75, 100.0, 1.75)), ["lane1"])
    t = np.arange(1, 9) * 0.5
    oncoming = np.stack([10 * t, -3.5 * np.minimum(t, 1.0), np.zeros(8)], -1)
    line = np.stack([np.arange(-60.0, 201.0), np.zeros(261)], -1)
    v1 = score_agent(oncoming, 0.5, _reference(), ScoringContext(smap, _observation(), line), "v1.1")
    v2 = score_agent(oncoming, 0.5, _reference(), ScoringContext(smap, _observation(steps=41), line), "v2.2")
    assert v1.driving_direction_compliance[0] == 0.0  # v1.1 has no intersection exemption
    assert v2.driving_direction_compliance[0] == 1.0 and v2.lane_keeping[0] == 1.0
    assert v2.drivable_area_compliance[0] == 1.0 and v2.score[0] > 0.9


def test_an_object_dead_ahead_can_round_to_not_ahead_as_in_navsim():
    """nuPlan's arccos of a cosine rounded past 1 is NaN, which NAVSIM counts as 'not ahead'; w0sim keeps that (the
    reference suite found NAVSIM scoring TTC 1 on such a token). Elsewhere the angle is the true one."""
    from metrics.pdm_subscores import _relative_angle

    heading = np.linspace(-np.pi, np.pi, 2001)
    ego = np.stack([np.full_like(heading, 2171.456), np.full_like(heading, 12209.1)], -1)
    ahead = ego + 11.0 * np.stack([np.cos(heading), np.sin(heading)], -1)
    angle = _relative_angle(ego, heading, ahead)
    assert np.isnan(angle).any() and np.nanmax(angle) < 1e-6  # dead ahead: 0 up to rounding, or NaN
    left = ego + 11.0 * np.stack([np.cos(heading + 1.0), np.sin(heading + 1.0)], -1)
    np.testing.assert_allclose(_relative_angle(ego, heading, left), 1.0, atol=1e-9)
    assert np.isnan(_relative_angle(ego[:1], heading[:1], ego[:1])).all()  # an object on the rear axle: undefined


def test_lane_keeping_counts_2_s_more_than_half_a_metre_off_the_centerline():
    """NAVSIM v2.2's lane keeping by hand: 0 after 20 steps (2 s) in a row with the centre > 0.5 m off the
    centerline, steps in an intersection neither counting nor resetting the run."""
    from types import SimpleNamespace

    from metrics.pdm_subscores import lane_keeping

    line = shapely.LineString([(-10.0, 0.0), (100.0, 0.0)])
    shapely.prepare(line)

    def lk(offsets, junction=None):
        offsets = np.asarray(offsets, dtype=np.float64)
        centre = np.stack([np.arange(len(offsets)) * 1.0, offsets], -1)[None]
        inside = np.zeros((1, len(offsets)), dtype=bool) if junction is None else np.asarray(junction)[None]
        return lane_keeping(SimpleNamespace(center=centre), line, inside)[0]

    assert lk([0.8] * 20 + [0.0] * 21) == 0.0  # 0.8 m off for 2 s
    assert lk([0.4] * 41) == 1.0  # within half a metre
    assert lk([0.8] * 19 + [0.0] + [0.8] * 19 + [0.0] * 2) == 1.0  # each run 1.9 s
    assert lk([0.51] * 41) == 0.0 and lk([0.49] * 41) == 1.0
    junction = [False] * 10 + [True] * 5 + [False] * 26
    assert lk([0.8] * 10 + [0.0] * 5 + [0.8] * 10 + [0.0] * 16, junction) == 0.0  # the junction steps do not reset
    assert lk([0.8] * 10 + [0.8] * 5 + [0.0] * 26, [False] * 10 + [True] * 5 + [False] * 26) == 1.0  # nor count


def test_driving_direction_compliance_sums_oncoming_metres_over_one_second_windows():
    """Spec §1.6 by hand: S[t] sums the oncoming distance over samples t-10..t (11 steps of 0.1 s); DDC is 1 below
    2 m, 0.5 below 6 m, else 0. Only the worst window counts, however long the whole oncoming stretch."""
    from types import SimpleNamespace

    from metrics.pdm_subscores import ONCOMING_TRAFFIC, driving_direction_compliance

    def ddc(step_m, oncoming):
        steps = np.asarray(step_m, dtype=np.float64)
        centre = np.stack([np.concatenate([[0.0], np.cumsum(steps[1:])]), np.zeros(len(steps))], -1)[None]
        areas = np.zeros((1, len(steps), 3), dtype=bool)
        areas[0, :, ONCOMING_TRAFFIC] = oncoming
        return driving_direction_compliance(SimpleNamespace(center=centre), areas)[0]

    everywhere = np.ones(41, dtype=bool)
    assert ddc([0.15] * 41, everywhere) == 1.0  # 6 m on the oncoming lane in all, 11 * 0.15 = 1.65 m a window
    assert ddc([0.3] * 41, everywhere) == 0.5  # 3.3 m a window
    assert ddc([0.6] * 41, everywhere) == 0.0  # 6.6 m a window
    assert ddc([1.0] * 41, np.arange(41) >= 36) == 0.5  # 5 m, all in the last half second
    assert ddc([1.0] * 41, np.arange(41) < 2) == 1.0  # sample 0 has no distance: 1 m
