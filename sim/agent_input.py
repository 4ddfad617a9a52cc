"""What an agent sees at a decision: history of ego status and camera frames, command, all in the ego frame."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.geometry import global_to_local
from sim.state import StateIndex

NUM_HISTORY_FRAMES = 4  # NAVSIM: 4 frames at 2 Hz, the last one is the current frame
HISTORY_STRIDE = 5  # 10 Hz steps between history frames


@dataclass(frozen=True, eq=False)
class AgentInput:
    """NAVSIM's AgentInput, as arrays. Frame F-1 is the current frame.

    ego_poses (F, 3): rear-axle poses relative to the current frame; ego_velocity and
    ego_acceleration (F, 2): body frame; driving_command (4,) one-hot (left, straight, right,
    unknown); cameras (F, H, W, 3) uint8 front-camera images or None; command_text: the
    navigation instruction in words; ego_state (11,): the current state in the global frame, for
    privileged agents (PDM-Closed) and the tracker.
    """

    ego_poses: np.ndarray
    ego_velocity: np.ndarray
    ego_acceleration: np.ndarray
    driving_command: np.ndarray
    cameras: np.ndarray | None
    command_text: str
    ego_state: np.ndarray

    def __eq__(self, other: object) -> bool:
        # Value equality over the arrays (the dataclass default would compare arrays element-wise and fail).
        if not isinstance(other, AgentInput):
            return NotImplemented
        return self.command_text == other.command_text and all(
            np.array_equal(getattr(self, name), getattr(other, name))
            for name in ("ego_poses", "ego_velocity", "ego_acceleration", "driving_command", "cameras", "ego_state"))

    __hash__ = None  # mutable arrays inside: not hashable

    @property
    def num_frames(self) -> int:
        return self.ego_poses.shape[0]


def history_indices(current_index: int, num_frames: int = NUM_HISTORY_FRAMES, stride: int = HISTORY_STRIDE) -> np.ndarray:
    """10 Hz log indices of the history frames ending at `current_index` (clamped at the log start)."""
    return np.maximum(current_index - stride * np.arange(num_frames - 1, -1, -1), 0)


def one_hot_command(command: int) -> np.ndarray:
    out = np.zeros(4, dtype=np.int8)
    out[int(command)] = 1
    return out


def _float32_values(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def build_agent_input(ego_history: np.ndarray, command: int, command_text: str = "",
                      cameras: np.ndarray | None = None) -> AgentInput:
    """AgentInput from global ego states of the history frames (F, 11), the last being current. Poses, velocities
    and accelerations hold float32 values, as NAVSIM's EgoStatus stores them (so a policy computes on the same
    numbers it would get from NAVSIM)."""
    current = ego_history[-1]
    return AgentInput(
        ego_poses=_float32_values(global_to_local(ego_history[:, :3], current[:3])),
        ego_velocity=_float32_values(ego_history[:, [StateIndex.VELOCITY_X, StateIndex.VELOCITY_Y]]),
        ego_acceleration=_float32_values(ego_history[:, [StateIndex.ACCELERATION_X, StateIndex.ACCELERATION_Y]]),
        driving_command=one_hot_command(command),
        cameras=cameras,
        command_text=command_text,
        ego_state=current.copy(),
    )
