"""DriveVLAW0ForDriving: the DriveVLA-W0 model an agent loads; raw tensors in, losses, trajectories and world-model rollouts out.

Parts, chosen by the config (one code path, drivevla_w0.md):
- image_input "vq" (Emu3 track): the VQ-VAE tokenizes frames; the world model is the backbone's CE on every frame's
  codes (drivevla_w0_paper.md §3.1: the later frame predicted from the earlier one and the action between them);
- image_input "vit" (Qwen2.5-VL track): Qwen's image processor cuts frames into patches for the backbone's ViT; the
  world model is the diffusion head on the AutoencoderKL latent of the second frame (§3.2), the same pairing;
- use_action_expert: trajectories come from the expert's decoder (`expert_decoder`); otherwise by
  constrained AR decoding through the backbone (the baseline VLA; the only decoding of the Qwen track).
Stage 0 trains the image tokenizer (VQ-VAE or VAE), which stays frozen after; stage 1 the backbone on the action +
world-model losses, stage 2 the expert on its action loss only (§5.1).
Inputs are the history frames, the ego poses of the last 1.5 s (the past motions: the
model's only ego state) and the command. Rollouts re-plan each step (or follow given poses) and move the ego
along the first second of the plan.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, Qwen2VLImageProcessorPil

from policies.action_expert import DriveVLAW0ExpertPolicy, state_features
from policies.action_tokens import frame_motions
from policies.backbone import DriveVLAW0Backbone
from policies.config import DriveVLAW0Config
from policies.diffusion_wm import DiffusionWorldModel
from policies.motion import deltas_to_poses, poses_to_deltas
from policies.noise import BatchNoise
from policies.sequence import ChatSequenceBuilder, SequenceBuilder, VLASequence
from policies.text import InstructionTokenizer
from policies.vae import DriveVLAW0VAE
from policies.vq import image_tokenizer


@dataclass
class DrivingInputs:
    """A batch ready for the model: the VLA sequence, the expert's (B,13) state features, the frames' pixel patches
    (B,F,N,D) on the Qwen track, target poses (B,P,3) and the diffusion world model's target latent."""

    sequence: VLASequence
    state: torch.Tensor
    pixel_patches: torch.Tensor | None = None
    poses: torch.Tensor | None = None
    target_latent: torch.Tensor | None = None


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
    _no_split_modules = ["Emu3DecoderLayer", "Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]
    supports_gradient_checkpointing = True  # the backbone's, the expert's and the diffusion UNet's layers

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        vit = config.image_input == "vit"
        self.vq = None if vit else image_tokenizer(config)
        self.vae = DriveVLAW0VAE(config) if vit and config.use_world_model else None
        self.diffusion_wm = DiffusionWorldModel(config) if vit and config.use_world_model else None
        # Qwen's own image processor (no resize: frames are already a multiple of the token size).
        self.image_processor = Qwen2VLImageProcessorPil(
            patch_size=config.vit_patch_size, merge_size=config.vit_merge_size, temporal_patch_size=2,
            min_pixels=(config.vit_patch_size * config.vit_merge_size) ** 2,
            max_pixels=config.image_height * config.image_width) if vit else None
        # The expert policy owns its backbone; registering it once keeps the checkpoint free of shared tensors.
        self.policy = DriveVLAW0ExpertPolicy(config) if config.use_action_expert else None
        self.vla = None if config.use_action_expert else DriveVLAW0Backbone(config)
        self.text_tokenizer = InstructionTokenizer()
        self.builder = ChatSequenceBuilder(config) if vit else SequenceBuilder(config)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        # Every part is a PreTrainedModel that initialises itself (zero-init heads, conv defaults).
        pass

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, then the record in model.safetensors' metadata (the config and a sha256
        of the tensor data, `policies.checkpoint.write_record`) that loading checks config.json and the data against.
        Tensors keep their in-memory names: transformers would otherwise rename the Qwen backbone's to the Hub's
        layout (`save_original_format`); the official layout is `policies.convert.save_official`'s."""
        kwargs.setdefault("save_original_format", False)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", args[0] if args else True):
            from policies.checkpoint import write_record  # it imports this module

            write_record(save_directory, self.config)

    @property
    def backbone(self) -> DriveVLAW0Backbone:
        return self.vla if self.policy is None else self.policy.backbone

    # --- inputs -------------------------------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,F,3,H,W) in [0,1] -> VQ codes (B,F,h,w), or on the Qwen track the pixel patches (B,F,N,D) its image
        processor gives (the ViT runs inside the backbone, trained with it)."""
        b, f = frames.shape[:2]
        flat = frames.flatten(0, 1)
        if self.image_processor is not None:
            patches = self.image_processor(images=list(flat.float().cpu()), return_tensors="pt", do_rescale=False,
                                           do_resize=False)["pixel_values"]
            return patches.view(b, f, -1, patches.shape[-1]).to(frames.device, self.dtype)
        with torch.no_grad():  # frozen tokenizer; codes carry no gradient anyway
            return self.vq.encode(flat.to(self.dtype)).view(b, f, *self.config.image_grid)

    def build_inputs(self, history_frames: torch.Tensor, texts: Sequence[str], ego_poses: torch.Tensor,
                     command: torch.Tensor, poses: torch.Tensor | None = None,
                     noise: BatchNoise | None = None) -> DrivingInputs:
        """Raw batch -> `DrivingInputs`. history_frames: (B,F,3,H,W) in [0,1], oldest first; texts: B command
        strings; ego_poses: (B,4,3) ego poses 0.5 s apart relative to the current one (last), as the agent input
        has them; command (B,) index into COMMANDS; poses: (B,P,3) target trajectory (training; without it the
        sequence is the decoding prompt). Training inputs of the Qwen track carry the diffusion world model's target,
        the second history frame's VAE latent (official), its posterior sample drawn from `noise`."""
        inputs = self._inputs(self.encode_frames(history_frames), texts, ego_poses, command, poses)
        if self.diffusion_wm is not None and poses is not None:
            inputs.target_latent = self.vae.latents(history_frames[:, 1].to(self.dtype), noise)
        return inputs

    def _inputs(self, images: torch.Tensor, texts: Sequence[str], ego_poses: torch.Tensor, command: torch.Tensor,
                poses: torch.Tensor | None = None, open_image: bool = False) -> DrivingInputs:
        """As `build_inputs`, from already encoded history `images` (codes or pixel patches). With `open_image`
        (and poses) the sequence is the world model's context for the frame after the current one: the current
        frame, its past motions, the plan's first `segment_action_steps` motions, then (Emu3 track) <boi> <img>."""
        c, device = self.config, images.device
        vit = self.image_processor is not None
        tokenizer = self.backbone.action_tokenizer
        texts_ids = [self.text_tokenizer.encode(t, add_special_tokens=False)[:c.max_text_length] for t in texts]
        motions = frame_motions(c, ego_poses.double().cpu())
        past = [tokenizer.encode(motions.past[:, f]) for f in range(c.num_history_frames)]
        actions = [tokenizer.encode(motions.to_next[:, f]) for f in range(c.num_history_frames - 1)]
        if open_image:
            if poses is None:
                raise ValueError("a world-model context needs the plan's poses")
            step = poses_to_deltas(poses.double().cpu())[:, :c.segment_action_steps]
            past, actions, images = past[-1:], [tokenizer.encode(step)], images[:, -1:]
        elif poses is not None:
            actions.append(tokenizer.encode(poses_to_deltas(poses.double().cpu())))
        if vit:
            seq = self.builder.build(texts_ids, past, actions, with_labels=poses is not None and not open_image)
        else:
            seq = self.builder.build(texts_ids, images, past, actions, open_image, with_labels=poses is not None)
        current_past = tokenizer.normalizer.normalize(motions.past[:, -1]).float()
        state = state_features(current_past, command.cpu()).to(device)
        return DrivingInputs(_to_device(seq, device), state, images if vit else None, poses)

    # --- training -----------------------------------------------------------------------------------
    def forward(self, history_frames: torch.Tensor, future_frame: torch.Tensor, trajectory: torch.Tensor,
                ego_poses: torch.Tensor, command: torch.Tensor, text: Sequence[str],
                stage: int = 1, noise: BatchNoise | None = None) -> DrivingLoss:
        """The training losses of `stage` for a batch as the data set gives it: history_frames (B,F,H,W,3) and
        future_frame (B,H,W,3) uint8, trajectory (B,P,3), ego_poses (B,4,3), command (B,), text: B strings.

        The trainer calls the model through this method (and so through a DDP / FSDP / DeepSpeed wrapper and
        the mixed-precision autocast); `noise` gives the random draws of the VAE, flow and diffusion losses.
        Stage 0 trains the image tokenizer on every frame of each sample, sample by sample (history, then future)."""
        if stage == 0:
            frames = frames_to_model(torch.cat([history_frames, future_frame[:, None]], 1).flatten(0, 1))
            if self.vae is not None:  # the posterior draws are made per sample, for all its frames at once
                b, per_sample = history_frames.shape[0], history_frames.shape[1] + 1
                shape = (b, per_sample * self.config.vae_latent_channels, *self.config.latent_grid)
                draws = (noise or BatchNoise()).randn(shape, frames.device, self.dtype)
                out = self.vae(frames.to(self.dtype), draws.view(b * per_sample, -1, *self.config.latent_grid))
            elif self.vq is not None:
                out = self.vq(frames.to(self.dtype))
            else:
                raise ValueError("stage 0 trains the image tokenizer, which this configuration does not have")
            return DrivingLoss(out.loss, reconstruction_loss=out.reconstruction_loss)
        inputs = self.build_inputs(frames_to_model(history_frames), text, ego_poses, command, trajectory, noise)
        return self.loss(inputs, stage, noise)

    def loss(self, inputs: DrivingInputs, stage: int = 1, noise: BatchNoise | None = None) -> DrivingLoss:
        """Stage 1: the backbone's weighted CE over action and image-code labels (the Emu3 track's world model),
        plus diffusion_loss_weight x diffusion eps-MSE on the Qwen track. Stage 2: the action expert's decoder
        loss only. `inputs` must carry poses (and, for the diffusion world model, its target latent)."""
        c = self.config
        if inputs.poses is None:
            raise ValueError("training inputs need target poses (build_inputs(..., poses=...))")
        if stage == 2:
            if self.policy is None:
                raise ValueError("stage 2 trains the action expert; set config.use_action_expert=True")
            out = self.policy.loss(inputs.sequence, inputs.state, inputs.poses, noise)
            return DrivingLoss(out.loss, out.loss)
        if stage != 1:
            raise ValueError(f"stage={stage!r}; choose 1 (backbone + world model) or 2 (action expert)")
        out = self.backbone.loss(inputs.sequence, inputs.pixel_patches)
        if self.diffusion_wm is None:
            return DrivingLoss(out.loss, out.action_loss, out.world_model_loss)
        if inputs.target_latent is None:
            raise ValueError("the diffusion world model's loss needs inputs.target_latent (the second frame's latent)")
        wm = self.diffusion_wm.loss(out.hidden_states, inputs.sequence, inputs.target_latent, noise)
        return DrivingLoss(out.loss + c.diffusion_loss_weight * wm, out.action_loss, wm)

    # --- inference ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_trajectory(self, history_frames: torch.Tensor, texts: Sequence[str], ego_poses: torch.Tensor,
                           command: torch.Tensor, generator: torch.Generator | None = None,
                           flow_steps: int | None = None) -> torch.Tensor:
        """(B, num_poses, 3) ego-frame trajectory (x, y, heading); inputs as `build_inputs`."""
        return self._plan(self.build_inputs(history_frames, texts, ego_poses, command), generator, flow_steps)

    @torch.no_grad()
    def predict_candidates(self, history_frames: torch.Tensor, texts: Sequence[str], ego_poses: torch.Tensor,
                           command: torch.Tensor, n: int, generator: torch.Generator | None = None,
                           temperature: float = 1.0) -> torch.Tensor:
        """(B, n, num_poses, 3) candidate trajectories for best-of-N selection (the paper's 93.0 row picks the best of
        6 by PDM score, an oracle): the action expert's candidates (`DriveVLAW0ExpertPolicy.candidates`)."""
        if self.policy is None:
            raise ValueError("candidate trajectories come from the action expert; this model has none")
        prompt = self.build_inputs(history_frames, texts, ego_poses, command)
        return self.policy.candidates(prompt.sequence, prompt.state, n, generator, temperature)

    def _plan(self, prompt: DrivingInputs, generator: torch.Generator | None = None,
              flow_steps: int | None = None) -> torch.Tensor:
        if self.policy is not None:
            return self.policy.predict(prompt.sequence, prompt.state, flow_steps, generator)
        return self.backbone.generate_plan(prompt.sequence, prompt.pixel_patches)

    @torch.no_grad()
    def predict_next_frame(self, images: torch.Tensor, texts: Sequence[str], ego_poses: torch.Tensor,
                           command: torch.Tensor, plan: torch.Tensor, temperature: float = 0.0,
                           top_k: int | None = None, generator: torch.Generator | None = None,
                           diffusion_steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame `frame_interval_s` after the current one if the ego drives `plan` (B,P,3): (frame (B,3,H,W) in
        [0,1], its encoding as `encode_frames` gives it). images: encoded history (codes or pixel patches).
        Emu3 track: codes decoded greedily (temperature 0) or sampled from the `top_k` most likely, then VQ-decoded;
        Qwen track: the diffusion head, conditioned on the current frame and the plan's first second as on its
        training pair, samples the latent (DDPM, `diffusion_steps`), which the VAE decodes."""
        ctx = self._inputs(images, texts, ego_poses, command, plan, open_image=True)
        if self.diffusion_wm is None:
            codes = self.backbone.generate_image_codes(ctx.sequence, temperature, top_k, generator)
            return self.vq.decode(codes), codes
        hidden = self.backbone(ctx.sequence, ctx.pixel_patches).hidden_states
        frame = self.vae.decode_latents(self.diffusion_wm.sample(hidden, ctx.sequence, diffusion_steps, generator))
        return frame, self.encode_frames(frame[:, None])[:, 0]

    @torch.no_grad()
    def rollout_frames(self, history_frames: torch.Tensor, texts: Sequence[str], ego_poses: torch.Tensor,
                       command: torch.Tensor, steps: int, poses: torch.Tensor | None = None,
                       temperature: float = 0.0, top_k: int | None = None,
                       generator: torch.Generator | None = None, diffusion_steps: int | None = None) -> torch.Tensor:
        """(B, steps, 3, H, W) predicted frames in [0,1], one `frame_interval_s` apart.

        Each step conditions the world model on a trajectory (the policy's own plan, or `poses`: (B,P,3) for every
        step or (B,steps,P,3) per step, e.g. a counterfactual), predicts the next frame (`predict_next_frame`:
        greedy by default), moves the ego along the plan's first `frame_interval_s`, and slides the history window:
        the prediction becomes the current frame, the oldest frame drops out."""
        if not self.config.use_world_model:
            raise ValueError("rollouts need a world model (config.use_world_model=True)")
        c = self.config
        images = self.encode_frames(history_frames)
        history = ego_poses.double().cpu()
        step_poses = round(c.frame_interval_s / c.pose_interval_s)
        frames = []
        for k in range(steps):
            plan = poses[:, k] if poses is not None and poses.dim() == 4 else poses
            if plan is None:
                plan = self._plan(self._inputs(images, texts, history, command), generator)
            frame, nxt = self.predict_next_frame(images, texts, history, command, plan, temperature, top_k,
                                                 generator, diffusion_steps)
            history = _advance(history, plan.double().cpu()[:, :step_poses])
            images = torch.cat([images[:, 1:], nxt[:, None].to(images.dtype)], 1)
            frames.append(frame)
        return torch.stack(frames, 1)


def _advance(history: torch.Tensor, driven: torch.Tensor) -> torch.Tensor:
    """Ego poses (B,N,3) relative to the current pose, after driving `driven` (B,K,3) poses of the current frame:
    the last N poses of history + driven, relative to the last driven pose."""
    motions = torch.cat([poses_to_deltas(history[:, 1:], history[:, 0]), poses_to_deltas(driven)], 1)
    window = deltas_to_poses(motions[:, -(history.shape[1] - 1):])  # from the window's first pose, at the origin
    window = torch.cat([torch.zeros_like(window[:, :1]), window], 1)
    # A pose in the frame of the current one is the one-step motion from the current pose to it.
    return poses_to_deltas(window[:, :, None], window[:, -1:].expand_as(window))[:, :, 0]


def _to_device(seq: VLASequence, device: torch.device) -> VLASequence:
    """The sequence's tensors on `device`."""
    return VLASequence(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(seq).items()})
