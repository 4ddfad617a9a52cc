"""The DriveVLA-W0 agent: the one bridge between a trained policy and the simulator's agent input (needs torch).

Agent input -> model tensors: the history camera frames one `frame_interval_s` apart (current last),
area-downsampled to the policy's frame size exactly as the training data was (`downsample_frames`); the ego
poses of the history (the model's past motions, its only ego state); the driving command and its text. The
model's 8 poses at 0.5 s come back as the `Trajectory`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agents.base import AgentError, AgentOptions, SensorConfig, WorldModelAgent
from policies.checkpoint import CheckpointError as PolicyCheckpointError
from policies.checkpoint import check_checkpoint, config_fields, load_checkpoint
from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving
from sim.agent_input import HISTORY_STRIDE, NUM_HISTORY_FRAMES, AgentInput
from sim.render.camera import downsample_frames
from sim.scene import STEP_S
from sim.state import Trajectory, TrajectorySampling
from sim.world_view import WorldView

# The shipped tiny checkpoint (checkpoints/drivevla-w0-tiny/README.md), used when no checkpoint is given.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "drivevla-w0-tiny"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(AgentError, PolicyCheckpointError):
    """A checkpoint folder cannot be loaded: the message names the folder, the file and what is wrong."""


def _agent_error(err: PolicyCheckpointError) -> CheckpointError:
    return err if isinstance(err, CheckpointError) else CheckpointError(str(err))


def check_checkpoint_folder(folder: str | Path) -> DriveVLAW0Config:
    """The checkpoint's config after every check that reads no tensor data (`policies.checkpoint.check_checkpoint`:
    config.json's fields, model.safetensors' header, tensor names / shapes / dtypes against the config), or a
    CheckpointError that says why."""
    try:
        return check_checkpoint(Path(folder))[0]
    except PolicyCheckpointError as err:
        raise _agent_error(err) from None


def load_policy(checkpoint: str | Path, device: str | torch.device = "cpu") -> DriveVLAW0ForDriving:
    """The policy of checkpoint folder `checkpoint` in eval mode, loaded strictly (`policies.checkpoint`), or a
    CheckpointError that says why."""
    try:
        return load_checkpoint(Path(checkpoint), device)
    except PolicyCheckpointError as err:
        raise _agent_error(err) from None


class DriveVLAW0Agent(WorldModelAgent):
    """DriveVLA-W0 from a checkpoint folder; deterministic for a seed (flow-matching noise)."""

    def __init__(self, checkpoint: str | Path = DEFAULT_CHECKPOINT,
                 trajectory_sampling: TrajectorySampling = TrajectorySampling(), device: str = "cpu", seed: int = 0,
                 dtype: str = "float32"):
        super().__init__(trajectory_sampling)
        self.checkpoint, self.device, self.seed = Path(checkpoint), device, seed
        if dtype not in DTYPES:
            raise AgentError(f"DriveVLAW0Agent: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        self.dtype = DTYPES[dtype]
        self.model: DriveVLAW0ForDriving | None = None
        # Everything about the checkpoint that needs no tensor data is checked here, where the agent is built
        # (in the process that starts a run, before any worker); the data when `initialize` loads it.
        self.config = check_checkpoint_folder(self.checkpoint)
        c = self.config
        if (c.num_poses, c.pose_interval_s) != (trajectory_sampling.num_poses, trajectory_sampling.interval):
            raise CheckpointError(f"checkpoint {self.checkpoint} plans {c.num_poses} poses at {c.pose_interval_s} s; "
                                  f"the agent was asked for {trajectory_sampling}")
        if self._frame_indices(NUM_HISTORY_FRAMES) is None:
            raise CheckpointError(f"checkpoint {self.checkpoint} wants {c.num_history_frames} frames "
                                  f"{c.frame_interval_s} s apart, more than the {NUM_HISTORY_FRAMES} history frames")

    @classmethod
    def from_options(cls, options: AgentOptions = AgentOptions()) -> "DriveVLAW0Agent":
        """`--checkpoint` (default: the shipped tiny checkpoint), `--seed`, `--device`, `--dtype`; the folder and
        the device are checked here, before any scene runs."""
        checkpoint = Path(options.checkpoint) if options.checkpoint else DEFAULT_CHECKPOINT
        if options.device.startswith("cuda") and not torch.cuda.is_available():
            raise AgentError(f"DriveVLAW0Agent: device {options.device!r} asked for, but torch sees no CUDA device")
        return cls(checkpoint, device=options.device, seed=options.seed, dtype=options.dtype)

    def initialize(self) -> None:
        if self.model is not None:
            return
        model = load_policy(self.checkpoint, self.device)
        if config_fields(model.config) != config_fields(self.config):
            raise CheckpointError(f"checkpoint {self.checkpoint} changed on disk since the agent was built")
        self.model = model.to(self.dtype)

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig(cameras=True)

    def _frame_indices(self, available: int) -> np.ndarray | None:
        """Positions in the agent input's frames (0.5 s apart) of the frames the policy reads, oldest first."""
        c = self.config
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
        # Ego poses stay float32 whatever the agent's dtype, as training fed them: the model turns them into FAST
        # tokens in float64, and bf16 rounding would move a motion into another token.
        poses = torch.from_numpy(np.ascontiguousarray(agent_input.ego_poses, dtype=np.float32))[None]
        command = torch.tensor([int(np.argmax(agent_input.driving_command))], dtype=torch.long, device=self.device)
        return {"history_frames": history.to(self.device), "texts": [agent_input.command_text],
                "ego_poses": poses.to(self.device), "command": command}

    def compute_trajectory(self, agent_input: AgentInput, world: WorldView | None = None) -> Trajectory:
        self.initialize()
        generator = torch.Generator(self.device).manual_seed(self.seed)
        poses = self.model.predict_trajectory(**self.model_inputs(agent_input), generator=generator)
        return Trajectory(poses[0].double().cpu().numpy(), self.trajectory_sampling)

    def candidate_trajectories(self, agent_input: AgentInput, n: int, seed: int = 0) -> list[Trajectory]:
        """n candidate trajectories for best-of-N selection (`DriveVLAW0ForDriving.predict_candidates`), from `seed`."""
        self.initialize()
        generator = torch.Generator(self.device).manual_seed(seed)
        poses = self.model.predict_candidates(**self.model_inputs(agent_input), n=n, generator=generator)
        return [Trajectory(p.double().cpu().numpy(), self.trajectory_sampling) for p in poses[0]]

    @property
    def frame_interval_s(self) -> float:
        self.initialize()
        return self.model.config.frame_interval_s

    def predict_frames(self, agent_input: AgentInput, steps: int, seed: int = 0, top_k: int = 0) -> np.ndarray:
        """(steps, h, w, 3) uint8 frames the world model predicts, one `frame_interval_s` apart, re-planning at each:
        greedy (top_k 0) or sampled at temperature 1 from the `top_k` most likely codes, with `seed`."""
        self.initialize()
        generator = torch.Generator(self.device).manual_seed(seed)
        sampling = {"temperature": 1.0, "top_k": top_k} if top_k else {}
        predicted = self.model.rollout_frames(**self.model_inputs(agent_input), steps=steps, generator=generator,
                                              **sampling)[0]
        return (predicted.float().movedim(1, -1).clamp(0, 1) * 255).round().byte().cpu().numpy()


__all__ = ["DEFAULT_CHECKPOINT", "CheckpointError", "DriveVLAW0Agent", "check_checkpoint_folder", "load_policy"]
