"""Closed-loop scenes from Leaderboard routes: the town, the dense route, the ego standing at its start, seeded traffic.

Background traffic is spawned on the driving lanes near the route (vehicles every so often, at a
fraction of the speed limit, none close to the ego) and driven by the simulator's IDM; the town's
signal plans run the lights, each junction at a seeded phase offset. The scene's log is a short
standing start (1.5 s), so agents that look at history frames have some.
"""
from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import shapely

from scenarios.commands import driving_commands
from scenarios.leaderboard import LeaderboardRoute, densify
from scenarios.opendrive import Town
from sim.scene import STEP_S, Scene
from sim.state import AgentTracks, AgentType, ego_state
from sim.traffic import light_status_table

HISTORY_STEPS = 15
TRAFFIC_CORRIDOR_M = 40.0  # traffic is spawned on lanes this close to the route
VEHICLE_SPACING_M = 40.0  # one spawn slot per this many metres of lane
SPAWN_PROBABILITY = 0.5  # share of slots that get a vehicle
EGO_CLEARANCE_M = 25.0  # no vehicle spawns this close to the ego
CAR_SIZE = (4.8, 2.0, 1.6)  # length, width, height (CARLA's mid-size cars)


def route_token(route: LeaderboardRoute) -> str:
    """A stable id for a route: the Leaderboard's name of it, `RouteScenario_<id>` (its records add the repetition,
    `RouteScenario_<id>_rep<k>`: `metrics.leaderboard.route_record.route_id_for`)."""
    return f"RouteScenario_{route.route_id}"


def route_scene(route: LeaderboardRoute, town: Town, seed: int = 0) -> Scene:
    """The closed-loop scene of `route` on `town` (its traffic and signal phases drawn from `seed`)."""
    road_map = town.road_map
    dense = densify(town, route)
    points = dense.points[:, :2]
    rng = np.random.default_rng([seed, zlib.crc32(route.route_id.encode())])
    start = points[0]
    heading = np.arctan2(*(points[min(2, len(points) - 1)] - start)[::-1])
    ego = np.tile(ego_state(start[0], start[1], heading), (HISTORY_STEPS + 1, 1))
    agents = _spawn_traffic(town, points, rng)
    plans = [replace(plan, offset_s=float(rng.uniform(0.0, plan.cycle_s))) for plan in town.signal_plans]
    light_ids, lights = light_status_table(plans, np.arange(HISTORY_STEPS + 1) * STEP_S)
    commands = driving_commands(points, ego)
    return Scene(
        token=route_token(route), map=road_map, ego_log=ego, agents=agents, route=dense.lane_ids,
        current_index=HISTORY_STEPS, light_ids=light_ids, light_status=lights, driving_command=commands,
        metadata={"source": "carla_route", "family": route.town, "town": route.town, "route_id": route.route_id,
                  "route_file": route.source, "seed": seed, "route_length_m": dense.length_m,
                  "route_warnings": list(dense.warnings), "signal_plans": [p.as_dict() for p in plans],
                  "signal_time_offset_s": 0.0, "leaderboard": route.metadata},
        route_points=dense.points,
    )


def _spawn_traffic(town: Town, route_points: np.ndarray, rng: np.random.Generator) -> AgentTracks:
    """Vehicles on the driving lanes near the route, moving along their lane; history at constant velocity."""
    road_map = town.road_map
    corridor = shapely.LineString(route_points).buffer(TRAFFIC_CORRIDOR_M)
    near = road_map.lane_tree.query(corridor, predicate="intersects")
    x, y, heading, speed = [], [], [], []
    for index in np.sort(near):
        lane = road_map.lanes[index]
        if lane.is_connector:  # junctions stay clear at the start
            continue
        slots = np.arange(VEHICLE_SPACING_M / 2, lane.length - CAR_SIZE[0], VEHICLE_SPACING_M)
        slots = slots[rng.random(slots.size) < SPAWN_PROBABILITY]
        if slots.size == 0:
            continue
        points = shapely.get_coordinates(shapely.line_interpolate_point(road_map.lane_centerlines[index], slots))
        keep = np.linalg.norm(points - route_points[0], axis=1) > EGO_CLEARANCE_M
        if not keep.any():
            continue
        x.append(points[keep, 0]), y.append(points[keep, 1])
        heading.append(road_map.heading_at(np.full(keep.sum(), index), slots[keep]))
        speed.append(rng.uniform(0.3, 0.8, keep.sum()) * lane.speed_limit)
    count = sum(len(a) for a in x)
    tracks = AgentTracks.empty(HISTORY_STEPS + 1, count)
    if count == 0:
        return tracks
    x0, y0, h, v = (np.concatenate(a) for a in (x, y, heading, speed))
    back = (np.arange(HISTORY_STEPS + 1) - HISTORY_STEPS)[:, None] * STEP_S  # seconds relative to now (<= 0)
    tracks.x[:] = x0 + back * v * np.cos(h)
    tracks.y[:] = y0 + back * v * np.sin(h)
    tracks.heading[:] = h
    tracks.vx[:], tracks.vy[:] = v * np.cos(h), v * np.sin(h)
    tracks.valid[:] = True
    tracks.length[:], tracks.width[:], tracks.height[:] = CAR_SIZE
    tracks.agent_type[:] = AgentType.VEHICLE
    tracks.track_ids = [f"vehicle_{i}" for i in range(count)]
    return tracks


__all__ = ["route_scene", "route_token"]
