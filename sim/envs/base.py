"""What both environments share: the scene source, the camera, history frames and the observation space."""
from __future__ import annotations

from typing import Sequence

import gymnasium as gym

from scenarios.generator import GeneratorConfig
from sim.agent_input import NUM_HISTORY_FRAMES
from sim.envs.observation import observation_space
from sim.envs.scene_source import SceneSource
from sim.render.camera import CameraConfig
from sim.state import TrajectorySampling


class SceneEnv(gym.Env):
    """Base of the w0sim environments; subclasses set `action_space` and implement reset/step/render."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, scenes=None, families: Sequence[str] | None = None, generator_config: GeneratorConfig | None = None,
                 camera: CameraConfig | None = None, cameras: bool = True, num_history_frames: int = NUM_HISTORY_FRAMES,
                 trajectory_sampling: TrajectorySampling = TrajectorySampling(), render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        kwargs = {} if families is None else {"families": families}
        self.source = SceneSource(scenes, generator_config=generator_config, **kwargs)
        self.camera = camera or CameraConfig()
        self.with_cameras = cameras
        self.num_history_frames = num_history_frames
        self.sampling = trajectory_sampling
        self.render_mode = render_mode
        image_hw = (self.camera.height, self.camera.width) if cameras else None
        self.observation_space = observation_space(num_history_frames, image_hw)
