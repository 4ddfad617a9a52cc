"""NAVSIM's BatchLQRTracker (spec §3.3): reference profile fit, per-step tables and the decoupled LQR command."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from sim.dynamics.checks import _array, _count, _positive
from sim.dynamics.lqr_tables import _FEATURES, _ROWS, _profile_tables
from sim.geometry import PACIFICA
from sim.state import STATE_SIZE, StateIndex

_S = StateIndex
_X, _Y, _HEADING = int(_S.X), int(_S.Y), int(_S.HEADING)
_VELOCITY_X, _STEERING_ANGLE = int(_S.VELOCITY_X), int(_S.STEERING_ANGLE)


_NORMAL_SIGNS = np.array([[-1.0], [1.0]])  # (sin, cos) -> (-sin, cos)




def _constant(value: float) -> np.ndarray:
    """A read-only 0-d array: numpy handles those faster than Python floats in tiny ops."""
    arr = np.array(value, dtype=np.float64)
    arr.setflags(write=False)
    return arr


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
        # Not fields (so not part of ==, hash or repr): the controller's 0-d constants and, per profile
        # length, the cached tables, so that replanning skips rebuilding or hashing them.
        constants = {"gain": self.longitudinal_gain, "stop_gain": -self.stopping_proportional_gain,
                     "stop_velocity": self.stopping_velocity, "neg_r": -self.r_lateral, "zero": 0.0}
        object.__setattr__(self, "_constants", SimpleNamespace(**{n: _constant(c) for n, c in constants.items()}))
        object.__setattr__(self, "_tables_by_length", {})

    @property
    def longitudinal_gain(self) -> float:
        """Acceleration per m/s of speed error: one-step LQR with the acceleration held over the horizon."""
        b = self.tracking_horizon * self.discretization_time
        return -b * self.q_longitudinal / (b * b * self.q_longitudinal + self.r_longitudinal)

    def _tables(self, num: int) -> SimpleNamespace:
        """The cached `_profile_tables` for profiles of `num` steps."""
        tables = self._tables_by_length.get(num)
        if tables is None:
            dt = self.discretization_time
            q0, q1, _ = self.q_lateral
            tables = _profile_tables(num, dt, self.tracking_horizon, self.wheel_base, q0, q1,
                                     self.longitudinal_gain * dt, self.jerk_penalty, self.curvature_rate_penalty,
                                     self.initial_curvature_penalty)
            self._tables_by_length[num] = tables
        return tables

    # -- reference profiles --------------------------------------------------------------------------------

    def fit_profiles(self, poses) -> tuple[np.ndarray, np.ndarray]:
        """Regularised least-squares speed and curvature profiles (B, N-1) of reference poses (B, N, >=3)."""
        velocity, curvature, _ = self._fit(_array(poses, "reference poses", (3,), min_last=3))
        return velocity, curvature

    def _fit(self, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`fit_profiles` of checked poses (B, N, >=3), plus (cos, sin) (2, B, N-1) of their headings."""
        if poses.shape[1] < 3:
            raise ValueError(f"reference poses need at least 3 poses per row, got shape {poses[..., :3].shape}")
        batch, num = poses.shape[0], poses.shape[1] - 1
        tables = self._tables(num)
        heading = poses[:, :-1, _HEADING]
        step = poses[:, 1:, :3] - poses[:, :-1, :3]
        trig = np.empty((2, batch, num))
        np.cos(heading, out=trig[0])
        np.sin(heading, out=trig[1])
        # Velocity: y = A x with A = [cos, sin] (x) W; the normal equations only see W^T (projected steps).
        along = trig[0] * step[..., 0]
        along += trig[1] * step[..., 1]
        velocity = along @ tables.velocity_fit.T
        # Curvature: heading change k = v_k (W x)_k; regularise curvature rate (and kappa_0 a tiny bit).
        dheading = step[..., 2]
        dheading = np.arctan2(np.sin(dheading), np.cos(dheading))
        a = velocity[:, :, None] * tables.integration  # (B, num, num)
        a_t = a.transpose(0, 2, 1)
        normal = np.matmul(a_t, a, out=np.empty((batch, num, num)))  # C order: the reshape below is a view
        normal.reshape(batch, num * num)[:, ::num + 1] += tables.curvature_rate_penalty  # the diagonal
        normal[:, 0, 0] += tables.initial_curvature_offset
        # The regulariser makes the normal matrix symmetric positive definite, so a solve gives NAVSIM's
        # pinv minimiser (the tests compare both) without an SVD per reference (~0.3 ms each here).
        params = np.linalg.solve(normal, a_t @ dheading[..., None])[..., 0]
        curvature = params @ tables.profile.T
        return velocity, curvature, trig

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
        return self.profiles_unchecked(_array(reference, "reference_states", (3,), min_last=3))

    def profiles_unchecked(self, reference: np.ndarray) -> TrackingProfiles:
        """`profiles` of checked references (B, N, >=3): ~35 numpy calls whatever the batch size."""
        velocity, curvature, trig = self._fit(reference)
        batch, num = velocity.shape
        tables = self._tables(num)
        # The coefficient table of step t, row b is a fixed linear map (`_mixing_matrix`) of a few features:
        # powers of the look-ahead speed, horizon sums of curvature and their products. Features are stored
        # (F, T, B) so that both maps are one matrix product over all steps and rows.
        features = np.empty((len(_FEATURES), num, batch))
        features[0] = 1.0
        v_ref = np.take(velocity.T, tables.lookahead, axis=0, out=features[1])  # (T, B)
        np.multiply(v_ref, v_ref, out=features[2])
        np.matmul(tables.curvature_sums, curvature.T, out=features[3:8].reshape(-1, batch))  # k0 g0 k1 g1 g2
        np.multiply(features[5:8], v_ref, out=features[8:11])  # k1 v, g1 v, g2 v
        np.multiply(features[7], features[2], out=features[11])  # g2 v^2
        if batch == 1:  # (T, F) @ (F, 3 rows) is already laid out as (T, 3, rows, 1)
            coefficients = features.reshape(len(_FEATURES), num).T @ tables.mixing.T
        else:
            mixed = (tables.mixing @ features.reshape(len(_FEATURES), -1)).reshape(-1, num, batch)
            coefficients = np.ascontiguousarray(mixed.transpose(1, 0, 2))
        coefficients = coefficients.reshape(num, 3, len(_ROWS), batch)

        poses = np.ascontiguousarray(reference[:, :num, :3].transpose(1, 2, 0))  # (T, 3, B)
        # Left normal (-sin, cos) of each reference heading, from the fit's (cos, sin) (exact sign flip).
        normal = np.multiply(trig[::-1].transpose(2, 0, 1), _NORMAL_SIGNS, out=np.empty((num, 2, batch)))
        slow = v_ref <= self.stopping_velocity
        may_stop = tuple(slow.any(axis=1).tolist()) if slow.any() else tables.never_stop
        return TrackingProfiles(
            reference=reference[..., :3], velocity=velocity, curvature=curvature, xy_ref=poses[:, :2],
            normal_ref=normal, heading_ref=poses[:, 2], velocity_ref=v_ref, slow_ref=slow, may_stop=may_stop,
            coefficients=coefficients, constants=self._constants,
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
        accel, steer_rate = self.command_unchecked(int(i), np.ascontiguousarray(states.T), profiles)
        return np.stack([accel, steer_rate], axis=-1)

    def command_unchecked(self, i, s, prof: TrackingProfiles):
        """Controller on state rows s (11, B); shared by `command` and `simulate` (~35 small numpy calls)."""
        k = prof.constants
        v, steer = s[_VELOCITY_X], s[_STEERING_ANGLE]
        # Errors in the frame of reference pose i (lateral: along its left normal).
        rel = s[_X:_Y + 1] - prof.xy_ref[i]
        rel *= prof.normal_ref[i]
        lat_err = rel[0] + rel[1]
        dh = s[_HEADING] - prof.heading_ref[i]
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
