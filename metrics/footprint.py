"""Box corners with nuPlan's / NAVSIM's exact float formula (lateral offset via cos/sin of heading + pi/2)."""
from __future__ import annotations

import numpy as np

from sim.geometry import PACIFICA, VehicleParameters

_HALF_PI = np.pi / 2.0
# (lon, lat) signs in BBCoordsIndex / OrientedBox.all_corners order: FL, RL, RR, FR.
_SIGNS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])


def box_corners(x, y, heading, half_length, half_width) -> np.ndarray:
    """Corners (..., 4, 2) FL, RL, RR, FR of boxes centred at (x, y).

    NAVSIM's `translate_lon_and_lat` / nuPlan's `translate_longitudinally_and_laterally`:
    centre + ((lat cos(h + pi/2)) + (lon cos h), (lat sin(h + pi/2)) + (lon sin h)). cos(h + pi/2) is not
    bit-equal to -sin(h); the same formula keeps boundary-touching tests identical.
    """
    h = np.asarray(heading, dtype=np.float64)[..., None]
    lon = _SIGNS[:, 0] * np.asarray(half_length, dtype=np.float64)[..., None]
    lat = _SIGNS[:, 1] * np.asarray(half_width, dtype=np.float64)[..., None]
    dx = (lat * np.cos(h + _HALF_PI)) + (lon * np.cos(h))
    dy = (lat * np.sin(h + _HALF_PI)) + (lon * np.sin(h))
    out = np.empty(np.broadcast_shapes(dx.shape, dy.shape) + (2,))
    out[..., 0] = np.asarray(x, dtype=np.float64)[..., None] + dx
    out[..., 1] = np.asarray(y, dtype=np.float64)[..., None] + dy
    return out


def ego_center(states: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """(..., 2) box centre from rear-axle states (..., >=3): rear axle + rear_axle_to_center * (cos h, sin h)."""
    h = states[..., 2]
    d = vehicle.rear_axle_to_center
    return states[..., :2] + np.stack([d * np.cos(h), d * np.sin(h)], axis=-1)


def ego_corners(states: np.ndarray, center: np.ndarray | None = None,
                vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """(..., 4, 2) ego footprint corners (NAVSIM `state_array_to_coords_array`)."""
    center = ego_center(states, vehicle) if center is None else center
    # nuPlan: width = 2 * 1.1485, half_width = width / 2; half_length = (front + rear) / 2.
    return box_corners(center[..., 0], center[..., 1], states[..., 2], vehicle.length / 2.0, vehicle.width / 2.0)
