"""`w0sim/NavsimScene-v0`: NAVSIM-style one-shot episodes (history in, 4 s trajectory out, tracked non-reactively)."""
from __future__ import annotations

from typing import Any

import numpy as np

from metrics.pdm import VERSIONS
from sim.agent_input import NUM_HISTORY_FRAMES, AgentInput, build_agent_input, history_indices
from sim.dynamics import track_trajectories
from sim.envs.base import SceneEnv
from sim.envs.frames import FrameRenderer
from sim.envs.observation import check_action, to_observation, trajectory_space
from sim.envs.scene_scoring import SceneScorer
from sim.geometry import local_to_global
from sim.render.camera import CameraConfig
from sim.scene import Scene
from sim.state import TrajectorySampling
from sim.world_view import WorldView, logged_ego_state


class NavsimSceneEnv(SceneEnv):
    """One scene per episode. `reset` returns the agent input of the scene's current frame;
    `step(trajectory)` tracks the (num_poses, 3) trajectory with LQR + kinematic bicycle for 4 s
    against log-replayed traffic and ends the episode.

    The reward is the PDM score of the trajectory: PDMS (`pdm_version="v1.1"`, default) or EPDMS
    ("v2.2"), computed as NAVSIM does against the scene's PDM-Closed reference and log-replayed
    objects; `pdm_version=None` skips scoring (reward 0).

    info after `step`: `simulated_states` (41, 11) global ego states at 10 Hz, `trajectory_global`
    (N, 3), `scores` (every sub-score, NAVSIM's column names), `valid` and, for a non-finite
    trajectory, `failure_reason` (the episode then ends with reward 0 and no simulation).
    info after `reset`: `token`, `family`, `agent_input` (the full-precision `AgentInput`) and, with
    `privileged=True`, `world`: the `WorldView` a NAVSIM log allows (what PDM-Closed and log replay plan from).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, scenes=None, families=None, generator_config=None, camera: CameraConfig | None = None,
                 cameras: bool = True, num_history_frames: int = NUM_HISTORY_FRAMES,
                 trajectory_sampling: TrajectorySampling = TrajectorySampling(), render_mode: str | None = None,
                 pdm_version: str | None = "v1.1", privileged: bool = False, human_filter: bool = True):
        super().__init__(scenes, families, generator_config, camera, cameras, num_history_frames, trajectory_sampling,
                         render_mode)
        if pdm_version not in (None, *VERSIONS):
            raise ValueError(f"pdm_version must be None or one of {VERSIONS}, got {pdm_version!r}")
        self.pdm_version = pdm_version
        self.privileged = privileged
        self.human_filter = human_filter
        self.action_space = trajectory_space(trajectory_sampling)
        self.scene: Scene | None = None
        self.frames: FrameRenderer | None = None
        self._result: dict[str, Any] | None = None
        self.world: WorldView | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.scene = self.source.get(self.np_random, options)
        self.frames = FrameRenderer(self.scene.map, self.camera)
        self._result = None
        self._scorer: SceneScorer | None = None  # built at the first step: PDM-Closed planning costs ~40 ms
        self.agent_input = self._agent_input()
        info = {"token": self.scene.token, "family": self.scene.family, "agent_input": self.agent_input}
        self.world = WorldView.from_log(self.scene) if self.privileged else None
        if self.world is not None:
            info["world"] = self.world
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
        reward = 0.0
        if failure is None and self.pdm_version is not None:
            if self._scorer is None:
                self._scorer = SceneScorer(self.scene, self.pdm_version, self.human_filter)
            rows, reward = self._scorer.score(poses, self.sampling.interval)
            if rows.valid[0]:
                info["scores"] = {**rows.result(0), "score": reward}
                info["simulated_states"] = rows.states[0]
            else:
                failure = rows.reason[0]
        elif failure is None:
            start = logged_ego_state(self.scene.initial_ego_state)
            info["simulated_states"] = track_trajectories(start, poses[None], self.sampling.interval)[0]
        if failure is None:
            info["trajectory_global"] = local_to_global(poses, self.scene.initial_ego_state[:3])
        else:
            info["valid"] = False
            info["failure_reason"] = failure
        self._result = info
        obs = to_observation(self.agent_input, self.with_cameras)
        return obs, reward, True, False, info

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
