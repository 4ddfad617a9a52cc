"""Observation and action spaces shared by the environments, and the observation built from an AgentInput."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

from sim import limits
from sim.agent_input import AgentInput
from sim.state import TrajectorySampling

POSE_LIMIT = 1000.0  # metres; a bound for the space, not a physical limit
DYNAMICS_LIMIT = 100.0


# Plausibility bounds of an action's last axis: a trajectory's (x, y, heading), a control's (acceleration, steering
# rate). Values beyond them are a policy failure, like NaN: nothing real plans a pose 10 km away in 4 s, and 1e300
# would overflow the tracker into NaN states.
TRAJECTORY_BOUNDS = (limits.MAX_TRAJECTORY_POSE_M, limits.MAX_TRAJECTORY_POSE_M, limits.MAX_ABS_HEADING_RAD)
CONTROL_BOUNDS = (limits.MAX_ABS_ACCELERATION, limits.MAX_ABS_STEERING_RATE)
_BOUNDS_BY_WIDTH = {3: TRAJECTORY_BOUNDS, 2: CONTROL_BOUNDS}
_NAMES_BY_WIDTH = {3: ("x", "y", "heading"), 2: ("acceleration", "steering rate")}


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


def action_problem(array: np.ndarray, what: str, bounds=None) -> str | None:
    """Why a numeric action array is unusable (non-finite values, or values beyond `bounds` along its last axis), or
    None. `bounds` defaults by the last axis: 3 a trajectory (TRAJECTORY_BOUNDS), 2 a control (CONTROL_BOUNDS)."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.argwhere(bad)[:5].tolist()
        return f"{what}: action has non-finite values at {where}"
    width = array.shape[-1] if array.ndim else 0
    if bounds is None:
        bounds = _BOUNDS_BY_WIDTH.get(width)
    if bounds is None or array.size == 0:
        return None
    bound = np.asarray(bounds, dtype=np.float64)
    beyond = np.abs(array) > bound
    if beyond.any():
        index = tuple(int(i) for i in np.argwhere(beyond)[0])
        names = _NAMES_BY_WIDTH.get(width, ())
        column = names[index[-1]] if len(names) == width else f"column {index[-1]}"
        return (f"{what}: {column} {array[index]:.6g} at {list(index)} is beyond the plausibility bound "
                f"+-{np.broadcast_to(bound, array.shape)[index]:g}")
    return None


def check_action(action, expected_shape: tuple[int, ...], what: str, bounds=None) -> tuple[np.ndarray, str | None]:
    """(float64 array, None) for a usable action; (array, reason) for a non-finite or implausible one.

    Wrong shapes or non-numeric actions (strings, objects, ragged lists) raise InvalidActionError: they are
    programming errors. Non-finite values and values beyond the plausibility bounds (`action_problem`) are a policy
    failure the environments report as a failed episode.
    """
    try:
        raw = np.asarray(action)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise InvalidActionError(f"{what}: action must be a numeric array of shape {expected_shape} ({exc})") from None
    if raw.dtype.kind not in "iuf":
        raise InvalidActionError(f"{what}: action must be a numeric (integer or float) array of shape "
                                 f"{expected_shape}, got dtype {raw.dtype}")
    if raw.shape != expected_shape:
        raise InvalidActionError(f"{what}: action has shape {raw.shape}, expected {expected_shape}")
    array = raw.astype(np.float64)
    return array, action_problem(array, what, bounds)
