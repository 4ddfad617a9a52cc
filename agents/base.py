"""The Agent interface, shaped after NAVSIM's AbstractAgent so that a NAVSIM agent ports in minutes."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from sim.scene import Scene
from sim.agent_input import NUM_HISTORY_FRAMES, AgentInput
from sim.state import Trajectory, TrajectorySampling


@dataclass(frozen=True)
class SensorConfig:
    """What an agent wants to see: front-camera frames (True) or none, over `history_frames` frames."""

    cameras: bool = False
    history_frames: int = NUM_HISTORY_FRAMES


class Agent(ABC):
    """An end-to-end driving agent: agent input (and, for privileged agents, the scene) in, trajectory out.

    NAVSIM's names: `name()`, `initialize()`, `get_sensor_config()`, `compute_trajectory(agent_input)`;
    agents with `requires_scene = True` (log replay, PDM-Closed) get the scene as a second argument.
    """

    requires_scene: bool = False

    def __init__(self, trajectory_sampling: TrajectorySampling = TrajectorySampling()):
        self.trajectory_sampling = trajectory_sampling

    def name(self) -> str:
        return type(self).__name__

    def initialize(self) -> None:
        """Load weights or build caches; called once before the first trajectory."""

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig()

    @abstractmethod
    def compute_trajectory(self, agent_input: AgentInput, scene: Scene | None = None) -> Trajectory:
        """The planned trajectory in the ego rear-axle frame of the current frame."""
