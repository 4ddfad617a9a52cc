"""DriveVLAW0ForDriving: the DriveVLA-W0 model an agent loads; raw tensors in, losses, trajectories and world-model rollouts out.

Parts, chosen by the config (one code path, drivevla_w0.md):
- image_input "vq": the VQ-VAE tokenizes frames; the world model is AR next-frame code prediction
  by the backbone (drivevla_w0_paper.md §3.1);
- image_input "patch": the patch encoder feeds the backbone; the world model is the diffusion head,
  whose target latent comes from the VQ-VAE's encoder used as a frozen autoencoder (the role of
  SD's VAE in the official ROSS head, §3.2);
- use_action_expert: trajectories come from the expert's decoder (`expert_decoder`); otherwise by
  constrained AR decoding through the backbone (the baseline VLA).
Stage 1 trains the backbone on the action + world-model losses, stage 2 the expert on its action
loss only (§5.1). Rollouts re-plan each step (or follow given poses) with the ego state held fixed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from policies.action_expert import DriveVLAW0ExpertPolicy, state_features
from policies.action_tokens import StateTokenizer
from policies.backbone import DriveVLAW0Backbone
from policies.config import DriveVLAW0Config
from policies.diffusion_wm import DiffusionWorldModel
from policies.noise import BatchNoise
from policies.patch_encoder import DriveVLAW0PatchEncoder
from policies.sequence import SequenceBuilder, VLASequence
from policies.text import InstructionTokenizer
from policies.vq import DriveVLAW0VQVAE


@dataclass
class DrivingInputs:
    """A batch ready for the model: the VLA sequence, the expert's (B,6) state features, the patch
    features (B,F,h*w,D) of the continuous path, target poses (B,P,3) and the diffusion target latent."""

    sequence: VLASequence
    state: torch.Tensor
    image_features: torch.Tensor | None = None
    poses: torch.Tensor | None = None
    future_latent: torch.Tensor | None = None


@dataclass
class DrivingLoss:
    """Total loss of the chosen stage and its parts: the tokenizer's reconstruction loss in stage 0, the action
    loss in stages 1 and 2, the world-model loss in stage 1 of a model with one (None where a part is absent)."""

    loss: torch.Tensor
    action_loss: torch.Tensor | None = None
    world_model_loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None

    def parts(self) -> dict[str, torch.Tensor]:
        """The loss and the parts this stage has, by name."""
        return {k: v for k, v in vars(self).items() if v is not None}


def frames_to_model(frames: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8, as the data set stores frames -> (..., 3, H, W) float in [0, 1], the model's layout."""
    return frames.movedim(-1, -3).float() / 255.0


class DriveVLAW0ForDriving(PreTrainedModel):
    """Image tokenizer + VLA backbone (+ action expert) (+ diffusion world model), see module docstring."""

    config_class = DriveVLAW0Config
    base_model_prefix = "drivevla_w0"
    main_input_name = "history_frames"
    _supports_sdpa = True
    _no_split_modules = ["Qwen2DecoderLayer"]
    supports_gradient_checkpointing = True  # the backbone's, the expert's and the diffusion UNet's layers

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        patch = config.image_input == "patch"
        self.patch_encoder = DriveVLAW0PatchEncoder(config) if patch else None
        self.vq = DriveVLAW0VQVAE(config) if not patch or config.use_world_model else None
        self.diffusion_wm = DiffusionWorldModel(config) if patch and config.use_world_model else None
        # The expert policy owns its backbone; registering it once keeps the checkpoint free of shared tensors.
        self.policy = DriveVLAW0ExpertPolicy(config) if config.use_action_expert else None
        self.vla = None if config.use_action_expert else DriveVLAW0Backbone(config)
        self.text_tokenizer = InstructionTokenizer()
        self.state_tokenizer = StateTokenizer(config)
        self.builder = SequenceBuilder(config)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        # Every part is a PreTrainedModel that initialises itself (zero-init heads, conv defaults).
        pass

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, then the record in model.safetensors' metadata (the config and a sha256
        of the tensor data, `policies.checkpoint.write_record`) that loading checks config.json and the data against."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", args[0] if args else True):
            from policies.checkpoint import write_record  # it imports this module

            write_record(save_directory, self.config)

    @property
    def backbone(self) -> DriveVLAW0Backbone:
        return self.vla if self.policy is None else self.policy.backbone

    # --- inputs -------------------------------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,F,3,H,W) in [0,1] -> VQ codes (B,F,h,w), or patch features (B,F,h*w,D) on the patch path."""
        b, f = frames.shape[:2]
        flat = frames.flatten(0, 1).to(self.dtype)
        if self.patch_encoder is not None:
            return self.patch_encoder.encode(flat).unflatten(0, (b, f))
        with torch.no_grad():  # frozen tokenizer; codes carry no gradient anyway
            return self.vq.encode(flat).view(b, f, *self.config.image_grid)

    def build_inputs(self, history_frames: torch.Tensor, texts: Sequence[str], speed: torch.Tensor,
                     accel: torch.Tensor, command: torch.Tensor, poses: torch.Tensor | None = None,
                     future_frame: torch.Tensor | None = None) -> DrivingInputs:
        """Raw batch -> `DrivingInputs`. history_frames: (B,F,3,H,W) in [0,1], oldest first; texts: B
        command strings; speed (B,) m/s, accel (B,) m/s^2, command (B,) index into COMMANDS; poses:
        (B,P,3) target trajectory (training; without it the sequence is the decoding prompt);
        future_frame: (B,3,H,W) the frame after the current one (world-model target, needs poses)."""
        return self._inputs(self.encode_frames(history_frames), texts, speed, accel, command, poses, future_frame)

    def _inputs(self, images: torch.Tensor, texts: Sequence[str], speed: torch.Tensor, accel: torch.Tensor,
                command: torch.Tensor, poses: torch.Tensor | None = None,
                future_frame: torch.Tensor | None = None, open_future: bool = False) -> DrivingInputs:
        """As `build_inputs`, from already encoded history `images` (codes or patch features)."""
        c, device = self.config, images.device
        patch = self.patch_encoder is not None
        text_ids, text_mask = self.text_tokenizer.batch_encode(texts, max_length=c.max_text_length)
        state_ids = self.state_tokenizer.encode(speed, accel, command)
        action_ids = None if poses is None else self.backbone.action_tokenizer.encode(poses)
        future_codes = future_latent = None
        if future_frame is not None and c.use_world_model:
            with torch.no_grad():  # the VQ-VAE is frozen: codes / latents are targets
                frame = future_frame.to(self.dtype)
                if patch:
                    future_latent = self.vq.latents(frame)
                else:
                    future_codes = self.vq.encode(frame)
        seq = self.builder.build(text_ids.to(device), text_mask.to(device), None if patch else images,
                                 state_ids.to(device), action_ids, future_codes, open_future)
        state = state_features(c, speed.to(device, torch.float32), accel.to(device, torch.float32), command.to(device))
        return DrivingInputs(seq, state, images if patch else None, poses, future_latent)

    # --- training -----------------------------------------------------------------------------------
    def forward(self, history_frames: torch.Tensor, future_frame: torch.Tensor, trajectory: torch.Tensor,
                speed: torch.Tensor, accel: torch.Tensor, command: torch.Tensor, text: Sequence[str],
                stage: int = 1, noise: BatchNoise | None = None) -> DrivingLoss:
        """The training losses of `stage` for a batch as the data set gives it: history_frames (B,F,H,W,3) and
        future_frame (B,H,W,3) uint8, trajectory (B,P,3), speed, accel, command (B,), text: B strings.

        The trainer calls the model through this method (and so through a DDP / FSDP / DeepSpeed wrapper and
        the mixed-precision autocast); `noise` gives the random draws of the flow and diffusion losses.
        Stage 0 trains the tokenizer on every frame of each sample, sample by sample (history, then future)."""
        if stage == 0:
            if self.vq is None:
                raise ValueError("stage 0 trains the VQ-VAE, which this configuration does not have")
            frames = torch.cat([history_frames, future_frame[:, None]], 1).flatten(0, 1)
            out = self.vq(frames_to_model(frames).to(self.dtype))
            return DrivingLoss(out.loss, reconstruction_loss=out.reconstruction_loss)
        inputs = self.build_inputs(frames_to_model(history_frames), text, speed, accel, command, trajectory,
                                   frames_to_model(future_frame))
        return self.loss(inputs, stage, noise)

    def loss(self, inputs: DrivingInputs, stage: int = 1, noise: BatchNoise | None = None) -> DrivingLoss:
        """Stage 1: backbone action CE + world-model loss (AR image-code CE inside the backbone on the
        vq path, diffusion_loss_weight x diffusion eps-MSE on the patch path). Stage 2: the action
        expert's decoder loss only. `inputs` must carry poses (and a future frame for the world model)."""
        c = self.config
        if inputs.poses is None:
            raise ValueError("training inputs need target poses (build_inputs(..., poses=...))")
        if stage == 2:
            if self.policy is None:
                raise ValueError("stage 2 trains the action expert; set config.use_action_expert=True")
            out = self.policy.loss(inputs.sequence, inputs.state, inputs.poses, noise, inputs.image_features)
            return DrivingLoss(out.loss, out.loss)
        if stage != 1:
            raise ValueError(f"stage={stage!r}; choose 1 (backbone + world model) or 2 (action expert)")
        out = self.backbone.loss(inputs.sequence, inputs.image_features)
        if inputs.future_latent is None:
            return DrivingLoss(out.loss, out.action_loss, out.world_model_loss)
        wm = self.diffusion_wm.loss(out.hidden_states, inputs.sequence, inputs.future_latent, noise)
        return DrivingLoss(out.loss + c.diffusion_loss_weight * wm, out.action_loss, wm)

    # --- inference ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_trajectory(self, history_frames: torch.Tensor, texts: Sequence[str], speed: torch.Tensor,
                           accel: torch.Tensor, command: torch.Tensor, generator: torch.Generator | None = None,
                           flow_steps: int | None = None) -> torch.Tensor:
        """(B, num_poses, 3) ego-frame trajectory (x, y, heading); inputs as `build_inputs`."""
        return self._plan(self.build_inputs(history_frames, texts, speed, accel, command), generator, flow_steps)

    def _plan(self, prompt: DrivingInputs, generator: torch.Generator | None = None,
              flow_steps: int | None = None) -> torch.Tensor:
        if self.policy is not None:
            return self.policy.predict(prompt.sequence, prompt.state, flow_steps, generator, prompt.image_features)
        return self.backbone.generate_actions(prompt.sequence, prompt.image_features)

    @torch.no_grad()
    def rollout_frames(self, history_frames: torch.Tensor, texts: Sequence[str], speed: torch.Tensor,
                       accel: torch.Tensor, command: torch.Tensor, steps: int, poses: torch.Tensor | None = None,
                       temperature: float = 1.0, top_k: int | None = None,
                       generator: torch.Generator | None = None, diffusion_steps: int | None = None) -> torch.Tensor:
        """(B, steps, 3, H, W) predicted frames in [0,1], one `frame_interval_s` apart.

        Each step conditions the world model on a trajectory (the policy's own plan, or `poses`:
        (B,P,3) for every step or (B,steps,P,3) per step, e.g. a counterfactual), predicts the next
        frame (vq: codes sampled with `temperature` / `top_k` and VQ-decoded; patch: a DDIM latent
        decoded by the VQ decoder, then re-encoded by the patch encoder), and slides the history
        window: the prediction becomes the current frame, the oldest frame drops out."""
        if not self.config.use_world_model:
            raise ValueError("rollouts need a world model (config.use_world_model=True)")
        images = self.encode_frames(history_frames)
        frames = []
        for k in range(steps):
            plan = poses[:, k] if poses is not None and poses.dim() == 4 else poses
            if plan is None:
                plan = self._plan(self._inputs(images, texts, speed, accel, command), generator)
            if self.patch_encoder is None:
                ctx = self._inputs(images, texts, speed, accel, command, plan, open_future=True)
                nxt = self.backbone.generate_future_codes(ctx.sequence, temperature, top_k, generator)
                frame = self.vq.decode(nxt)
            else:
                ctx = self._inputs(images, texts, speed, accel, command, plan)
                seq = ctx.sequence
                hidden = self.backbone(seq.input_ids, seq.attention_mask, seq.position_ids, seq.type_ids,
                                       ctx.image_features).hidden_states
                latent = self.diffusion_wm.sample(hidden, seq, diffusion_steps, generator)
                frame = self.vq.decode_latents(latent)
                nxt = self.patch_encoder.encode(frame)
            images = torch.cat([images[:, 1:], nxt[:, None].to(images.dtype)], 1)
            frames.append(frame)
        return torch.stack(frames, 1)
