"""Micro checkpoints for the checkpoint tests: a DriveVLA-W0 model small enough to save and load in well under a
second, written in the real layout by `save_pretrained`, and helpers that edit its files."""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from policies.action_tokens import fit_action_tokenizer
from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving

MICRO = dict(num_hidden_layers=1, hidden_size=32, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
             head_dim=16, expert_hidden_size=16, expert_intermediate_size=16, image_height=32, image_width=64,
             vq_channels=(4, 4, 4), vq_code_dim=4, vq_codebook_size=8, fast_vocab_size=64,
             max_position_embeddings=256, use_action_expert=True)


# The Qwen2.5-VL track at micro size: 4 px patches (8 px tokens: 4x8 per frame), a 2-block VAE (16x32 latents).
MICRO_VIT = dict(image_input="vit", use_action_expert=False, vit_patch_size=4, vit_depth=1, vit_hidden_size=16,
                 vit_intermediate_size=16, vit_heads=2, vit_fullatt_blocks=(0,), mrope_section=(2, 3, 3),
                 vae_channels=(4, 4), vae_scaling_factor=1.0, diffusion_channels=(8, 16), diffusion_cross_dim=16)

# Emu3's vision tokenizer (transformers' Emu3VQVAE) at micro size: four 32-channel stages (8x down: 4x8 codes per
# frame), attention in the last, one copy of each frame.
MICRO_EMU3 = dict(vq_model="emu3", emu3_vq_channels=(32, 32, 32, 32), emu3_vq_res_blocks=1, emu3_vq_attn_stages=(3,),
                  emu3_vq_latent_channels=4, emu3_vq_temporal_factor=1)


def driving_motion(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ego_poses (n,4,3), plans (n,8,3)) of n made-up drives: speeds 0-12 m/s, gentle curves, poses 0.5 s apart."""
    g = torch.Generator().manual_seed(seed)
    # float32 draws whatever the default dtype: a float64 run (tests/training/distributed_run.py) fits the same tokenizer
    speed = torch.rand(n, generator=g, dtype=torch.float32) * 12
    curvature = (torch.rand(n, generator=g, dtype=torch.float32) - 0.5) * 0.04
    t = torch.arange(-3, 9, dtype=torch.float64) * 0.5  # history -1.5..0 s, plan 0.5..4 s
    s = speed[:, None].double() * t
    heading = curvature[:, None].double() * s
    x, y = s * torch.cos(heading / 2), s * torch.sin(heading / 2)
    poses = torch.stack([x, y, heading], -1).float()
    return poses[:, :4], poses[:, 4:]


@functools.cache
def _fitted(fast_vocab_size: int, fast_scale: float) -> tuple:
    config = DriveVLAW0Config.preset("tiny", fast_vocab_size=fast_vocab_size, fast_scale=fast_scale)
    fields = fit_action_tokenizer(config, *driving_motion(400))
    return tuple(fields.items())


def micro_config(**overrides) -> DriveVLAW0Config:
    """The micro preset (with `image_input="vit"`, its Qwen track) with an action tokenizer fitted on `driving_motion`
    (unless overrides give one)."""
    fields = {**MICRO, **(MICRO_VIT if overrides.get("image_input") == "vit" else {}), **overrides}
    base = DriveVLAW0Config.preset("tiny", **fields)
    fitted = {} if "fast_tokenizer" in overrides else dict(_fitted(base.fast_vocab_size, base.fast_scale))
    return DriveVLAW0Config.preset("tiny", **{**fields, **fitted})


def save_micro(folder: Path, seed: int = 0, **overrides) -> DriveVLAW0ForDriving:
    """A micro model (weights from `seed`) saved to `folder` by `save_pretrained`; returns it."""
    torch.manual_seed(seed)
    model = DriveVLAW0ForDriving(micro_config(**overrides))
    model.save_pretrained(folder)
    return model


def edit_config(folder: Path, edit: Callable[[dict], dict | None]) -> None:
    """Rewrite folder/config.json with `edit(fields)` (which may change `fields` in place and return None)."""
    path = folder / "config.json"
    fields = json.loads(path.read_text())
    edited = edit(fields)
    path.write_text(json.dumps(fields if edited is None else edited, indent=2))


def edit_tensors(folder: Path, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                 keep_record: bool = True) -> None:
    """Rewrite folder/model.safetensors with `edit(tensors)`, keeping its metadata (the save-time record) or only
    the plain {"format": "pt"} a checkpoint saved before the record had."""
    path = folder / "model.safetensors"
    with safe_open(path, "pt") as f:
        metadata = f.metadata() if keep_record else {"format": "pt"}
    save_file(edit(load_file(path)), path, metadata=metadata)


def strip_record(folder: Path) -> None:
    """Make folder's checkpoint look like one saved before the record existed (the shipped tiny one)."""
    edit_tensors(folder, lambda tensors: tensors, keep_record=False)


def same_state(model: torch.nn.Module, other: torch.nn.Module) -> bool:
    a, b = model.state_dict(), other.state_dict()
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
