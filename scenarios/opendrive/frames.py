"""Conversion between CARLA's left-handed world frame (y right, yaw clockwise in degrees) and ours."""
from __future__ import annotations

import numpy as np


def carla_to_local(x: np.ndarray, y: np.ndarray, yaw_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, -y, -radians(yaw)): CARLA positions and yaws into our right-handed metres/radians frame."""
    return np.asarray(x, dtype=np.float64), -np.asarray(y, dtype=np.float64), -np.radians(yaw_deg)


def local_to_carla(x: np.ndarray, y: np.ndarray, heading: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of `carla_to_local`: our (x, y, heading rad) into CARLA's (x, y, yaw deg)."""
    return np.asarray(x, dtype=np.float64), -np.asarray(y, dtype=np.float64), -np.degrees(heading)
