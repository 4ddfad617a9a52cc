"""Non-reactive behaviours (log replay, constant velocity) and attaching logged agents to lanes for reactive replays."""
from __future__ import annotations

import numpy as np
import shapely

from sim.geometry import principal_value
from sim.map import RoadMap
from sim.state import AgentSlice, AgentTracks


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


def log_replay(tracks: AgentTracks, step: int, dt: float = 0.1) -> AgentSlice:
    """The logged agents at `step`; past the end of the log, the last frame extrapolated at constant velocity."""
    last = tracks.num_steps - 1
    if step <= last:
        return tracks.at(step)
    final = tracks.at(last)
    elapsed = (step - last) * dt
    return AgentSlice(
        x=final.x + final.vx * elapsed, y=final.y + final.vy * elapsed, heading=final.heading, vx=final.vx,
        vy=final.vy, valid=final.valid, length=final.length, width=final.width, height=final.height,
        agent_type=final.agent_type, track_ids=final.track_ids,
    )


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
