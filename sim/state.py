"""State arrays: the 11-float NAVSIM ego layout, agent tracks as a struct of arrays, trajectories."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class StateIndex(IntEnum):
    """Columns of an ego state (NAVSIM's `StateIndex`): rear-axle pose, body-frame dynamics."""

    X = 0
    Y = 1
    HEADING = 2
    VELOCITY_X = 3
    VELOCITY_Y = 4
    ACCELERATION_X = 5
    ACCELERATION_Y = 6
    STEERING_ANGLE = 7
    STEERING_RATE = 8
    ANGULAR_VELOCITY = 9
    ANGULAR_ACCELERATION = 10


STATE_SIZE = len(StateIndex)


def ego_state(x=0.0, y=0.0, heading=0.0, vx=0.0, vy=0.0, ax=0.0, ay=0.0, steering=0.0) -> np.ndarray:
    """An (11,) ego state; steering rate, yaw rate and yaw acceleration start at 0 as NAVSIM's do."""
    state = np.zeros(STATE_SIZE)
    state[: StateIndex.STEERING_ANGLE + 1] = (x, y, heading, vx, vy, ax, ay, steering)
    return state


class AgentType(IntEnum):
    """Object classes, in nuPlan `TrackedObjectType` terms; agents (moving) come first."""

    VEHICLE = 0
    PEDESTRIAN = 1
    BICYCLE = 2
    TRAFFIC_CONE = 3
    BARRIER = 4
    CZONE_SIGN = 5
    GENERIC_OBJECT = 6

    @property
    def is_agent(self) -> bool:
        """Vehicles, pedestrians and cyclists; the rest are static objects (NC weight 0.5 in NAVSIM)."""
        return self <= AgentType.BICYCLE


class TrafficLightStatus(IntEnum):
    GREEN = 0
    YELLOW = 1
    RED = 2
    UNKNOWN = 3


@dataclass
class AgentTracks:
    """Traffic of a scene as a struct of arrays over (time T, track N).

    Poses are box centres in the global frame; velocities are global-frame (vx, vy) in m/s.
    `valid[t, n]` says whether track n exists at step t; invalid entries hold zeros.
    """

    x: np.ndarray  # (T, N)
    y: np.ndarray  # (T, N)
    heading: np.ndarray  # (T, N)
    vx: np.ndarray  # (T, N)
    vy: np.ndarray  # (T, N)
    valid: np.ndarray  # (T, N) bool
    length: np.ndarray  # (N,)
    width: np.ndarray  # (N,)
    height: np.ndarray  # (N,)
    agent_type: np.ndarray  # (N,) int8 AgentType codes
    track_ids: list[str] = field(default_factory=list)

    TIME_FIELDS = ("x", "y", "heading", "vx", "vy", "valid")
    TRACK_FIELDS = ("length", "width", "height", "agent_type")

    def __post_init__(self) -> None:
        shape = np.shape(self.x)
        for name in self.TIME_FIELDS:
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"AgentTracks.{name} has shape {np.shape(getattr(self, name))}, expected {shape}")
        for name in self.TRACK_FIELDS:
            if np.shape(getattr(self, name)) != (shape[1],):
                raise ValueError(f"AgentTracks.{name} has shape {np.shape(getattr(self, name))}, expected ({shape[1]},)")
        if not self.track_ids:
            self.track_ids = [f"agent_{i}" for i in range(shape[1])]
        if len(self.track_ids) != shape[1]:
            raise ValueError(f"AgentTracks.track_ids has {len(self.track_ids)} ids for {shape[1]} tracks")

    @classmethod
    def empty(cls, num_steps: int, num_tracks: int = 0) -> "AgentTracks":
        z = np.zeros((num_steps, num_tracks))
        return cls(
            x=z.copy(), y=z.copy(), heading=z.copy(), vx=z.copy(), vy=z.copy(),
            valid=np.zeros((num_steps, num_tracks), dtype=bool),
            length=np.zeros(num_tracks), width=np.zeros(num_tracks), height=np.zeros(num_tracks),
            agent_type=np.zeros(num_tracks, dtype=np.int8),
        )

    @property
    def num_steps(self) -> int:
        return self.x.shape[0]

    @property
    def num_tracks(self) -> int:
        return self.x.shape[1]

    def at(self, step: int) -> "AgentSlice":
        """The tracks at one time step, as views into these arrays (no copy)."""
        return AgentSlice(
            x=self.x[step], y=self.y[step], heading=self.heading[step], vx=self.vx[step], vy=self.vy[step],
            valid=self.valid[step], length=self.length, width=self.width, height=self.height,
            agent_type=self.agent_type, track_ids=self.track_ids,
        )

    def window(self, start: int, stop: int) -> "AgentTracks":
        """Steps [start, stop) as views."""
        return AgentTracks(
            *(getattr(self, n)[start:stop] for n in self.TIME_FIELDS),
            *(getattr(self, n) for n in self.TRACK_FIELDS),
            track_ids=self.track_ids,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """All arrays by field name (for serialisation)."""
        return {n: getattr(self, n) for n in self.TIME_FIELDS + self.TRACK_FIELDS}


@dataclass
class AgentSlice:
    """Agents at one time step: arrays of shape (N,), views into an `AgentTracks`."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    valid: np.ndarray
    length: np.ndarray
    width: np.ndarray
    height: np.ndarray
    agent_type: np.ndarray
    track_ids: list[str]

    @property
    def speed(self) -> np.ndarray:
        return np.hypot(self.vx, self.vy)


@dataclass(frozen=True)
class TrajectorySampling:
    """How a trajectory is sampled: `num_poses` poses, `interval` seconds apart (NAVSIM's names)."""

    num_poses: int = 8
    interval: float = 0.5

    @property
    def time_horizon(self) -> float:
        return self.num_poses * self.interval


@dataclass(frozen=True)
class Trajectory:
    """Planned poses (N, 3) = (x, y, heading) in the ego rear-axle frame at the current frame.

    NAVSIM convention: pose i is at time (i + 1) * interval; the current pose (origin) is implied.
    """

    poses: np.ndarray
    sampling: TrajectorySampling = TrajectorySampling()

    def __post_init__(self) -> None:
        poses = np.asarray(self.poses, dtype=np.float64)
        object.__setattr__(self, "poses", poses)
        if poses.ndim != 2 or poses.shape[1] != 3:
            raise ValueError(f"Trajectory.poses must have shape (N, 3), got {poses.shape}")
        if poses.shape[0] != self.sampling.num_poses:
            raise ValueError(
                f"Trajectory has {poses.shape[0]} poses but its sampling says {self.sampling.num_poses}"
            )

    @property
    def times(self) -> np.ndarray:
        return (np.arange(self.sampling.num_poses) + 1) * self.sampling.interval
