"""A scene for NAVSIM's metric-caching carry-over: a car the ego overlaps at the current frame, stopped far ahead of
it half a second (one 2 Hz frame) later, so that the log's next window meets it as an obstacle."""
from __future__ import annotations

import numpy as np

from scenarios.generator import generate_scene
from sim.scene import Scene
from tests.scene_tracks import with_standing_car

GHOST = "ghost"
FRONT_OVERHANG = 4.049  # Pacifica rear axle to front bumper
AHEAD_M = 45.0  # the ego drives at ~13 m/s: far enough for PDM-Closed to stop short of it


def ghost_scene() -> Scene:
    """builtin straight scene 3 with the ghost car: 1.25 m of its 4.5 inside the ego's front at the current step,
    then (from 5 steps on) stopped AHEAD_M ahead of the ego's pose 5 steps on, on its heading."""
    scene = generate_scene("straight", 3)
    now, later, steps = scene.current_index, scene.current_index + 5, scene.agents.num_steps
    x, y, heading = (np.zeros(steps) for _ in range(3))
    for step in range(steps):
        anchor, forward = (now, FRONT_OVERHANG + 1.0) if step < later else (later, AHEAD_M)
        ex, ey, eh = scene.ego_log[anchor, :3]
        x[step], y[step], heading[step] = ex + forward * np.cos(eh), ey + forward * np.sin(eh), eh
    return with_standing_car(scene, x, y, heading, GHOST)
