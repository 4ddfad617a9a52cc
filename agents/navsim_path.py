"""A path as NAVSIM's PDM-Closed samples it (`PDMPath`): vertices with arc length, linear interpolation of x, y and
the unwrapped heading, projection and sub-paths.

Written from NAVSIM's behaviour (spec navsim_pdm.md §3.7): interpolation is scipy's `interp1d` linear rule on the
cumulative vertex distances (repeated vertices, as where two lanes meet, are kept), distances are clipped to
[1e-5, length], headings are wrapped with atan2 afterwards; a sub-path keeps the vertices between two distances.
"""
from __future__ import annotations

import numpy as np
import shapely
from shapely.ops import substring as shapely_substring

MIN_DISTANCE = 1e-5  # PDMPath clips interpolation distances to [MIN_DISTANCE, length]


def discrete_path(points: np.ndarray) -> np.ndarray:
    """(K, 3) poses of a polyline's vertices as nuPlan's `discrete_path`: heading towards the next vertex, the last
    vertex repeating the previous heading."""
    points = np.asarray(points, dtype=np.float64)
    delta = np.diff(points, axis=0)
    headings = np.arctan2(delta[:, 1], delta[:, 0])
    return np.column_stack([points, np.append(headings, headings[-1])])


def parallel_path(poses: np.ndarray, offset: float) -> np.ndarray:
    """(K, 3) poses shifted `offset` metres to the left of each pose's heading (negative: right)."""
    theta = poses[:, 2] + np.pi / 2
    return np.column_stack([poses[:, 0] + np.cos(theta) * offset, poses[:, 1] + np.sin(theta) * offset, poses[:, 2]])


class NavsimPath:
    """A path through (K, 3) poses (x, y, heading)."""

    def __init__(self, poses: np.ndarray):
        self.poses = np.asarray(poses, dtype=np.float64)
        self._states = self.poses.copy()
        self._states[:, 2] = np.unwrap(self._states[:, 2])
        step = np.linalg.norm(np.diff(self.poses[:, :2], axis=0), axis=1)
        self.progress = np.cumsum(np.append(0.0, step))
        self.linestring = shapely.LineString(self.poses[:, :2])

    @property
    def length(self) -> float:
        return float(self.progress[-1])

    def project(self, points) -> np.ndarray:
        """Arc length of the nearest point of the polyline (shapely `project`)."""
        return shapely.line_locate_point(self.linestring, points)

    def interpolate(self, distances) -> np.ndarray:
        """(..., 3) poses at the given arc lengths."""
        x_new = np.clip(np.asarray(distances, dtype=np.float64), MIN_DISTANCE, self.length)
        flat = x_new.reshape(-1)
        hi = np.clip(np.searchsorted(self.progress, flat), 1, len(self.progress) - 1)
        lo = hi - 1
        x_lo, x_hi = self.progress[lo], self.progress[hi]
        y_lo, y_hi = self._states[lo], self._states[hi]
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = (y_hi - y_lo) / (x_hi - x_lo)[:, None]
        out = slope * (flat - x_lo)[:, None] + y_lo
        out[:, 2] = np.arctan2(np.sin(out[:, 2]), np.cos(out[:, 2]))
        out[np.isnan(out)] = 0.0
        return out.reshape(x_new.shape + (3,))

    def substring(self, start: float, end: float) -> shapely.LineString:
        """The polyline of the vertices between two arc lengths (shapely's substring when fewer than two)."""
        start, end = np.clip(start, 0.0, self.length), np.clip(end, 0.0, self.length)
        inside = (start <= self.progress) & (self.progress <= end)
        if inside.sum() > 1:
            return shapely.LineString(self.poses[inside, :2])
        return shapely_substring(self.linestring, start, end)


__all__ = ["MIN_DISTANCE", "NavsimPath", "discrete_path", "parallel_path"]
