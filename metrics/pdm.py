"""NAVSIM PDM Score v1.1 (PDMS) and EPDMS v2.2 of simulated ego states: sub-scores, aggregation, human filter."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import shapely

from metrics import pdm_subscores as sub
from metrics.comfort import comfort_checks
from metrics.observation import Observation
from metrics.scoring_map import ScoringMap
from sim.geometry import principal_value
from sim.state import STATE_SIZE

VERSIONS = ("v1.1", "v2.2")
# NAVSIM's result (CSV) columns per version, in NAVSIM's order: the sub-scores between `valid` and `score`.
SUBSCORE_COLUMNS = {
    "v1.1": ("no_at_fault_collisions", "drivable_area_compliance", "ego_progress", "time_to_collision_within_bound",
             "comfort", "driving_direction_compliance"),
    "v2.2": ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
             "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
             "history_comfort", "two_frame_extended_comfort"),
}
# The columns of the scorer's own row: v2.2's EC comes from the two-frame stage, after the scorer (and its filter).
SCORER_COLUMNS = {version: tuple(c for c in columns if c != "two_frame_extended_comfort")
                  for version, columns in SUBSCORE_COLUMNS.items()}
PROGRESS_DISTANCE_THRESHOLD = 5.0  # m (v1.1 and v2.2; v1.0 used 0.1)
# Weighted metrics in NAVSIM's WeightedMetricIndex order.
WEIGHTED_NAMES = {
    "v1.1": ("ego_progress", "time_to_collision_within_bound", "comfort", "driving_direction_compliance"),
    "v2.2": ("ego_progress", "time_to_collision_within_bound", "lane_keeping", "history_comfort",
             "two_frame_extended_comfort"),
}
WEIGHTS = {"v1.1": np.array([5.0, 5.0, 2.0, 0.0]), "v2.2": np.array([5.0, 5.0, 2.0, 2.0, 2.0])}
MULTIPLICATIVE_NAMES = {
    "v1.1": ("no_at_fault_collisions", "drivable_area_compliance"),
    "v2.2": ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
             "traffic_light_compliance"),
}
# Columns the v2.2 human filter may reset: every column of the scorer's row but the aggregates.
HUMAN_FILTER_COLUMNS = SCORER_COLUMNS["v2.2"]
HISTORY_DT_US = 100_000
# Observation length of NAVSIM's metric cache at 10 Hz, t = 0 included: 0..5 s in v1.1, 0..4 s in v2.2.
OBSERVATION_STEPS = {"v1.1": 51, "v2.2": 41}


def _check_version(version: str) -> str:
    if version not in VERSIONS:
        raise ValueError(f"unknown PDM score version {version!r}; expected one of {VERSIONS}")
    return version


@dataclass
class ScoringContext:
    """What the scorer needs besides the states: map, observation, PDM-Closed centerline, past ego (v2.2 HC)."""

    scoring_map: ScoringMap
    observation: Observation
    centerline_xy: np.ndarray  # (K, 2)
    history_states: np.ndarray | None = None  # (H, 11) states before t0 for history comfort (v2.2)

    def __post_init__(self) -> None:
        self.centerline_xy = np.asarray(self.centerline_xy, dtype=np.float64)[:, :2]
        self.centerline = shapely.LineString(self.centerline_xy)
        shapely.prepare(self.centerline)
        self._v2_observation: tuple[int, Observation] | None = None

    @staticmethod
    def history_from_past_states(past: np.ndarray, dt_us: int = HISTORY_DT_US) -> np.ndarray:
        """(H, 11) history for HC from logged past states (P, 8) = x, y, heading, vx, vy, ax, ay, time_us.

        NAVSIM samples the past trajectory at integer times arange(start, end, 0.1 s)[:-1] (so the -0.1 s state
        is missing, spec §2.5), linearly (scipy interp1d's rule, heading unwrapped, then wrapped to [-pi, pi));
        steering, yaw rate and yaw acceleration are 0.
        """
        past = np.asarray(past, dtype=np.float64)
        if past.ndim != 2 or past.shape[1] != 8 or past.shape[0] < 2:
            raise ValueError(f"past states must have shape (P >= 2, 8), got {past.shape}")
        times = past[:, 7].astype(np.int64)
        if np.any(np.diff(times) <= 0):
            raise ValueError(f"past state times must increase strictly, got {times.tolist()}")
        samples = np.clip(np.arange(times[0], times[-1], dt_us, dtype=np.int64), times[0], times[-1])[:-1]
        values = past[:, :7].copy()
        values[:, 2] = np.unwrap(values[:, 2])
        hi = np.clip(np.searchsorted(times, samples, side="left"), 1, len(times) - 1)
        lo = hi - 1
        span = (times[hi] - times[lo]).astype(np.float64)[:, None]
        offset = (samples - times[lo]).astype(np.float64)[:, None]
        states = np.zeros((len(samples), STATE_SIZE))
        states[:, :7] = (values[hi] - values[lo]) / span * offset + values[lo]
        states[:, 2] = principal_value(states[:, 2])
        return states

    def observation_for(self, version: str, initial_state: np.ndarray) -> Observation:
        """v1.1: the observation as given; v2.2: without tracks overlapping the ego at t = 0 (log replay)."""
        if version == "v1.1":
            return self.observation
        key = hash(np.asarray(initial_state, dtype=np.float64).tobytes())
        if self._v2_observation is None or self._v2_observation[0] != key:
            self._v2_observation = (key, self.observation.without_initial_overlaps(initial_state))
        return self._v2_observation[1]


@dataclass
class PDMRows:
    """Scores of B rows (per-row arrays (B,)); NAVSIM result column names. NaN where a version lacks a metric.

    `score` is the scorer's own score: v1.1 PDMS; v2.2 `pdm_score` without EC (use `final_score` for EPDMS).
    Failed rows have valid False, NaN metrics and a reason.
    """

    version: str
    valid: np.ndarray
    reason: list[str]
    no_at_fault_collisions: np.ndarray
    drivable_area_compliance: np.ndarray
    driving_direction_compliance: np.ndarray
    traffic_light_compliance: np.ndarray
    ego_progress: np.ndarray
    time_to_collision_within_bound: np.ndarray
    comfort: np.ndarray
    lane_keeping: np.ndarray
    history_comfort: np.ndarray
    two_frame_extended_comfort: np.ndarray
    multiplicative_metrics_prod: np.ndarray
    weighted_metrics: np.ndarray  # (B, W) in WEIGHTED_NAMES order
    score: np.ndarray
    progress_raw: np.ndarray
    ego_areas: np.ndarray  # (B, T, 3)
    comfort_checks: np.ndarray  # (B, 6) v1.1: on the T states (C); v2.2: on history + states (HC)
    collision_time_idx: np.ndarray  # first at-fault collision step, inf if none
    ttc_time_idx: np.ndarray
    states: np.ndarray = field(repr=False, default=None)  # (B, T, 11) the scored states

    def __len__(self) -> int:
        return len(self.valid)

    def take(self, rows) -> "PDMRows":
        """The selected rows: an index array / list, or a slice (views, cheapest)."""
        rows = rows if isinstance(rows, slice) else np.atleast_1d(np.asarray(rows))
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "version" or v is None:
                values[f.name] = v
            elif f.name == "reason":
                values[f.name] = v[rows] if isinstance(rows, slice) else [v[i] for i in rows]
            else:
                values[f.name] = v[rows]
        return PDMRows(**values)

    def result(self, row: int = -1) -> dict:
        """NAVSIM's result columns of one row (v1.1 PDMResults / v2.2 scorer row) as plain floats."""
        out = {n: float(getattr(self, n)[row]) for n in SCORER_COLUMNS[self.version]}
        if self.version == "v1.1":
            out["score"] = float(self.score[row])
        else:
            out["multiplicative_metrics_prod"] = float(self.multiplicative_metrics_prod[row])
            out["weighted_metrics"] = [float(x) for x in self.weighted_metrics[row]]
            out["weighted_metrics_array"] = [float(x) for x in WEIGHTS["v2.2"]]
            out["pdm_score"] = float(self.score[row])
        return out

    @classmethod
    def failed(cls, version: str, reason: str, num_steps: int = 41) -> "PDMRows":
        """One failed row: valid False, NaN metrics, the reason."""
        _check_version(version)
        nan = lambda *shape: np.full((1,) + shape, np.nan)  # noqa: E731
        metrics = {f.name: nan() for f in fields(cls) if f.name not in (
            "version", "valid", "reason", "weighted_metrics", "ego_areas", "comfort_checks", "states")}
        return cls(version=version, valid=np.zeros(1, dtype=bool), reason=[reason],
                   weighted_metrics=nan(len(WEIGHTS[version])), ego_areas=np.zeros((1, num_steps, 3), dtype=bool),
                   comfort_checks=np.zeros((1, 6), dtype=bool), states=nan(num_steps, STATE_SIZE), **metrics)


def _aggregate(version: str, multi: np.ndarray, progress: np.ndarray, weighted_rest: list[np.ndarray]):
    """Multiplicative product (B,), normalised EP (B,), weighted-metric matrix (B, W), scorer score (B,)."""
    product = multi.prod(axis=0)
    raw = progress * product
    best = np.max(raw)
    if version == "v1.1":
        if best > PROGRESS_DISTANCE_THRESHOLD:
            ep = raw / best
        else:  # quirk (issue #56): rows with a zero product get EP 0
            ep = np.where(product == 0.0, 0.0, 1.0)
    else:  # v2.1+: the row's own progress, not multiplied by its own product
        ep = np.clip(progress / best, 0.0, 1.0) if best > PROGRESS_DISTANCE_THRESHOLD else np.ones_like(raw)
    weighted = np.stack([ep] + weighted_rest)  # (W, B), NAVSIM's layout
    weights = WEIGHTS[version]
    if version == "v2.2":
        weights = weights.copy()
        weights[-1] = 0.0  # the scorer's pdm_score leaves EC out (it needs the neighbouring frame)
    score = product * ((weighted * weights[:, None]).sum(axis=0) / weights.sum())
    return product, ep, weighted.T.copy(), score


def score_states(states: np.ndarray, context: ScoringContext, version: str = "v1.1",
                 with_history: bool = True) -> PDMRows:
    """Score simulated states (B, T, 11) — row 0 normally PDM-Closed, EP is normalised over all rows.

    v2.2 history comfort uses `context.history_states` when `with_history` (else HC = 1, as for the human
    filter's own scoring).
    """
    _check_version(version)
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 3 or states.shape[-1] != STATE_SIZE or states.shape[0] < 1 or states.shape[1] < 2:
        raise ValueError(f"states must have shape (B >= 1, T >= 2, {STATE_SIZE}), got {states.shape}")
    if not np.isfinite(states).all():
        raise ValueError("states hold non-finite values")
    batch, steps = states.shape[:2]
    smap = context.scoring_map
    obs = context.observation_for(version, states[0, 0])
    geo = sub.EgoGeometry.build(states, smap)
    areas = sub.ego_areas(geo, smap)
    nc, collision_idx = sub.no_at_fault_collision(geo, areas, obs)
    dac = sub.drivable_area_compliance(areas)
    progress = sub.progress_raw(geo, context.centerline)
    rear_in_intersection = sub.in_intersection(geo, smap, 5)
    nan = np.full(batch, np.nan)
    if version == "v1.1":
        checks = comfort_checks(states, version)
        ddc = sub.driving_direction_compliance(geo, areas)
        ttc, ttc_idx = sub.time_to_collision(geo, areas, obs, rear_in_intersection, steps)
        comfort = checks.all(axis=-1).astype(np.float64)
        tlc, lk, hc = nan, nan.copy(), nan.copy()
        product, ep, weighted, score = _aggregate(version, np.stack([nc, dac]), progress, [ttc, comfort, ddc])
    else:
        center_in_intersection = sub.in_intersection(geo, smap, 4)
        ddc = sub.driving_direction_compliance(geo, areas, center_in_intersection)
        ttc, ttc_idx = sub.time_to_collision(geo, areas, obs, rear_in_intersection, steps - int(sub.TTC_OFFSETS.max()))
        tlc = sub.traffic_light_compliance(geo, obs)
        lk = sub.lane_keeping(geo, context.centerline, center_in_intersection)
        checks, hc = _history_comfort(states, context.history_states if with_history else None)
        comfort = nan
        product, ep, weighted, score = _aggregate(
            version, np.stack([nc, dac, ddc, tlc]), progress, [ttc, lk, hc, np.zeros(batch)])
    return PDMRows(version, np.ones(batch, dtype=bool), [""] * batch, nc, dac, ddc, tlc, ep, ttc, comfort, lk, hc,
                   nan.copy(), product, weighted, score, progress, areas, checks, collision_idx, ttc_idx, states)


def _history_comfort(states: np.ndarray, history: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """v2.2 comfort checks (B, 6) and HC (B,) over history (H, 11) + each row's states on one 0.1 s grid.

    Without a history (PDM-Closed's own scoring, the human filter) NAVSIM sets HC = 1; the checks are then
    those of the states alone (reported, unused).
    """
    if history is None:
        return comfort_checks(states, "v2.2"), np.ones(states.shape[0])
    history = np.broadcast_to(np.asarray(history, dtype=np.float64), (states.shape[0],) + np.shape(history))
    checks = comfort_checks(np.concatenate([history, states], axis=1), "v2.2")
    return checks, checks.all(axis=-1).astype(np.float64)


def apply_human_filter(agent: PDMRows, human: PDMRows, human_row: int = 0) -> PDMRows:
    """v2.2 human-agent filter: where the logged human scores exactly 0 on a column, the agent gets 1.

    Then the multiplicative product and the weighted vector are recomputed; `score` (pdm_score) stays stale
    as in NAVSIM v2.2 (use `final_score`).
    """
    if agent.version != "v2.2" or human.version != "v2.2":
        raise ValueError("the human filter exists only for v2.2 rows")
    changes = {}
    for name in HUMAN_FILTER_COLUMNS:
        value = getattr(agent, name).copy()
        if getattr(human, name)[human_row] == 0.0:
            value[agent.valid] = 1.0
        changes[name] = value
    out = replace(agent, **changes)
    product = np.prod([changes[n] for n in MULTIPLICATIVE_NAMES["v2.2"]], axis=0)
    weighted = agent.weighted_metrics.copy()
    for i, name in enumerate(WEIGHTED_NAMES["v2.2"][:4]):
        weighted[:, i] = changes[name]
    return replace(out, multiplicative_metrics_prod=np.where(agent.valid, product, np.nan), weighted_metrics=weighted)


def epdms_with_extended_comfort(columns: dict[str, float], extended_comfort: float) -> float:
    """EPDMS (v2.2) of one token's columns (after the human filter) with its two-frame EC (NaN: EC's weight 0),
    NAVSIM's one-stage `compute_final_scores`."""
    weights = WEIGHTS["v2.2"].copy()
    values = np.array([float(columns[n]) for n in WEIGHTED_NAMES["v2.2"][:4]] + [extended_comfort])
    if np.isnan(extended_comfort):
        weights[-1], values[-1] = 0.0, 0.0
    product = np.prod([float(columns[n]) for n in MULTIPLICATIVE_NAMES["v2.2"]])
    return float(product * (values * weights).sum() / weights.sum())


def final_score(rows: PDMRows, extended_comfort=None) -> np.ndarray:
    """(B,) the reported score: v1.1 PDMS; v2.2 EPDMS with EC (NaN EC -> its weight 0, one-stage rule)."""
    if rows.version == "v1.1":
        return rows.score.copy()
    ec = rows.two_frame_extended_comfort if extended_comfort is None else np.broadcast_to(
        np.asarray(extended_comfort, dtype=np.float64), rows.valid.shape)
    values = np.stack([getattr(rows, n) for n in WEIGHTED_NAMES["v2.2"][:4]] + [np.nan_to_num(ec, nan=0.0)], axis=-1)
    weights = np.broadcast_to(WEIGHTS["v2.2"], values.shape).copy()
    weights[np.isnan(ec), -1] = 0.0
    product = np.prod([getattr(rows, n) for n in MULTIPLICATIVE_NAMES["v2.2"]], axis=0)
    return product * (values * weights).sum(axis=-1) / weights.sum(axis=-1)
