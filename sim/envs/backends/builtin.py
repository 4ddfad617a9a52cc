"""The embedded closed-loop simulator: ego (LQR + kinematic bicycle), reactive or replayed traffic, lights, events."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.dynamics import BatchLQRTracker, KinematicBicycle, TrackedEgo, interpolate_trajectory_states
from sim.envs.events import Collision, MapCriteria, RouteProgress, StepEvents, agent_type_name, ego_collisions
from sim.geometry import PACIFICA, VehicleParameters, ego_corners
from sim.scene import STEP_S, Scene
from sim.state import AgentSlice, AgentType, TrafficLightStatus
from sim.traffic import AgentPaths, IDMTraffic, Obstacles, SignalPlan, attach_to_lanes, log_replay
from sim.world_view import copy_slice

TRAFFIC_MODES = ("reactive", "replay")


@dataclass(frozen=True)
class SimulatorConfig:
    """`traffic`: "reactive" (vehicles and cyclists drive IDM along their logged lanes, yielding to
    the ego) or "replay" (the log, extended at constant velocity past its end)."""

    traffic: str = "reactive"
    vehicle: VehicleParameters = PACIFICA
    detect_events: bool = True

    def __post_init__(self) -> None:
        if self.traffic not in TRAFFIC_MODES:
            raise ValueError(f"traffic must be one of {TRAFFIC_MODES}, got {self.traffic!r}")


class BuiltinSimulator:
    """One scene simulated at 10 Hz from its current frame. Not thread-safe; one per environment."""

    def __init__(self, scene: Scene, config: SimulatorConfig = SimulatorConfig()):
        self.scene = scene
        self.config = config
        self.bicycle = KinematicBicycle(wheel_base=config.vehicle.wheel_base)
        self.tracker = BatchLQRTracker(wheel_base=config.vehicle.wheel_base)
        self._plans = [SignalPlan.from_dict(p) for p in scene.metadata.get("signal_plans", [])]
        self._signal_offset = float(scene.metadata.get("signal_time_offset_s", 0.0))
        self.reset()

    # --- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        scene = self.scene
        self.step_index = scene.current_index
        self.ego = scene.initial_ego_state.copy()
        self.ego_log = [s.copy() for s in scene.ego_log[: scene.current_index + 1]]
        self._tracked = TrackedEgo(self.ego, self.tracker, self.bicycle, STEP_S)
        self._planned = False
        self._current = copy_slice(scene.agents.at(self.step_index))  # updated in place as the traffic moves
        self._continued_lights = np.zeros((0, len(scene.light_ids)), dtype=np.int8)
        self._setup_traffic()
        self.route = episode_route(scene)
        self.route.reset(self.ego[:2])
        self.criteria = MapCriteria(scene.map, scene.light_ids, self.route)
        self.events: list[StepEvents] = []
        self._in_contact: set[str] = set()

    def _setup_traffic(self) -> None:
        scene, now = self.scene, self._current
        self.idm: IDMTraffic | None = None
        self._idm_index = np.zeros(0, dtype=np.int64)
        if self.config.traffic != "reactive":
            return
        movable = (now.agent_type == AgentType.VEHICLE) | (now.agent_type == AgentType.BICYCLE)
        idx = np.flatnonzero(now.valid & movable)
        if idx.size == 0:
            return
        chains, s, lateral = attach_to_lanes(scene.map, scene.agents, self.step_index, idx)
        logged = np.where(scene.agents.valid[:, idx], np.hypot(scene.agents.vx[:, idx], scene.agents.vy[:, idx]), 0.0)
        logged_top = logged.max(axis=0)
        # Parked vehicles (never moving, beside the lane) stay where the log has them.
        keep = (logged_top > 0.3) | (np.abs(lateral) < 1.5)
        idx, s, lateral, logged_top = idx[keep], s[keep], lateral[keep], logged_top[keep]
        chains = [c for c, k in zip(chains, keep) if k]
        if idx.size == 0:
            return
        speed = now.speed[idx]
        limits = np.array([scene.map.lane(c[0]).speed_limit for c in chains])
        cyclist = now.agent_type[idx] == AgentType.BICYCLE
        desired = np.where(cyclist, np.maximum(logged_top, 4.0), np.maximum(logged_top, 0.9 * limits))
        # Tracks that stand still for the whole log are static obstacles, found on each path once.
        others = np.setdiff1d(np.arange(len(now.x)), idx)
        agents = scene.agents
        still = agents.valid[:, others].all(axis=0) & (np.hypot(agents.vx[:, others], agents.vy[:, others]).max(axis=0) < 0.05)
        statics = others[still]
        static_obstacles = Obstacles(now.x[statics], now.y[statics], now.heading[statics], np.zeros(statics.size),
                                     now.length[statics], now.width[statics])
        self.idm = IDMTraffic(scene.map, AgentPaths.build(scene.map, chains, lateral), s=s, v=speed,
                              desired_speed=desired, length=now.length[idx], width=now.width[idx],
                              light_ids=scene.light_ids, static_obstacles=static_obstacles)
        self._idm_index = idx
        # Obstacle buffers for the IDM agents: the moving other tracks, then the ego (filled each step).
        self._others = others[~still]
        size = len(self._others) + 1
        self._obstacles = Obstacles(np.zeros(size), np.zeros(size), np.zeros(size), np.zeros(size),
                                    np.append(now.length[self._others], self.config.vehicle.length),
                                    np.append(now.width[self._others], self.config.vehicle.width))

    @property
    def time_s(self) -> float:
        return (self.step_index - self.scene.current_index) * STEP_S

    def light_status(self, step: int | None = None) -> np.ndarray:
        """(L,) light states at a log step: the log while it lasts, then the signal plans, else the last state."""
        step = self.step_index if step is None else step
        scene = self.scene
        if step < scene.num_steps or not scene.light_ids:
            return scene.light_status[min(step, scene.num_steps - 1)]
        if not self._plans:
            return scene.light_status[-1]
        beyond = step - scene.num_steps
        while beyond >= len(self._continued_lights):  # extend the plan's table a minute at a time
            start = scene.num_steps + len(self._continued_lights)
            times = self._signal_offset + (start + np.arange(600)) * STEP_S
            table = np.concatenate([plan.status_at(times) for plan in self._plans], axis=1)
            self._continued_lights = np.concatenate([self._continued_lights, table])
        return self._continued_lights[beyond]

    def agents(self) -> AgentSlice:
        """All tracks of the scene at the current step (IDM-driven ones at their simulated poses)."""
        return self._current

    # --- stepping ------------------------------------------------------------------------------

    def plan(self, local_poses: np.ndarray, interval: float) -> None:
        """Set a trajectory (N, 3) in the current ego frame for the LQR tracker to follow."""
        self._tracked.plan(interpolate_trajectory_states(self.ego, local_poses, interval)[0])
        self._planned = True

    def step(self, control: np.ndarray | None = None) -> StepEvents:
        """Advance 0.1 s. `control` = (acceleration, steering rate) overrides the tracked plan."""
        if control is None and not self._planned:
            raise RuntimeError("BuiltinSimulator.step: call plan() first or pass a control")
        previous = self.ego
        self.ego = self._tracked.step(control).copy()
        self.step_index += 1
        self._step_traffic(previous)
        self.ego_log.append(self.ego)
        events = StepEvents(time_s=self.time_s)
        if self.config.detect_events:
            self._detect(previous, events)
        self.events.append(events)
        return events

    def _step_traffic(self, previous_ego: np.ndarray) -> None:
        replay = log_replay(self.scene.agents, self.step_index)
        now = self._current
        for name in ("x", "y", "heading", "vx", "vy", "valid"):
            getattr(now, name)[:] = getattr(replay, name)
        if self.idm is None:
            return
        # IDM agents must not run into the ego or the replayed objects (pedestrians, statics);
        # absent objects are parked far away so the buffers keep their size.
        obs, k = self._obstacles, self._others
        far = ~now.valid[k]
        obs.x[:-1] = np.where(far, 1e9, now.x[k])
        obs.y[:-1] = np.where(far, 1e9, now.y[k])
        obs.heading[:-1], obs.speed[:-1] = now.heading[k], np.hypot(now.vx[k], now.vy[k])
        c, s = np.cos(previous_ego[2]), np.sin(previous_ego[2])
        offset = self.config.vehicle.rear_axle_to_center
        obs.x[-1], obs.y[-1] = previous_ego[0] + offset * c, previous_ego[1] + offset * s
        obs.heading[-1], obs.speed[-1] = previous_ego[2], previous_ego[3]
        self.idm.step(STEP_S, obs, self.light_status(self.step_index - 1))
        x, y, h = self.idm.poses()
        vx, vy = self.idm.velocities()
        k = self._idm_index
        now.x[k], now.y[k], now.heading[k], now.vx[k], now.vy[k] = x, y, h, vx, vy
        now.valid[k] = self.idm.active

    def _detect(self, previous: np.ndarray, events: StepEvents) -> None:
        vehicle = self.config.vehicle
        now = self._current
        corners = ego_corners(self.ego, vehicle)
        touching = ego_collisions(corners, now)
        # A collision is reported when contact begins, not for every step the boxes stay in contact.
        for j in touching:
            if now.track_ids[j] not in self._in_contact:
                events.collisions.append(Collision(now.track_ids[j], agent_type_name(now.agent_type[j]), float(self.ego[3])))
        self._in_contact = {now.track_ids[j] for j in touching}
        self.criteria.judge(events, previous, self.ego, corners, self.light_status(), vehicle)


ROUTE_END_MARGIN_M = 15.0


def episode_route(scene: Scene) -> RouteProgress:
    """The route an episode of `scene` is measured along: its dense route when it has one, else its route lanes'
    centre line up to the goal (`closed_loop_route`)."""
    if scene.route_points is not None:
        return RouteProgress(scene.route_points[:, :2])
    return RouteProgress(closed_loop_route(scene.map.route_polyline(scene.route)))


def closed_loop_route(polyline: np.ndarray) -> np.ndarray:
    """The route a closed-loop episode must complete along a route's lanes: its goal is ROUTE_END_MARGIN_M before
    the end, as generated routes run to the map's edge and the ego must be able to drive past the goal. (A scene
    with `route_points` has its dense route already.)"""
    seg = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if cum[-1] < 4 * ROUTE_END_MARGIN_M:
        return polyline
    keep = cum <= cum[-1] - ROUTE_END_MARGIN_M
    return polyline[keep]


__all__ = ["BuiltinSimulator", "SimulatorConfig", "TRAFFIC_MODES", "TrafficLightStatus", "closed_loop_route", "episode_route"]
