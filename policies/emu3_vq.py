"""Emu3's vision tokenizer as the Emu3 track's image tokenizer: transformers' `Emu3VQVAE`, with w0sim's VQ interface.

The paper tokenizes frames with Emu3's pretrained tokenizer (BAAI's `Emu3-VisionTokenizer`, 32,768 codes of 4
dims, 8x spatial downsampling); `policies.convert.load_official_vision_tokenizer` loads its official weights into
this class. Frames enter as Emu3's image processor gives them, in [-1, 1]; a still image is repeated
`temporal_downsample_factor` times, as `Emu3VQVAE.encode` does (Emu3: 4; a factor of 1 gives one latent per frame
at a quarter of the work).

The official code never trains the tokenizer. For stage 0 from scratch this module adds the VQ-VAE loss of van den
Oord et al. (2017): reconstruction MSE, codebook loss ||sg(z) - e||^2 and commitment `vq_commitment_weight` x
||z - sg(e)||^2, with straight-through gradients through the quantizer. It has no dead-code restarts (our
`policies.vq` has them), and from scratch at tiny size its codebook collapses (docs/DESIGN.md): it is meant for
Emu3's pretrained weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Emu3VQVAE, Emu3VQVAEConfig

from policies.config import DriveVLAW0Config
from policies.vq import VQOutput


def emu3_vq_config(config: DriveVLAW0Config) -> Emu3VQVAEConfig:
    """The `Emu3VQVAEConfig` of `config`'s emu3_vq_* and vq_codebook_size / vq_code_dim fields."""
    channels = config.emu3_vq_channels
    return Emu3VQVAEConfig(
        codebook_size=config.vq_codebook_size, embed_dim=config.vq_code_dim,
        latent_channels=config.emu3_vq_latent_channels, base_channels=channels[0],
        channel_multiplier=[c // channels[0] for c in channels], num_res_blocks=config.emu3_vq_res_blocks,
        attn_resolutions=list(config.emu3_vq_attn_stages), temporal_downsample_factor=config.emu3_vq_temporal_factor,
        # transformers sizes every attention block by hidden_size: the channels of the last stage, where they are.
        hidden_size=channels[-1],
    )


class Emu3ImageTokenizer(nn.Module):
    """Frames (B,3,H,W) in [0,1] <-> codes (B,h,w) through `self.model`, an `Emu3VQVAE`."""

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__()
        self.config = config
        self.model = Emu3VQVAE(emu3_vq_config(config))

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B,T,3,H,W) in [-1,1], the still frame repeated over the temporal factor."""
        t = self.config.emu3_vq_temporal_factor
        return (frames * 2 - 1).to(self.model.dtype).unsqueeze(1).expand(-1, t, -1, -1, -1)

    def _latents(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,1,D,h,w) pre-quantisation latents (encoder, then quant_conv over time), as `Emu3VQVAE.encode`."""
        hidden = self.model.encoder(self._pixels(frames))
        return self.model.quant_conv(hidden.permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4)

    def _decode(self, quant: torch.Tensor) -> torch.Tensor:
        """(B,1,D,h,w) code vectors -> (B,3,H,W) frames in [0,1] (unclamped), as `Emu3VQVAE.decode` from codes (this
        takes the straight-through vectors of training): the decoder reads the post-quant latents and, in its
        spatial norms, the code vectors; the first of the frames."""
        post = self.model.post_quant_conv(quant.permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4)
        video = self.model.decoder(post, quant)
        b, _, _, h, w = quant.shape
        f = self.model.spatial_scale_factor
        video = video.reshape(b, -1, self.model.config.out_channels, h * f, w * f)
        return (video[:, 0] + 1) / 2

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) float in [0,1] -> (B,h,w) long codes."""
        return self.model.quantize(self._latents(frames))[:, 0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B,h,w) long codes -> (B,3,H,W) frames clamped to [0,1], by `Emu3VQVAE.decode`."""
        return ((self.model.decode(codes) + 1) / 2).clamp(0, 1)

    def forward(self, frames: torch.Tensor) -> VQOutput:
        """Encode, quantise (straight-through) and reconstruct, with the VQ-VAE loss (module docstring)."""
        z = self._latents(frames)
        codes = self.model.quantize(z)
        e = self.model.quantize.embedding(codes).permute(0, 1, 4, 2, 3)
        codebook, commitment = F.mse_loss(e, z.detach()), F.mse_loss(z, e.detach())
        recon = self._decode(z + (e - z).detach())
        rec_loss = F.mse_loss(recon, frames)
        loss = rec_loss + codebook + self.config.vq_commitment_weight * commitment
        return VQOutput(recon, codes[:, 0], loss, rec_loss, commitment)


__all__ = ["Emu3ImageTokenizer", "emu3_vq_config"]
