"""SE(2) geometry on numpy arrays: angle wrapping, frame changes, oriented-box corners and their overlap test."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def principal_value(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi) exactly as nuPlan's `principal_value` does: (a + pi) mod 2pi - pi."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def local_to_global(poses_local: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Compose local poses (..., 3) with an origin pose (3,) (SE(2) product; heading via atan2).

    The heading is recovered from the composed rotation matrix, as NAVSIM's `transform_trajectory`
    does, so it lands in (-pi, pi].
    """
    poses_local = np.asarray(poses_local, dtype=np.float64)
    x0, y0, h0 = origin
    c, s = np.cos(h0), np.sin(h0)
    x = x0 + c * poses_local[..., 0] - s * poses_local[..., 1]
    y = y0 + s * poses_local[..., 0] + c * poses_local[..., 1]
    h = h0 + poses_local[..., 2]
    return np.stack([x, y, np.arctan2(np.sin(h), np.cos(h))], axis=-1)


def global_to_local(poses_global: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Express global poses (..., 3) in the frame of an origin pose (3,); heading wrapped to [-pi, pi)."""
    poses_global = np.asarray(poses_global, dtype=np.float64)
    x0, y0, h0 = origin
    c, s = np.cos(h0), np.sin(h0)
    dx, dy = poses_global[..., 0] - x0, poses_global[..., 1] - y0
    return np.stack(
        [c * dx + s * dy, -s * dx + c * dy, principal_value(poses_global[..., 2] - h0)], axis=-1
    )


# Corner order of nuPlan's BBCoordsIndex / OrientedBox.all_corners: FL, RL, RR, FR.
_CORNER_SIGNS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
_CORNER_SIGNS_LIST = _CORNER_SIGNS.tolist()
_HALF_PI = np.pi / 2.0


def box_corners(x, y, heading, length, width, *, nuplan_formula: bool = False) -> np.ndarray:
    """Corners (..., 4, 2) of oriented boxes centred at (x, y), in FL, RL, RR, FR order.

    Two float evaluation orders of the same corners (they differ in the last bits):
    - default (the simulator, renderers): centre + (lon cos h - lat sin h, lon sin h + lat cos h);
    - `nuplan_formula=True` (the PDM scorer): NAVSIM's `translate_lon_and_lat` / nuPlan's
      `translate_longitudinally_and_laterally`, centre + ((lat cos(h + pi/2)) + (lon cos h),
      (lat sin(h + pi/2)) + (lon sin h)). cos(h + pi/2) is not bit-equal to -sin(h); the same formula
      keeps boundary-touching tests identical to NAVSIM's.
    """
    heading = np.asarray(heading, dtype=np.float64)[..., None]
    c, s = np.cos(heading), np.sin(heading)
    lon = _CORNER_SIGNS[:, 0] * (0.5 * np.asarray(length, dtype=np.float64))[..., None]
    lat = _CORNER_SIGNS[:, 1] * (0.5 * np.asarray(width, dtype=np.float64))[..., None]
    x = np.asarray(x, dtype=np.float64)[..., None]
    y = np.asarray(y, dtype=np.float64)[..., None]
    if nuplan_formula:
        cx = x + ((lat * np.cos(heading + _HALF_PI)) + (lon * c))
        cy = y + ((lat * np.sin(heading + _HALF_PI)) + (lon * s))
    else:
        cx = x + lon * c - lat * s
        cy = y + lon * s + lat * c
    out = np.empty(np.broadcast_shapes(cx.shape, cy.shape) + (2,))
    out[..., 0], out[..., 1] = cx, cy
    return out


def rectangles_intersect(a, boxes) -> np.ndarray:
    """(M,) whether rectangle `a` (4, 2) intersects each of `boxes` (M, 4, 2), touching included.

    Separating-axis test on the edge directions of both rectangles (for a rectangle these are its
    edge normals too). Callers pass the few boxes a broad phase left, so plain float arithmetic per
    box beats both numpy's per-call overhead and building shapely polygons.
    """
    a_pts = np.asarray(a, dtype=np.float64).tolist()
    return np.array([_rectangles_touch(a_pts, box) for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4, 2).tolist()],
                    dtype=bool)


def _rectangles_touch(a: list, b: list) -> bool:
    for rect in (a, b):
        for (x0, y0), (x1, y1) in ((rect[0], rect[1]), (rect[1], rect[2])):
            ax, ay = x1 - x0, y1 - y0
            pa = [px * ax + py * ay for px, py in a]
            pb = [px * ax + py * ay for px, py in b]
            if max(pa) < min(pb) or max(pb) < min(pa):
                return False
    return True


@dataclass(frozen=True)
class VehicleParameters:
    """Ego vehicle geometry; defaults are nuPlan's Chrysler Pacifica (`get_pacifica_parameters`)."""

    width: float = 2.297
    front_length: float = 4.049
    rear_length: float = 1.127
    wheel_base: float = 3.089
    cog_position_from_rear_axle: float = 1.67
    height: float = 1.777

    @property
    def length(self) -> float:
        return self.front_length + self.rear_length

    @property
    def rear_axle_to_center(self) -> float:
        """Distance from the rear axle forward to the box centre (1.461 m for the Pacifica)."""
        return self.length / 2.0 - self.rear_length


PACIFICA = VehicleParameters()


def ego_corners(states: np.ndarray, vehicle: VehicleParameters = PACIFICA, *, center: np.ndarray | None = None,
                nuplan_formula: bool = False) -> np.ndarray:
    """Ego footprint corners (..., 4, 2) from rear-axle poses/states (..., >=3), FL, RL, RR, FR.

    `center`: the box centres (..., 2) if already computed (`ego_center`). `nuplan_formula`: the corners
    with NAVSIM's float formula (`state_array_to_coords_array`; see `box_corners`), for the PDM scorer.
    A single pose (3,) without either takes a float-math path (a closed-loop step calls it every 0.1 s).
    """
    states = np.asarray(states, dtype=np.float64)
    if states.ndim == 1 and center is None and not nuplan_formula:
        return _one_ego_corners(float(states[0]), float(states[1]), float(states[2]), vehicle)
    center = ego_center(states, vehicle) if center is None else center
    return box_corners(center[..., 0], center[..., 1], states[..., 2], vehicle.length, vehicle.width,
                       nuplan_formula=nuplan_formula)


def _one_ego_corners(x: float, y: float, h: float, vehicle: VehicleParameters) -> np.ndarray:
    """`ego_corners` of a single pose with float math: a closed-loop step calls this every 0.1 s."""
    c, s = math.cos(h), math.sin(h)
    return np.array(one_box_corners(x + vehicle.rear_axle_to_center * c, y + vehicle.rear_axle_to_center * s, h,
                                    vehicle.length, vehicle.width))


def one_box_corners(x: float, y: float, heading: float, length: float, width: float) -> list[list[float]]:
    """Corners of one box as nested float lists (FL, RL, RR, FR): for the few boxes a broad phase keeps."""
    c, s = math.cos(heading), math.sin(heading)
    hl, hw = 0.5 * length, 0.5 * width
    return [[x + sl * hl * c - sw * hw * s, y + sl * hl * s + sw * hw * c] for sl, sw in _CORNER_SIGNS_LIST]


def ego_center(states: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """Box centre (..., 2) of the ego from rear-axle poses/states (..., >=3)."""
    h = states[..., 2]
    return np.stack(
        [
            states[..., 0] + vehicle.rear_axle_to_center * np.cos(h),
            states[..., 1] + vehicle.rear_axle_to_center * np.sin(h),
        ],
        axis=-1,
    )
