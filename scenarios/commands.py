"""NAVSIM's driving command from a route: where the route point 20 m ahead lies, left, right or straight on."""
from __future__ import annotations

import numpy as np

from sim.scene import DRIVING_COMMANDS

LOOKAHEAD_M = 20.0
LATERAL_THRESHOLD_M = 2.0


def command_at(route_polyline: np.ndarray, cumulative: np.ndarray, s_now: float, pose: np.ndarray) -> int:
    """Index into DRIVING_COMMANDS for an ego pose (x, y, heading) at arc length `s_now` of the route
    (`cumulative`: arc length of each polyline point): left or right when the route point LOOKAHEAD_M on
    lies more than LATERAL_THRESHOLD_M to that side, else straight."""
    s = min(s_now + LOOKAHEAD_M, cumulative[-1])
    px, py = np.interp(s, cumulative, route_polyline[:, 0]), np.interp(s, cumulative, route_polyline[:, 1])
    x, y, h = pose[:3]
    lateral = -np.sin(h) * (px - x) + np.cos(h) * (py - y)
    name = "left" if lateral > LATERAL_THRESHOLD_M else "right" if lateral < -LATERAL_THRESHOLD_M else "straight"
    return DRIVING_COMMANDS.index(name)


def driving_commands(route_polyline: np.ndarray, ego_log: np.ndarray) -> np.ndarray:
    """(T,) command per logged pose, each placed on the route at its nearest route point."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route_polyline, axis=0), axis=1))])
    nearest = [np.argmin(np.hypot(route_polyline[:, 0] - x, route_polyline[:, 1] - y)) for x, y in ego_log[:, :2]]
    return np.array([command_at(route_polyline, cumulative, cumulative[k], pose) for k, pose in zip(nearest, ego_log)],
                    dtype=np.int8)
