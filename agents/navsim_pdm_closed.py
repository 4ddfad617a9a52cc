"""NAVSIM's PDM-Closed, as its metric cache runs it: the reference every ego-progress score is normalised by.

One plan from a world view (spec navsim_pdm.md §3.7, NAVSIM's `PDMClosedPlanner` at its first iteration):
correct the route's roadblocks, pick the starting lane, build the centerline and its +-1 m parallels, forecast the
objects at constant velocity along their heading (the nearest 50 vehicles, 25 pedestrians, 10 bicycles and 50
static objects within 100 m, every 0.2 s) with red on-route connectors as obstacles, unroll IDM at five fractions
of the starting lane's speed limit, simulate and score the 15 proposals, extend the best to 5 s. Its quirks are
kept on purpose (lead-agent state shared between the proposals of a path, the first IDM step against a lead at
progress 0): the score must be NAVSIM's. One more is the caller's to pass: NAVSIM's metric caching plans a log's
tokens in turn with one planner, whose observation keeps every token the ego overlapped at an earlier token's
current frame (`earlier_collided`): those objects are left out of the forecast, those red lights no longer lead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from agents.navsim_path import NavsimPath, parallel_path
from agents.navsim_route import (
    RoadblockGraph,
    centerline_lanes,
    centerline_poses,
    correct_route,
    normalize_angle,
    roadblock_graph,
    route_lanes,
    starting_lane,
)
from metrics.observation import Observation
from metrics.pdm import ScoringContext, score_states
from metrics.scoring_map import ScoringMap
from sim.dynamics import interpolate_global_poses, simulate
from sim.geometry import PACIFICA, VehicleParameters, box_corners, ego_center, ego_corners
from sim.route import route_lane_groups
from sim.state import AgentSlice, AgentType, TrafficLightStatus
from sim.world_view import WorldView

MAX_DYNAMIC = {AgentType.VEHICLE: 50, AgentType.PEDESTRIAN: 25, AgentType.BICYCLE: 10}
MAX_STATIC = 50
DYNAMIC_TYPES = [int(t) for t in MAX_DYNAMIC]  # the rest are static objects


@dataclass(frozen=True)
class NavsimPDMClosedConfig:
    """NAVSIM's MetricCacheProcessor settings."""

    version: str = "v1.1"  # the scorer that ranks the proposals (v2.2 caches rank with EPDMS)
    speed_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    lateral_offsets: tuple[float, ...] = (-1.0, 1.0)  # after the centerline
    fallback_speed: float = 15.0
    min_gap: float = 1.0
    headway: float = 1.5
    accel_max: float = 1.5
    decel_max: float = 3.0
    proposal_steps: int = 40
    trajectory_steps: int = 50
    interval: float = 0.1
    map_radius: float = 100.0
    lead_update_steps: int = 2
    forecast_sample_steps: int = 2
    vehicle: VehicleParameters = PACIFICA


@dataclass
class NavsimPDMClosedPlan:
    """The chosen proposal extended to 5 s: (T + 1, 3) rear-axle poses at 0.1 s; every proposal's score; what the
    scorer needs of the cache (the drivable map with the route's lanes, the centerline)."""

    poses: np.ndarray
    scores: np.ndarray
    best: int
    scoring_map: ScoringMap
    centerline: NavsimPath
    route_lane_ids: list[str]


class ConstantVelocityForecast:
    """PDM-Closed's forecast: object boxes moved at constant velocity, one map every `sample_steps` steps."""

    def __init__(self, agents: AgentSlice | None, ego_state: np.ndarray, red_ids: list[str], red_polygons: list,
                 config: NavsimPDMClosedConfig, earlier_collided: frozenset[str] = frozenset()):
        """`earlier_collided`: tokens the planner recorded at earlier tokens of the log (objects left out)."""
        self.sample_steps, self.interval = config.forecast_sample_steps, config.interval
        self.agents = agents
        samples = config.trajectory_steps // self.sample_steps + 1
        centre = ego_center(ego_state[None], config.vehicle)[0]
        static, dynamic = self._nearest(agents, centre, config.map_radius, earlier_collided)
        rows = static + dynamic
        self.tokens = [agents.track_ids[i] for i in rows] + [f"red_light_{i}" for i in red_ids]
        self.rows = np.array(rows, dtype=int)
        self.num_objects = len(rows)
        dxy = np.zeros((len(rows), 2))
        if agents is not None and rows:
            heading, speed = agents.heading[self.rows], np.hypot(agents.vx[self.rows], agents.vy[self.rows])
            backwards = np.abs(normalize_angle(heading - np.arctan2(agents.vy[self.rows], agents.vx[self.rows]))) >= np.pi / 2
            track = np.where(backwards, normalize_angle(heading + np.pi), heading)
            moving = np.isin(agents.agent_type[self.rows], DYNAMIC_TYPES)
            dxy = np.where(moving[:, None], np.stack([np.cos(track) * speed, np.sin(track) * speed], -1), 0.0)
            corners = box_corners(agents.x[self.rows], agents.y[self.rows], heading, agents.length[self.rows],
                                  agents.width[self.rows], nuplan_formula=True)
        else:
            corners = np.zeros((0, 4, 2))
        self.dxy = dxy
        self.polygons = np.empty((samples, len(self.tokens)), dtype=object)
        for k in range(samples):
            delta_t = float(k * self.sample_steps) * config.interval
            if len(rows):
                self.polygons[k, : len(rows)] = shapely.polygons(corners + delta_t * dxy[:, None])
            self.polygons[k, len(rows):] = red_polygons
        self.trees = [shapely.STRtree(self.polygons[k]) for k in range(samples)]
        footprint = shapely.Polygon(ego_corners(ego_state[None], config.vehicle, nuplan_formula=True)[0])
        hits = self.trees[0].query(footprint, predicate="intersects")
        self.collided_now = set()  # what a fresh planner records here: objects hit, red connectors the ego is within
        for k in sorted(hits):
            if k >= len(rows) and not footprint.within(self.polygons[0, k]):
                continue
            self.collided_now.add(self.tokens[k])
        self.collided = self.collided_now | set(earlier_collided)
        self.red_ids, self.red_polygons = list(red_ids), list(red_polygons)

    @staticmethod
    def _nearest(agents: AgentSlice | None, centre: np.ndarray, radius: float,
                 left_out: frozenset[str]) -> tuple[list[int], list[int]]:
        if agents is None:
            return [], []
        valid = np.flatnonzero(agents.valid)
        if left_out:  # before the caps, as NAVSIM's object manager leaves them out
            valid = valid[[str(agents.track_ids[i]) not in left_out for i in valid]]
        distance = np.hypot(agents.x - centre[0], agents.y - centre[1])
        near = valid[distance[valid] <= radius]
        static = near[~np.isin(agents.agent_type[near], DYNAMIC_TYPES)]
        static = static[np.argsort(distance[static])][:MAX_STATIC]
        dynamic: list[int] = []
        for kind, cap in MAX_DYNAMIC.items():
            rows = near[agents.agent_type[near] == int(kind)]
            dynamic += rows[np.argsort(distance[rows])][:cap].tolist()
        return static.tolist(), dynamic

    def sample(self, step: int) -> int:
        return step // self.sample_steps

    def is_red_light(self, column: int) -> bool:
        return column >= self.num_objects

    def lead_speed(self, column: int, ego_heading: float) -> float:
        """An object's speed along the ego heading (its first state; static objects 0)."""
        row = self.rows[column]
        if self.agents.agent_type[row] not in DYNAMIC_TYPES:
            return 0.0
        speed = float(np.hypot(self.agents.vx[row], self.agents.vy[row]))
        return speed * np.cos(normalize_angle(self.agents.heading[row] - ego_heading))

    def observation(self, steps: int) -> Observation:
        """The scorer's observation over `steps` 10 Hz steps (each step sees its forecast map), without the objects
        the ego overlaps now (the scorer ignores them) and with the red connectors red throughout."""
        keep = [c for c in range(self.num_objects) if self.tokens[c] not in self.collided]
        agents, rows = self.agents, self.rows[keep]
        times = np.array([self.sample(t) * self.sample_steps for t in range(steps)], dtype=np.float64) * self.interval
        shape = (steps, len(keep))
        if agents is None or not keep:
            zeros = np.zeros(shape)
            return Observation(zeros, zeros, zeros, zeros, zeros, np.ones(shape, bool), np.zeros(0), np.zeros(0),
                               np.zeros(0, np.int8), [], self.red_ids, np.array(self.red_polygons, dtype=object),
                               np.ones((steps, len(self.red_ids)), bool))
        dxy = self.dxy[keep]
        x = agents.x[rows][None] + times[:, None] * dxy[None, :, 0]
        y = agents.y[rows][None] + times[:, None] * dxy[None, :, 1]
        return Observation(x, y, np.broadcast_to(agents.heading[rows], shape), np.broadcast_to(agents.vx[rows], shape),
                           np.broadcast_to(agents.vy[rows], shape), np.ones(shape, bool), agents.length[rows],
                           agents.width[rows], agents.agent_type[rows], [self.tokens[c] for c in keep],
                           self.red_ids, np.array(self.red_polygons, dtype=object),
                           np.ones((steps, len(self.red_ids)), bool))


class NavsimPDMClosedPlanner:
    """NAVSIM's PDM-Closed reference planner over a world view."""

    def __init__(self, config: NavsimPDMClosedConfig = NavsimPDMClosedConfig()):
        self.config = config

    def plan_view(self, world: WorldView, roadblocks: list[str] | None = None,
                  earlier_collided: frozenset[str] = frozenset()) -> NavsimPDMClosedPlan:
        """Plan from the view; `roadblocks` the route's roadblock ids as logged (default: the route lanes' groups);
        `earlier_collided` the tokens NAVSIM's caching planner kept from the log's earlier tokens (`collided_now`)."""
        config, ego = self.config, np.asarray(world.ego_state, dtype=np.float64)
        graph, route = self._corrected_route(world, roadblocks)
        lanes = route_lanes(graph, route)
        centre = ego_center(ego[None], config.vehicle)[0]
        scoring_map = ScoringMap.from_road_map(world.road_map, lanes, centre, config.map_radius)
        footprint = shapely.Polygon(ego_corners(ego[None], config.vehicle, nuplan_formula=True)[0])
        at_rear_axle = [scoring_map.tokens[i] for i in
                        np.sort(scoring_map.tree.query(shapely.Point(ego[:2]), predicate="intersects"))]
        start = starting_lane(graph, lanes, at_rear_axle, ego[:3], footprint, centre)
        centerline = NavsimPath(centerline_poses(graph, centerline_lanes(graph, route, lanes, start)))
        paths = [centerline] + [NavsimPath(parallel_path(centerline.poses, o)) for o in config.lateral_offsets]
        forecast = self._forecast(world, ego, lanes, earlier_collided)
        speed_limit = world.road_map.lane(start).speed_limit
        targets = np.asarray(config.speed_fractions) * (config.fallback_speed if speed_limit is None else speed_limit)
        generator = _ProposalGenerator(paths, targets, forecast, ego, config)
        proposals = generator.proposals()
        times = np.arange(config.proposal_steps + 1) * config.interval
        states = simulate(ego, interpolate_global_poses(proposals[:, : config.proposal_steps + 1], times))
        context = ScoringContext(scoring_map, forecast.observation(config.trajectory_steps + 1), centerline.poses[:, :2])
        scores = score_states(states, context, config.version).score
        best = int(np.argmax(scores))
        return NavsimPDMClosedPlan(generator.extend(best), scores, best, scoring_map, centerline, lanes)

    def collided_now(self, world: WorldView, roadblocks: list[str] | None = None) -> frozenset[str]:
        """The tokens the planner records at this frame, which NAVSIM's caching carries to the log's later tokens:
        objects the ego footprint intersects, `red_light_<connector>` for red on-route connectors it is within."""
        graph, route = self._corrected_route(world, roadblocks)
        ego = np.asarray(world.ego_state, dtype=np.float64)
        return frozenset(self._forecast(world, ego, route_lanes(graph, route)).collided_now)

    @staticmethod
    def _corrected_route(world: WorldView, roadblocks: list[str] | None) -> tuple[RoadblockGraph, list[str]]:
        graph = roadblock_graph(world.road_map)
        ego_pose = np.asarray(world.ego_state, dtype=np.float64)[:3]
        return graph, correct_route(graph, ego_pose, roadblocks or route_lane_groups(world.road_map, world.route))

    def _forecast(self, world: WorldView, ego: np.ndarray, lanes: list[str],
                  earlier_collided: frozenset[str] = frozenset()) -> ConstantVelocityForecast:
        road_map, route = world.road_map, set(lanes)
        red_ids, red_polygons = [], []
        for light, status in zip(world.light_ids, np.asarray(world.light_status).tolist()):
            if status != TrafficLightStatus.RED:
                continue
            for lane in road_map.lanes:
                if lane.traffic_light == light and lane.is_connector and lane.id in route:
                    red_ids.append(lane.id), red_polygons.append(road_map.lane_polygons[road_map.lane_index[lane.id]])
        return ConstantVelocityForecast(world.agents, ego, red_ids, red_polygons, self.config, earlier_collided)


class _ProposalGenerator:
    """NAVSIM's proposal unroll: per path a batch of IDM policies, leads searched in the path's corridor."""

    PROGRESS, VELOCITY, LENGTH_REAR = 0, 1, 2

    def __init__(self, paths: list[NavsimPath], targets: np.ndarray, forecast: ConstantVelocityForecast,
                 ego: np.ndarray, config: NavsimPDMClosedConfig):
        self.paths, self.targets, self.forecast, self.config = paths, targets, forecast, config
        n, steps = len(paths) * len(targets), config.trajectory_steps + 1
        self.poses = np.zeros((n, steps, 3))
        self.idm = np.zeros((n, steps, 2))  # progress, velocity
        self.lead = np.zeros((n, steps, 3))  # progress, velocity, rear length
        self.corridors: dict[int, shapely.Geometry] = {}
        self.ego = ego

    def batch(self, path: int) -> list[int]:
        return list(range(path * len(self.targets), (path + 1) * len(self.targets)))

    def proposals(self) -> np.ndarray:
        """(P, proposal_steps + 1, 3) poses, proposal order path-major."""
        for path in range(len(self.paths)):
            batch = self.batch(path)
            progress = float(self.paths[path].project(shapely.Point(self.ego[:2])))
            self.idm[batch, 0] = [progress, self.ego[3]]
            self.poses[batch, 0] = self.paths[path].interpolate([progress])[0]
            for t in range(1, self.config.proposal_steps + 1):
                self._step(path, batch, t)
        return self.poses[:, : self.config.proposal_steps + 1]

    def extend(self, proposal: int) -> np.ndarray:
        """The chosen proposal unrolled to the trajectory horizon alone."""
        path = proposal // len(self.targets)
        for t in range(self.config.proposal_steps + 1, self.config.trajectory_steps + 1):
            self._step(path, [proposal], t)
        return self.poses[proposal].copy()

    def _step(self, path: int, batch: list[int], t: int) -> None:
        self._update_leads(path, batch, t)
        c = self.config
        x, v = self.idm[batch, t - 1, 0], self.idm[batch, t - 1, 1]
        x_lead, v_lead, l_rear = self.lead[batch, t, 0], self.lead[batch, t, 1], self.lead[batch, t, 2]
        target = self.targets[[k % len(self.targets) for k in batch]]
        s_star = c.min_gap + v * c.headway + (v * (v - v_lead)) / (2 * np.sqrt(c.accel_max * c.decel_max))
        s_alpha = np.maximum(x_lead - x - l_rear, c.min_gap)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = c.accel_max * (1 - (v / target) ** 10 - (s_star / s_alpha) ** 2)
        acc = np.clip(acc, -c.decel_max, c.accel_max)
        self.idm[batch, t, 0] = x + c.interval * v
        self.idm[batch, t, 1] = v + c.interval * acc
        self.poses[batch, t] = self.paths[path].interpolate(self.idm[batch, t, 0])

    def _corridor(self, path: int, batch: list[int]) -> shapely.Geometry:
        if path not in self.corridors:
            start = self.idm[batch[0], 0, 0]
            end = start + abs(float(np.max(self.targets))) * self.config.trajectory_steps * self.config.interval
            line = self.paths[path].substring(start, end)
            self.corridors[path] = line.buffer(self.config.vehicle.width / 2, cap_style="square")
        return self.corridors[path]

    def _update_leads(self, path: int, batch: list[int], t: int) -> None:
        if t % self.config.lead_update_steps != 0:
            self.lead[batch, t] = self.lead[batch, t - 1]
            return
        forecast, sample = self.forecast, self.forecast.sample(t)
        polygons = forecast.polygons[sample]
        hits = np.sort(forecast.trees[sample].query(self._corridor(path, batch), predicate="intersects"))
        ahead_of = {int(c): float(self.paths[path].project(polygons[c].centroid)) for c in hits
                    if forecast.tokens[c] not in forecast.collided}
        lead = np.zeros(3)  # shared between the batch's proposals, as NAVSIM's (a field left over carries on)
        for k in batch:
            progress = self.idm[k, t - 1, 0]
            ahead = [c for c, p in ahead_of.items() if p > progress]
            if ahead:
                pose = self.poses[k, t - 1]
                ego = shapely.Polygon(ego_corners(pose[None], self.config.vehicle, nuplan_formula=True)[0])
                distances = shapely.distance(ego, polygons[ahead])
                nearest = ahead[int(np.argmin(distances))]
                lead[self.PROGRESS] = progress + distances.min()
                if not forecast.is_red_light(nearest):
                    lead[self.VELOCITY] = forecast.lead_speed(nearest, pose[2])
            else:
                lead[self.PROGRESS] = self.paths[k // len(self.targets)].linestring.length
                lead[self.LENGTH_REAR] = self.config.vehicle.length / 2
            self.lead[k, t] = lead


__all__ = ["ConstantVelocityForecast", "NavsimPDMClosedConfig", "NavsimPDMClosedPlan", "NavsimPDMClosedPlanner"]
