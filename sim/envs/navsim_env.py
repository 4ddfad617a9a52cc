"""`w0sim/NavsimScene-v0`: NAVSIM-style one-shot episodes (history in, 4 s trajectory out, tracked non-reactively)."""
from __future__ import annotations

from typing import Any

import numpy as np

from scenarios.scene import Scene
from sim.agent_input import NUM_HISTORY_FRAMES, AgentInput, build_agent_input, history_indices
from sim.dynamics import track_trajectories
from sim.envs.frames import FrameRenderer
from sim.envs.base import SceneEnv
from sim.envs.observation import check_action, to_observation, trajectory_space
from sim.geometry import local_to_global
from sim.render.camera import CameraConfig
from sim.state import TrajectorySampling


class NavsimSceneEnv(SceneEnv):
    """One scene per episode. `reset` returns the agent input of the scene's current frame;
    `step(trajectory)` tracks the (num_poses, 3) trajectory with LQR + kinematic bicycle for 4 s
    against log-replayed traffic and ends the episode.

    info after `step`: `simulated_states` (41, 11) global ego states at 10 Hz, `trajectory_global`
    (N, 3), `valid` and, for a non-finite trajectory, `failure_reason` (the episode then ends with
    reward 0 and no simulation). The reward is 0 until a scorer is attached (`metrics`).
    info after `reset`: `token`, `family`, `agent_input` (the full-precision `AgentInput`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, scenes=None, families=None, generator_config=None, camera: CameraConfig | None = None,
                 cameras: bool = True, num_history_frames: int = NUM_HISTORY_FRAMES,
                 trajectory_sampling: TrajectorySampling = TrajectorySampling(), render_mode: str | None = None):
        super().__init__(scenes, families, generator_config, camera, cameras, num_history_frames, trajectory_sampling,
                         render_mode)
        self.action_space = trajectory_space(trajectory_sampling)
        self.scene: Scene | None = None
        self.frames: FrameRenderer | None = None
        self._result: dict[str, Any] | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.scene = self.source.get(self.np_random, options)
        self.frames = FrameRenderer(self.scene.map, self.camera)
        self._result = None
        self.agent_input = self._agent_input()
        info = {"token": self.scene.token, "family": self.scene.family, "agent_input": self.agent_input}
        return to_observation(self.agent_input, self.with_cameras), info

    def _agent_input(self) -> AgentInput:
        scene = self.scene
        steps = history_indices(scene.current_index, self.num_history_frames)
        cameras = np.stack([self.frames.log_camera(scene, int(k)) for k in steps]) if self.with_cameras else None
        return build_agent_input(scene.ego_log[steps], int(scene.driving_command[scene.current_index]),
                                 scene.command_text, cameras)

    def step(self, action):
        if self.scene is None:
            raise RuntimeError("NavsimSceneEnv.step called before reset")
        if self._result is not None:
            raise RuntimeError("NavsimSceneEnv episodes are one step long; call reset")
        poses, failure = check_action(action, (self.sampling.num_poses, 3), "NavsimScene-v0 trajectory")
        info: dict[str, Any] = {"token": self.scene.token, "family": self.scene.family, "valid": failure is None}
        if failure is None:
            states = track_trajectories(self.scene.initial_ego_state, poses[None], self.sampling.interval)[0]
            info["simulated_states"] = states
            info["trajectory_global"] = local_to_global(poses, self.scene.initial_ego_state[:3])
        else:
            info["failure_reason"] = failure
        self._result = info
        obs = to_observation(self.agent_input, self.with_cameras)
        return obs, 0.0, True, False, info

    def render(self):
        if self.render_mode != "rgb_array" or self.scene is None:
            return None
        scene = self.scene
        planned = self._result.get("trajectory_global") if self._result else None
        executed = self._result.get("simulated_states") if self._result else None
        return self.frames.composite(
            scene.initial_ego_state, scene.agents.at(scene.current_index), scene.light_status_at(scene.current_index),
            scene.route, planned=planned, executed=executed, logged=scene.ego_log[scene.current_index:],
        )
