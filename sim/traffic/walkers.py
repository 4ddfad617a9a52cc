"""Pedestrians crossing on crosswalks, waiting for a gap in traffic."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CrosswalkWalkers:
    """Pedestrians crossing on crosswalks: wait at the kerb until traffic near the crossing is clear.

    start/end (P, 2) kerb points, speed (P,), ready_time (P,) when each wants to cross.
    `progress` (P,) metres walked; a walker never stops once on the road (vehicles yield).
    """

    start: np.ndarray
    end: np.ndarray
    speed: np.ndarray
    ready_time: np.ndarray
    clear_radius: float = 14.0

    def __post_init__(self) -> None:
        d = self.end - self.start
        self._length = np.linalg.norm(d, axis=1)
        self._dir = d / np.maximum(self._length, 1e-9)[:, None]
        self._centre = 0.5 * (self.start + self.end)
        self.progress = np.zeros(len(self.speed))

    @property
    def count(self) -> int:
        return len(self.speed)

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading, speed) now; speed is 0 while waiting and after arriving."""
        xy = self.start + self._dir * self.progress[:, None]
        walking = (self.progress > 0) & (self.progress < self._length)
        return xy[:, 0], xy[:, 1], np.arctan2(self._dir[:, 1], self._dir[:, 0]), np.where(walking, self.speed, 0.0)

    def step(self, dt: float, time: float, vehicle_xy: np.ndarray, vehicle_speed: np.ndarray) -> None:
        if self.count == 0:
            return
        near = np.linalg.norm(vehicle_xy[None, :, :] - self._centre[:, None, :], axis=2)  # (P, M)
        # Busy while a vehicle could reach the crossing within ~4 s, or stands right at it.
        busy = ((near < self.clear_radius + 4.0 * vehicle_speed) & (vehicle_speed > 0.5)).any(axis=1) | (near < 5.0).any(axis=1)
        waiting = self.progress == 0.0
        # Walkers already crossing pause when a vehicle stands right in their way.
        ahead = self.start + self._dir * (self.progress + 1.0)[:, None]
        blocked = (np.linalg.norm(vehicle_xy[None, :, :] - ahead[:, None, :], axis=2) < 3.0).any(axis=1)
        go = (~waiting & ~blocked) | (waiting & (time >= self.ready_time) & ~busy)
        self.progress = np.where(go, np.minimum(self.progress + self.speed * dt, self._length), self.progress)
