"""Observation and action spaces shared by the environments, and the observation built from an AgentInput."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

from sim.agent_input import AgentInput
from sim.state import TrajectorySampling

POSE_LIMIT = 1000.0  # metres; a bound for the space, not a physical limit
DYNAMICS_LIMIT = 100.0


class InvalidActionError(ValueError):
    """An action of the wrong shape or type; names what was expected."""


def observation_space(num_frames: int, image_hw: tuple[int, int] | None) -> spaces.Dict:
    """Dict space: history cameras (if any), ego poses / velocity / acceleration, one-hot command."""
    items = {
        "ego_poses": spaces.Box(-POSE_LIMIT, POSE_LIMIT, (num_frames, 3), np.float32),
        "ego_velocity": spaces.Box(-DYNAMICS_LIMIT, DYNAMICS_LIMIT, (num_frames, 2), np.float32),
        "ego_acceleration": spaces.Box(-DYNAMICS_LIMIT, DYNAMICS_LIMIT, (num_frames, 2), np.float32),
        "driving_command": spaces.MultiBinary(4),
    }
    if image_hw is not None:
        items["cameras"] = spaces.Box(0, 255, (num_frames, *image_hw, 3), np.uint8)
    return spaces.Dict(items)


def to_observation(agent_input: AgentInput, with_cameras: bool) -> dict[str, np.ndarray]:
    clip = lambda a, lim: np.clip(a, -lim, lim).astype(np.float32)  # noqa: E731 - keeps obs inside the space
    obs = {
        "ego_poses": clip(agent_input.ego_poses, POSE_LIMIT),
        "ego_velocity": clip(agent_input.ego_velocity, DYNAMICS_LIMIT),
        "ego_acceleration": clip(agent_input.ego_acceleration, DYNAMICS_LIMIT),
        "driving_command": agent_input.driving_command.astype(np.int8),
    }
    if with_cameras:
        obs["cameras"] = agent_input.cameras.copy()  # callers may keep and modify what they get
    return obs


def trajectory_space(sampling: TrajectorySampling) -> spaces.Box:
    """(num_poses, 3) poses (x, y, heading) in the current ego rear-axle frame."""
    high = np.tile(np.array([POSE_LIMIT, POSE_LIMIT, np.pi], dtype=np.float32), (sampling.num_poses, 1))
    return spaces.Box(-high, high, dtype=np.float32)


def control_space() -> spaces.Box:
    """(acceleration m/s^2, steering rate rad/s)."""
    return spaces.Box(np.array([-8.0, -1.0], np.float32), np.array([4.0, 1.0], np.float32), dtype=np.float32)


def check_action(action, expected_shape: tuple[int, ...], what: str) -> tuple[np.ndarray, str | None]:
    """(float64 array, None) for a usable action; (array, reason) for a non-finite one.

    Wrong shapes or non-numeric actions raise InvalidActionError: they are programming errors.
    Non-finite values are a policy failure the environments report as a failed episode.
    """
    try:
        array = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidActionError(f"{what}: action must be a numeric array of shape {expected_shape} ({exc})") from None
    if array.shape != expected_shape:
        raise InvalidActionError(f"{what}: action has shape {array.shape}, expected {expected_shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.argwhere(bad)[:5].tolist()
        return array, f"{what}: action has non-finite values at {where}"
    return array, None
