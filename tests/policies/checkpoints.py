"""Micro checkpoints for the checkpoint tests: a DriveVLA-W0 model small enough to save and load in well under a
second, written in the real layout by `save_pretrained`, and helpers that edit its files."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving

MICRO = dict(num_hidden_layers=1, hidden_size=32, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
             head_dim=16, expert_hidden_size=16, expert_intermediate_size=16, image_height=32, image_width=64,
             vq_channels=(4, 4, 4), vq_code_dim=4, vq_codebook_size=8, action_bins=8, state_speed_bins=4,
             state_accel_bins=4, max_position_embeddings=256, use_action_expert=True)


def micro_config(**overrides) -> DriveVLAW0Config:
    return DriveVLAW0Config.preset("tiny", **{**MICRO, **overrides})


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
