"""NAVSIM's BatchKinematicBicycleModel (spec §3.4): rear-axle bicycle with first-order actuator lags."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from sim.dynamics.checks import _array, _positive
from sim.geometry import PACIFICA
from sim.state import STATE_SIZE, StateIndex

_S = StateIndex
_X, _Y, _HEADING, _VELOCITY_X = int(_S.X), int(_S.Y), int(_S.HEADING), int(_S.VELOCITY_X)
_ACCELERATION_X, _STEERING_ANGLE, _STEERING_RATE = int(_S.ACCELERATION_X), int(_S.STEERING_ANGLE), int(_S.STEERING_RATE)
_ANGULAR_VELOCITY, _ANGULAR_ACCELERATION = int(_S.ANGULAR_VELOCITY), int(_S.ANGULAR_ACCELERATION)


@dataclass(frozen=True)
class KinematicBicycle:
    """Rear-axle kinematic bicycle with first-order lags on acceleration and steering angle."""

    max_steering_angle: float = np.pi / 3
    accel_time_constant: float = 0.2
    steering_angle_time_constant: float = 0.05
    wheel_base: float = PACIFICA.wheel_base

    def __post_init__(self) -> None:
        for name in ("max_steering_angle", "wheel_base"):
            _positive(getattr(self, name), name)
        for name in ("accel_time_constant", "steering_angle_time_constant"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0.0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def propagate(self, states, commands, dt: float = 0.1) -> np.ndarray:
        """Advance states (B, 11) by dt under commands (B, 2) = (acceleration, steering rate)."""
        states = _array(states, "states", (2,), last=STATE_SIZE)
        commands = _array(commands, "commands", (2,), last=2)
        if commands.shape[0] != states.shape[0]:
            raise ValueError(f"commands has shape {commands.shape}, expected ({states.shape[0]}, 2) to match states")
        out = np.zeros((STATE_SIZE, states.shape[0]))
        self.step_rows(np.ascontiguousarray(states.T), commands[:, 0], commands[:, 1], self.step_constants(dt), out)
        return out.T.copy()

    def step_constants(self, dt: float) -> SimpleNamespace:
        return _model_constants(self, _positive(dt, "dt"))

    def step_rows(self, s, accel_cmd, steer_rate_cmd, k, out, tan_steer=None):
        """One Euler step from state rows s (11, B) into out (11, B), whose vy and ay rows must be 0.

        Row layout and ufunc `out=` writes keep the per-step cost at ~28 small numpy calls, which is what
        `simulate` spends its time on. `tan_steer` may pass tan(s[steering]) (returned by the previous step).
        Returns tan of the new steering angle.
        """
        a, v, h, steer = s[_ACCELERATION_X], s[_VELOCITY_X], s[_HEADING], s[_STEERING_ANGLE]
        # First-order lags: the commands act through low-pass filters, as real actuators would.
        lag = accel_cmd - a
        lag *= k.accel_gain
        accel = np.add(a, lag, out=out[_ACCELERATION_X])
        # NAVSIM's (delta_filtered - delta) / dt is exactly the lag gain times the commanded rate.
        steer_rate = np.multiply(steer_rate_cmd, k.steer_gain, out=out[_STEERING_RATE])
        # Euler step with the *current* speed, heading and steering angle.
        v_dt = v * k.dt
        step = np.empty((2, v.shape[0]))  # (x, y) moved together: v dt (cos h, sin h)
        np.cos(h, out=step[0])
        np.sin(h, out=step[1])
        step *= v_dt
        np.add(s[_X:_Y + 1], step, out=out[_X:_Y + 1])
        heading = v_dt * (np.tan(steer) if tan_steer is None else tan_steer)
        heading *= k.inv_wheel_base
        heading += h
        heading += k.pi  # principal_value: (h + pi) mod 2 pi - pi
        np.remainder(heading, k.two_pi, out=heading)
        np.subtract(heading, k.pi, out=out[_HEADING])
        v_new = np.add(v, accel * k.dt, out=out[_VELOCITY_X])
        steer_new = steer_rate * k.dt
        steer_new += steer
        np.maximum(steer_new, k.min_steer, out=steer_new)
        steer_new = np.minimum(steer_new, k.max_steer, out=out[_STEERING_ANGLE])
        tan_new = np.tan(steer_new)
        yaw_rate = v_new * tan_new
        yaw_rate = np.multiply(yaw_rate, k.inv_wheel_base, out=out[_ANGULAR_VELOCITY])
        yaw_accel = np.subtract(yaw_rate, s[_ANGULAR_VELOCITY], out=out[_ANGULAR_ACCELERATION])
        np.divide(yaw_accel, k.dt, out=yaw_accel)
        return tan_new


@lru_cache(maxsize=32)
def _model_constants(model: KinematicBicycle, dt: float) -> SimpleNamespace:
    """0-d arrays of a model's step constants: numpy handles them faster than Python floats in tiny ops."""
    c = {
        "dt": dt, "accel_gain": dt / (dt + model.accel_time_constant),
        "steer_gain": dt / (dt + model.steering_angle_time_constant), "inv_wheel_base": 1.0 / model.wheel_base,
        "min_steer": -model.max_steering_angle, "max_steer": model.max_steering_angle,
        "pi": np.pi, "two_pi": 2.0 * np.pi,
    }
    return SimpleNamespace(**{name: np.array(value) for name, value in c.items()})
