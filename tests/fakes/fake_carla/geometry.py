"""Small geometry helpers of the fake CARLA server, in CARLA's left-handed frame: poses, headings, box overlap."""
from __future__ import annotations

import math

import carla


def _transform(x: float, y: float, z: float, pitch: float, yaw: float, roll: float) -> carla.Transform:
    return carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))


def _pose_of(transform: carla.Transform) -> tuple[float, float, float, float, float, float]:
    loc, rot = transform.location, transform.rotation
    return (float(loc.x), float(loc.y), float(loc.z), float(rot.pitch), float(rot.yaw), float(rot.roll))


def _wrap_deg(angle: float) -> float:
    """An angle in degrees, in [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def _forward(yaw_deg: float) -> tuple[float, float]:
    rad = math.radians(yaw_deg)
    return math.cos(rad), math.sin(rad)


def _box_corners(cx: float, cy: float, yaw_deg: float, ex: float, ey: float) -> list[tuple[float, float]]:
    fx, fy = _forward(yaw_deg)
    rx, ry = -fy, fx
    return [(cx + sx * ex * fx + sy * ey * rx, cy + sx * ex * fy + sy * ey * ry)
            for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1))]


def _boxes_overlap_2d(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    """Separating-axis test of two convex quadrilaterals (touching counts as no overlap)."""
    for poly in (a, b):
        for i in range(4):
            (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % 4]
            nx, ny = y2 - y1, x1 - x2
            pa = [nx * x + ny * y for x, y in a]
            pb = [nx * x + ny * y for x, y in b]
            if max(pa) <= min(pb) or max(pb) <= min(pa):
                return False
    return True
