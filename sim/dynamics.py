"""Ego motion as NAVSIM scores it: 10 Hz trajectory sampling, batch LQR tracking and a kinematic bicycle."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from sim.geometry import PACIFICA, local_to_global, principal_value
from sim.state import STATE_SIZE, StateIndex

__all__ = [
    "KinematicBicycle",
    "BatchLQRTracker",
    "TrackingProfiles",
    "simulate",
    "interpolate_states",
    "interpolate_trajectory_states",
    "interpolate_global_poses",
    "track_trajectories",
    "TrackedEgo",
]

_S = StateIndex
# Columns that nuPlan's InterpolatedTrajectory interpolates linearly (EgoState.to_split_state); the heading
# is interpolated separately (unwrapped), steering rate / yaw rate / yaw acceleration come back as 0.
_LINEAR_COLUMNS = np.array(
    [_S.X, _S.Y, _S.VELOCITY_X, _S.VELOCITY_Y, _S.ACCELERATION_X, _S.ACCELERATION_Y, _S.STEERING_ANGLE]
)


# ----------------------------------------------------------------------------------------------------------
# input checks


def _array(value, name: str, ndims: tuple[int, ...], last: int | None = None,
           min_last: int | None = None) -> np.ndarray:
    """`value` as a finite float64 array with one of `ndims` dimensions, else ValueError naming `name`."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(value).__name__} that numpy cannot convert") from exc
    want = " or ".join(f"{n}-D" for n in ndims)
    if arr.ndim not in ndims:
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if last is not None and arr.shape[-1] != last:
        raise ValueError(f"{name} must have {last} values in its last axis, got shape {arr.shape}")
    if min_last is not None and arr.shape[-1] < min_last:
        raise ValueError(f"{name} must have at least {min_last} values in its last axis, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds non-finite values (shape {arr.shape})")
    return arr


def _positive(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from exc
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _timestamp(value, name: str = "t0_us") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer number of microseconds, got {value!r}")
    return int(value)


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------------
# kinematic bicycle (NAVSIM BatchKinematicBicycleModel, spec §3.4)

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
        self._step(np.ascontiguousarray(states.T), commands[:, 0], commands[:, 1], self._constants(dt), out)
        return out.T.copy()

    def _constants(self, dt: float) -> SimpleNamespace:
        return _model_constants(self, _positive(dt, "dt"))

    def _step(self, s, accel_cmd, steer_rate_cmd, k, out, tan_steer=None):
        """One Euler step from state rows s (11, B) into out (11, B), whose vy and ay rows must be 0.

        Row layout and ufunc `out=` writes keep the per-step cost at ~30 small numpy calls, which is what
        `simulate` spends its time on. `tan_steer` may pass tan(s[steering]) (returned by the previous step).
        Returns tan of the new steering angle.
        """
        a, v, h, steer = s[_S.ACCELERATION_X], s[_S.VELOCITY_X], s[_S.HEADING], s[_S.STEERING_ANGLE]
        # First-order lags: the commands act through low-pass filters, as real actuators would.
        lag = accel_cmd - a
        lag *= k.accel_gain
        accel = np.add(a, lag, out=out[_S.ACCELERATION_X])
        # NAVSIM's (delta_filtered - delta) / dt is exactly the lag gain times the commanded rate.
        steer_rate = np.multiply(steer_rate_cmd, k.steer_gain, out=out[_S.STEERING_RATE])
        # Euler step with the *current* speed, heading and steering angle.
        v_dt = v * k.dt
        np.add(s[_S.X], v_dt * np.cos(h), out=out[_S.X])
        np.add(s[_S.Y], v_dt * np.sin(h), out=out[_S.Y])
        heading = v_dt * (np.tan(steer) if tan_steer is None else tan_steer)
        heading *= k.inv_wheel_base
        heading += h
        heading += k.pi  # principal_value: (h + pi) mod 2 pi - pi
        np.remainder(heading, k.two_pi, out=heading)
        np.subtract(heading, k.pi, out=out[_S.HEADING])
        v_new = np.add(v, accel * k.dt, out=out[_S.VELOCITY_X])
        steer_new = steer_rate * k.dt
        steer_new += steer
        np.maximum(steer_new, k.min_steer, out=steer_new)
        steer_new = np.minimum(steer_new, k.max_steer, out=out[_S.STEERING_ANGLE])
        tan_new = np.tan(steer_new)
        yaw_rate = v_new * tan_new
        yaw_rate = np.multiply(yaw_rate, k.inv_wheel_base, out=out[_S.ANGULAR_VELOCITY])
        yaw_accel = np.subtract(yaw_rate, s[_S.ANGULAR_VELOCITY], out=out[_S.ANGULAR_ACCELERATION])
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


# ----------------------------------------------------------------------------------------------------------
# batch LQR tracker (NAVSIM BatchLQRTracker + batch_lqr_utils, spec §3.3)


@lru_cache(maxsize=16)
def _integration_matrix(num: int, dt: float) -> np.ndarray:
    """W (num, num): row k maps [v0, a_0 .. a_{num-2}] to dt * (v0 + dt * sum_{i<k} a_i).

    It is the displacement model of the velocity fit and, scaled by v_k per row, the heading-change model
    of the curvature fit.
    """
    w = np.tril(np.full((num, num), dt * dt), k=0)
    w[:, 0] = dt  # column j >= 1 holds a_{j-1}, which reaches displacements k >= j
    w.setflags(write=False)
    return w


@lru_cache(maxsize=16)
def _profile_matrix(num: int, dt: float) -> np.ndarray:
    """E (num, num): [x0, d_0 .. d_{num-2}] -> profile x0 + dt * cumsum(d), starting at x0."""
    e = np.concatenate([np.ones((num, 1)), np.tril(np.full((num, num), dt), k=-1)[:, :-1]], axis=1)
    e.setflags(write=False)
    return e


def _jerk_matrix(num: int) -> np.ndarray:
    """The velocity fit's regulariser R (num - 2, num) over [v0, a_0 .. a_{num-2}], as NAVSIM builds it.

    NAVSIM/nuPlan's `_make_banded_difference_matrix` means to build first differences, but its second slice
    assignment (`[:, :-1] = -eye`) overwrites the `+1` of every row except the last. So R penalises the
    accelerations a_0 .. a_{num-4} themselves and only (a_{num-2} - a_{num-3}) as a difference. The golden
    fixtures match this matrix to 1e-12 and the intended jerk matrix only to ~0.1 m/s, so it is kept.
    """
    rows = num - 2
    banded = np.zeros((rows, rows + 1))
    banded[:, :-1] = -np.eye(rows)
    banded[-1, -1] = 1.0
    return np.concatenate([np.zeros((rows, 1)), banded], axis=1)


@lru_cache(maxsize=16)
def _velocity_fit_matrix(num: int, dt: float, jerk_penalty: float) -> np.ndarray:
    """H (num, num) with velocity profile = H @ d, d_k = displacement k projected on heading k.

    The fit's normal matrix is A^T A + lambda R^T R with A = [cos, sin] (x) W, and cos^2 + sin^2 = 1 makes
    A^T A = W^T W independent of the reference: one pinv per (num, dt, penalty) serves every reference.
    """
    w = _integration_matrix(num, dt)
    jerk = _jerk_matrix(num)
    solve = np.linalg.pinv(w.T @ w + jerk_penalty * (jerk.T @ jerk)) @ w.T
    h = _profile_matrix(num, dt) @ solve
    h.setflags(write=False)
    return h


# Rows of the per-step lateral coefficient table (TrackingProfiles.coefficients). B0 and B1 are stored
# negated so that the LQR denominator comes out negative and the steering rate is a single division.
_ROWS = ("sum_a", "a_b", "sum_b", "g0", "g1", "B0q", "B1q", "neg_B0", "neg_B1")
_ROW = {name: n for n, name in enumerate(_ROWS)}


@lru_cache(maxsize=16)
def _lateral_tables(horizon: int, dt: float, wheel_base: float, q0: float, q1: float, alpha: float):
    """Constant parts of the closed-form lateral composition (see `BatchLQRTracker.profiles`).

    Returns (table, weights): table (3, rows, 3) gives, for the coefficient of v0^c (c = 0, 1, 2) of each
    speed-only row, its polynomial in the look-ahead speed v_ref (powers 0, 1, 2); weights (5, H) turn the
    horizon curvatures into sum kappa_k, sum k kappa_k and sum_{i<j} f(i, j) kappa_i for f = 1, i + j, i j.
    """
    k = np.arange(horizon, dtype=np.float64)
    ii, jj = np.meshgrid(k, k, indexing="ij")
    upper = (ii < jj).astype(np.float64)  # pairs (i, j) with i < j
    s1, s2 = k.sum(), (k * k).sum()
    p = [upper.sum(), (upper * (ii + jj)).sum(), (upper * ii * jj).sum()]
    t = [(upper * ii).sum(), (upper * ii * (ii + jj)).sum(), (upper * ii * ii * jj).sum()]
    dt2, dt3 = dt * dt, dt * dt * dt
    # Each row as (c1, cp, cw, cpp, cpw, cww): value = c1 + cp v0 + cw w + cpp v0^2 + cpw v0 w + cww w^2.
    rows = {
        "sum_a": (0, dt * horizon, dt * s1, 0, 0, 0),
        "sum_b": (0, dt * horizon / wheel_base, dt * s1 / wheel_base, 0, 0, 0),
        "a_b": (0, 0, 0, dt2 * p[0] / wheel_base, dt2 * p[1] / wheel_base, dt2 * p[2] / wheel_base),
        "B0": (0, 0, 0, dt3 * t[0] / wheel_base, dt3 * t[1] / wheel_base, dt3 * t[2] / wheel_base),
        "B1": (0, dt2 * s1 / wheel_base, dt2 * s2 / wheel_base, 0, 0, 0),
    }
    rows["B0q"] = tuple(q0 * c for c in rows["B0"])
    rows["B1q"] = tuple(q1 * c for c in rows["B1"])
    rows["neg_B0"] = tuple(-c for c in rows.pop("B0"))
    rows["neg_B1"] = tuple(-c for c in rows.pop("B1"))
    # Substituting w = alpha (v0 - v_ref) = alpha v0 + beta, beta = -alpha v_ref.
    table = np.zeros((3, len(_ROWS), 3))
    for name, (c1, cp, cw, cpp, cpw, cww) in rows.items():
        n = _ROW[name]
        table[0, n] = (c1, -cw * alpha, cww * alpha * alpha)
        table[1, n] = (cp + cw * alpha, -(cpw * alpha + 2.0 * cww * alpha * alpha), 0.0)
        table[2, n] = (cpp + cpw * alpha + cww * alpha * alpha, 0.0, 0.0)
    weights = np.stack([np.ones(horizon), k, upper.sum(1), (upper * (ii + jj)).sum(1), (upper * ii * jj).sum(1)])
    return table, weights


@dataclass(frozen=True)
class TrackingProfiles:
    """What `BatchLQRTracker.command` needs per step, precomputed once for a batch of references.

    Per-step arrays are indexed [step, ..., batch] so that one step's data are contiguous rows.
    """

    reference: np.ndarray  # (B, T + 1, 3) reference poses
    velocity: np.ndarray  # (B, T) fitted speed profile
    curvature: np.ndarray  # (B, T) fitted curvature profile
    xy_ref: np.ndarray  # (T, 2, B) reference position i
    normal_ref: np.ndarray  # (T, 2, B) left normal (-sin, cos) of reference heading i
    heading_ref: np.ndarray  # (T, B)
    velocity_ref: np.ndarray  # (T, B) speed at the look-ahead index
    slow_ref: np.ndarray  # (T, B) bool: look-ahead speed <= stopping velocity
    may_stop: tuple[bool, ...]  # per step: could any row take the stopping branch
    coefficients: np.ndarray  # (T, 3, len(_ROWS), B): lateral terms as c0 + c1 v0 + c2 v0^2
    constants: SimpleNamespace  # 0-d arrays of the controller's scalar gains (fast in tiny numpy ops)

    @property
    def num_steps(self) -> int:
        return self.heading_ref.shape[0]

    @property
    def batch_size(self) -> int:
        return self.heading_ref.shape[1]


@dataclass(frozen=True)
class BatchLQRTracker:
    """Decoupled LQR: one-step longitudinal speed control plus a lateral (error, heading, steering) LQR.

    Defaults are nuPlan's `lqr_tracker.yaml` as used by NAVSIM's PDM simulator.
    """

    q_longitudinal: float = 10.0
    r_longitudinal: float = 1.0
    q_lateral: tuple[float, float, float] = (1.0, 10.0, 0.0)  # lateral error, heading error, steering angle
    r_lateral: float = 1.0
    discretization_time: float = 0.1
    tracking_horizon: int = 10
    jerk_penalty: float = 1e-4
    curvature_rate_penalty: float = 1e-2
    stopping_proportional_gain: float = 0.5
    stopping_velocity: float = 0.2
    initial_curvature_penalty: float = 1e-10
    wheel_base: float = PACIFICA.wheel_base

    def __post_init__(self) -> None:
        if len(self.q_lateral) != 3 or not all(np.isfinite(q) and q >= 0 for q in self.q_lateral):
            raise ValueError(f"q_lateral must be 3 finite weights >= 0, got {self.q_lateral!r}")
        object.__setattr__(self, "q_lateral", tuple(float(q) for q in self.q_lateral))
        _count(self.tracking_horizon, "tracking_horizon", 2)
        for name in ("q_longitudinal", "r_longitudinal", "r_lateral", "discretization_time", "jerk_penalty",
                     "curvature_rate_penalty", "stopping_proportional_gain", "stopping_velocity",
                     "initial_curvature_penalty", "wheel_base"):
            _positive(getattr(self, name), name)

    @property
    def longitudinal_gain(self) -> float:
        """Acceleration per m/s of speed error: one-step LQR with the acceleration held over the horizon."""
        b = self.tracking_horizon * self.discretization_time
        return -b * self.q_longitudinal / (b * b * self.q_longitudinal + self.r_longitudinal)

    # -- reference profiles --------------------------------------------------------------------------------

    def fit_profiles(self, poses) -> tuple[np.ndarray, np.ndarray]:
        """Regularised least-squares speed and curvature profiles (B, N-1) of reference poses (B, N, >=3)."""
        poses = _array(poses, "reference poses", (3,), min_last=3)[..., :3]
        if poses.shape[1] < 3:
            raise ValueError(f"reference poses need at least 3 poses per row, got shape {poses.shape}")
        dt = self.discretization_time
        num = poses.shape[1] - 1
        heading = poses[:, :-1, 2]
        step = np.diff(poses, axis=1)
        # Velocity: y = A x with A = [cos, sin] (x) W; the normal equations only see W^T (projected steps).
        along = np.cos(heading) * step[..., 0] + np.sin(heading) * step[..., 1]
        velocity = along @ _velocity_fit_matrix(num, dt, self.jerk_penalty).T
        # Curvature: heading change k = v_k (W x)_k; regularise curvature rate (and kappa_0 a tiny bit).
        dheading = np.arctan2(np.sin(step[..., 2]), np.cos(step[..., 2]))
        a = velocity[:, :, None] * _integration_matrix(num, dt)  # (B, num, num)
        a_t = a.transpose(0, 2, 1)
        normal = a_t @ a
        diag = np.arange(num)
        normal[:, diag, diag] += self.curvature_rate_penalty
        normal[:, 0, 0] += self.initial_curvature_penalty - self.curvature_rate_penalty
        # The regulariser makes the normal matrix symmetric positive definite, so a solve gives NAVSIM's
        # pinv minimiser (the tests compare both) without an SVD per reference (~0.3 ms each here).
        params = np.linalg.solve(normal, a_t @ dheading[..., None])[..., 0]
        curvature = params @ _profile_matrix(num, dt).T
        return velocity, curvature

    def profiles(self, reference) -> TrackingProfiles:
        """Precompute everything `command` needs for references (B, N, >=3) (only x, y, heading are used).

        Lateral closed form: with v_k = v0 + k w (w = accel dt, k < H), a_k = v_k dt, b_k = v_k dt / L and
        c_k = -v_k kappa_k dt, composing the H affine steps x <- A_k x + (0, 0, dt) u + (0, c_k, 0) gives
          A = [[1, sum a, sum_{i<j} a_j b_i], [0, 1, sum b], [0, 0, 1]],
          B = (dt sum_{i<j} a_j b_i i, dt sum_i b_i i, H dt),  g = (sum_{i<j} a_j c_i, sum c, 0).
        Every entry is a quadratic in (v0, w), and the longitudinal LQR makes w linear in v0
        (w = gain (v0 - v_ref) dt); so each is a quadratic in v0 with coefficients fixed per step and row,
        and `command` evaluates them with one Horner step instead of composing H 3x3 matrices.
        (Rows that take the stopping branch get a different acceleration, but their steering rate is 0.)
        """
        reference = _array(reference, "reference_states", (3,), min_last=3)
        velocity, curvature = self.fit_profiles(reference)
        num = velocity.shape[1]
        horizon, dt = self.tracking_horizon, self.discretization_time
        steps = np.arange(num)
        v_ref = velocity[:, np.minimum(steps + horizon, num - 1)].T  # (T, B)
        # Curvature over the horizon: kappa[i : i + H], held at the look-ahead value past the profile end.
        window = np.minimum(steps[:, None] + np.arange(horizon)[None, :], num - 1)
        alpha = self.longitudinal_gain * dt
        q0, q1, _ = self.q_lateral
        table, weights = _lateral_tables(horizon, dt, self.wheel_base, q0, q1, alpha)
        k0, k1, g0, g1, g2 = np.moveaxis(curvature[:, window] @ weights.T, -1, 0).transpose(0, 2, 1)  # (T, B)

        powers = np.stack([np.ones_like(v_ref), v_ref, v_ref * v_ref], axis=-1)  # (T, B, 3)
        rows = len(_ROWS)
        coefficients = (powers @ table.reshape(3 * rows, 3).T).reshape(num, -1, 3, rows).transpose(0, 2, 3, 1).copy()
        # Curvature rows (substitution of w as in `_lateral_tables`, written out).
        coefficients[:, 0, _ROW["g1"]] = dt * alpha * k1 * v_ref
        coefficients[:, 1, _ROW["g1"]] = -dt * (k0 + alpha * k1)
        coefficients[:, 0, _ROW["g0"]] = -dt * dt * alpha * alpha * g2 * v_ref * v_ref
        coefficients[:, 1, _ROW["g0"]] = dt * dt * alpha * v_ref * (g1 + 2.0 * alpha * g2)
        coefficients[:, 2, _ROW["g0"]] = -dt * dt * (g0 + alpha * g1 + alpha * alpha * g2)

        poses = reference[:, :num, :3].transpose(1, 2, 0)  # (T, 3, B)
        slow = v_ref <= self.stopping_velocity
        return TrackingProfiles(
            reference=reference[..., :3], velocity=velocity, curvature=curvature,
            xy_ref=np.ascontiguousarray(poses[:, :2]),
            normal_ref=np.stack([-np.sin(poses[:, 2]), np.cos(poses[:, 2])], axis=1),
            heading_ref=np.ascontiguousarray(poses[:, 2]),
            velocity_ref=v_ref, slow_ref=slow, may_stop=tuple(slow.any(axis=1).tolist()),
            coefficients=coefficients,
            constants=SimpleNamespace(
                gain=np.array(self.longitudinal_gain), stop_gain=np.array(-self.stopping_proportional_gain),
                stop_velocity=np.array(self.stopping_velocity), neg_r=np.array(-self.r_lateral),
                zero=np.array(0.0),
            ),
        )

    # -- control ---------------------------------------------------------------------------------------------

    def command(self, i: int, states, profiles: TrackingProfiles) -> np.ndarray:
        """Commands (B, 2) = (acceleration, steering rate) at step i for states (B, 11)."""
        if not isinstance(profiles, TrackingProfiles):
            raise ValueError(f"profiles must come from BatchLQRTracker.profiles, got {type(profiles).__name__}")
        states = _array(states, "states", (2,), last=STATE_SIZE)
        if states.shape[0] != profiles.batch_size:
            raise ValueError(f"states has shape {states.shape}, expected ({profiles.batch_size}, {STATE_SIZE})")
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < profiles.num_steps:
            raise ValueError(f"step i must be an integer in [0, {profiles.num_steps}), got {i!r}")
        accel, steer_rate = self._command(int(i), np.ascontiguousarray(states.T), profiles)
        return np.stack([accel, steer_rate], axis=-1)

    def _command(self, i, s, prof: TrackingProfiles):
        """Controller on state rows s (11, B); shared by `command` and `simulate` (~35 small numpy calls)."""
        k = prof.constants
        v, steer = s[_S.VELOCITY_X], s[_S.STEERING_ANGLE]
        # Errors in the frame of reference pose i (lateral: along its left normal).
        rel = s[_S.X:_S.Y + 1] - prof.xy_ref[i]
        rel *= prof.normal_ref[i]
        lat_err = rel[0] + rel[1]
        dh = s[_S.HEADING] - prof.heading_ref[i]
        head_err = np.arctan2(np.sin(dh), np.cos(dh))
        # Longitudinal: reach the look-ahead speed after one horizon-long step (or P-control to a stop).
        dv = v - prof.velocity_ref[i]
        accel = dv * k.gain
        stop = None
        if prof.may_stop[i]:  # only build the stopping mask where some reference is slow
            stop = prof.slow_ref[i] & (v <= k.stop_velocity)
            accel = np.where(stop, dv * k.stop_gain, accel)
        # Lateral: closed-form horizon composition (see `profiles`), a quadratic in the current speed.
        c = prof.coefficients[i]
        q = c[2] * v
        q += c[1]
        q *= v
        q += c[0]
        sum_a, a_b, sum_b, g0, g1, b0q, b1q, neg_b0, neg_b1 = q
        err_lat = sum_a * head_err  # lateral error at the horizon
        err_lat += lat_err
        err_lat += a_b * steer
        err_lat += g0
        err_head = sum_b * steer  # heading error at the horizon, wrapped as NAVSIM does
        err_head += head_err
        err_head += g1
        err_head = np.arctan2(np.sin(err_head), np.cos(err_head))
        num = b0q * err_lat
        num += b1q * err_head
        neg_den = b0q * neg_b0
        neg_den += b1q * neg_b1
        neg_den += k.neg_r
        q2 = self.q_lateral[2]
        if q2:  # 0 in NAVSIM: the horizon steering angle is the current one (B = H dt; wrapped like NAVSIM)
            b2 = self.tracking_horizon * self.discretization_time
            num += q2 * b2 * np.arctan2(np.sin(steer), np.cos(steer))
            neg_den -= q2 * b2 * b2
        steer_rate = np.divide(num, neg_den, out=num)
        if stop is not None:
            steer_rate = np.where(stop, k.zero, steer_rate)
        return accel, steer_rate


# ----------------------------------------------------------------------------------------------------------
# simulation (NAVSIM PDMSimulator, spec §3.2)


def simulate(
    initial_state,
    reference_states,
    tracker: BatchLQRTracker | None = None,
    model: KinematicBicycle | None = None,
    dt: float = 0.1,
) -> np.ndarray:
    """Track references (B, N, >=3) from initial state(s) (11,) / (B, 11): states (B, N, 11), row 0 = start.

    Step i (1..N-1) applies the tracker's command for reference index i-1 to state i-1 and propagates the
    bicycle by dt. As in NAVSIM, the tracker's discretization time is set to dt.
    """
    tracker = BatchLQRTracker() if tracker is None else tracker
    model = KinematicBicycle() if model is None else model
    if not isinstance(tracker, BatchLQRTracker) or not isinstance(model, KinematicBicycle):
        raise ValueError(f"tracker/model must be BatchLQRTracker/KinematicBicycle, got "
                         f"{type(tracker).__name__}/{type(model).__name__}")
    dt = _positive(dt, "dt")
    reference = _array(reference_states, "reference_states", (3,), min_last=3)
    batch, length = reference.shape[:2]
    start = _array(initial_state, "initial_state", (1, 2), last=STATE_SIZE)
    if start.ndim == 2 and start.shape[0] != batch:
        raise ValueError(f"initial_state has shape {start.shape}, expected ({STATE_SIZE},) or ({batch}, {STATE_SIZE})")
    start = np.broadcast_to(start, (batch, STATE_SIZE))
    if tracker.discretization_time != dt:
        tracker = replace(tracker, discretization_time=dt)
    prof = tracker.profiles(reference)
    # NAVSIM advances the model by a TimeDuration of int(dt * 1e6) microseconds (0.1 s -> 0.09999999999999999).
    model_dt_us = int(dt * 1e6)
    if model_dt_us < 1:
        raise ValueError(f"dt must be at least one microsecond, got {dt!r}")
    model_dt = model_dt_us * 1e-6

    # (N, 11, B): state i is a contiguous (11, B) block that the model writes in place.
    out = np.zeros((length, STATE_SIZE, batch))
    out[0] = start.T
    constants = model._constants(model_dt)
    tan_steer = None
    for i in range(length - 1):
        accel_cmd, steer_rate_cmd = tracker._command(i, out[i], prof)
        tan_steer = model._step(out[i], accel_cmd, steer_rate_cmd, constants, out[i + 1], tan_steer)
    return out.transpose(2, 0, 1).copy()


# ----------------------------------------------------------------------------------------------------------
# trajectory sampling (NAVSIM transform_trajectory + get_trajectory_as_array, spec §1.1 steps 2-3)


def interpolate_states(
    knot_states, knot_times_us, t0_us: int = 0, num_samples: int = 41, dt: float = 0.1
) -> np.ndarray:
    """Sample knot states (N, 11) / (B, N, 11) at microsecond times (N,) like nuPlan's InterpolatedTrajectory.

    Sample k is at int((k dt + t0_us 1e-6) 1e6) us (NAVSIM's float-seconds round trip, truncated), clipped to
    the knots' time span. x, y, velocities, accelerations and steering angle are linear in time; heading is
    unwrapped over the knots, interpolated and wrapped to [-pi, pi); steering rate, yaw rate and yaw
    acceleration are 0. Returns (B, num_samples, 11).
    """
    knots = _array(knot_states, "knot_states", (2, 3), last=STATE_SIZE)
    knots = knots[None] if knots.ndim == 2 else knots
    times = np.asarray(knot_times_us)
    if times.shape != (knots.shape[1],) or not np.issubdtype(times.dtype, np.integer):
        raise ValueError(
            f"knot_times_us must be {knots.shape[1]} integer microsecond times, got {times.dtype} {times.shape}"
        )
    if knots.shape[1] < 2 or np.any(np.diff(times) <= 0):
        raise ValueError(f"knot_times_us must hold >= 2 strictly increasing times, got {times.tolist()}")
    num_samples = _count(num_samples, "num_samples", 1)
    dt = _positive(dt, "dt")
    t0_us = _timestamp(t0_us)

    # The same float round trip as NAVSIM (seconds since the epoch, then int(t * 1e6)), so truncation by one
    # microsecond happens exactly where it happens there.
    sample_s = np.arange(num_samples, dtype=np.float64) * dt + t0_us * 1e-6
    sample_us = np.clip((sample_s * 1e6).astype(np.int64), times[0], times[-1])
    # scipy interp1d's linear rule: segment [lo, lo + 1] with searchsorted(left) clipped to [1, N - 1].
    hi = np.clip(np.searchsorted(times, sample_us, side="left"), 1, len(times) - 1)
    lo = hi - 1
    frac_num = (sample_us - times[lo]).astype(np.float64)[:, None]
    span = (times[hi] - times[lo]).astype(np.float64)[:, None]

    values = knots[..., _LINEAR_COLUMNS]  # (B, N, 7)
    heading = np.unwrap(knots[..., _S.HEADING], axis=1)[..., None]
    out = np.zeros((knots.shape[0], num_samples, STATE_SIZE))
    for src, cols in ((values, _LINEAR_COLUMNS), (heading, [_S.HEADING])):
        y_lo, y_hi = src[:, lo], src[:, hi]
        out[..., cols] = (y_hi - y_lo) / span * frac_num + y_lo
    out[..., _S.HEADING] = principal_value(out[..., _S.HEADING])
    return out


def interpolate_trajectory_states(
    initial_state, local_poses, interval: float, num_samples: int = 41, dt: float = 0.1, t0_us: int = 0
) -> np.ndarray:
    """States (B, num_samples, 11) of planned poses (N, 3) / (B, N, 3) in the initial rear-axle frame.

    Pose i is at t0 + (i + 1) * interval with zero velocity, acceleration and steering; the initial state
    (with its logged velocity and acceleration) is prepended as the knot at t0. t0_us only matters through
    microsecond truncation (NAVSIM stamps poses with int(seconds * 1e6)).
    """
    start = _array(initial_state, "initial_state", (1,), last=STATE_SIZE)
    poses = _array(local_poses, "local_poses", (2, 3), last=3)
    poses = poses[None] if poses.ndim == 2 else poses
    if poses.shape[1] < 1:
        raise ValueError(f"local_poses must hold at least one pose, got shape {poses.shape}")
    interval = _positive(interval, "interval")
    t0_us = _timestamp(t0_us)
    batch, count = poses.shape[:2]
    knots = np.zeros((batch, count + 1, STATE_SIZE))
    knots[:, 0] = start
    knots[:, 1:, :3] = local_to_global(poses, start[:3])
    # nuPlan's _get_fixed_timesteps: arange(0, horizon, interval) + interval + t0 seconds, then int(t * 1e6).
    pose_s = (np.arange(count, dtype=np.float64) * interval + interval) + t0_us * 1e-6
    times = np.concatenate([[t0_us], (pose_s * 1e6).astype(np.int64)])
    return interpolate_states(knots, times, t0_us=t0_us, num_samples=num_samples, dt=dt)


def interpolate_global_poses(
    global_poses, times_s, num_samples: int = 41, dt: float = 0.1, t0_us: int = 0
) -> np.ndarray:
    """States (B, num_samples, 11) of global poses (N, 3) / (B, N, 3) at times_s (N,) seconds after t0.

    For references that carry no dynamics, e.g. the cached PDM-Closed trajectory (51 poses at k * 0.1 s,
    the first at the ego start): every knot has zero velocity, acceleration and steering.
    """
    poses = _array(global_poses, "global_poses", (2, 3), last=3)
    poses = poses[None] if poses.ndim == 2 else poses
    times_s = _array(times_s, "times_s", (1,))
    if times_s.shape != (poses.shape[1],):
        raise ValueError(f"times_s has shape {times_s.shape}, expected ({poses.shape[1]},) to match global_poses")
    t0_us = _timestamp(t0_us)
    knots = np.zeros(poses.shape[:2] + (STATE_SIZE,))
    knots[..., :3] = poses
    # Offsets are rounded to whole microseconds (nuPlan TimePoints are integers).
    times = t0_us + np.round(times_s * 1e6).astype(np.int64)
    return interpolate_states(knots, times, t0_us=t0_us, num_samples=num_samples, dt=dt)


def track_trajectories(
    initial_state,
    local_poses,
    interval: float,
    tracker: BatchLQRTracker | None = None,
    model: KinematicBicycle | None = None,
    num_samples: int = 41,
    dt: float = 0.1,
    t0_us: int = 0,
) -> np.ndarray:
    """Planned local poses (N, 3) / (B, N, 3) -> simulated states (B, num_samples, 11) (sample + track)."""
    reference = interpolate_trajectory_states(initial_state, local_poses, interval, num_samples, dt, t0_us)
    return simulate(initial_state, reference, tracker=tracker, model=model, dt=dt)


# ----------------------------------------------------------------------------------------------------------
# closed loop: one ego stepped 0.1 s at a time


class TrackedEgo:
    """One ego state advanced step by step, tracking its latest plan (the closed-loop form of `simulate`).

    Inputs are checked once per plan; a step is then the same ~60 small numpy calls as one iteration
    of `simulate`, on the (11, 1) row layout the tracker and model share.
    """

    def __init__(self, state, tracker: BatchLQRTracker | None = None, model: KinematicBicycle | None = None,
                 dt: float = 0.1):
        self.tracker = BatchLQRTracker() if tracker is None else tracker
        self.model = KinematicBicycle() if model is None else model
        self._constants = self.model._constants(_positive(dt, "dt"))
        self._rows = _array(state, "state", (1,), last=STATE_SIZE).reshape(STATE_SIZE, 1).copy()
        self._profiles: TrackingProfiles | None = None
        self._index = 0

    @property
    def state(self) -> np.ndarray:
        """The current (11,) state (a copy)."""
        return self._rows[:, 0].copy()

    def plan(self, reference) -> None:
        """Follow reference states (N, >=3) from now on; index 0 is the current time."""
        self._profiles = self.tracker.profiles(_array(reference, "reference", (2,), min_last=3)[None])
        self._index = 0

    def step(self, control=None) -> np.ndarray:
        """Advance dt with `control` (acceleration, steering rate), or with the tracker's command; returns the state."""
        if control is None:
            if self._profiles is None:
                raise RuntimeError("TrackedEgo.step: call plan() first or pass a control")
            i = min(self._index, self._profiles.num_steps - 1)
            accel, steer_rate = self.tracker._command(i, self._rows, self._profiles)
            self._index += 1
        else:
            control = _array(control, "control", (1,), last=2)
            accel, steer_rate = control[:1], control[1:]
        out = np.zeros_like(self._rows)
        self.model._step(self._rows, accel, steer_rate, self._constants, out)
        self._rows = out
        return out[:, 0]

