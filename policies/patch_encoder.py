"""Patch autoencoder: frames (B,3,H,W) in [0,1] <-> continuous patch features (B,h*w,D), the ViT / Qwen2.5-VL input path.

Non-overlapping patches of `vq_downsample` pixels (so the grid and the sequence layout equal the
VQ path's), a linear patch embedding with learned 2-D positions, a small bidirectional
transformer encoder, and a linear per-patch pixel decoder (trained with reconstruction MSE so the
features can be decoded to frames for videos).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from policies.config import DriveVLAW0Config


class DriveVLAW0PatchEncoder(PreTrainedModel):
    """ViT-style encoder of the continuous path, configured by `patch_*` fields of `DriveVLAW0Config`."""

    config_class = DriveVLAW0Config
    base_model_prefix = "patch_encoder"
    main_input_name = "frames"
    _supports_sdpa = True  # uses torch's own attention; accepts a shared config's setting
    _supports_flash_attn = True

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        p, d = config.vq_downsample, config.patch_dim
        self.patch = p
        self.embed = nn.Linear(3 * p * p, d)
        self.pos = nn.Parameter(torch.zeros(config.image_tokens_per_frame, d))
        layer = nn.TransformerEncoderLayer(d, config.patch_heads, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.patch_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.to_pixels = nn.Linear(d, 3 * p * p)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            nn.init.normal_(self.pos, std=0.02)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B, h*w, D) features in raster order of the patch grid."""
        patches = F.unfold(frames * 2 - 1, self.patch, stride=self.patch).transpose(1, 2)
        return self.norm(self.encoder(self.embed(patches) + self.pos))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """(B, h*w, D) features -> (B,3,H,W) frames clamped to [0,1]."""
        return ((self._pixels(features) + 1) / 2).clamp(0, 1)

    def _pixels(self, features: torch.Tensor) -> torch.Tensor:
        c = self.config
        cols = self.to_pixels(features).transpose(1, 2)
        return F.fold(cols, (c.image_height, c.image_width), self.patch, stride=self.patch)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, reconstruction MSE) of a batch of frames."""
        features = self.encode(frames)
        return features, F.mse_loss((self._pixels(features) + 1) / 2, frames)
