"""The DriveVLA-W0 agent: the one bridge between a trained policy and the simulator's agent input (imported lazily: it needs torch).

Agent input -> model tensors: the history camera frames one `frame_interval_s` apart (current last),
area-downsampled to the policy's frame size exactly as the training data was (`downsample_frames`);
longitudinal speed and acceleration of the current frame; the driving command and its text. The model's
8 poses at 0.5 s come back as the `Trajectory`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agents.base import Agent, SensorConfig
from policies.model import DriveVLAW0ForDriving
from sim.scene import STEP_S, Scene
from sim.agent_input import HISTORY_STRIDE, NUM_HISTORY_FRAMES, AgentInput
from sim.render.camera import downsample_frames
from sim.state import Trajectory, TrajectorySampling


class CheckpointError(ValueError):
    """A checkpoint folder cannot be loaded: the message names the folder and what is wrong."""


def load_policy(checkpoint: str | Path, device: str | torch.device = "cpu") -> DriveVLAW0ForDriving:
    """`DriveVLAW0ForDriving.from_pretrained(checkpoint)` in eval mode, or a CheckpointError that says why."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} is not a folder")
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).exists():
            raise CheckpointError(f"checkpoint {folder} has no {name} (expected a save_pretrained folder)")
    try:
        model = DriveVLAW0ForDriving.from_pretrained(folder)
    except Exception as err:  # transformers / safetensors raise many types for a damaged folder
        raise CheckpointError(f"checkpoint {folder} cannot be loaded: {type(err).__name__}: {err}") from err
    return model.to(device).eval()


class DriveVLAW0Agent(Agent):
    """DriveVLA-W0 from a checkpoint folder; deterministic for a seed (flow-matching noise)."""

    def __init__(self, checkpoint: str | Path, trajectory_sampling: TrajectorySampling = TrajectorySampling(),
                 device: str = "cpu", seed: int = 0):
        super().__init__(trajectory_sampling)
        self.checkpoint, self.device, self.seed = Path(checkpoint), device, seed
        self.model: DriveVLAW0ForDriving | None = None

    def initialize(self) -> None:
        if self.model is not None:
            return
        self.model = load_policy(self.checkpoint, self.device)
        c = self.model.config
        if (c.num_poses, c.pose_interval_s) != (self.trajectory_sampling.num_poses, self.trajectory_sampling.interval):
            raise CheckpointError(f"checkpoint {self.checkpoint} plans {c.num_poses} poses at {c.pose_interval_s} s; "
                                  f"the agent was asked for {self.trajectory_sampling}")
        if self._frame_indices(NUM_HISTORY_FRAMES) is None:
            raise CheckpointError(f"checkpoint {self.checkpoint} wants {c.num_history_frames} frames "
                                  f"{c.frame_interval_s} s apart, more than the {NUM_HISTORY_FRAMES} history frames")

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig(cameras=True)

    def _frame_indices(self, available: int) -> np.ndarray | None:
        """Positions in the agent input's frames (0.5 s apart) of the frames the policy reads, oldest first."""
        c = self.model.config
        stride = c.frame_interval_s / (HISTORY_STRIDE * STEP_S)
        if abs(stride - round(stride)) > 1e-6:
            return None
        picks = available - 1 - round(stride) * np.arange(c.num_history_frames - 1, -1, -1)
        return picks if picks.min() >= 0 else None

    def model_inputs(self, agent_input: AgentInput) -> dict:
        """The policy's inputs (batch of one) for an agent input."""
        if agent_input.cameras is None:
            raise ValueError("DriveVLAW0Agent needs camera frames (make the environment with cameras=True)")
        c = self.model.config
        picks = self._frame_indices(len(agent_input.cameras))
        if picks is None:
            raise ValueError(f"DriveVLAW0Agent: {len(agent_input.cameras)} history frames are too few")
        frames = downsample_frames(agent_input.cameras[picks], c.image_height, c.image_width)
        history = torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float().div(255.0)[None]
        as_tensor = lambda v, dtype=torch.float32: torch.tensor([v], dtype=dtype, device=self.device)  # noqa: E731
        return {"history_frames": history.to(self.device), "texts": [agent_input.command_text],
                "speed": as_tensor(float(agent_input.ego_velocity[-1, 0])),
                "accel": as_tensor(float(agent_input.ego_acceleration[-1, 0])),
                "command": as_tensor(int(np.argmax(agent_input.driving_command)), torch.long)}

    def compute_trajectory(self, agent_input: AgentInput, scene: Scene | None = None) -> Trajectory:
        self.initialize()
        generator = torch.Generator(self.device).manual_seed(self.seed)
        poses = self.model.predict_trajectory(**self.model_inputs(agent_input), generator=generator)
        return Trajectory(poses[0].double().cpu().numpy(), self.trajectory_sampling)


__all__ = ["CheckpointError", "DriveVLAW0Agent", "load_policy"]
