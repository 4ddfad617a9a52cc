"""The numeric rules of the Leaderboard 2.x criteria that feed a route record: route length, completion, min speed, timeouts."""
from __future__ import annotations

import numpy as np

ROUND_DIGITS = 3  # lengths, durations, std devs, infractions per km
ROUND_DIGITS_SCORE = 6  # route scores and score means

COMPLETION_PERCENTAGE_THRESHOLD = 99.0  # RouteCompletionTest: success above this ...
COMPLETION_DISTANCE_THRESHOLD_M = 10.0  # ... when the ego ends within this distance of the last route point
BLOCKED_MIN_SPEED_MPS = 0.1  # ActorBlockedTest
BLOCKED_MAX_TIME_S = 180.0  # Bench2Drive: 60 s
BLOCKED_MAX_TIME_S_BENCH2DRIVE = 60.0
MIN_SPEED_CHECKPOINTS = 4  # MinimumSpeedRouteTest; Bench2Drive: 20
ROUTE_DEVIATION_MAX_M = 30.0  # InRouteTest offroad_max; offroad_min = half of it
ROUTE_TIMEOUT_BASE_S = 300.0  # LB 2.x RouteTimeoutBehavior
ROUTE_TIMEOUT_SPEED_RATIO = 0.10  # budget grows by 1 / (ratio x speed limit) s per metre passed
SECONDS_GIVEN_PER_METERS_LB10 = 0.8
INITIAL_SECONDS_DELAY_LB10 = 5.0


def route_length(points: np.ndarray) -> float:
    """Length (m) of the dense route, points (N, 2|3), as the Leaderboard's `compute_route_length` measures it:
    each hop the length of a float32 carla.Vector3D, summed in double precision. The record rounds it to 3 digits."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[0] < 2:
        return 0.0
    hops = np.diff(pts, axis=0)
    squared = hops[:, 0] * hops[:, 0] + hops[:, 1] * hops[:, 1]
    if pts.shape[1] > 2:
        squared = squared + hops[:, 2] * hops[:, 2]
    return float(sum(float(v) for v in np.sqrt(squared)))


def route_completion_percent(completed_length: float, total_length: float) -> float:
    """RouteCompletionTest's running value: length up to the furthest passed dense point / total x 100, 2 decimals."""
    if total_length <= 0:
        raise ValueError(f"route length must be > 0 m, got {total_length}")
    return round(completed_length / total_length * 100, 2)


def is_route_completed(completion_percent: float, distance_to_goal_m: float) -> bool:
    """Success rule of RouteCompletionTest (its value then becomes 100)."""
    return completion_percent > COMPLETION_PERCENTAGE_THRESHOLD and distance_to_goal_m < COMPLETION_DISTANCE_THRESHOLD_M


def min_speed_checkpoint_value(mean_ego_speed: float, mean_background_speed: float | None) -> float:
    """One MinimumSpeedRouteTest checkpoint: ego mean speed as % of the background traffic's (100 with no traffic).

    An event (and a penalty) is raised only when the value is below 100.
    """
    if mean_background_speed is None or mean_background_speed <= 0:
        return 100.0
    return round(mean_ego_speed / mean_background_speed * 100, 2)


def route_timeout_lb2(route_length_m: float, speed_limit_mps: float) -> float:
    """Total LB 2.x route time budget (s) for a route driven under one speed limit: 300 s + 10x the time at the limit."""
    if speed_limit_mps <= 0:
        raise ValueError(f"speed limit must be > 0 m/s, got {speed_limit_mps}")
    return ROUTE_TIMEOUT_BASE_S + route_length_m / (ROUTE_TIMEOUT_SPEED_RATIO * speed_limit_mps)


def route_timeout_lb10(route_length_m: float) -> int:
    """LB 1.0 fixed route time budget (s): int(0.8 s/m x length + 5 s)."""
    return int(SECONDS_GIVEN_PER_METERS_LB10 * route_length_m + INITIAL_SECONDS_DELAY_LB10)
