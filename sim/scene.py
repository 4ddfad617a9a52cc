"""The Scene value: a map, the ego's 10 Hz log, traffic, lights, route and driving command, and the time step."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.map import RoadMap
from sim.state import AgentTracks, StateIndex, TrafficLightStatus

STEP_S = 0.1  # every log in w0sim is sampled at 10 Hz

DRIVING_COMMANDS = ("left", "straight", "right", "unknown")  # NAVSIM's one-hot order


@dataclass
class Scene:
    """One driving scene: everything needed to replay, simulate, render and score it.

    `ego_log` (T, 11) and `agents` (T, N) share the 10 Hz time axis; step `current_index` is the
    "current frame" an agent plans from (earlier steps are history). `light_status` (T, L) holds a
    `TrafficLightStatus` per light id; `driving_command` (T,) indexes DRIVING_COMMANDS. `route_points`
    (M, 3) x, y, z is the dense route an episode must complete where a route file defines it (a Leaderboard
    route, densified as the Leaderboard does); without it, the route is the `route` lanes' centerline.
    """

    token: str
    map: RoadMap
    ego_log: np.ndarray
    agents: AgentTracks
    route: list[str]
    current_index: int
    light_ids: list[str] = field(default_factory=list)
    light_status: np.ndarray | None = None
    driving_command: np.ndarray | None = None
    command_text: str = ""
    metadata: dict = field(default_factory=dict)
    route_points: np.ndarray | None = None

    def __post_init__(self) -> None:
        steps = self.ego_log.shape[0]
        if self.ego_log.ndim != 2 or self.ego_log.shape[1] != len(StateIndex):
            raise ValueError(f"scene {self.token}: ego_log must be (T, 11), got {self.ego_log.shape}")
        if self.agents.num_steps != steps:
            raise ValueError(f"scene {self.token}: agents have {self.agents.num_steps} steps, ego log {steps}")
        if not 0 <= self.current_index < steps:
            raise ValueError(f"scene {self.token}: current_index {self.current_index} outside 0..{steps - 1}")
        if self.light_status is None:
            self.light_status = np.full((steps, len(self.light_ids)), TrafficLightStatus.UNKNOWN, np.int8)
        if self.light_status.shape != (steps, len(self.light_ids)):
            raise ValueError(f"scene {self.token}: light_status {self.light_status.shape} != ({steps}, {len(self.light_ids)})")
        if self.driving_command is None:
            self.driving_command = np.full(steps, DRIVING_COMMANDS.index("unknown"), np.int8)
        for lane_id in self.route:
            self.map.lane(lane_id)
        if self.route_points is not None and (self.route_points.ndim != 2 or self.route_points.shape[1] != 3
                                              or len(self.route_points) < 2):
            raise ValueError(f"scene {self.token}: route_points must be (M >= 2, 3), got {self.route_points.shape}")

    @property
    def num_steps(self) -> int:
        return self.ego_log.shape[0]

    @property
    def initial_ego_state(self) -> np.ndarray:
        return self.ego_log[self.current_index]

    @property
    def family(self) -> str:
        return self.metadata.get("family", self.metadata.get("source", "unknown"))

    def light_status_at(self, step: int) -> dict[str, int]:
        return dict(zip(self.light_ids, self.light_status[step].tolist()))
