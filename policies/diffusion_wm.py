"""Diffusion world model of the Qwen2.5-VL track: a diffusers UNet denoises a frame's VAE latent given the backbone's states.

As the official ROSS head (`RossStableDiffusionXOmni`, drivevla_w0_paper.md §3.2): the target is the scaled VAE
latent of the second frame of the 2VA sequence (the current one), conditioned on
- image: the last-layer hidden states of the first frame's image tokens -> LayerNorm (no affine) -> token grid ->
  bilinear resize to the latent grid -> MLP (Linear, GELU, Linear without bias) per position;
- action: the mean hidden state over the first segment's FAST tokens (the motion between the two frames) ->
  LayerNorm (no affine) -> its own MLP -> broadcast over the grid;
added to the UNet's conv_in output as `image_gate x image + action_gate x action`, both gates learnable scalars
that start at 0. The cross-attention context is constant: the official code feeds SD-1.5's CLIP embedding of the
empty prompt; here it is a zero context of the UNet's cross-attention width (no text conditioning either way).
Epsilon prediction, timesteps uniform over SD-1.5's 1000-step scaled-linear schedule (0.00085 to 0.012); sampling
with the same DDPM scheduler in `diffusion_sample_steps` steps, no guidance (as the official inference).
The official code averages the action tokens over the batch's padded length (rows with fewer tokens get zeros in
their mean); here the mean is over each row's own tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import PreTrainedModel

from policies.batch_mean import at_least_float32
from policies.config import DriveVLAW0Config
from policies.noise import BatchNoise
from policies.sequence import TokenType, VLASequence


def _condition_mlp(hidden: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, width, bias=False))


def first_action_mask(seq: VLASequence) -> torch.Tensor:
    """(B,L) the FAST tokens of each row's first action segment (the motion from the first frame to the second)."""
    is_action = seq.type_ids == int(TokenType.ACTION)
    past_first_run = ((is_action.long().cumsum(1) > 0) & ~is_action).long().cumsum(1) > 0
    return is_action & ~past_first_run


class DiffusionWorldModel(PreTrainedModel):
    """Denoiser, condition MLPs and scheduler; `loss` for training, `sample` for rollouts (scaled latents)."""

    config_class = DriveVLAW0Config
    base_model_prefix = "diffusion_wm"
    _supports_sdpa = True  # diffusers attention; accepts a shared config's setting
    _supports_flash_attn = True

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        channels, latent = config.diffusion_channels, config.vae_latent_channels
        blocks = len(channels)
        self.unet = UNet2DConditionModel(
            sample_size=config.latent_grid, in_channels=latent, out_channels=latent,
            block_out_channels=channels, layers_per_block=config.diffusion_layers_per_block,
            down_block_types=("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1),
            cross_attention_dim=config.diffusion_cross_dim, attention_head_dim=8,
            norm_num_groups=min(32, channels[0]),
        )
        self.image_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False)
        self.action_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False)
        self.image_mlp = _condition_mlp(config.hidden_size, channels[0])
        self.action_mlp = _condition_mlp(config.hidden_size, channels[0])
        self.image_gate = nn.Parameter(torch.zeros(()))
        self.action_gate = nn.Parameter(torch.zeros(()))
        self.scheduler = DDPMScheduler(num_train_timesteps=config.diffusion_train_timesteps, beta_start=0.00085,
                                       beta_end=0.012, beta_schedule="scaled_linear", prediction_type="epsilon")
        self._condition: torch.Tensor | None = None
        self.unet.conv_in.register_forward_hook(self._add_condition)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Keep diffusers' / torch's own initialisation; the gates start at 0 (set in __init__).
        pass

    def _add_condition(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        """conv_in's output + the condition map (the official UNet adds `z` right after conv_in)."""
        return output if self._condition is None else output + self._condition.to(output.dtype)

    def conditions(self, hidden: torch.Tensor, seq: VLASequence) -> torch.Tensor:
        """Backbone hidden states (B,L,H) of a sequence -> the condition map (B,C0,h,w) added after conv_in."""
        c = self.config
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        image = self.image_norm(hidden[rows, seq.image_positions(0)])  # (B, n, H), raster order of the token grid
        image = image.transpose(1, 2).unflatten(2, c.image_grid)
        image = F.interpolate(image, size=c.latent_grid, mode="bilinear")
        image = self.image_mlp(image.flatten(2).transpose(1, 2)).transpose(1, 2).unflatten(2, c.latent_grid)
        action = first_action_mask(seq).to(hidden.dtype)[..., None]
        if not bool((action.sum(1) > 0).all()):
            raise ValueError("the diffusion world model needs the first frame's action tokens in every row")
        action = self.action_mlp(self.action_norm((hidden * action).sum(1) / action.sum(1)))
        return self.image_gate * image + self.action_gate * action[:, :, None, None]

    def _eps(self, noisy: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        context = noisy.new_zeros(noisy.shape[0], 1, self.config.diffusion_cross_dim)  # the constant prompt
        self._condition = condition
        try:
            return self.unet(noisy, t, encoder_hidden_states=context).sample
        finally:
            self._condition = None

    def loss(self, hidden: torch.Tensor, seq: VLASequence, target_latent: torch.Tensor,
             draws: BatchNoise | None = None) -> torch.Tensor:
        """Epsilon-MSE on the target latent (B,C,h,w), t ~ Uniform{0..T-1}; `draws` gives the noise and t."""
        condition = self.conditions(hidden, seq)
        b, device = target_latent.shape[0], target_latent.device
        draws = draws or BatchNoise()
        noise = draws.randn(target_latent.shape, device, target_latent.dtype)
        t = draws.randint(self.config.diffusion_train_timesteps, (b,), device)
        noisy = self.scheduler.add_noise(target_latent, noise, t)
        return F.mse_loss(at_least_float32(self._eps(noisy, t, condition)), at_least_float32(noise))

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, seq: VLASequence, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,C,h,w) scaled latent of the frame after the sequence's first one, by DDPM from pure noise."""
        condition = self.conditions(hidden, seq)
        scheduler = DDPMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps or self.config.diffusion_sample_steps, device=hidden.device)
        x = torch.randn(hidden.shape[0], self.config.vae_latent_channels, *self.config.latent_grid,
                        generator=generator, device=hidden.device, dtype=condition.dtype)
        for t in scheduler.timesteps:
            eps = self._eps(x, t.expand(x.shape[0]), condition)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        return x
