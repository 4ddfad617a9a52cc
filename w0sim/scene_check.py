"""Smoke-check scene files: each must load, render (camera + BEV) and drive a closed-loop episode."""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.route_follower import RouteFollowerAgent
from scenarios.scene import SceneFormatError, load_scene
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.envs.frames import FrameRenderer
from sim.map import MapError
from sim.render.camera import CameraConfig


@dataclass
class SceneCheck:
    path: str
    family: str
    ok: bool
    reason: str = ""
    decisions: int = 0
    route_fraction: float = 0.0
    collisions: int = 0


def check_scene(path: str | Path, max_decisions: int = 400) -> SceneCheck:
    """Load (a malformed or implausible file fails with the loader's reason), render the current frame, and drive
    the route with the IDM route follower."""
    path = Path(path)
    family = "?"
    try:
        scene = load_scene(path)
    except SceneFormatError as exc:  # names the file, the field and the bound: no traceback needed
        return SceneCheck(str(path), family, False, str(exc))
    try:
        family = scene.family
        frame = FrameRenderer(scene.map, CameraConfig()).composite(
            scene.initial_ego_state, scene.agents.at(scene.current_index), scene.light_status_at(scene.current_index),
            scene.route)
        if frame.ndim != 3 or not frame.any():
            return SceneCheck(str(path), family, False, "rendered an empty frame")
        env = ClosedLoopEnv(scenes=[scene], cameras=False, privileged=True)
        _, info = env.reset(seed=0)
        driver = RouteFollowerAgent()
        for decisions in range(1, max_decisions + 1):
            plan = driver.compute_trajectory(info["agent_input"], info["world"]).poses
            if not np.isfinite(plan).all():
                return SceneCheck(str(path), family, False, "route follower planned non-finite poses", decisions)
            _, _, terminated, truncated, info = env.step(plan)
            if terminated or truncated:
                break
        return SceneCheck(str(path), family, True, "", decisions, info["route_fraction"], info["collisions"])
    except MapError as exc:  # the map's own data is at fault (e.g. polygons GEOS cannot combine): the reason says it
        return SceneCheck(str(path), family, False, f"{path}: MapError: {exc}")
    except Exception as exc:  # a smoke check records every failure and goes on
        return SceneCheck(str(path), family, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
