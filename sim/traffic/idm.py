"""IDM traffic in batch: agents following lane-graph paths, yielding to leads, obstacles and red lights.

A step is a handful of numpy operations over all agents: advance arc length, find the lead (the
nearest agent ahead on any lane of the own path, an obstacle in the path corridor, a static
obstacle or the stop line of a red/yellow light), and apply the Intelligent Driver Model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.map import RoadMap
from sim.state import TrafficLightStatus
from sim.traffic.paths import PATH_STEP_M, AgentPaths

ANTICIPATION_S = 1.5  # s: how far ahead the corridor predicts moving obstacles
SEARCH_SLACK_M = 1.0  # m: the sparse lead search's window is widened by this much (rounding never decides there)


@dataclass(frozen=True)
class IDMParameters:
    """Intelligent Driver Model constants (per-agent desired speed comes from the agent)."""

    min_gap: float = 2.0  # s0 (m)
    headway: float = 1.5  # T (s)
    accel_max: float = 1.5  # a (m/s^2)
    decel_comfort: float = 3.0  # b (m/s^2)
    decel_max: float = 8.0  # hard clip: emergency braking
    exponent: float = 4.0
    corridor_lookahead: float = 25.0  # m along the own path: objects off the lane graph (walkers, ego)
    lane_lookahead: float = 60.0  # m: how far along the own path other agents are considered
    stop_line_setback: float = 1.0  # m before the entry of a lane with a red light
    # Leads are searched every this many steps (as PDM-Closed's IDM does) and, in between, their
    # gap is advanced with the lead's last speed. Halves the cost of a step.
    lead_update_steps: int = 2
    # False for planners' proposals: alternatives of one ego are not each other's leads.
    follow_each_other: bool = True
    # Up to this many agents, lane leads are searched over (N, N) matrices; beyond, by lanes sorted once per search
    # (`_lane_leads_sparse`: the same result, at a cost that follows the nearby pairs instead of N^2).
    dense_lead_search_max: int = 64


@dataclass
class Obstacles:
    """Objects IDM agents must not hit but that are not IDM agents (ego, pedestrians, statics)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    length: np.ndarray
    width: np.ndarray

    @classmethod
    def none(cls) -> "Obstacles":
        z = np.zeros(0)
        return cls(z, z, z, z, z, z)


@dataclass
class IDMTraffic:
    """IDM agents following lane-graph paths. State: arc length `s` and speed `v` per agent.

    `active` turns False once an agent reaches the end of its path (it leaves the scene).
    `desired_speed` is per agent (m/s); lane speed limits cap it. Light states are passed as an
    array aligned with `light_ids` (the scene's light order).
    """

    road_map: RoadMap
    paths: AgentPaths
    s: np.ndarray
    v: np.ndarray
    desired_speed: np.ndarray
    length: np.ndarray
    width: np.ndarray
    light_ids: list[str] = field(default_factory=list)
    params: IDMParameters = field(default_factory=IDMParameters)
    active: np.ndarray | None = None
    static_obstacles: Obstacles | None = None  # never move: found on each path once, not every step

    def __post_init__(self) -> None:
        if self.active is None:
            self.active = np.ones(len(self.s), dtype=bool)
        self._rows = np.arange(len(self.s))
        # Lane leads: an (N, N) search for few agents; for many, only the (agent, lane on its path) pairs, each
        # against the agents on that lane within the lookahead (same result, cost ~ nearby pairs, not N^2).
        self._dense_leads = len(self.s) <= self.params.dense_lead_search_max
        if self._dense_leads:
            self._half_length_sum = 0.5 * (self.length + self.length[:, None])
        else:
            path_rows, path_lanes = np.nonzero(np.isfinite(self.paths.lane_start))
            self._path_pairs = (path_rows, path_lanes, self.paths.lane_start[path_rows, path_lanes])
        self._corridor_samples = max(int(self.params.corridor_lookahead / PATH_STEP_M), 2)
        self._corridor_offsets = np.arange(self._corridor_samples)
        self._last_sample = self.paths.points.shape[1] - 1
        self._corridor_reach = self.params.corridor_lookahead + 0.5 * float(self.length.max(initial=0.0)) + 5.0
        self._static_block = _static_blocks(self.paths, self.width, self.static_obstacles or Obstacles.none())
        self._speed_limit = self.road_map.speed_limits
        # Lanes whose entry a traffic light of `light_ids` controls, and that light's column.
        column = {lid: i for i, lid in enumerate(self.light_ids)}
        lanes = [(i, column[l.traffic_light]) for i, l in enumerate(self.road_map.lanes) if l.traffic_light in column]
        self._light_lanes = np.array([i for i, _ in lanes], dtype=np.int64)
        self._light_columns = np.array([c for _, c in lanes], dtype=np.int64)
        # Stop lines on each path (N, R): NaN where the path never enters that lane.
        self._stop_s = self.paths.own_lane_start[:, self._light_lanes] - self.params.stop_line_setback
        self._pose_cache: tuple[np.ndarray, tuple] | None = None
        self._lead: tuple[np.ndarray, np.ndarray] | None = None
        self._steps_since_search = 0

    @property
    def count(self) -> int:
        return len(self.s)

    def poses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) box centres; cached until the next step."""
        if self._pose_cache is None or self._pose_cache[0] is not self.s:
            self._pose_cache = (self.s, self.paths.pose_at(self.s))
        return self._pose_cache[1]

    def velocities(self) -> tuple[np.ndarray, np.ndarray]:
        _, _, heading = self.poses()
        return self.v * np.cos(heading), self.v * np.sin(heading)

    def _lane_leads(self, lane_now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gap (N,) and speed of the nearest active agent ahead on each agent's own path."""
        if not self._dense_leads:
            return self._lane_leads_sparse(lane_now)
        # Where agent j sits on agent i's path: start of j's lane there + j's progress in that lane.
        into_lane = self.s - self.paths.lane_start[self._rows, lane_now]
        ahead = self.paths.lane_start[:, lane_now] + (into_lane - self.s[:, None])  # (N, N); NaN: not on i's path
        # Agents behind and NaN entries fail the comparison; self is excluded explicitly, as rounding can
        # leave its own `ahead` a hair above 0.
        mask = (ahead > 0.0) & (ahead < self.params.lane_lookahead) & self.active
        np.fill_diagonal(mask, False)
        gap = np.where(mask, ahead - self._half_length_sum, np.inf)
        j = np.argmin(gap, axis=1)
        best = gap[self._rows, j]
        return best, np.where(best < np.inf, self.v[j], 0.0)

    def _lane_leads_sparse(self, lane_now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_lane_leads` without the (N, N) matrices, bit for bit the same result.

        Agents are sorted by (lane, progress into it). Each (agent i, lane l on i's path) pair walks the agents on l
        from where they can first be ahead of i (a binary search, widened by SEARCH_SLACK_M), evaluating each with
        the dense search's own expressions and mask, and stops once no agent further along can have a smaller gap
        (gap >= distance ahead - half the longest agent - half its own length) or the window ends. Equal gaps keep
        the lowest index, as np.argmin does. The cost follows the pairs examined (a few per lane pair), not N^2.
        """
        n, num_lanes = self.count, self.paths.lane_start.shape[1]
        best, v_lead = np.full(n, np.inf), np.zeros(n)
        path_rows, path_lanes, path_start = self._path_pairs
        if n == 0 or path_rows.size == 0:
            return best, v_lead
        into_lane = self.s - self.paths.lane_start[self._rows, lane_now]
        lane_of = lane_now % num_lanes  # the column `lane_start[:, lane_now]` reads (-1, padding, is the last)
        candidates = np.flatnonzero(self.active & np.isfinite(into_lane))
        if candidates.size == 0:
            return best, v_lead
        lookahead = self.params.lane_lookahead
        # One sorted key: lane-major, progress-minor (lanes strided far enough apart never to overlap).
        low = self.s[path_rows] - path_start - SEARCH_SLACK_M
        high = low + lookahead + 2.0 * SEARCH_SLACK_M
        stride = 2.0 * max(np.abs(into_lane[candidates]).max(), np.abs(low).max(), np.abs(high).max()) + 1.0
        keys = lane_of[candidates] * stride + into_lane[candidates]
        order = np.argsort(keys, kind="stable")
        candidates, keys = candidates[order], keys[order]
        position = np.searchsorted(keys, path_lanes * stride + low, side="left")
        stop = np.searchsorted(keys, path_lanes * stride + high, side="right")
        pair_gap, pair_lead = np.full(path_rows.size, np.inf), np.full(path_rows.size, -1)
        reach = 0.5 * self.length[candidates].max() + 0.5 * self.length + SEARCH_SLACK_M  # (N,) see the docstring
        walking = np.flatnonzero(position < stop)
        while walking.size:
            i, j = path_rows[walking], candidates[position[walking]]
            ahead = self.paths.lane_start[i, lane_now[j]] + (into_lane[j] - self.s[i])
            gap = ahead - 0.5 * (self.length[j] + self.length[i])
            held, held_lead = pair_gap[walking], pair_lead[walking]
            better = ((ahead > 0.0) & (ahead < lookahead) & (i != j)
                      & ((gap < held) | ((gap == held) & (j < held_lead))))
            pair_gap[walking[better]], pair_lead[walking[better]] = gap[better], j[better]
            position[walking] += 1
            done = (ahead - reach[i] > pair_gap[walking]) | (ahead >= lookahead + SEARCH_SLACK_M)
            walking = walking[~done & (position[walking] < stop[walking])]
        found = np.flatnonzero(pair_lead >= 0)
        if found.size == 0:
            return best, v_lead
        i, j, gap = path_rows[found], pair_lead[found], pair_gap[found]
        order = np.lexsort((j, gap, i))  # per agent: the smallest gap over its lanes, then the lowest index
        i, j, gap = i[order], j[order], gap[order]
        head = np.concatenate([[True], i[1:] != i[:-1]])
        best[i[head]] = gap[head]
        v_lead[i[head]] = self.v[j[head]]
        return best, v_lead

    def _corridor_leads(self, obstacles: Obstacles) -> tuple[np.ndarray, np.ndarray]:
        """Gap (N,) and along-track speed of the nearest obstacle in each agent's corridor: the
        next `corridor_lookahead` metres of its own path, widened by half its width + 0.3 m.

        Only (agent, obstacle) pairs within reach are examined, so the cost follows the number of
        nearby pairs, not N x M x K. Each obstacle is also tested where it will be in
        ANTICIPATION_S (walkers stepping onto the road).
        """
        n = self.count
        no_lead = np.full(n, np.inf), np.zeros(n)
        if obstacles.x.size == 0 or n == 0:
            return no_lead
        x, y, heading = self.poses()
        # Pairs within reach of the obstacle now or where it will be (its speed x ANTICIPATION_S on).
        reach = self._corridor_reach + obstacles.speed * ANTICIPATION_S
        dx, dy = obstacles.x - x[:, None], obstacles.y - y[:, None]
        ni, mi = np.nonzero((dx * dx + dy * dy < reach * reach) & self.active[:, None])
        # Obstacles behind an agent are never in its corridor; dropping them also keeps a faster car
        # behind from being "predicted" in front of it.
        ahead = dx[ni, mi] * np.cos(heading[ni]) + dy[ni, mi] * np.sin(heading[ni]) > 0
        ni, mi = ni[ahead], mi[ahead]
        if ni.size == 0:
            return no_lead
        k = self._corridor_samples
        idx = np.minimum((self.s[ni] / PATH_STEP_M).astype(np.int64)[:, None] + self._corridor_offsets, self._last_sample)
        px, py = self.paths.px[ni[:, None], idx], self.paths.py[ni[:, None], idx]  # (P, K) corridor samples
        ox, oy, speed, oh = obstacles.x[mi, None], obstacles.y[mi, None], obstacles.speed[mi], obstacles.heading[mi]
        lead = (speed * ANTICIPATION_S)[:, None]
        d2 = np.minimum((px - ox) ** 2 + (py - oy) ** 2,
                        (px - ox - lead * np.cos(oh)[:, None]) ** 2 + (py - oy - lead * np.sin(oh)[:, None]) ** 2)
        nearest = np.argmin(d2, axis=1)
        rows = np.arange(ni.size)
        dist = np.sqrt(d2[rows, nearest])
        rel = oh - self.paths.heading[ni, idx[rows, nearest]]
        rel_c, rel_s = np.abs(np.cos(rel)), np.abs(np.sin(rel))
        half_across = 0.5 * (rel_s * obstacles.length[mi] + rel_c * obstacles.width[mi])
        half_along = 0.5 * (rel_c * obstacles.length[mi] + rel_s * obstacles.width[mi])
        gap = nearest * PATH_STEP_M - half_along - 0.5 * self.length[ni]
        inside = (dist < half_across + 0.5 * self.width[ni] + 0.3) & (nearest > 0) & (nearest < k - 1)
        if not inside.any():
            return no_lead
        ni, gap, speed = ni[inside], gap[inside], np.maximum(speed * np.cos(rel), 0.0)[inside]
        order = np.lexsort((gap, ni))  # nearest obstacle first, per agent
        first = order[np.concatenate([[True], ni[order][1:] != ni[order][:-1]])]
        best, best_speed = no_lead[0].copy(), no_lead[1].copy()
        best[ni[first]], best_speed[ni[first]] = gap[first], speed[first]
        return best, best_speed

    def _static_gaps(self) -> np.ndarray:
        """Gap (N,) to the nearest static obstacle ahead on each path (see `_static_blocks`)."""
        if self._static_block.shape[1] == 0:
            return np.full(self.count, np.inf)
        ahead = self._static_block - self.s[:, None]
        gap = np.where((ahead > 0) & (ahead < self.params.lane_lookahead), ahead, np.inf).min(axis=1)
        return gap - 0.5 * self.length

    def red_stop_lines(self, row: int, light_status: np.ndarray | None) -> np.ndarray:
        """Sorted arc lengths of the stop lines on agent `row`'s path whose light is red."""
        if light_status is None or self._light_lanes.size == 0:
            return np.zeros(0)
        red = np.asarray(light_status)[self._light_columns] == TrafficLightStatus.RED
        stops = self._stop_s[row][red]
        return np.sort(stops[np.isfinite(stops)])

    def _stop_line_gaps(self, light_status: np.ndarray | None) -> np.ndarray:
        """Gap (N,) to the nearest stop line ahead whose light is red, or yellow and still stoppable."""
        if light_status is None or self._light_lanes.size == 0:
            return np.full(self.count, np.inf)
        status = np.asarray(light_status)[self._light_columns]
        gap = self._stop_s - (self.s + 0.5 * self.length)[:, None]
        braking = (self.v**2 / (2.0 * self.params.decel_comfort))[:, None]
        must_stop = (status == TrafficLightStatus.RED) | ((status == TrafficLightStatus.YELLOW) & (gap > braking))
        relevant = must_stop & (gap > -0.5) & (gap < self.params.lane_lookahead)
        return np.where(relevant, np.maximum(gap, 0.0), np.inf).min(axis=1, initial=np.inf)

    def accelerations(self, obstacles: Obstacles, light_status: np.ndarray | None) -> np.ndarray:
        """IDM acceleration (N,) towards the nearest of: lane lead, corridor obstacle, stop line."""
        lane_now = self.paths.lane_at(self.s)
        if self._lead is None or self._steps_since_search >= self.params.lead_update_steps:
            self._lead = self._find_leads(lane_now, obstacles, light_status)
            self._steps_since_search = 0
        gap, v_lead = self._lead

        p = self.params
        v0 = np.minimum(self.desired_speed, self._speed_limit[lane_now])
        s_star = p.min_gap + self.v * p.headway + self.v * (self.v - v_lead) / (2.0 * np.sqrt(p.accel_max * p.decel_comfort))
        interaction = np.where(gap < np.inf, (np.maximum(s_star, 0.0) / np.maximum(gap, 0.1)) ** 2, 0.0)
        free = 1.0 - (self.v / np.maximum(v0, 0.1)) ** p.exponent
        return np.minimum(np.maximum(p.accel_max * (free - interaction), -p.decel_max), p.accel_max)

    def _find_leads(self, lane_now: np.ndarray, obstacles: Obstacles, light_status: np.ndarray | None):
        """(gap, lead speed) per agent: the nearest of lane lead, corridor obstacle and stop line."""
        if self.params.follow_each_other:
            gap_l, v_l = self._lane_leads(lane_now)
        else:
            gap_l, v_l = np.full(self.count, np.inf), np.zeros(self.count)
        gap_c, v_c = self._corridor_leads(obstacles)
        # Red lights and static obstacles are both leads standing still.
        gap_r = np.minimum(self._stop_line_gaps(light_status), self._static_gaps())
        use_c = gap_c < gap_l
        gap = np.where(use_c, gap_c, gap_l)
        v_lead = np.where(use_c, v_c, v_l)
        use_r = gap_r < gap
        return np.where(use_r, gap_r, gap), np.where(use_r, 0.0, v_lead)

    def step(self, dt: float, obstacles: Obstacles | None = None, light_status: np.ndarray | None = None,
             accelerations: np.ndarray | None = None) -> np.ndarray:
        """Advance all agents by dt (speeds never negative); returns the accelerations applied.

        Pass `accelerations` when already computed for this state (e.g. to record them).
        """
        acc = accelerations if accelerations is not None else self.accelerations(obstacles or Obstacles.none(), light_status)
        v_new = np.maximum(self.v + acc * dt, 0.0)
        ds = 0.5 * (self.v + v_new) * dt * self.active
        self.s = self.s + ds
        self.v = np.where(self.active, v_new, 0.0)
        if self._lead is not None:  # until the next search, leads keep their speed
            gap, v_lead = self._lead
            self._lead = (gap - ds + v_lead * dt, v_lead)
            self._steps_since_search += 1
        self.active &= self.s < self.paths.length - 0.5 * self.length
        return acc


def _static_blocks(paths: AgentPaths, width: np.ndarray, static: Obstacles) -> np.ndarray:
    """(N, M) arc length along each path where static obstacle m first reaches into the corridor
    (path +- half the agent's width + 0.3 m), minus its half extent along the path; inf if never."""
    n, m = len(width), static.x.size
    block = np.full((n, m), np.inf)
    beyond = np.arange(paths.points.shape[1]) * PATH_STEP_M > paths.length[:, None]  # padding samples
    for j in range(m):
        rel = static.heading[j] - paths.heading
        rel_c, rel_s = np.abs(np.cos(rel)), np.abs(np.sin(rel))
        band = 0.5 * (rel_s * static.length[j] + rel_c * static.width[j]) + 0.5 * width[:, None] + 0.3
        inside = ((paths.px - static.x[j]) ** 2 + (paths.py - static.y[j]) ** 2 < band * band) & ~beyond
        first = np.argmax(inside, axis=1)
        hit = inside[np.arange(n), first]
        half_along = 0.5 * (rel_c * static.length[j] + rel_s * static.width[j])[np.arange(n), first]
        block[hit, j] = first[hit] * PATH_STEP_M - half_along[hit]
    return block
