"""Where the CARLA server is and how a route runs on it: address, timeouts, tick length, Traffic Manager, restarts."""
from __future__ import annotations

import math
from dataclasses import dataclass

from sim.scene import STEP_S

#: Server versions the backend drives: those of the Leaderboard 2.x and Bench2Drive (0.9.15) and the newest 0.9
#: release (0.9.16). The UE5 line (0.10) is not ready for these benchmarks.
SUPPORTED_SERVER_VERSIONS = ("0.9.15", "0.9.16")
MAX_SUBSTEP_DELTA_S = 0.01  # CARLA's physics substepping defaults: a tick may be at most 10 substeps of 0.01 s
MAX_SUBSTEPS = 10


@dataclass(frozen=True)
class CarlaSettings:
    """`timeout_s`: every RPC's limit (`client.set_timeout`, the Leaderboard's --timeout), each tick's deadline (a
    tick past it is a simulation crash, whether or not the server answers) and how long a connection may take.
    `fixed_delta_s`: the synchronous tick, 0.05 s as the Leaderboard's 20 Hz (or 0.1 s); the environment's 0.1 s step
    is a whole number of ticks. `sensor_timeout_s`: how long a tick's camera frames may take (the Leaderboard's 10 s).
    `traffic_manager_seed`: the TM's random device seed, set before traffic spawns, as the Leaderboard does.
    `restart_command`: a shell command that (re)starts the server, run after a crash before the next route;
    `restart_wait_s`: how long the server then has to answer. `warmup_ticks`: ticks after the sensors spawn whose
    data is dropped (some sensors miss the first ticks), before the route's clock starts."""

    host: str = "localhost"
    port: int = 2000
    timeout_s: float = 300.0  # the Leaderboard's --timeout default
    traffic_manager_port: int = 8000
    traffic_manager_seed: int = 0
    fixed_delta_s: float = 0.05
    sensor_timeout_s: float = 10.0
    hero_blueprint: str = "vehicle.lincoln.mkz_2020"
    background_traffic: bool = True
    restart_command: str | None = None
    restart_wait_s: float = 120.0
    warmup_ticks: int = 10

    def __post_init__(self) -> None:
        problems = []
        if not self.host:
            problems.append("host is empty")
        for name in ("port", "traffic_manager_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 65535:
                problems.append(f"{name} must be an integer in 1..65535, got {value!r}")
        for name in ("timeout_s", "sensor_timeout_s", "restart_wait_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                problems.append(f"{name} must be a positive number of seconds, got {value!r}")
        delta = self.fixed_delta_s
        if not isinstance(delta, (int, float)) or not 0 < delta <= MAX_SUBSTEP_DELTA_S * MAX_SUBSTEPS:
            problems.append(f"fixed_delta_s must be in (0, {MAX_SUBSTEP_DELTA_S * MAX_SUBSTEPS:g}] s (CARLA's "
                            f"substepping limit), got {delta!r}")
        elif abs(STEP_S / delta - round(STEP_S / delta)) > 1e-9:
            problems.append(f"fixed_delta_s must divide the environment's {STEP_S:g} s step (0.05 or 0.1), got {delta!r}")
        if not isinstance(self.warmup_ticks, int) or self.warmup_ticks < 0:
            problems.append(f"warmup_ticks must be a non-negative integer, got {self.warmup_ticks!r}")
        if not isinstance(self.traffic_manager_seed, int) or not 0 <= self.traffic_manager_seed < 2**31:
            problems.append(f"traffic_manager_seed must be an integer in 0..2**31 - 1, got {self.traffic_manager_seed!r}")
        if problems:
            raise ValueError("CarlaSettings: " + "; ".join(problems))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ticks_per_step(self) -> int:
        """Server ticks per environment step (0.1 s)."""
        return int(round(STEP_S / self.fixed_delta_s))


__all__ = ["CarlaSettings", "SUPPORTED_SERVER_VERSIONS"]
