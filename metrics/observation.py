"""The scorer's observation: per 10 Hz step the object boxes (log replay) and the red-light polygons."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely

from sim.geometry import box_corners, ego_corners
from sim.state import AgentType

RED_LIGHT_PREFIX = "red_light"


@dataclass
class Observation:
    """Objects over time (T, N) as boxes, plus red-light polygons (R,) with a per-step red mask (T, R).

    NC/TTC use an object's *first appearance* and its polygon at the query step (spec §1.4 quirk): `first_speed`
    holds the first-appearance speed (the first-appearance heading the spec also names enters no test: the
    ahead / behind angles use the ego heading). Velocities are global (vx, vy).
    """

    x: np.ndarray  # (T, N) box centres
    y: np.ndarray
    heading: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    valid: np.ndarray  # (T, N) bool
    length: np.ndarray  # (N,)
    width: np.ndarray  # (N,)
    agent_type: np.ndarray  # (N,) AgentType codes
    track_ids: list[str] = field(default_factory=list)
    red_light_ids: list[str] = field(default_factory=list)  # lane-connector ids
    red_light_polygons: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # (R,)
    red_mask: np.ndarray | None = None  # (T, R) bool: connector r is red at step t

    def __post_init__(self) -> None:
        self.valid = np.asarray(self.valid, dtype=bool)
        shape = self.valid.shape
        for name in ("x", "y", "heading", "vx", "vy"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"Observation.{name} has shape {value.shape}, expected {shape}")
            setattr(self, name, value)
        for name in ("length", "width", "agent_type"):
            value = np.asarray(getattr(self, name))
            if value.shape != (shape[1],):
                raise ValueError(f"Observation.{name} has shape {value.shape}, expected ({shape[1]},)")
            setattr(self, name, value)
        if not self.track_ids:
            self.track_ids = [f"agent_{i}" for i in range(shape[1])]
        if len(self.track_ids) != shape[1]:
            raise ValueError(f"Observation has {len(self.track_ids)} track ids for {shape[1]} tracks")
        if any(RED_LIGHT_PREFIX in t for t in self.track_ids):
            raise ValueError("Observation: track ids must not contain 'red_light' (reserved for red lights)")
        self.red_light_polygons = np.asarray(self.red_light_polygons, dtype=object).reshape(-1)
        if self.red_mask is None:
            self.red_mask = np.zeros((shape[0], len(self.red_light_polygons)), dtype=bool)
        self.red_mask = np.asarray(self.red_mask, dtype=bool)
        if self.red_mask.shape != (shape[0], len(self.red_light_polygons)):
            raise ValueError(f"Observation.red_mask has shape {self.red_mask.shape}, "
                             f"expected ({shape[0]}, {len(self.red_light_polygons)})")
        self.red_light_bounds = shapely.bounds(self.red_light_polygons).reshape(-1, 4)
        self._derive()

    def _derive(self) -> None:
        steps, num = self.valid.shape
        corners = box_corners(self.x, self.y, self.heading, self.length, self.width, nuplan_formula=True)  # (T, N, 4, 2)
        self.radius = 0.5 * np.hypot(np.asarray(self.length, np.float64), np.asarray(self.width, np.float64))
        self.polygons = np.full((steps, num), None, dtype=object)
        if self.valid.any():
            self.polygons[self.valid] = shapely.polygons(corners[self.valid])
        # First appearance per track (tracks that never appear keep index 0; they never collide).
        first = np.argmax(self.valid, axis=0)
        cols = np.arange(num)
        self.first_speed = np.hypot(self.vx[first, cols], self.vy[first, cols])
        self.is_agent = np.asarray(self.agent_type) <= int(AgentType.BICYCLE)
        # nuPlan's is_track_stopped: static objects always, agents at <= 0.05 m/s.
        self.is_stopped = ~self.is_agent | (self.first_speed <= 0.05)

    @property
    def num_steps(self) -> int:
        return self.valid.shape[0]

    @property
    def num_tracks(self) -> int:
        return self.valid.shape[1]

    def without_initial_overlaps(self, initial_state: np.ndarray) -> "Observation":
        """A copy without every track whose box at step 0 intersects the ego footprint (NAVSIM v2 log replay)."""
        ego = shapely.polygons(ego_corners(np.asarray(initial_state, dtype=np.float64)[None], nuplan_formula=True)[0])
        hit = shapely.intersects(self.polygons[0], ego) & self.valid[0]
        if not hit.any():
            return self
        keep = ~hit
        return Observation(
            self.x[:, keep], self.y[:, keep], self.heading[:, keep], self.vx[:, keep], self.vy[:, keep],
            self.valid[:, keep], self.length[keep], self.width[keep], self.agent_type[keep],
            [t for t, k in zip(self.track_ids, keep) if k], list(self.red_light_ids), self.red_light_polygons,
            self.red_mask)

    def with_red_lights(self, lane_connector_ids: Sequence[str], polygons, red_mask: np.ndarray) -> "Observation":
        """A copy with red lights: lane-connector ids (R,), their polygons (R,) and the red mask (T, R).

        NAVSIM uses the on-route lane connectors of the scene's (uncorrected) route (spec §2.3); see
        `red_mask_from_2hz` for the status held from the 2 Hz log.
        """
        return Observation(self.x, self.y, self.heading, self.vx, self.vy, self.valid, self.length, self.width,
                           self.agent_type, list(self.track_ids), [str(i) for i in lane_connector_ids],
                           np.array(list(polygons), dtype=object), red_mask)

    @classmethod
    def from_agent_tracks(cls, tracks, red_light_ids: Sequence[str] = (), red_light_polygons=(),
                          red_mask: np.ndarray | None = None) -> "Observation":
        """From a `sim.state.AgentTracks` (T, N) and optional red lights."""
        return cls(tracks.x, tracks.y, tracks.heading, tracks.vx, tracks.vy, tracks.valid, tracks.length,
                   tracks.width, tracks.agent_type, list(tracks.track_ids), list(red_light_ids),
                   np.array(list(red_light_polygons), dtype=object), red_mask)

    @classmethod
    def from_constant_velocity_records(cls, records: Iterable[dict], num_steps: int, dt: float = 0.1,
                                       red_lights: Sequence[tuple[str, shapely.Geometry, float]] = ()) -> "Observation":
        """From the golden fixture's objects {token, type, x0, y0, heading, length, width, vx, vy, t_start, t_end}.

        A box is present at step k iff t_start <= k dt <= t_end; `red_lights` = (connector id, polygon, red
        from seconds).
        """
        records = list(records)
        t = np.arange(num_steps) * dt
        get = lambda key: np.array([float(r[key]) for r in records], dtype=np.float64)  # noqa: E731
        vx, vy = get("vx"), get("vy")
        x = get("x0") + t[:, None] * vx
        y = get("y0") + t[:, None] * vy
        valid = (t[:, None] >= get("t_start") - 1e-9) & (t[:, None] <= get("t_end") + 1e-9)
        zeros = np.zeros_like(x)
        types = np.array([int(AgentType[r["type"]]) for r in records], dtype=np.int8)
        ids = [r[0] for r in red_lights]
        polygons = np.array([r[1] for r in red_lights], dtype=object)
        red = t[:, None] >= np.array([r[2] for r in red_lights], dtype=np.float64).reshape(1, -1) - 1e-9
        return cls(np.where(valid, x, 0.0), np.where(valid, y, 0.0), np.where(valid, get("heading"), 0.0),
                   np.where(valid, vx + zeros, 0.0), np.where(valid, vy + zeros, 0.0), valid, get("length"),
                   get("width"), types, [str(r["token"]) for r in records], ids, polygons, red)


def red_mask_from_2hz(red_2hz: np.ndarray, num_steps: int = 41, repeat: int = 5) -> np.ndarray:
    """(num_steps, R) red mask at 10 Hz from the 2 Hz log statuses (F, R): each frame held 5 steps, then cut
    (MCP `_interpolate_traffic_light_status`)."""
    red_2hz = np.asarray(red_2hz, dtype=bool)
    if red_2hz.ndim != 2:
        raise ValueError(f"red_2hz must have shape (frames, lights), got {red_2hz.shape}")
    held = np.repeat(red_2hz, repeat, axis=0)[:num_steps]
    if held.shape[0] < num_steps:
        raise ValueError(f"{red_2hz.shape[0]} frames at 2 Hz cover {held.shape[0]} of {num_steps} steps")
    return held
