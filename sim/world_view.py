"""The privileged world view: what a privileged agent (PDM-Closed, log replay) may read at a decision.

Camera agents see only the `AgentInput`. A privileged agent also gets a `WorldView`: the map, the route
ahead, the ego state, the objects now and one decision earlier, the lights, and the ego's log. The
one-shot environment hands out the view a NAVSIM log allows (`WorldView.from_log`), the closed-loop
environment the live simulation's; agents read nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sim.map import RoadMap
from sim.scene import STEP_S, Scene
from sim.state import AgentSlice, StateIndex, TrafficLightStatus

HISTORY_STEPS = 5  # the objects' recent history: 0.5 s earlier (one 2 Hz decision; averages out IDM's jitter)

_UNLOGGED_STATE = slice(StateIndex.STEERING_ANGLE, None)  # steering angle, steering rate, yaw rate, yaw acceleration
_DYNAMICS = slice(StateIndex.VELOCITY_X, StateIndex.ACCELERATION_Y + 1)  # velocity and acceleration (x, y)


def logged_ego_state(state: np.ndarray) -> np.ndarray:
    """(..., 11) ego state as NAVSIM's metric cache starts from it: the logged pose, velocity and acceleration (the
    latter two float32 values, as NAVSIM's EgoStatus holds them); the rest 0."""
    logged = np.array(state, dtype=np.float64, copy=True)
    logged[..., _UNLOGGED_STATE] = 0.0
    logged[..., _DYNAMICS] = logged[..., _DYNAMICS].astype(np.float32)
    return logged


def logged_light_status(status: np.ndarray) -> np.ndarray:
    """Light states as a NAVSIM log gives them: red or not, so yellow reads as green."""
    status = np.array(status, copy=True)
    status[status == TrafficLightStatus.YELLOW] = TrafficLightStatus.GREEN
    return status


def copy_slice(agents: AgentSlice) -> AgentSlice:
    """A slice that owns its per-step arrays (a simulator updates its own slice in place)."""
    return replace(agents, x=agents.x.copy(), y=agents.y.copy(), heading=agents.heading.copy(), vx=agents.vx.copy(),
                   vy=agents.vy.copy(), valid=agents.valid.copy())


@dataclass(frozen=True)
class WorldView:
    """What a privileged agent may read now. Global frame, rear-axle ego state, 10 Hz log steps.

    road_map, route: the map and the route's lane ids from the lane the ego has reached onwards;
    ego_state (11,); agents: the objects now, and `agents_before` the same tracks `history_s` seconds
    earlier (None at the first decision); light_ids and light_status (L,) `TrafficLightStatus`;
    ego_log (T, 11): the ego's logged states (the expert's path), `step` the log index of now;
    time_s: seconds since the episode started.
    """

    road_map: RoadMap
    route: list[str]
    ego_state: np.ndarray
    agents: AgentSlice
    agents_before: AgentSlice | None
    history_s: float
    light_ids: list[str]
    light_status: np.ndarray
    ego_log: np.ndarray
    step: int
    time_s: float = 0.0

    @classmethod
    def from_log(cls, scene: Scene, step: int | None = None, as_logged: bool = True) -> "WorldView":
        """The view of a scene's log at `step` (default: its current frame). `as_logged`: what a NAVSIM log holds
        (the ego without steering and yaw rates, lights red or not), as NAVSIM's metric cache reads it; otherwise
        the scene's full state, as the live simulation would give it."""
        step = scene.current_index if step is None else step
        before = max(step - HISTORY_STEPS, 0)
        ego, lights = scene.ego_log[step], scene.light_status[step]
        if as_logged:
            ego, lights = logged_ego_state(ego), logged_light_status(lights)
        return cls(scene.map, list(scene.route), ego, scene.agents.at(step),
                   None if before == step else scene.agents.at(before), (step - before) * STEP_S,
                   list(scene.light_ids), lights, scene.ego_log, step, (step - scene.current_index) * STEP_S)
