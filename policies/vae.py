"""Image autoencoder of the Qwen2.5-VL track: diffusers' AutoencoderKL in SD-1.5's VAE role, latents scaled to unit variance.

drivevla_w0_paper.md §3.2: the official diffusion world model denoises SD-1.5's frozen VAE latent of a frame,
`(posterior sample - shift) x scaling_factor`. Nothing is downloaded here, so stage 0 trains this VAE from scratch on
the run's frames (reconstruction MSE in [-1, 1] plus a small KL term) and later stages keep it frozen; its scaling
factor is then fitted as SD's 0.18215 was, 1 / standard deviation of the latents over training frames
(`fit_scaling_factor`), and saved in the config (`vae_scaling_factor`). SD-1.5 has no shift factor, nor does this.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from transformers import PreTrainedModel

from policies.config import DriveVLAW0Config
from policies.noise import BatchNoise


@dataclass
class VAEOutput:
    """Stage-0 loss (reconstruction + kl_weight x KL) and its reconstruction part."""

    loss: torch.Tensor
    reconstruction_loss: torch.Tensor


class DriveVLAW0VAE(PreTrainedModel):
    """`AutoencoderKL` sized by the `vae_*` fields of `DriveVLAW0Config`; frames in [0, 1] in and out."""

    config_class = DriveVLAW0Config
    base_model_prefix = "vae"
    main_input_name = "frames"
    _supports_sdpa = True  # diffusers attention; accepts a shared config's setting
    _supports_flash_attn = True

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        blocks = len(config.vae_channels)
        self.autoencoder = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=config.vae_channels,
            layers_per_block=config.vae_layers_per_block, latent_channels=config.vae_latent_channels,
            norm_num_groups=min(32, config.vae_channels[0]), sample_size=config.image_height,
        )
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        pass  # diffusers' / torch's own initialisation

    def _posterior(self, frames: torch.Tensor):
        return self.autoencoder.encode(frames * 2 - 1).latent_dist

    @staticmethod
    def _draw(posterior, noise: torch.Tensor) -> torch.Tensor:
        """The posterior sample that standard-normal `noise` gives (the reparameterisation)."""
        return posterior.mean + posterior.std * noise.to(posterior.mean.dtype)

    def _sample(self, frames: torch.Tensor, draws: BatchNoise | None) -> torch.Tensor:
        """A posterior sample (B,C,h,w), unscaled; the draw comes from `draws` (per-row seeds across processes)."""
        posterior = self._posterior(frames)
        return self._draw(posterior, (draws or BatchNoise()).randn(posterior.mean.shape, frames.device,
                                                                   posterior.mean.dtype))

    def forward(self, frames: torch.Tensor, noise: torch.Tensor | None = None) -> VAEOutput:
        """Stage-0 loss of a batch of frames (N,3,H,W) in [0,1]; `noise` (N,C,h,w) draws the posterior sample
        (standard normal drawn here without it)."""
        posterior = self._posterior(frames)
        noise = torch.randn_like(posterior.mean) if noise is None else noise
        reconstruction = self.autoencoder.decode(self._draw(posterior, noise)).sample
        rec = F.mse_loss(reconstruction.float(), frames.float() * 2 - 1)
        return VAEOutput(rec + self.config.vae_kl_weight * posterior.kl().float().mean(), rec)

    def _scaling(self) -> float:
        if self.config.vae_scaling_factor <= 0:
            raise ValueError("the VAE's latent scaling factor is not fitted yet (config.vae_scaling_factor is 0): "
                             "fit it after stage 0 with policies.vae.fit_scaling_factor")
        return self.config.vae_scaling_factor

    @torch.no_grad()
    def latents(self, frames: torch.Tensor, draws: BatchNoise | None = None) -> torch.Tensor:
        """Scaled latents (B,C,h,w) of frames in [0,1]: a posterior sample x the scaling factor, as the official code."""
        return self._sample(frames, draws) * self._scaling()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B,C,h,w) -> frames (B,3,H,W) clamped to [0,1]."""
        return ((self.autoencoder.decode(latents / self._scaling()).sample + 1) / 2).clamp(0, 1)


@torch.no_grad()
def fit_scaling_factor(vae: DriveVLAW0VAE, frames: torch.Tensor, batch_size: int = 64) -> float:
    """1 / standard deviation of the unscaled latents of `frames` (N,3,H,W) in [0,1] (posterior samples from a
    generator seeded with 0, so the figure is reproducible)."""
    draws = BatchNoise(torch.Generator(device=vae.device).manual_seed(0))
    samples = [vae._sample(chunk.to(vae.device, vae.dtype), draws) for chunk in frames.split(batch_size)]
    return float(1.0 / torch.cat(samples).double().std())


__all__ = ["DriveVLAW0VAE", "VAEOutput", "fit_scaling_factor"]
