"""Small shared helpers for the environment tests (scenes, simple trajectories)."""
from __future__ import annotations

import numpy as np

from scenarios.generator import generate_scene
from sim.geometry import global_to_local
from sim.scene import Scene
from sim.state import TrajectorySampling

SAMPLING = TrajectorySampling()
POSE_TIMES = (np.arange(SAMPLING.num_poses) + 1) * SAMPLING.interval


def fresh_scene(family: str, seed: int) -> Scene:
    """A newly generated scene the caller may modify (generation takes ~0.1 s)."""
    return generate_scene(family, seed)


def straight_trajectory(speed: float) -> np.ndarray:
    """(8, 3) poses straight ahead at constant speed, in the current ego frame."""
    return np.stack([speed * POSE_TIMES, np.zeros_like(POSE_TIMES), np.zeros_like(POSE_TIMES)], -1).astype(np.float32)


def logged_future_trajectory(scene: Scene) -> np.ndarray:
    """The scene's own logged future (every 0.5 s for 4 s) in the current ego frame."""
    steps = scene.current_index + 5 * np.arange(1, SAMPLING.num_poses + 1)
    return global_to_local(scene.ego_log[steps, :3], scene.initial_ego_state[:3])


def route_trajectory(scene: Scene, ego: np.ndarray, speed: float) -> np.ndarray:
    """(8, 3) poses along the scene's route centreline at constant speed from the ego's projection."""
    line = scene.map.route_polyline(scene.route)
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    dense_s = np.arange(0.0, cum[-1], 0.25)
    dense = np.stack([np.interp(dense_s, cum, line[:, 0]), np.interp(dense_s, cum, line[:, 1])], -1)
    s0 = dense_s[int(np.argmin(np.linalg.norm(dense - ego[:2], axis=1)))]
    s = np.minimum(s0 + speed * POSE_TIMES, cum[-1] - 0.5)
    x, y = np.interp(s, cum, line[:, 0]), np.interp(s, cum, line[:, 1])
    xa, ya = np.interp(s + 0.5, cum, line[:, 0]), np.interp(s + 0.5, cum, line[:, 1])
    heading = np.arctan2(ya - y, xa - x)
    return global_to_local(np.stack([x, y, heading], -1), ego[:3]).astype(np.float32)


def obs_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def route_follower(env):
    """The IDM route follower driving a privileged env: `plan()` is its next trajectory (from env.agent_input/world)."""
    from agents.route_follower import RouteFollowerAgent

    agent = RouteFollowerAgent()
    return lambda: agent.compute_trajectory(env.agent_input, env.world).poses
