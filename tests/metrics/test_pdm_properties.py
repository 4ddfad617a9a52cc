"""Property tests (hypothesis) of the PDM scorer over random trajectories, generated scenes and object sets.

The metric cache (PDM-Closed reference, scoring map, log-replayed observation) of a few generated scenes is
built once per (scene, version); hypothesis draws trajectories (smooth or wild), extra object boxes added to
the observation, and the scene. Checked: no exception; every sub-score and score in [0, 1] (NaN only where the
version lacks the metric); the aggregation identities of NAVSIM's weights (spec §1.9, §2.1); DAC 0 off the road
(against an independent point-in-polygon oracle); NC 0 through a stopped vehicle on the ego's path; failed rows
(valid False, a reason) for NaN / inf / wrongly shaped / empty trajectories.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from metrics.observation import Observation
from metrics.pdm import MULTIPLICATIVE_NAMES, WEIGHTS, PDMRows, ScoringContext, final_score
from metrics.pdm_agent import score_agent
from scenarios.generator import generate_scene
from sim.envs.scene_scoring import SceneScorer
from sim.geometry import local_to_global
from sim.state import AgentType

# W0SIM_PROPERTY_SCALE=N runs N times the examples with fresh randomness (a deeper search than the default
# derandomized, CI-sized run).
SCALE = max(1, int(os.environ.get("W0SIM_PROPERTY_SCALE", "1")))
SETTINGS = dict(deadline=None, derandomize=SCALE == 1, suppress_health_check=[HealthCheck.too_slow],
                print_blob=True)
SCENES = (("straight", 1), ("curve", 3), ("intersection", 2), ("merge", 4))
VERSIONS = ("v1.1", "v2.2")
ALL_METRICS = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
               "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "comfort",
               "lane_keeping", "history_comfort", "two_frame_extended_comfort")
# Metrics a version reports (the others are NaN); EC needs the neighbouring frame, so one frame leaves it NaN.
REPORTED = {"v1.1": ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
                     "ego_progress", "time_to_collision_within_bound", "comfort"),
            "v2.2": ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
                     "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
                     "history_comfort")}
DISCRETE = {"no_at_fault_collisions": {0.0, 0.5, 1.0}, "drivable_area_compliance": {0.0, 1.0},
            "driving_direction_compliance": {0.0, 0.5, 1.0}, "traffic_light_compliance": {0.0, 1.0},
            "time_to_collision_within_bound": {0.0, 1.0}, "comfort": {0.0, 1.0}, "lane_keeping": {0.0, 1.0},
            "history_comfort": {0.0, 1.0}}
# Pacifica footprint from the spec (§1.2), kept independent of sim.geometry's footprints for the DAC oracle.
REAR_AXLE_TO_CENTER, HALF_LENGTH, HALF_WIDTH = 1.461, 2.588, 1.1485


def scorer(scene_index: int, version: str) -> SceneScorer:
    return scorer_for(*SCENES[scene_index], version)


@functools.lru_cache(maxsize=None)
def scorer_for(family: str, seed: int, version: str) -> SceneScorer:
    """The metric cache of a generated scene's current frame, built once per test session."""
    return SceneScorer(_scene(family, seed), version)


@functools.lru_cache(maxsize=None)
def _scene(family: str, seed: int):
    return generate_scene(family, seed)


# --- strategies ----------------------------------------------------------------------------------------------

def _unicycle(speed0: float, accel: float, yaw_rate: float, lateral: float, n: int, interval: float) -> np.ndarray:
    """n local poses at interval: constant acceleration / yaw rate, plus a lateral drift ramp; speed >= 0."""
    t = np.arange(1, n + 1) * interval
    fine = np.linspace(0.0, t[-1], 200 * n + 1)
    v = np.maximum(speed0 + accel * fine, 0.0)
    h = yaw_rate * fine
    dt = np.diff(fine)
    x = np.concatenate([[0.0], np.cumsum(v[:-1] * np.cos(h[:-1]) * dt)])
    y = np.concatenate([[0.0], np.cumsum(v[:-1] * np.sin(h[:-1]) * dt)])
    idx = np.searchsorted(fine, t - 1e-9)
    poses = np.stack([x[idx], y[idx], h[idx]], -1)
    poses[:, 1] += lateral * np.minimum(t / t[-1], 1.0)
    return poses


@st.composite
def smooth_trajectories(draw, min_speed: float = 0.0, lateral=(-6.0, 6.0), max_yaw_rate: float = 0.3):
    speed = draw(st.floats(min_speed, 20.0))
    accel = draw(st.floats(-3.0, 3.0))
    yaw_rate = draw(st.floats(-max_yaw_rate, max_yaw_rate))
    lat = draw(st.floats(*lateral))
    return _unicycle(speed, accel, yaw_rate, lat, 8, 0.5), 0.5


@st.composite
def wild_trajectories(draw):
    n = draw(st.sampled_from([8, 8, 8, 1, 2, 5, 12, 40]))
    interval = draw(st.sampled_from([0.5, 0.5, 0.1, 0.25, 1.0]))
    coord = st.floats(-150.0, 150.0, allow_nan=False, allow_infinity=False)
    heading = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)
    poses = draw(st.lists(st.tuples(coord, coord, heading), min_size=n, max_size=n))
    scale = draw(st.sampled_from([1.0] * 6 + [1e3, 1e8, 1e30]))  # absurd magnitudes (still float32-finite)
    return np.array(poses, dtype=np.float64) * np.array([scale, scale, 1.0]), interval


# Near-lane-keeping, smooth and wild (anything: jumps, U-turns, other pose counts and intervals).
trajectories = st.one_of(smooth_trajectories(lateral=(-1.5, 1.5), max_yaw_rate=0.08), smooth_trajectories(),
                         wild_trajectories())

OBJECT_TYPES = [t for t in AgentType]


@st.composite
def object_sets(draw, max_size: int = 4):
    """Boxes (local x, y, heading, length, width, speed along heading, type) present over the whole horizon."""
    box = st.tuples(st.floats(-15.0, 70.0), st.floats(-12.0, 12.0), st.floats(-math.pi, math.pi),
                    st.floats(0.3, 8.0), st.floats(0.3, 3.0), st.sampled_from([0.0, 0.0, 0.03, 2.0, 8.0]),
                    st.sampled_from(OBJECT_TYPES))
    return draw(st.lists(box, max_size=max_size))


def with_objects(base: Observation, origin: np.ndarray, boxes, dt: float = 0.1) -> Observation:
    """The observation plus constant-velocity boxes given in the local frame of origin (x, y, heading)."""
    if not boxes:
        return base
    steps = base.num_steps
    b = np.array([bx[:6] for bx in boxes], dtype=np.float64)
    start = local_to_global(b[:, :3], origin)  # (K, 3)
    vx, vy = b[:, 5] * np.cos(start[:, 2]), b[:, 5] * np.sin(start[:, 2])
    t = np.arange(steps)[:, None] * dt
    cat = lambda a, c: np.concatenate([a, c], axis=1)  # noqa: E731
    ones = np.ones((steps, len(boxes)))
    return Observation(
        cat(base.x, start[:, 0] + t * vx), cat(base.y, start[:, 1] + t * vy), cat(base.heading, start[:, 2] * ones),
        cat(base.vx, vx * ones), cat(base.vy, vy * ones), cat(base.valid, ones.astype(bool)),
        np.concatenate([base.length, b[:, 3]]), np.concatenate([base.width, b[:, 4]]),
        np.concatenate([base.agent_type, np.array([int(bx[6]) for bx in boxes], dtype=base.agent_type.dtype)]),
        list(base.track_ids) + [f"prop_{i}" for i in range(len(boxes))], list(base.red_light_ids),
        base.red_light_polygons, base.red_mask)


def context_with(s: SceneScorer, boxes) -> ScoringContext:
    ctx = s.context
    return ScoringContext(ctx.scoring_map, with_objects(ctx.observation, s.reference.initial_state[:3], boxes),
                          ctx.centerline_xy, ctx.history_states)


def score(s: SceneScorer, poses, interval, boxes=()) -> PDMRows:
    return score_agent(poses, interval, s.reference, context_with(s, boxes) if boxes else s.context, s.version)


def check_ranges(rows: PDMRows, version: str) -> None:
    assert rows.valid.tolist() == [True], rows.reason
    for name in ALL_METRICS:
        value = float(getattr(rows, name)[0])
        if name in REPORTED[version]:
            assert 0.0 <= value <= 1.0, (name, value)
            if name in DISCRETE:
                assert value in DISCRETE[name], (name, value)
        else:
            assert math.isnan(value), (name, value)
    for value in (rows.score[0], final_score(rows)[0], rows.multiplicative_metrics_prod[0]):
        assert 0.0 <= value <= 1.0, value
    assert np.isfinite(rows.weighted_metrics[0]).all()
    assert np.isfinite(rows.states).all()


# --- properties ----------------------------------------------------------------------------------------------

@settings(max_examples=40 * SCALE, **SETTINGS)
@given(scene=st.integers(0, len(SCENES) - 1), version=st.sampled_from(VERSIONS), trajectory=trajectories,
       boxes=object_sets())
def test_no_crash_scores_in_unit_interval_and_aggregation_identity(scene, version, trajectory, boxes):
    s = scorer(scene, version)
    poses, interval = trajectory
    rows = score(s, poses, interval, boxes)
    check_ranges(rows, version)
    event(f"{version} NC={rows.no_at_fault_collisions[0]} DAC={rows.drivable_area_compliance[0]}")
    event(f"TTC={rows.time_to_collision_within_bound[0]} score>0: {final_score(rows)[0] > 0}")
    g = {name: float(getattr(rows, name)[0]) for name in ALL_METRICS}
    assert rows.multiplicative_metrics_prod[0] == pytest.approx(
        np.prod([g[n] for n in MULTIPLICATIVE_NAMES[version]]), abs=1e-12)
    if version == "v1.1":
        # NAVSIM v1.1: PDMS = NC * DAC * (5 EP + 5 TTC + 2 C + 0 DDC) / 12.
        assert WEIGHTS["v1.1"].tolist() == [5.0, 5.0, 2.0, 0.0]
        expected = (g["no_at_fault_collisions"] * g["drivable_area_compliance"]
                    * (5 * g["ego_progress"] + 5 * g["time_to_collision_within_bound"] + 2 * g["comfort"]) / 12.0)
        assert rows.score[0] == pytest.approx(expected, abs=1e-12)
        assert final_score(rows)[0] == pytest.approx(expected, abs=1e-12)
        # Quirk (issue #56): NC * DAC == 0 reports EP 0.
        if g["no_at_fault_collisions"] * g["drivable_area_compliance"] == 0.0:
            assert g["ego_progress"] == 0.0
    else:
        # NAVSIM v2.2: EPDMS = NC * DAC * DDC * TLC * (5 EP + 5 TTC + 2 LK + 2 HC + 2 EC) / 16; EC NaN -> /14.
        assert WEIGHTS["v2.2"].tolist() == [5.0, 5.0, 2.0, 2.0, 2.0]
        product = (g["no_at_fault_collisions"] * g["drivable_area_compliance"] * g["driving_direction_compliance"]
                   * g["traffic_light_compliance"])
        part = 5 * g["ego_progress"] + 5 * g["time_to_collision_within_bound"] + 2 * g["lane_keeping"] \
            + 2 * g["history_comfort"]
        assert final_score(rows)[0] == pytest.approx(product * part / 14.0, abs=1e-12)
        assert rows.score[0] == pytest.approx(product * part / 14.0, abs=1e-12)  # pdm_score leaves EC out
        for ec in (0.0, 1.0):
            assert final_score(rows, ec)[0] == pytest.approx(product * (part + 2 * ec) / 16.0, abs=1e-12)
    # Deterministic: the same input scores the same.
    again = score(s, poses, interval, boxes)
    assert final_score(again)[0] == final_score(rows)[0]


def _corners(states: np.ndarray) -> np.ndarray:
    """(T, 4, 2) ego corners from rear-axle states (spec §1.2)."""
    h = states[:, 2]
    c, s = np.cos(h), np.sin(h)
    cx, cy = states[:, 0] + REAR_AXLE_TO_CENTER * c, states[:, 1] + REAR_AXLE_TO_CENTER * s
    out = []
    for lon, lat in ((HALF_LENGTH, HALF_WIDTH), (-HALF_LENGTH, HALF_WIDTH), (-HALF_LENGTH, -HALF_WIDTH),
                     (HALF_LENGTH, -HALF_WIDTH)):
        out.append(np.stack([cx + lon * c - lat * s, cy + lon * s + lat * c], -1))
    return np.stack(out, 1)


def _off_drivable(s: SceneScorer, states: np.ndarray) -> bool:
    """Oracle: some corner at some step lies strictly inside no roadblock / intersection / carpark polygon."""
    smap = s.context.scoring_map
    polygons = [p for p, t in zip(smap.polygons, smap.types) if t in ("ROADBLOCK", "INTERSECTION", "CARPARK_AREA",
                                                                      "DRIVABLE_AREA")]
    pts = _corners(states).reshape(-1, 2)
    inside = np.zeros(len(pts), dtype=bool)
    for polygon in polygons:
        inside |= shapely.contains_xy(polygon, pts[:, 0], pts[:, 1])
    return not inside.all()


@settings(max_examples=25 * SCALE, **SETTINGS)
@given(scene=st.integers(0, len(SCENES) - 1), version=st.sampled_from(VERSIONS),
       trajectory=st.one_of(smooth_trajectories(), smooth_trajectories(lateral=(-40.0, 40.0)), wild_trajectories()))
def test_dac_is_zero_exactly_when_the_footprint_leaves_the_drivable_area(scene, version, trajectory):
    s = scorer(scene, version)
    rows = score(s, *trajectory)
    assert rows.valid[0], rows.reason
    off = _off_drivable(s, rows.states[0])
    event(f"off drivable area: {off}")
    assert rows.drivable_area_compliance[0] == (0.0 if off else 1.0)
    if off:
        assert final_score(rows)[0] == 0.0


@settings(max_examples=20 * SCALE, **SETTINGS)
@given(seed=st.sampled_from([1, 5, 7]), version=st.sampled_from(VERSIONS),
       side=st.sampled_from([-1.0, 1.0]), lateral=st.floats(40.0, 120.0), forward=st.floats(0.0, 60.0))
def test_trajectory_far_off_to_the_side_gets_dac_zero(seed, version, side, lateral, forward):
    """Straight roads (at most ~13 m of roadblock / carpark to either side of the ego): a trajectory heading
    40-120 m off to the side (poses along a straight line, headings along it) leaves the drivable area."""
    s = scorer_for("straight", seed, version)
    t = np.arange(1, 9) / 8.0
    heading = math.atan2(side * lateral, forward)
    poses = np.stack([forward * t, side * lateral * t, np.full(8, heading)], -1)
    rows = score(s, poses, 0.5)
    assert rows.valid[0], rows.reason
    assert rows.drivable_area_compliance[0] == 0.0
    assert rows.score[0] == 0.0 and final_score(rows)[0] == 0.0


@settings(max_examples=25 * SCALE, **SETTINGS)
@given(scene=st.integers(0, len(SCENES) - 1), version=st.sampled_from(VERSIONS),
       trajectory=smooth_trajectories(min_speed=4.0, lateral=(-3.0, 3.0)), frac=st.floats(0.3, 0.85),
       vehicle=st.tuples(st.floats(3.5, 6.0), st.floats(1.6, 2.4)))
def test_driving_through_a_stopped_vehicle_on_the_path_gives_nc_zero(scene, version, trajectory, frac, vehicle):
    s = scorer(scene, version)
    poses, interval = trajectory
    free = score(s, poses, interval)
    states = free.states[0]
    speed = np.hypot(states[:, 3], states[:, 4])
    center = states[:, :2] + REAR_AXLE_TO_CENTER * np.stack([np.cos(states[:, 2]), np.sin(states[:, 2])], -1)
    k = int(frac * (len(states) - 1))
    # The ego must be moving until it reaches the vehicle (a stopped ego is never at fault), and the vehicle must
    # not touch the ego at t = 0 (v2.2 log replay drops such tracks).
    assume(speed[: k + 1].min() > 0.5 and np.hypot(*(center[k] - center[0])) > 9.0)
    # A stopped vehicle centred on the ego's simulated footprint at step k, in the ego frame at t = 0.
    local = np.array([[*center[k], states[k, 2]]])
    origin = s.reference.initial_state[:3]
    c, sn = np.cos(origin[2]), np.sin(origin[2])
    dx, dy = local[0, 0] - origin[0], local[0, 1] - origin[1]
    box = (c * dx + sn * dy, -sn * dx + c * dy, states[k, 2] - origin[2], vehicle[0], vehicle[1], 0.0,
           AgentType.VEHICLE)
    rows = score(s, poses, interval, [box])
    assert rows.valid[0], rows.reason
    # The tracked states do not depend on the observation.
    np.testing.assert_array_equal(rows.states, free.states)
    assert rows.no_at_fault_collisions[0] == 0.0
    assert rows.collision_time_idx[0] <= k
    assert rows.score[0] == 0.0 and final_score(rows)[0] == 0.0


_finite = st.floats(-50.0, 50.0)
_bad_value = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def non_finite_trajectories(draw):
    n = draw(st.integers(1, 12))
    poses = np.array(draw(st.lists(st.tuples(_finite, _finite, _finite), min_size=n, max_size=n)))
    cells = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 2)), min_size=1, max_size=4))
    for i, j in cells:
        poses[i, j] = draw(_bad_value)
    return poses


@st.composite
def misshapen_trajectories(draw):
    kind = draw(st.sampled_from(["cols", "flat", "scalar", "3d", "empty", "empty_flat", "ragged", "text"]))
    n = draw(st.integers(1, 10))
    if kind == "cols":
        return np.zeros((n, draw(st.sampled_from([0, 1, 2, 4, 11]))))
    if kind == "flat":
        return np.zeros(3 * n)
    if kind == "scalar":
        return 1.0
    if kind == "3d":
        return np.zeros((1, n, 3))
    if kind == "empty":
        return np.zeros((0, 3))
    if kind == "empty_flat":
        return []
    if kind == "ragged":
        return [[1.0, 2.0, 0.0], [1.0, 2.0]] * n
    return [["a", "b", "c"]] * n


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(scene=st.integers(0, len(SCENES) - 1), version=st.sampled_from(VERSIONS),
       poses=st.one_of(non_finite_trajectories(), misshapen_trajectories()),
       interval=st.sampled_from([0.5, 0.1, 1.0]))
def test_nan_inf_misshapen_and_empty_trajectories_give_failed_rows(scene, version, poses, interval):
    s = scorer(scene, version)
    rows = score(s, poses, interval)
    assert len(rows) == 1 and rows.valid.tolist() == [False]
    assert isinstance(rows.reason[0], str) and rows.reason[0]
    for name in ALL_METRICS + ("score",):
        assert math.isnan(getattr(rows, name)[0]), name
    # SceneScorer reports 0 for a failed row.
    failed, reported = s.score(poses, interval)
    assert not failed.valid[0] and failed.reason == rows.reason and reported == 0.0


@pytest.mark.parametrize("interval", [0.0, -0.5, math.nan, math.inf, "0.5", None])
def test_bad_interval_gives_a_failed_row(interval):
    s = scorer(0, "v1.1")
    rows = score(s, _unicycle(10.0, 0.0, 0.0, 0.0, 8, 0.5), interval)
    assert rows.valid.tolist() == [False] and "interval" in rows.reason[0]
