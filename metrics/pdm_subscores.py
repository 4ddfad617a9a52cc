"""PDM sub-scores (NAVSIM v1.1 / v2.2) vectorised over proposals B and time T: areas, NC, DAC, DDC, TTC, TLC, LK, EP."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from metrics.observation import Observation
from metrics.scoring_map import ScoringMap
from sim.geometry import PACIFICA, ego_center, ego_corners
from sim.state import StateIndex as S

MULTIPLE_LANES, NON_DRIVABLE_AREA, ONCOMING_TRAFFIC = 0, 1, 2  # EgoAreaIndex
STOPPED_EGO_SPEED = 0.05  # nuPlan collision_utils: ego at or below this speed is stopped (m/s)
TTC_STOPPED_SPEED = 5e-3  # PDMScorerConfig.stopped_speed_threshold
TTC_OFFSETS = np.arange(0, 10, 3)  # future steps 0, 3, 6, 9 (0.1 s each)
AHEAD_DEG, BEHIND_DEG = 30.0, 150.0  # nuPlan is_agent_ahead / is_agent_behind tolerances
DDC_HORIZON_STEPS = 10  # int(1.0 s / 0.1 s)
DDC_COMPLIANCE, DDC_VIOLATION = 2.0, 6.0  # metres
LK_DEVIATION, LK_HORIZON_STEPS = 0.5, 20  # metres, ceil(2.0 s / 0.1 s)


@dataclass
class EgoGeometry:
    """Ego footprint arrays for states (B, T, 11): corners (B, T, 4, 2), centre, map hits; polygons on demand."""

    states: np.ndarray
    corners: np.ndarray  # FL, RL, RR, FR
    center: np.ndarray  # (B, T, 2)
    in_polygons: np.ndarray  # (M, B, T, 6) strict containment of the 4 corners, centre, rear axle

    @classmethod
    def build(cls, states: np.ndarray, smap: ScoringMap) -> "EgoGeometry":
        center = ego_center(states)
        corners = ego_corners(states, center=center, nuplan_formula=True)
        points = np.concatenate([corners, center[..., None, :], states[..., None, :2]], axis=-2)
        return cls(states, corners, center, smap.points_in_polygons(points))

    def polygons(self, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Footprint polygons (ring FL, RL, RR, FR) of the given (proposal, step) pairs; built only where needed."""
        return shapely.polygons(self.corners[b, t])


def ego_areas(geo: EgoGeometry, smap: ScoringMap) -> np.ndarray:
    """(B, T, 3) bool flags MULTIPLE_LANES, NON_DRIVABLE_AREA, ONCOMING_TRAFFIC (spec §1.3)."""
    corners_in = geo.in_polygons[..., :4]  # (M, B, T, 4)
    lane_corners = corners_in[smap.lanes].sum(axis=-1)  # (L, B, T) corners per lane polygon
    multiple = ((lane_corners > 0).sum(axis=0) > 1) & np.all(lane_corners != 4, axis=0)
    non_drivable = corners_in[smap.drivable].any(axis=0).sum(axis=-1) < 4
    oncoming = ~geo.in_polygons[smap.on_route, ..., 4].any(axis=0)
    return np.stack([multiple, non_drivable, oncoming], axis=-1)


def in_intersection(geo: EgoGeometry, smap: ScoringMap, point: int) -> np.ndarray:
    """(B, T) bool: point 4 (centre) or 5 (rear axle) strictly inside an INTERSECTION polygon."""
    return geo.in_polygons[smap.intersection, ..., point].any(axis=0)


def _relative_angle(ego_xy: np.ndarray, ego_heading: np.ndarray, obj_xy: np.ndarray) -> np.ndarray:
    """nuPlan get_agent_relative_angle: arccos(dot(ego direction, unit vector ego -> object)) in [0, pi], per pair.

    Evaluated with nuPlan's own float operations (a norm and a dot of 2-vectors, pair by pair), NaN included: an
    object dead ahead whose cosine rounds past 1 gets NaN and counts as neither ahead nor behind, as in NAVSIM.
    The pairs are the few object-ego overlaps, so the loop is cheap."""
    ego_xy, obj_xy = np.asarray(ego_xy, dtype=np.float64), np.asarray(obj_xy, dtype=np.float64)
    heading = np.broadcast_to(np.asarray(ego_heading, dtype=np.float64), ego_xy.shape[:-1])
    out = np.empty(ego_xy.shape[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in np.ndindex(out.shape):
            agent = np.array([obj_xy[i][0] - ego_xy[i][0], obj_xy[i][1] - ego_xy[i][1]])
            ego = np.array([np.cos(heading[i]), np.sin(heading[i])])
            out[i] = np.arccos(np.dot(ego, agent / np.linalg.norm(agent)))
    return out


EGO_RADIUS = float(np.hypot(PACIFICA.length / 2.0, PACIFICA.width / 2.0))


def _near(ego_xy: np.ndarray, obs: Observation, steps: np.ndarray) -> np.ndarray:
    """(..., N) bool broad phase: ego box (centre (..., 2)) and the object boxes of `steps` could touch.

    `steps` (integer, broadcastable to ego_xy[..., 0]) picks the observation step; steps past the observation
    hold nothing. Bounding circles with a small margin; the exact shapely `intersects` runs only on these pairs.
    """
    ok = steps < obs.num_steps
    s = np.minimum(steps, obs.num_steps - 1)
    dx = ego_xy[..., 0, None] - obs.x[s]
    dy = ego_xy[..., 1, None] - obs.y[s]
    reach = EGO_RADIUS + obs.radius + 1e-6
    return (dx * dx + dy * dy <= reach * reach) & (obs.valid[s] & ok[..., None])


def _first_per_pair(keys: np.ndarray, order: np.ndarray, flag: np.ndarray, size: int) -> np.ndarray:
    """(size,) smallest `order` among entries with `flag`, per pair key; inf where none."""
    out = np.full(size, np.inf)
    np.minimum.at(out, keys[flag], order[flag].astype(np.float64))
    return out


def no_at_fault_collision(geo: EgoGeometry, areas: np.ndarray, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
    """NC (B,) in {0, 0.5, 1} and the first at-fault step (B,) (inf if none), spec §1.4.

    A non-at-fault collision puts the track on the proposal's ignore list for later steps, so a hit counts
    only before the first non-at-fault hit of the same (proposal, track).
    """
    batch, steps = geo.center.shape[:2]
    nc, first = np.ones(batch), np.full(batch, np.inf)
    if obs.num_tracks == 0:
        return nc, first
    b, t, n = np.nonzero(_near(geo.center, obs, np.arange(steps)))
    hit = shapely.intersects(geo.polygons(b, t), obs.polygons[t, n])
    b, t, n = b[hit], t[hit], n[hit]
    if b.size == 0:
        return nc, first
    states = geo.states[b, t]
    objects = obs.polygons[t, n]
    centroid = shapely.get_coordinates(shapely.centroid(objects))
    ego_stopped = np.hypot(states[:, S.VELOCITY_X], states[:, S.VELOCITY_Y]) <= STOPPED_EGO_SPEED
    track_stopped = obs.is_stopped[n]
    behind = _relative_angle(states[:, :2], states[:, S.HEADING], centroid) > np.deg2rad(BEHIND_DEG)
    bumper = shapely.linestrings(geo.corners[b, t][:, [0, 3]])
    front = shapely.intersects(bumper, objects)
    active = ~ego_stopped & ~track_stopped & ~behind
    lateral = active & ~front
    at_fault = (~ego_stopped & track_stopped) | (active & front) | (
        lateral & (areas[b, t, MULTIPLE_LANES] | areas[b, t, NON_DRIVABLE_AREA]))
    pair = b * obs.num_tracks + n
    ignored_from = _first_per_pair(pair, t, ~at_fault, batch * obs.num_tracks)
    counted = at_fault & (t < ignored_from[pair])
    value = np.where(obs.is_agent[n], 0.0, 0.5)
    np.minimum.at(nc, b[counted], value[counted])
    np.minimum.at(first, b[counted], t[counted].astype(np.float64))
    return nc, first


def drivable_area_compliance(areas: np.ndarray) -> np.ndarray:
    """DAC (B,): 0 if any step has a corner outside every drivable polygon."""
    return np.where(areas[..., NON_DRIVABLE_AREA].any(axis=-1), 0.0, 1.0)


def driving_direction_compliance(geo: EgoGeometry, areas: np.ndarray, center_in_intersection=None) -> np.ndarray:
    """DDC (B,) in {0, 0.5, 1}: max over t of the oncoming-lane distance in the window [t-10, t] (spec §1.6).

    v2.2 passes `center_in_intersection` (B, T): distance driven with the centre in an intersection is dropped.
    """
    progress = np.zeros(geo.center.shape[:2])
    progress[:, 1:] = np.linalg.norm(geo.center[:, 1:] - geo.center[:, :-1], axis=-1)
    keep = areas[..., ONCOMING_TRAFFIC]
    if center_in_intersection is not None:
        keep = keep & ~center_in_intersection
    progress[~keep] = 0.0
    # Window sums over [t - 10, t] as differences of a cumulative sum (equal up to rounding; the thresholds
    # are 2 m and 6 m).
    total = np.cumsum(progress, axis=-1)
    window = total.copy()
    window[:, DDC_HORIZON_STEPS + 1:] -= total[:, :-DDC_HORIZON_STEPS - 1]
    worst = window.max(axis=-1)
    return np.where(worst < DDC_COMPLIANCE, 1.0, np.where(worst < DDC_VIOLATION, 0.5, 0.0))


def progress_raw(geo: EgoGeometry, centerline: shapely.LineString) -> np.ndarray:
    """(B,) metres along the centerline from the first to the last centre (LineString.project), clipped at 0."""
    ends = shapely.points(geo.center[:, [0, -1]])
    s = shapely.line_locate_point(centerline, ends)
    return np.clip(s[:, 1] - s[:, 0], 0.0, None)


def time_to_collision(geo: EgoGeometry, areas: np.ndarray, obs: Observation, rear_in_intersection: np.ndarray,
                      num_steps: int, dt: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """TTC (B,) in {0, 1} and the first violating step (B,), looping over steps 0..num_steps-1 (spec §1.7, §2.2).

    The footprint at t is moved by speed * k * dt along the heading (k in 0, 3, 6, 9) and tested against the
    objects of step t + k; a non-violating hit puts the track on the proposal's TTC ignore list.
    """
    batch = geo.states.shape[0]
    ttc, first = np.ones(batch), np.full(batch, np.inf)
    if obs.num_tracks == 0 or num_steps <= 0:
        return ttc, first
    states = geo.states[:, :num_steps]
    speed = np.hypot(states[..., S.VELOCITY_X], states[..., S.VELOCITY_Y])  # (B, t)
    heading = states[..., S.HEADING]
    dxy = np.stack([np.cos(heading) * speed, np.sin(heading) * speed], axis=-1)  # (B, t, 2)
    delta_t = TTC_OFFSETS.astype(np.float64) * dt  # float(k) * interval_length
    shift = dxy[:, :, None, :] * delta_t[None, None, :, None]  # (B, t, K, 2)
    index = np.arange(num_steps)[:, None] + TTC_OFFSETS[None, :]  # (t, K): objects of step t + k
    near = _near(geo.center[:, :num_steps, None] + shift, obs, index)
    b, t, k, n = np.nonzero(near)
    if b.size == 0:
        return ttc, first
    # Projected footprints only where an object is near (one polygon per (b, t, k) pair).
    ring = geo.corners[b, t] + shift[b, t, k][:, None, :]
    objects = obs.polygons[index[t, k], n]
    hit = shapely.intersects(shapely.polygons(ring), objects)
    b, t, k, n, objects = b[hit], t[hit], k[hit], n[hit], objects[hit]
    live = speed[b, t] >= TTC_STOPPED_SPEED  # stopped ego: skipped, not ignored
    b, t, k, n = b[live], t[live], k[live], n[live]
    if b.size == 0:
        return ttc, first
    ego_xy, ego_h = states[b, t, :2], heading[b, t]
    centroid = shapely.get_coordinates(shapely.centroid(objects[live]))
    # The track state is (centroid at t + k, first-appearance heading); only its position enters the angle tests.
    angle = _relative_angle(ego_xy, ego_h, centroid)
    ahead = angle < np.deg2rad(AHEAD_DEG)
    behind = angle > np.deg2rad(BEHIND_DEG)
    risky_area = areas[b, t, MULTIPLE_LANES] | areas[b, t, NON_DRIVABLE_AREA] | rear_in_intersection[b, t]
    violation = ahead | (risky_area & ~behind)
    order = t * len(TTC_OFFSETS) + k
    pair = b * obs.num_tracks + n
    ignored_from = _first_per_pair(pair, order, ~violation, batch * obs.num_tracks)
    counted = violation & (order < ignored_from[pair])
    ttc[b[counted]] = 0.0
    np.minimum.at(first, b[counted], t[counted].astype(np.float64))
    return ttc, first


def traffic_light_compliance(geo: EgoGeometry, obs: Observation) -> np.ndarray:
    """TLC (B,): 0 if the ego polygon intersects a red-light polygon of the same step (v2.2, spec §2.3)."""
    batch, steps = geo.center.shape[0], min(geo.center.shape[1], obs.num_steps)
    # Broad phase: the ego centre within EGO_RADIUS of the red polygon's bounding box.
    b, t, r = np.nonzero(obs.red_mask[None, :steps] & _near_boxes(geo.center[:, :steps], obs.red_light_bounds))
    if b.size == 0:
        return np.ones(batch)
    hit = shapely.intersects(geo.polygons(b, t), obs.red_light_polygons[r])
    return np.where(np.bincount(b[hit], minlength=batch) > 0, 0.0, 1.0)


def _near_boxes(center: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(..., R) bool: centres (..., 2) within EGO_RADIUS (plus a margin) of bounding boxes (R, 4)."""
    reach = EGO_RADIUS + 1e-6
    x, y = center[..., 0, None], center[..., 1, None]
    return ((x >= bounds[:, 0] - reach) & (x <= bounds[:, 2] + reach)
            & (y >= bounds[:, 1] - reach) & (y <= bounds[:, 3] + reach))


def lane_keeping(geo: EgoGeometry, centerline: shapely.LineString, center_in_intersection: np.ndarray) -> np.ndarray:
    """LK (B,): 0 once the centre is > 0.5 m off the centerline for 20 counted steps in a row (v2.2, spec §2.4).

    Steps with the centre inside an intersection neither count nor reset the run.
    """
    # distance > 0.5 m, as "not within 0.5 m": GEOS answers that from the prepared line's facet index.
    deviation = ~shapely.dwithin(centerline, shapely.points(geo.center), LK_DEVIATION)  # (B, T)
    counted = ~center_in_intersection
    steps = np.arange(deviation.shape[1])
    # Run length at t = deviating counted steps since the last counted non-deviating step.
    reset = np.where(counted & ~deviation, steps, -1)
    last_reset = np.maximum.accumulate(reset, axis=-1)
    ones = np.cumsum(counted & deviation, axis=-1)
    ones_at_reset = np.where(last_reset >= 0, np.take_along_axis(ones, np.maximum(last_reset, 0), axis=-1), 0)
    run = ones - ones_at_reset
    return np.where((run >= LK_HORIZON_STEPS).any(axis=-1), 0.0, 1.0)


__all__ = [
    "EgoGeometry", "ego_areas", "in_intersection", "no_at_fault_collision", "drivable_area_compliance",
    "driving_direction_compliance", "progress_raw", "time_to_collision", "traffic_light_compliance", "lane_keeping",
]
