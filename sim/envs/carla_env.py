"""`w0sim/Carla-v0`: `ClosedLoop-v0` with a CARLA server as the backend: the same observations, actions, Leaderboard
criteria and route records, the world moved by the server (synchronous mode, Traffic Manager traffic, the hero's
camera rendered by CARLA)."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from sim.envs.backends.carla.connection import ClientFactory, connect
from sim.envs.backends.carla.settings import CarlaSettings
from sim.envs.backends.carla.simulator import CarlaSimulator
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.scene import Scene


class CleanupWarning(UserWarning):
    """Part of a route's clean-up on the server failed (usually because the server stopped answering)."""


class CarlaEnv(ClosedLoopEnv):
    """Closed-loop driving of Leaderboard routes on a CARLA server (0.9.15 / 0.9.16).

    Scenes: `split="carla:ROUTES.xml"` (with `town_dir`, the towns' .xodr, as for `w0sim eval`) or `scenes`, a list of
    scenes from CARLA towns (`scenarios.route_scenes.route_scene`). The server: `carla` (CarlaSettings), or its
    `host`, `port` and `timeout_s` alone. The server is asked for its version when the environment is made: with none
    answering, SimulatorUnavailable names the address after `timeout_s`. Every other argument is ClosedLoop-v0's.

    Each `reset` loads the route's town in synchronous mode and spawns the hero, its sensors and the traffic; the
    previous route's actors are destroyed first, and `close` destroys the last one's and puts the server back in
    asynchronous mode. A server that fails mid-route raises `sim.envs.backends.failures.SimulationCrashed` from `step`
    (the route's record so far is `env.crash_record()`). `client_factory` replaces `carla.Client` (a test's fake).
    """

    def __init__(self, scenes=None, *, split: str | None = None, town_dir=None, carla: CarlaSettings | None = None,
                 host: str | None = None, port: int | None = None, timeout_s: float | None = None,
                 client_factory: ClientFactory | None = None, **closed_loop):
        settings = carla or CarlaSettings()
        given = {k: v for k, v in (("host", host), ("port", port), ("timeout_s", timeout_s)) if v is not None}
        self.carla = replace(settings, **given) if given else settings
        if split is not None:
            if scenes is not None:
                raise ValueError("Carla-v0: pass scenes or split, not both")
            from scenarios.splits import resolve_split

            scenes = resolve_split(split, town_dir=town_dir)
        if scenes is None:
            raise ValueError("Carla-v0 drives routes of CARLA towns: pass split='carla:ROUTES.xml' (and town_dir) or "
                             "scenes=[route scenes]")
        self.client_factory = client_factory
        self.cleanup_problems: list[str] = []
        super().__init__(scenes=scenes, **closed_loop)
        connect(self.carla, client_factory)  # fail now, naming the address, when no server answers (each reset connects)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """ClosedLoop-v0's reset on the server; `info["background_traffic"]` counts the road users that spawned (a
        place another actor holds is skipped)."""
        obs, info = super().reset(seed=seed, options=options)
        info["background_traffic"] = self.sim.spawned_traffic
        return obs, info

    def _progress_info(self) -> dict:
        """ClosedLoop-v0's running counts, and the lane markings the hero has crossed (the lane invasion sensor's;
        the Leaderboard does not score them)."""
        return {**super()._progress_info(), "lane_invasions": self.sim.lane_invasions}

    def _make_simulator(self, scene: Scene) -> CarlaSimulator:
        return CarlaSimulator(scene, self.carla, self.camera if self.with_cameras else None, self.client_factory)

    def close_simulator(self) -> None:
        """Clean the last route up on the server; what could not be done is warned about (and kept in
        `cleanup_problems`): a server left synchronous or with our actors on it drives the next route wrongly."""
        sim, self.sim = getattr(self, "sim", None), None
        if sim is None:
            return
        self.cleanup_problems = sim.close()
        if self.cleanup_problems:
            warnings.warn(f"cleaning up the route on the CARLA server at {self.carla.address}: "
                          f"{'; '.join(self.cleanup_problems)}", CleanupWarning, stacklevel=2)

    def _render_camera(self, step: int) -> np.ndarray:
        return self.sim.camera_frame(step)

    def crash_record(self, external_failure: str) -> dict:
        """The route record so far, ended by `external_failure` (after a SimulationCrashed from `step`)."""
        return self._route_record(external_failure=external_failure)
