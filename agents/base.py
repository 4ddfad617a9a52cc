"""The Agent interface, shaped after NAVSIM's AbstractAgent so that a NAVSIM agent ports in minutes."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from sim.agent_input import NUM_HISTORY_FRAMES, AgentInput
from sim.state import Trajectory, TrajectorySampling
from sim.world_view import WorldView


class AgentError(ValueError):
    """An agent cannot be built or cannot drive where it was asked to: the message says which agent and why."""


class AgentUnavailable(RuntimeError):
    """An agent that runs elsewhere (a policy service) could not be reached. The scene's failure is not the agent's
    doing: its row is marked, and the next run into the same folder runs the scene again."""


@dataclass(frozen=True)
class SensorConfig:
    """What an agent wants to see: front-camera frames (True) or none, over `history_frames` frames."""

    cameras: bool = False
    history_frames: int = NUM_HISTORY_FRAMES


@dataclass(frozen=True)
class AgentOptions:
    """How to build an agent (`w0sim eval`'s options): a checkpoint folder, a seed, and for torch agents the
    device and dtype; for a served policy (`egodriver:ADDRESS`) its address, a per-call timeout and retries. An agent
    refuses the options it does not take."""

    checkpoint: str | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    service: str | None = None
    service_timeout_s: float = 30.0
    service_retries: int = 2


class Agent(ABC):
    """An end-to-end driving agent: agent input in, trajectory out.

    NAVSIM's names: `name()`, `initialize()`, `get_sensor_config()`, `compute_trajectory(agent_input)`.
    Every agent drives every environment through `compute_trajectory(agent_input, world)`: agents with
    `privileged = True` (log replay, PDM-Closed) are given the `WorldView` and read only it; the others get None.
    `device` says where the agent computes ("cpu", or a torch device such as "cuda:0").
    """

    privileged: bool = False
    device: str = "cpu"
    #: Seconds the policy itself took for the last decision, where it reports them apart from the call (a served
    #: policy: the server's own timing); None otherwise.
    last_inference_s: float | None = None

    def __init__(self, trajectory_sampling: TrajectorySampling = TrajectorySampling()):
        self.trajectory_sampling = trajectory_sampling

    @classmethod
    def from_options(cls, options: AgentOptions = AgentOptions()) -> "Agent":
        """The agent built from `w0sim eval`'s options; this default takes none but the seed."""
        given = {"checkpoint": options.checkpoint, "device": options.device, "dtype": options.dtype,
                 "service_timeout_s": options.service_timeout_s, "service_retries": options.service_retries}
        unused = [f"{k}={v}" for k, v in given.items() if v != getattr(AgentOptions, k)]
        if unused:
            raise AgentError(f"agent {cls.__name__} takes no {', '.join(unused)} (it is a numpy agent without weights)")
        return cls()

    def name(self) -> str:
        return type(self).__name__

    def initialize(self) -> None:
        """Load weights or build caches; called once before the first trajectory."""

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig()

    @abstractmethod
    def compute_trajectory(self, agent_input: AgentInput, world: WorldView | None = None) -> Trajectory:
        """The planned trajectory in the ego rear-axle frame of the current frame."""


def require_world(agent: Agent, world: WorldView | None) -> WorldView:
    """The world view a privileged agent was given, or an AgentError saying that it needs one."""
    if world is None:
        raise AgentError(f"{agent.name()} is privileged: it plans from the world view; pass the environment's "
                         f"info['world'] (make the environment with privileged=True)")
    return world


class WorldModelAgent(Agent):
    """An agent whose policy also predicts future camera frames (for the world-model rollout videos)."""

    @property
    @abstractmethod
    def frame_interval_s(self) -> float:
        """Seconds between the frames `predict_frames` returns."""

    @abstractmethod
    def predict_frames(self, agent_input: AgentInput, steps: int, seed: int = 0, top_k: int = 0):
        """(steps, h, w, 3) uint8 frames the world model predicts after the current one: its most likely ones
        (top_k 0), or sampled from its `top_k` most likely image tokens with `seed`."""
