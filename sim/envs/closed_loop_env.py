"""`w0sim/ClosedLoop-v0`: the ego drives its route among reactive or replayed traffic, stepping at 10 Hz."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from metrics.driving_score import FAILURE_AGENT_CRASHED, is_route_completed
from scenarios.commands import command_at
from sim.agent_input import HISTORY_STRIDE, NUM_HISTORY_FRAMES, AgentInput, build_agent_input, history_indices
from sim.envs.backends.builtin import BuiltinSimulator, SimulatorConfig
from sim.envs.base import SceneEnv
from sim.envs.frames import FrameRenderer
from sim.envs.leaderboard_monitor import LeaderboardMonitor
from sim.envs.observation import check_action, control_space, to_observation, trajectory_space
from sim.geometry import local_to_global
from sim.render.camera import CameraConfig
from sim.route import route_index_from_ego
from sim.scene import STEP_S, Scene
from sim.state import AgentSlice, TrajectorySampling
from sim.world_view import WorldView, copy_slice

CONTROL_MODES = ("trajectory", "direct")
STEPS_PER_PLAN = 5  # a trajectory is followed for 0.5 s (2 Hz planning, 10 Hz physics)


class ClosedLoopEnv(SceneEnv):
    """Closed-loop driving of a scene's route.

    control="trajectory": the action is a (num_poses, 3) trajectory in the current ego frame,
    tracked by LQR for 0.5 s (5 physics steps). control="direct": the action is (acceleration,
    steering rate), applied for one 0.1 s step.

    The episode terminates when the route is completed (the Leaderboard's rule: over 99 % done and
    the goal within 10 m),
    on a collision if `terminate_on_collision`, or on a non-finite action (`failure_reason` in
    info); it is truncated at `max_time_s` (default: time to drive the route at 3 m/s, + 60 s for
    red lights and queues).
    Reward: metres of route progress in the step. info carries the step's `events` (one dict per
    physics step: collisions with track id and type, off-road, red lights crossed, stop signs run,
    route progress),
    `route_fraction` and running counts.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, scenes=None, families=None, generator_config=None, traffic: str = "reactive",
                 control: str = "trajectory", terminate_on_collision: bool = False, max_time_s: float | None = None,
                 camera: CameraConfig | None = None, cameras: bool = True,
                 num_history_frames: int = NUM_HISTORY_FRAMES, trajectory_sampling: TrajectorySampling = TrajectorySampling(),
                 render_mode: str | None = None, privileged: bool = False):
        if control not in CONTROL_MODES:
            raise ValueError(f"control must be one of {CONTROL_MODES}, got {control!r}")
        super().__init__(scenes, families, generator_config, camera, cameras, num_history_frames, trajectory_sampling,
                         render_mode)
        self.sim_config = SimulatorConfig(traffic=traffic)
        self.control = control
        self.terminate_on_collision = terminate_on_collision
        self.max_time_s = max_time_s
        self.privileged = privileged
        self.action_space = trajectory_space(trajectory_sampling) if control == "trajectory" else control_space()
        # One env step is 0.5 s with trajectories, 0.1 s with direct control.
        self.metadata = {**self.metadata, "render_fps": 2 if control == "trajectory" else 10}
        self.sim: BuiltinSimulator | None = None
        self.world: WorldView | None = None

    # --- gymnasium API -----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        scene = self.source.get(self.np_random, options)
        self.scene: Scene = scene
        self.close_simulator()
        self.sim = self._make_simulator(scene)
        self.frames = FrameRenderer(scene.map, self.camera)
        self._camera_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._planned: np.ndarray | None = None
        self._counts = {"collisions": 0, "offroad_steps": 0, "red_lights": 0, "stop_signs": 0}
        self.leaderboard = LeaderboardMonitor(scene.map, scene.route, self.sim.route, scene.light_ids, scene.route_points)
        self._progress_m = 0.0
        route_left = self.sim.route.remaining_m
        self._time_limit = self.max_time_s if self.max_time_s is not None else route_left / 3.0 + 60.0
        self._done = False
        self._route_reached = 0  # route lanes the ego has left behind (a route may pass a junction twice)
        self._agents_before: tuple[int, AgentSlice] | None = None  # the objects at the last decision
        self.agent_input = self._agent_input()
        info = {"token": scene.token, "family": scene.family, "agent_input": self.agent_input,
                "route_length_m": route_left, **self._world_info()}
        return to_observation(self.agent_input, self.with_cameras), info

    def step(self, action):
        if self.sim is None:
            raise RuntimeError("ClosedLoopEnv.step called before reset")
        if self._done:
            raise RuntimeError("ClosedLoopEnv.step called after the episode ended; call reset")
        shape = (self.sampling.num_poses, 3) if self.control == "trajectory" else (2,)
        array, failure = check_action(action, shape, f"ClosedLoop-v0 {self.control} action")
        info: dict[str, Any] = {"token": self.scene.token, "events": []}
        if failure is not None:
            self._done = True
            info.update(failure_reason=failure, **self._progress_info(),
                        route_record=self._route_record(external_failure=FAILURE_AGENT_CRASHED))
            return to_observation(self.agent_input, self.with_cameras), 0.0, True, False, info

        before = self.sim.route.s[self.sim.route.index]
        if self.control == "trajectory":
            self.sim.plan(array, self.sampling.interval)
            self._planned = local_to_global(array, self.sim.ego[:3])
            steps = [None] * STEPS_PER_PLAN
        else:
            steps = [array]
        collided = False
        info["leaderboard_events"] = []
        for control in steps:
            events = self.sim.step(control)
            info["events"].append(events.as_dict())
            collided |= bool(events.collisions)
            self._counts["collisions"] += len(events.collisions)
            self._counts["offroad_steps"] += int(events.offroad)
            self._counts["red_lights"] += len(events.red_lights)
            self._counts["stop_signs"] += len(events.stop_signs)
            progressed, self._progress_m = events.route_progress_m - self._progress_m, events.route_progress_m
            raised = self.leaderboard.update(events, self.sim.ego, self.sim.agents(), progressed, self.sim.step_index)
            info["leaderboard_events"].extend(e.message for e in raised)
            if self.with_cameras:  # every step, so an episode that ends mid-plan still has its history frames (~1 ms)
                self._camera(self.sim.step_index)
            if self._goal_reached() or (collided and self.terminate_on_collision) or self.leaderboard.ended_by:
                break
        reward = float(self.sim.route.s[self.sim.route.index] - before)
        # The Leaderboard ends a route on deviation or when the ego is blocked.
        terminated = self._goal_reached() or (collided and self.terminate_on_collision) or self.leaderboard.ended_by is not None
        truncated = not terminated and self.sim.time_s >= self._time_limit - 1e-9
        self._done = terminated or truncated
        self.agent_input = self._agent_input()
        record = self._route_record(timed_out=truncated)
        info.update(self._progress_info(), route_completed=self._goal_reached(),
                    driving_score=record["scores"]["score_composed"], running_record=record)
        if self._done:
            info["route_record"] = record
        info.update(agent_input=self.agent_input, **self._world_info())
        return to_observation(self.agent_input, self.with_cameras), reward, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array" or self.sim is None:
            return None
        sim = self.sim
        return self.frames.composite(sim.ego, sim.agents(), dict(zip(self.scene.light_ids, sim.light_status().tolist())),
                                     self.scene.route, planned=self._planned,
                                     executed=np.array(sim.ego_log[self.scene.current_index:]))

    def close(self):
        self.close_simulator()
        super().close()

    # --- backend -----------------------------------------------------------------------------------

    def _make_simulator(self, scene: Scene):
        """The backend that drives `scene` (the embedded simulator; `CarlaEnv` drives a CARLA server)."""
        return BuiltinSimulator(scene, self.sim_config)

    def close_simulator(self) -> None:
        """Release the current episode's backend (a server backend destroys what it spawned); a no-op for the embedded one."""

    def _render_camera(self, step: int) -> np.ndarray:
        """The front camera at a log step that is now or before the episode (the embedded renderer)."""
        if step <= self.scene.current_index:
            return self.frames.log_camera(self.scene, step)
        lights = dict(zip(self.scene.light_ids, self.sim.light_status().tolist()))
        return self.frames.camera(self.sim.ego, self.sim.agents(), lights)

    # --- helpers ---------------------------------------------------------------------------------

    def _route_record(self, timed_out: bool = False, external_failure: str = "") -> dict:
        """The Leaderboard route record of the episode so far (final once the episode ends)."""
        return self.leaderboard.route_record(0, self.scene.token, self.sim.time_s, timed_out=timed_out,
                                             frame=self.sim.step_index, external_failure=external_failure)

    def _goal_reached(self) -> bool:
        """The Leaderboard's rule: > 99 % of the route done and the goal within reach."""
        return is_route_completed(self.leaderboard.completion_percent(), self.sim.route.remaining_m)

    def _progress_info(self) -> dict[str, Any]:
        done_m = self.leaderboard.completion_m
        return {"time_s": self.sim.time_s, "route_progress_m": done_m,
                "route_fraction": self.leaderboard.completion_fraction,
                **self._counts}

    def _agent_input(self) -> AgentInput:
        sim = self.sim
        now = sim.step_index
        steps = history_indices(now, self.num_history_frames)
        history = np.array(sim.ego_log)[steps]
        cameras = np.stack([self._camera(int(k)) for k in steps]) if self.with_cameras else None
        if now < self.scene.num_steps:
            command = int(self.scene.driving_command[now])
        else:  # past the log: NAVSIM's rule on the route from where the ego has got to
            route = sim.route
            command = command_at(route.points, route.s, float(route.s[route.index]), sim.ego)
        return build_agent_input(history, command, self.scene.command_text, cameras)

    def _world_info(self) -> dict[str, Any]:
        """{"world": the live world view} for a privileged env's next decision (also kept as `self.world`), else {}."""
        if not self.privileged or self._done:
            self.world = None
            return {}
        sim, scene = self.sim, self.scene
        self._route_reached += route_index_from_ego(scene.map, scene.route[self._route_reached:], sim.ego)
        agents = copy_slice(sim.agents())
        before_step, before = self._agents_before or (sim.step_index, None)
        self._agents_before = (sim.step_index, agents)
        self.world = WorldView(scene.map, scene.route[self._route_reached:], sim.ego.copy(), agents, before,
                               (sim.step_index - before_step) * STEP_S, list(scene.light_ids), sim.light_status(),
                               scene.ego_log, sim.step_index, sim.time_s)
        return {"world": self.world}

    def _camera(self, step: int) -> np.ndarray:
        """Camera frame at a log step: the recorded log before the episode, the simulation after."""
        if step not in self._camera_cache:
            if step > self.scene.current_index and step != self.sim.step_index:
                raise RuntimeError(f"camera frame of step {step} was not rendered when it was current")
            self._camera_cache[step] = self._render_camera(step)
            while len(self._camera_cache) > (self.num_history_frames - 1) * HISTORY_STRIDE + 1:
                self._camera_cache.popitem(last=False)
        return self._camera_cache[step]
