"""Test scenes with one more road user: a car (4.5 x 2.0 x 1.5 m, standing still) appended to a scene's tracks."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.scene import Scene
from sim.state import AgentType


def with_standing_car(scene: Scene, x, y, heading, track_id: str) -> Scene:
    """The scene with a car whose centre and heading are `x`, `y`, `heading` (numbers, or one per 10 Hz step), velocity
    zero, valid at every step, named `track_id`."""
    tracks = scene.agents
    steps = tracks.num_steps
    column = lambda values: np.broadcast_to(np.asarray(values, dtype=np.float64), (steps,))[:, None]  # noqa: E731
    grown = replace(tracks, x=np.hstack([tracks.x, column(x)]), y=np.hstack([tracks.y, column(y)]),
                    heading=np.hstack([tracks.heading, column(heading)]), vx=np.hstack([tracks.vx, column(0.0)]),
                    vy=np.hstack([tracks.vy, column(0.0)]), valid=np.hstack([tracks.valid, np.ones((steps, 1), bool)]),
                    length=np.append(tracks.length, 4.5), width=np.append(tracks.width, 2.0),
                    height=np.append(tracks.height, 1.5), agent_type=np.append(tracks.agent_type, int(AgentType.VEHICLE)),
                    track_ids=[*tracks.track_ids, track_id])
    return replace(scene, agents=grown)
