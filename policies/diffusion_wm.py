"""Diffusion world model: a small diffusers UNet denoises the NEXT frame's latent, conditioned on the backbone's hidden states.

drivevla_w0_paper.md §3.2 / §10.5. Conditions, as the official ROSS head:
- image: last-layer hidden states of the current frame's image tokens -> LayerNorm (no affine)
  -> grid (B,H,h,w) -> 1x1 projection -> concatenated to the noisy latent as extra input channels
  whose conv_in weights start at zero (a linear conv over [x; c] = conv(x) + conv(c), i.e. the
  official "add after conv_in with a zero-init gate");
- action: mean hidden state over the plan's FAST tokens -> LayerNorm -> MLP -> one cross-attention
  token (the official context is a constant empty prompt; the action feature takes its place).
Epsilon prediction with a DDPM scheduler with SD-1.5's schedule (1000 steps, scaled-linear betas from 0.00085
to 0.012, not diffusers' defaults);
sampling with DDIM in `diffusion_sample_steps`. The target latent is whatever frozen image
encoder the caller uses (here: the VQ-VAE's pre-quantisation map, `DriveVLAW0VQVAE.latents`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import PreTrainedModel

from policies.batch_mean import at_least_float32
from policies.config import DriveVLAW0Config
from policies.noise import BatchNoise
from policies.sequence import VLASequence


class DiffusionWorldModel(PreTrainedModel):
    """Denoiser + schedulers; `loss` for training, `sample` for rollouts (latents of the next frame)."""

    config_class = DriveVLAW0Config
    base_model_prefix = "diffusion_wm"
    _supports_sdpa = True  # diffusers attention; accepts a shared config's setting
    _supports_flash_attn = True

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        c_lat = config.diffusion_latent_channels or config.vq_code_dim
        c_cond = config.diffusion_cond_channels
        self.latent_channels = c_lat
        n_blocks = len(config.diffusion_channels)
        self.unet = UNet2DConditionModel(
            sample_size=config.image_grid, in_channels=c_lat + c_cond, out_channels=c_lat,
            block_out_channels=config.diffusion_channels, layers_per_block=1,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n_blocks - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n_blocks - 1) + ("UpBlock2D",),
            cross_attention_dim=config.diffusion_cross_dim, attention_head_dim=8,
            norm_num_groups=min(8, config.diffusion_channels[0]),
        )
        with torch.no_grad():
            self.unet.conv_in.weight[:, c_lat:].zero_()
        self.image_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False)
        self.image_proj = nn.Conv2d(config.hidden_size, c_cond, 1)
        self.action_mlp = nn.Sequential(
            nn.LayerNorm(config.hidden_size), nn.Linear(config.hidden_size, config.diffusion_cross_dim),
            nn.GELU(), nn.Linear(config.diffusion_cross_dim, config.diffusion_cross_dim))
        self.train_scheduler = DDPMScheduler(num_train_timesteps=config.diffusion_train_timesteps,
                                             beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                             prediction_type="epsilon")
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Keep diffusers' / torch's own initialisation (and the zeroed condition channels of conv_in).
        pass

    def conditions(self, hidden: torch.Tensor, seq: VLASequence) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone hidden states (B,L,H) -> image condition map (B,Cc,h,w), action token (B,1,D)."""
        h, w = self.config.image_grid
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        img = self.image_norm(hidden[rows, seq.image_positions(-1)])  # (B, h*w, H), raster order
        img = self.image_proj(img.transpose(1, 2).unflatten(2, (h, w)))
        plan = seq.plan_mask.to(hidden.dtype)[..., None]
        if not bool((plan.sum(1) > 0).all()):
            raise ValueError("the diffusion world model needs a sequence with the plan's tokens")
        act = (hidden * plan).sum(1) / plan.sum(1)
        return img, self.action_mlp(act)[:, None]

    def _eps(self, noisy: torch.Tensor, t: torch.Tensor, img: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([noisy, img.to(noisy.dtype)], 1)
        return self.unet(x, t, encoder_hidden_states=act.to(noisy.dtype)).sample

    def loss(self, hidden: torch.Tensor, seq: VLASequence, target_latent: torch.Tensor,
             draws: BatchNoise | None = None) -> torch.Tensor:
        """Epsilon-MSE on the next frame's latent (B,C,h,w), t ~ Uniform{0..T-1}; `draws` gives the noise and t."""
        img, act = self.conditions(hidden, seq)
        b, device = target_latent.shape[0], target_latent.device
        draws = draws or BatchNoise()
        noise = draws.randn(target_latent.shape, device, target_latent.dtype)
        t = draws.randint(self.config.diffusion_train_timesteps, (b,), device)
        noisy = self.train_scheduler.add_noise(target_latent, noise, t)
        return F.mse_loss(at_least_float32(self._eps(noisy, t, img, act)), at_least_float32(noise))

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, seq: VLASequence, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,C,h,w) next-frame latent by DDIM from pure noise (no classifier-free guidance)."""
        img, act = self.conditions(hidden, seq)
        h, w = self.config.image_grid
        scheduler = DDIMScheduler.from_config(self.train_scheduler.config)
        scheduler.set_timesteps(steps or self.config.diffusion_sample_steps, device=hidden.device)
        x = torch.randn(hidden.shape[0], self.latent_channels, h, w, generator=generator,
                        device=hidden.device, dtype=img.dtype)
        for t in scheduler.timesteps:
            eps = self._eps(x, t.expand(x.shape[0]), img, act)
            x = scheduler.step(eps, t, x).prev_sample
        return x
