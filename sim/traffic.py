"""Traffic behaviours in batch: log replay, constant velocity, and IDM along lane-graph paths.

IDM agents each follow a fixed path (a chain of lanes, resampled every `PATH_STEP_M`), so a step is
a handful of numpy operations over all agents: advance arc length, look up the lead (the nearest
agent ahead on any lane of the own path, an object inside a short front corridor, or the stop line
of a red/yellow light), and apply the Intelligent Driver Model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from sim.geometry import principal_value
from sim.map import RoadMap
from sim.state import AgentSlice, AgentTracks, TrafficLightStatus

PATH_STEP_M = 0.5
ANTICIPATION_S = 1.5  # s: how far ahead the path corridor predicts moving obstacles


@dataclass(frozen=True)
class IDMParameters:
    """Intelligent Driver Model constants (per-agent desired speed comes from the agent)."""

    min_gap: float = 2.0  # s0 (m)
    headway: float = 1.5  # T (s)
    accel_max: float = 1.5  # a (m/s^2)
    decel_comfort: float = 3.0  # b (m/s^2)
    decel_max: float = 8.0  # hard clip: emergency braking
    exponent: float = 4.0
    corridor_lookahead: float = 25.0  # m: corridor for objects off the lane graph (walkers, statics, ego)
    # "straight": the corridor runs along the agent's heading (cheap; background traffic).
    # "path": it follows the agent's own path, so turns see what lies on them (planners).
    corridor: str = "path"
    lane_lookahead: float = 60.0  # m: how far along the own path other agents are considered
    stop_line_setback: float = 1.0  # m before the entry of a lane with a red light


# --- signal plans -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalPlan:
    """A fixed-time junction controller: phases of light ids, green -> yellow -> all-red, cycling."""

    light_ids: tuple[str, ...]
    phases: tuple[tuple[str, ...], ...]
    green_s: float = 10.0
    yellow_s: float = 3.0
    all_red_s: float = 2.0  # lets turning traffic clear the junction
    offset_s: float = 0.0

    def as_dict(self) -> dict:
        return {"light_ids": list(self.light_ids), "phases": [list(p) for p in self.phases], "green_s": self.green_s,
                "yellow_s": self.yellow_s, "all_red_s": self.all_red_s, "offset_s": self.offset_s}

    @classmethod
    def from_dict(cls, data: dict) -> "SignalPlan":
        return cls(tuple(data["light_ids"]), tuple(tuple(p) for p in data["phases"]), data["green_s"],
                   data["yellow_s"], data["all_red_s"], data["offset_s"])

    @property
    def cycle_s(self) -> float:
        return len(self.phases) * (self.green_s + self.yellow_s + self.all_red_s)

    def status_at(self, times: np.ndarray) -> np.ndarray:
        """(T, L) int8 TrafficLightStatus of every light at the given times (seconds)."""
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        period = self.green_s + self.yellow_s + self.all_red_s
        t = (times + self.offset_s) % self.cycle_s
        phase = (t // period).astype(int)
        within = t - phase * period
        status = np.full((times.size, len(self.light_ids)), TrafficLightStatus.RED, dtype=np.int8)
        for p, members in enumerate(self.phases):
            cols = [self.light_ids.index(m) for m in members]
            active = phase == p
            status[np.ix_(active & (within < self.green_s), cols)] = TrafficLightStatus.GREEN
            status[np.ix_(active & (within >= self.green_s) & (within < self.green_s + self.yellow_s), cols)] = (
                TrafficLightStatus.YELLOW
            )
        return status


def light_status_table(plans: list[SignalPlan], times: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(light ids, (T, L) status) of all plans of a map."""
    ids = [lid for plan in plans for lid in plan.light_ids]
    if not plans:
        return ids, np.zeros((np.size(times), 0), dtype=np.int8)
    return ids, np.concatenate([plan.status_at(times) for plan in plans], axis=1)


# --- paths --------------------------------------------------------------------------------------


@dataclass
class AgentPaths:
    """Per-agent paths along the lane graph, resampled at PATH_STEP_M and padded to one length.

    points (N, K, 2), heading (N, K), lane (N, K) lane index per sample (-1 padding),
    length (N,) usable arc length, own_lane_start (N, L) arc length where each map lane starts on
    each path (NaN where the path does not use that lane), lane_start the same plus virtual starts
    of lanes merging into the path (see `_add_merge_siblings`), for finding leads.
    """

    points: np.ndarray
    heading: np.ndarray
    lane: np.ndarray
    length: np.ndarray
    own_lane_start: np.ndarray
    lane_start: np.ndarray

    @classmethod
    def build(cls, road_map: RoadMap, lane_chains: list[list[str]], lateral_offsets: np.ndarray | None = None) -> "AgentPaths":
        n, num_lanes = len(lane_chains), len(road_map.lanes)
        offsets = np.zeros(n) if lateral_offsets is None else np.asarray(lateral_offsets, dtype=np.float64)
        resampled, lanes_per_sample, starts = [], [], np.full((n, num_lanes), np.nan)
        for i, chain in enumerate(lane_chains):
            pts, lane_of_pt, s0 = [], [], 0.0
            for lane_id in chain:
                k = road_map.lane_index[lane_id]
                line = road_map.lanes[k].centerline
                seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
                cum = np.concatenate([[0.0], np.cumsum(seg)])
                if np.isnan(starts[i, k]):
                    starts[i, k] = s0
                pts.append(line[:-1] if lane_id != chain[-1] else line)
                lane_of_pt.append(np.full(len(pts[-1]), k))
                s0 += cum[-1]
            pts = np.concatenate(pts)
            lane_of_pt = np.concatenate(lane_of_pt)
            seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
            keep = np.concatenate([[True], seg > 1e-9])
            pts, lane_of_pt = pts[keep], lane_of_pt[keep]
            cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
            s = np.arange(0.0, cum[-1] + 1e-9, PATH_STEP_M)
            xy = np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], -1)
            lane_idx = lane_of_pt[np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(cum) - 1)]
            heading = np.arctan2(np.gradient(xy[:, 1]), np.gradient(xy[:, 0]))
            if offsets[i]:
                xy = xy + offsets[i] * np.stack([-np.sin(heading), np.cos(heading)], -1)
            resampled.append((xy, heading))
            lanes_per_sample.append(lane_idx)
        own_starts = starts.copy()
        _add_merge_siblings(road_map, starts)
        k_max = max(len(xy) for xy, _ in resampled)
        points = np.zeros((n, k_max, 2))
        heading = np.zeros((n, k_max))
        lane = np.full((n, k_max), -1, dtype=np.int64)
        length = np.zeros(n)
        for i, ((xy, h), lane_idx) in enumerate(zip(resampled, lanes_per_sample)):
            k = len(xy)
            points[i, :k], points[i, k:] = xy, xy[-1]
            heading[i, :k], heading[i, k:] = h, h[-1]
            lane[i, :k], lane[i, k:] = lane_idx, lane_idx[-1]
            length[i] = (k - 1) * PATH_STEP_M
        return cls(points, heading, lane, length, own_starts, starts)

    def pose_at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) at arc lengths s (N,), clamped to each path; linear interpolation."""
        u = np.minimum(np.maximum(s, 0.0), self.length) / PATH_STEP_M
        last = self.points.shape[1] - 1
        i0 = np.minimum(u.astype(np.int64), max(last - 1, 0))
        frac = u - i0
        rows = np.arange(len(s))
        i1 = np.minimum(i0 + 1, last)
        p = self.points[rows, i0] * (1 - frac)[:, None] + self.points[rows, i1] * frac[:, None]
        dh = principal_value(self.heading[rows, i1] - self.heading[rows, i0])
        return p[:, 0], p[:, 1], principal_value(self.heading[rows, i0] + frac * dh)

    def lane_at(self, s: np.ndarray) -> np.ndarray:
        u = np.minimum(np.maximum((s / PATH_STEP_M).astype(np.int64), 0), self.points.shape[1] - 1)
        return self.lane[np.arange(len(s)), u]


def _add_merge_siblings(road_map: RoadMap, starts: np.ndarray) -> None:
    """Give lanes that merge into a lane of a path a virtual position on that path, in place.

    A lane Q that ends in the same successor as a lane P on the path is placed so that both end
    at the same arc length. An agent on Q then counts as a lead for agents on P exactly when it
    is closer to the merge point, which makes merging traffic zip instead of colliding.
    """
    lengths = road_map.lane_lengths
    for p, lane in enumerate(road_map.lanes):
        for succ in lane.successors:
            for q_id in road_map.lane(succ).predecessors:
                q = road_map.lane_index[q_id]
                if q == p:
                    continue
                fill = np.isnan(starts[:, q]) & ~np.isnan(starts[:, p])
                starts[fill, q] = starts[fill, p] + lengths[p] - lengths[q]


# --- IDM traffic ----------------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        if self.active is None:
            self.active = np.ones(len(self.s), dtype=bool)
        self._rows = np.arange(len(self.s))
        self._speed_limit = self.road_map.speed_limits
        # Lanes whose entry a traffic light of `light_ids` controls, and that light's column.
        column = {lid: i for i, lid in enumerate(self.light_ids)}
        lanes = [(i, column[l.traffic_light]) for i, l in enumerate(self.road_map.lanes) if l.traffic_light in column]
        self._light_lanes = np.array([i for i, _ in lanes], dtype=np.int64)
        self._light_columns = np.array([c for _, c in lanes], dtype=np.int64)
        # Stop lines on each path (N, R): NaN where the path never enters that lane.
        self._stop_s = self.paths.own_lane_start[:, self._light_lanes] - self.params.stop_line_setback
        self._pose_cache: tuple[np.ndarray, tuple] | None = None

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
        # Where agent j sits on agent i's path: start of j's lane there + j's progress in that lane.
        into_lane = self.s - self.paths.lane_start[self._rows, lane_now]
        s_on_i = self.paths.lane_start[:, lane_now] + into_lane
        gap = s_on_i - self.s[:, None] - 0.5 * (self.length + self.length[:, None])
        ahead = (s_on_i > self.s[:, None]) & self.active & (gap < self.params.lane_lookahead)
        np.fill_diagonal(ahead, False)
        gap = np.where(ahead, gap, np.inf)
        j = np.argmin(gap, axis=1)
        best = gap[self._rows, j]
        return best, np.where(best < np.inf, self.v[j], 0.0)

    def _corridor_leads(self, x, y, heading, obstacles: Obstacles) -> tuple[np.ndarray, np.ndarray]:
        """Gap (N,) and along-track speed of the nearest obstacle inside each agent's front corridor."""
        if obstacles.x.size == 0:
            return np.full(self.count, np.inf), np.zeros(self.count)
        c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]
        dx, dy = obstacles.x - x[:, None], obstacles.y - y[:, None]
        lon, lat = c * dx + s * dy, c * dy - s * dx
        # cos/sin of the relative heading without trigonometry on (N, M) arrays.
        oc, os_ = np.cos(obstacles.heading), np.sin(obstacles.heading)
        rel_c, rel_s = np.abs(c * oc + s * os_), np.abs(c * os_ - s * oc)
        half_across = 0.5 * (rel_s * obstacles.length + rel_c * obstacles.width)
        half_along = 0.5 * (rel_c * obstacles.length + rel_s * obstacles.width)
        gap = lon - half_along - 0.5 * self.length[:, None]
        # Anticipate objects walking or driving across: where they will be laterally when we reach them.
        lat_speed = obstacles.speed * (c * os_ - s * oc)
        reach_t = np.minimum(np.maximum(gap, 0.0) / np.maximum(self.v[:, None], 1.0), 3.0)
        lat_then = lat + lat_speed * reach_t
        band = half_across + 0.5 * self.width[:, None] + 0.3
        crossing = (np.abs(lat) < band) | (np.abs(lat_then) < band) | (np.sign(lat) != np.sign(lat_then))
        inside = crossing & (lon > 0) & (gap < self.params.corridor_lookahead)
        gap = np.where(inside, gap, np.inf)
        j = np.argmin(gap, axis=1)
        best = gap[self._rows, j]
        speed_along = np.maximum(obstacles.speed[j] * (c[:, 0] * oc[j] + s[:, 0] * os_[j]), 0.0)
        return best, np.where(best < np.inf, speed_along, 0.0)

    def _path_corridor_leads(self, obstacles: Obstacles) -> tuple[np.ndarray, np.ndarray]:
        """Like `_corridor_leads`, but along each agent's path: (N, K) samples ahead against M obstacles."""
        if obstacles.x.size == 0:
            return np.full(self.count, np.inf), np.zeros(self.count)
        # Each obstacle now and where it will be in ANTICIPATION_S (walkers stepping onto the road).
        oc, os_ = np.cos(obstacles.heading), np.sin(obstacles.heading)
        obstacles = Obstacles(
            np.concatenate([obstacles.x, obstacles.x + obstacles.speed * oc * ANTICIPATION_S]),
            np.concatenate([obstacles.y, obstacles.y + obstacles.speed * os_ * ANTICIPATION_S]),
            np.tile(obstacles.heading, 2), np.tile(obstacles.speed, 2), np.tile(obstacles.length, 2), np.tile(obstacles.width, 2),
        )
        k = max(int(self.params.corridor_lookahead / PATH_STEP_M), 1)
        last = self.paths.points.shape[1] - 1
        idx = np.minimum((self.s / PATH_STEP_M).astype(np.int64)[:, None] + np.arange(k), last)  # (N, K)
        samples = self.paths.points[self._rows[:, None], idx]  # (N, K, 2)
        d2 = ((samples[:, :, None, :] - np.stack([obstacles.x, obstacles.y], -1)) ** 2).sum(-1)  # (N, K, M)
        nearest = np.argmin(d2, axis=1)  # (N, M) sample index closest to each obstacle
        dist = np.sqrt(np.take_along_axis(d2, nearest[:, None, :], axis=1)[:, 0, :])
        path_heading = self.paths.heading[self._rows[:, None], np.take_along_axis(idx, nearest, axis=1)]
        rel = obstacles.heading - path_heading
        rel_c, rel_s = np.abs(np.cos(rel)), np.abs(np.sin(rel))
        half_across = 0.5 * (rel_s * obstacles.length + rel_c * obstacles.width)
        half_along = 0.5 * (rel_c * obstacles.length + rel_s * obstacles.width)
        gap = nearest * PATH_STEP_M - half_along - 0.5 * self.length[:, None]
        inside = (dist < half_across + 0.5 * self.width[:, None] + 0.3) & (nearest > 0) & (nearest < k - 1)
        gap = np.where(inside, gap, np.inf)
        j = np.argmin(gap, axis=1)
        best = gap[self._rows, j]
        speed_along = np.maximum(obstacles.speed[j] * np.cos(rel[self._rows, j]), 0.0)
        return best, np.where(best < np.inf, speed_along, 0.0)

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
        x, y, heading = self.poses()
        lane_now = self.paths.lane_at(self.s)
        gap_l, v_l = self._lane_leads(lane_now)
        if self.params.corridor == "path":
            gap_c, v_c = self._path_corridor_leads(obstacles)
        else:
            gap_c, v_c = self._corridor_leads(x, y, heading, obstacles)
        gap_r = self._stop_line_gaps(light_status)
        use_c = gap_c < gap_l
        gap = np.where(use_c, gap_c, gap_l)
        v_lead = np.where(use_c, v_c, v_l)
        use_r = gap_r < gap
        gap = np.where(use_r, gap_r, gap)
        v_lead = np.where(use_r, 0.0, v_lead)

        p = self.params
        v0 = np.minimum(self.desired_speed, self._speed_limit[lane_now])
        s_star = p.min_gap + self.v * p.headway + self.v * (self.v - v_lead) / (2.0 * np.sqrt(p.accel_max * p.decel_comfort))
        interaction = np.where(gap < np.inf, (np.maximum(s_star, 0.0) / np.maximum(gap, 0.1)) ** 2, 0.0)
        free = 1.0 - (self.v / np.maximum(v0, 0.1)) ** p.exponent
        return np.minimum(np.maximum(p.accel_max * (free - interaction), -p.decel_max), p.accel_max)

    def step(self, dt: float, obstacles: Obstacles | None = None, light_status: np.ndarray | None = None,
             accelerations: np.ndarray | None = None) -> np.ndarray:
        """Advance all agents by dt (speeds never negative); returns the accelerations applied.

        Pass `accelerations` when already computed for this state (e.g. to record them).
        """
        acc = accelerations if accelerations is not None else self.accelerations(obstacles or Obstacles.none(), light_status)
        v_new = np.maximum(self.v + acc * dt, 0.0)
        self.s = self.s + 0.5 * (self.v + v_new) * dt * self.active
        self.v = np.where(self.active, v_new, 0.0)
        self.active &= self.s < self.paths.length - 0.5 * self.length
        return acc


@dataclass
class CrosswalkWalkers:
    """Pedestrians crossing on crosswalks: wait at the kerb until traffic near the crossing is clear.

    start/end (P, 2) kerb points, speed (P,), ready_time (P,) when each wants to cross.
    `progress` (P,) metres walked; a walker never stops once on the road (vehicles yield).
    """

    start: np.ndarray
    end: np.ndarray
    speed: np.ndarray
    ready_time: np.ndarray
    clear_radius: float = 14.0

    def __post_init__(self) -> None:
        d = self.end - self.start
        self._length = np.linalg.norm(d, axis=1)
        self._dir = d / np.maximum(self._length, 1e-9)[:, None]
        self._centre = 0.5 * (self.start + self.end)
        self.progress = np.zeros(len(self.speed))

    @property
    def count(self) -> int:
        return len(self.speed)

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading, speed) now; speed is 0 while waiting and after arriving."""
        xy = self.start + self._dir * self.progress[:, None]
        walking = (self.progress > 0) & (self.progress < self._length)
        return xy[:, 0], xy[:, 1], np.arctan2(self._dir[:, 1], self._dir[:, 0]), np.where(walking, self.speed, 0.0)

    def step(self, dt: float, time: float, vehicle_xy: np.ndarray, vehicle_speed: np.ndarray) -> None:
        if self.count == 0:
            return
        near = np.linalg.norm(vehicle_xy[None, :, :] - self._centre[:, None, :], axis=2)  # (P, M)
        # Busy while a vehicle could reach the crossing within ~4 s, or stands right at it.
        busy = ((near < self.clear_radius + 4.0 * vehicle_speed) & (vehicle_speed > 0.5)).any(axis=1) | (near < 5.0).any(axis=1)
        waiting = self.progress == 0.0
        # Walkers already crossing pause when a vehicle stands right in their way.
        ahead = self.start + self._dir * (self.progress + 1.0)[:, None]
        blocked = (np.linalg.norm(vehicle_xy[None, :, :] - ahead[:, None, :], axis=2) < 3.0).any(axis=1)
        go = (~waiting & ~blocked) | (waiting & (time >= self.ready_time) & ~busy)
        self.progress = np.where(go, np.minimum(self.progress + self.speed * dt, self._length), self.progress)


# --- non-reactive behaviours ------------------------------------------------------------------------


def constant_velocity(agents: AgentSlice, horizon_steps: int, dt: float) -> AgentTracks:
    """Roll agents out at constant velocity and heading for `horizon_steps` steps (step 0 = now)."""
    t = np.arange(horizon_steps + 1)[:, None] * dt
    n = len(agents.x)
    return AgentTracks(
        x=agents.x[None, :] + agents.vx[None, :] * t,
        y=agents.y[None, :] + agents.vy[None, :] * t,
        heading=np.broadcast_to(agents.heading, (horizon_steps + 1, n)).copy(),
        vx=np.broadcast_to(agents.vx, (horizon_steps + 1, n)).copy(),
        vy=np.broadcast_to(agents.vy, (horizon_steps + 1, n)).copy(),
        valid=np.broadcast_to(agents.valid, (horizon_steps + 1, n)).copy(),
        length=agents.length, width=agents.width, height=agents.height,
        agent_type=agents.agent_type, track_ids=list(agents.track_ids),
    )


def log_replay(tracks: AgentTracks, step: int) -> AgentSlice:
    """The logged agents at `step`; past the end of the log, the last frame extrapolated at constant velocity."""
    last = tracks.num_steps - 1
    if step <= last:
        return tracks.at(step)
    return constant_velocity(tracks.at(last), step - last, 0.1).at(step - last)


# --- reactive traffic from a logged scene -------------------------------------------------------


def attach_to_lanes(road_map: RoadMap, tracks: AgentTracks, step: int, indices: np.ndarray,
                    min_length: float = 300.0) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """Lane chains, arc length on the first lane and lateral offset for logged agents at `step`.

    Successors are chosen to follow where the log says each agent went (the successor whose
    centerline passes closest to its later logged positions), else the straightest one, so
    reactive replays of a log keep each agent's route.
    """
    if len(indices) == 0:
        return [], np.zeros(0), np.zeros(0)
    poses = np.stack([tracks.x[step, indices], tracks.y[step, indices], tracks.heading[step, indices]], -1)
    lanes = road_map.nearest_lanes(poses)
    s = road_map.project(lanes, poses[:, :2])
    centre = shapely.line_interpolate_point(road_map.lane_centerlines[lanes], s)
    lane_heading = road_map.heading_at(lanes, s)
    d = poses[:, :2] - shapely.get_coordinates(centre)
    lateral = -np.sin(lane_heading) * d[:, 0] + np.cos(lane_heading) * d[:, 1]
    chains = []
    for k, agent in enumerate(indices):
        later = tracks.valid[step:, agent]
        future = np.stack([tracks.x[step:, agent][later], tracks.y[step:, agent][later]], -1)[::5]
        chains.append(_follow_log(road_map, road_map.lanes[lanes[k]].id, future, min_length))
    return chains, s, lateral


def _follow_log(road_map: RoadMap, start: str, future_xy: np.ndarray, min_length: float) -> list[str]:
    chain, total = [start], road_map.lane(start).length
    points = shapely.points(future_xy) if len(future_xy) else None
    while total < min_length:
        options = road_map.lane(chain[-1]).successors
        if not options:
            break
        if len(options) == 1:
            choice = options[0]
        else:
            idx = [road_map.lane_index[o] for o in options]
            if points is not None:
                score = shapely.distance(road_map.lane_centerlines[idx][:, None], points[None, :]).min(axis=1)
            else:  # no log to follow: the straightest continuation
                end_h = road_map.heading_at([road_map.lane_index[chain[-1]]], [road_map.lane(chain[-1]).length])[0]
                score = np.abs(principal_value(road_map.heading_at(idx, road_map.lane_lengths[idx]) - end_h))
            choice = options[int(np.argmin(score))]
        if choice in chain:
            break
        chain.append(choice)
        total += road_map.lane(choice).length
    return chain
