"""From w0sim actions to CARLA's VehicleControl: TransFuser's PID trajectory follower, and direct control.

The trajectory follower is the one TransFuser / TF++ (Leaderboard 1.0) agents drive CARLA with (spec carla_eval §5.4):
desired speed twice the distance between the 0.5 s and 1.0 s poses; brake below 0.4 m/s or above 1.1 x the desired
speed; a longitudinal PID on the clipped speed error, a lateral PID on the angle to the first pose at least 3 m away
(2.25 m below 5.5 m/s). The plan is held in the global frame and seen from the ego's current pose at every tick.
CARLA's steer is positive to the right; w0sim's angles are positive to the left.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from sim.geometry import global_to_local


@dataclass(frozen=True)
class PIDGains:
    kp: float
    ki: float
    kd: float
    window: int = 20


LONGITUDINAL = PIDGains(5.0, 0.5, 1.0)
LATERAL = PIDGains(1.25, 0.75, 0.3)
BRAKE_SPEED_MPS = 0.4
BRAKE_RATIO = 1.1
CLIP_DELTA_MPS = 0.25
CLIP_THROTTLE = 0.75
AIM_DISTANCE_M = 3.0
AIM_DISTANCE_SLOW_M = 2.25
SLOW_SPEED_MPS = 5.5
MAX_WHEEL_ANGLE_RAD = np.radians(70.0)  # CARLA's 4-wheeled cars: steer 1 is a 70 degree wheel angle
MAX_ACCELERATION = 4.0  # m/s^2 at full throttle and
MAX_DECELERATION = 8.0  # at full brake, for direct control


class PID:
    """TransFuser's PID: the integral is the mean of the last `window` errors, the derivative the last difference."""

    def __init__(self, gains: PIDGains):
        self.gains = gains
        self.errors: deque[float] = deque([0.0] * gains.window, maxlen=gains.window)

    def step(self, error: float) -> float:
        self.errors.append(float(error))
        integral = float(np.mean(self.errors))
        derivative = self.errors[-1] - self.errors[-2]
        return self.gains.kp * error + self.gains.ki * integral + self.gains.kd * derivative


@dataclass(frozen=True)
class Control:
    """CARLA's VehicleControl fields (steer positive to the right)."""

    throttle: float = 0.0
    steer: float = 0.0
    brake: float = 0.0

    def to_carla(self, carla):
        return carla.VehicleControl(throttle=float(self.throttle), steer=float(self.steer), brake=float(self.brake))


class TrajectoryController:
    """Follows a plan (poses at `interval` seconds, global frame) with TransFuser's two PIDs, one call per tick."""

    def __init__(self):
        self.speed_pid = PID(LONGITUDINAL)
        self.turn_pid = PID(LATERAL)
        self.plan: np.ndarray | None = None  # (N, 3) global poses
        self.interval = 0.5

    def set_plan(self, global_poses: np.ndarray, interval: float) -> None:
        self.plan, self.interval = np.asarray(global_poses, dtype=np.float64), float(interval)

    def control(self, ego_pose: np.ndarray, speed: float) -> Control:
        """The control for this tick from the ego's rear-axle pose (x, y, heading) and forward speed (m/s)."""
        if self.plan is None or len(self.plan) < 2:
            return Control(brake=1.0)
        local = global_to_local(self.plan, ego_pose)[:, :2]
        # Twice the distance between the 0.5 s and 1.0 s poses: the speed over that second half (2 Hz plans).
        first = max(int(round(0.5 / self.interval)) - 1, 0)
        second = min(int(round(1.0 / self.interval)) - 1, len(local) - 1)
        desired = float(np.linalg.norm(local[second] - local[first])) / max((second - first) * self.interval, 1e-9)
        brake = desired < BRAKE_SPEED_MPS or speed / max(desired, 1e-9) > BRAKE_RATIO
        delta = float(np.clip(desired - speed, 0.0, CLIP_DELTA_MPS))
        throttle = 0.0 if brake else float(np.clip(self.speed_pid.step(delta), 0.0, CLIP_THROTTLE))
        if brake:
            self.speed_pid.step(delta)
        reach = AIM_DISTANCE_M if desired >= SLOW_SPEED_MPS else AIM_DISTANCE_SLOW_M
        far = np.flatnonzero(np.linalg.norm(local, axis=1) >= reach)
        aim = local[far[0]] if far.size else local[-1]
        angle_left = float(np.degrees(np.arctan2(aim[1], aim[0]))) / 90.0
        steer = float(np.clip(-self.turn_pid.step(angle_left), -1.0, 1.0))
        return Control(throttle=throttle, steer=steer, brake=1.0 if brake else 0.0)


class DirectController:
    """(acceleration m/s^2, steering rate rad/s) held for one 0.1 s step: throttle or brake in proportion, and the
    steering angle integrated and expressed as CARLA's steer."""

    def __init__(self):
        self.wheel_angle = 0.0  # rad, positive to the left

    def control(self, action: np.ndarray, dt: float) -> Control:
        acceleration, rate = float(action[0]), float(action[1])
        self.wheel_angle = float(np.clip(self.wheel_angle + rate * dt, -MAX_WHEEL_ANGLE_RAD, MAX_WHEEL_ANGLE_RAD))
        steer = -self.wheel_angle / MAX_WHEEL_ANGLE_RAD
        if acceleration >= 0:
            return Control(throttle=min(acceleration / MAX_ACCELERATION, 1.0), steer=steer)
        return Control(steer=steer, brake=min(-acceleration / MAX_DECELERATION, 1.0))


__all__ = ["Control", "DirectController", "PID", "PIDGains", "TrajectoryController"]
