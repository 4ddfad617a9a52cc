"""Fixed-time traffic-signal plans: phases of light ids cycling green, yellow, all-red."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.state import TrafficLightStatus


@dataclass(frozen=True)
class SignalPlan:
    """A fixed-time junction controller: phases of light ids, green -> yellow -> all-red, cycling."""

    light_ids: tuple[str, ...]
    phases: tuple[tuple[str, ...], ...]
    green_s: float = 10.0
    yellow_s: float = 3.0
    all_red_s: float = 2.0  # lets turning traffic clear the junction
    offset_s: float = 0.0

    def as_dict(self) -> dict:
        return {"light_ids": list(self.light_ids), "phases": [list(p) for p in self.phases], "green_s": self.green_s,
                "yellow_s": self.yellow_s, "all_red_s": self.all_red_s, "offset_s": self.offset_s}

    @classmethod
    def from_dict(cls, data: dict) -> "SignalPlan":
        return cls(tuple(data["light_ids"]), tuple(tuple(p) for p in data["phases"]), data["green_s"],
                   data["yellow_s"], data["all_red_s"], data["offset_s"])

    @property
    def cycle_s(self) -> float:
        return len(self.phases) * (self.green_s + self.yellow_s + self.all_red_s)

    def status_at(self, times: np.ndarray) -> np.ndarray:
        """(T, L) int8 TrafficLightStatus of every light at the given times (seconds)."""
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        period = self.green_s + self.yellow_s + self.all_red_s
        t = (times + self.offset_s) % self.cycle_s
        phase = (t // period).astype(int)
        within = t - phase * period
        status = np.full((times.size, len(self.light_ids)), TrafficLightStatus.RED, dtype=np.int8)
        for p, members in enumerate(self.phases):
            cols = [self.light_ids.index(m) for m in members]
            active = phase == p
            status[np.ix_(active & (within < self.green_s), cols)] = TrafficLightStatus.GREEN
            status[np.ix_(active & (within >= self.green_s) & (within < self.green_s + self.yellow_s), cols)] = (
                TrafficLightStatus.YELLOW
            )
        return status


def light_status_table(plans: list[SignalPlan], times: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(light ids, (T, L) status) of all plans of a map."""
    ids = [lid for plan in plans for lid in plan.light_ids]
    if not plans:
        return ids, np.zeros((np.size(times), 0), dtype=np.int8)
    return ids, np.concatenate([plan.status_at(times) for plan in plans], axis=1)
