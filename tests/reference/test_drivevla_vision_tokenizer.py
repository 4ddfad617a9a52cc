"""Reference suite (opt-in: -m drivevla_reference): the official DriveVLA-W0 code, imported from its checkout and run
in its own environment (scripts/drivevla_reference_env.sh: the transformers version it pins), on w0sim's files.

Emu3's vision tokenizer (`reference/Emu3/emu3/tokenizer/modeling_emu3visionvq.py`): a checkpoint the official
`Emu3VisionVQModel` saves loads through w0sim's converter and gives the official codes and frames; the checkpoint
w0sim's converter writes loads into the official model with nothing missing or left over and gives w0sim's codes.
Set W0SIM_DRIVEVLA_SRC to the checkout and W0SIM_DRIVEVLA_PYTHON to that environment's interpreter."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.config import DriveVLAW0Config
from policies.convert import load_official_vision_tokenizer, save_official_vision_tokenizer, vision_tokenizer_fields
from policies.model import DriveVLAW0ForDriving
from tests.policies.checkpoints import MICRO, MICRO_EMU3
from tests.policies.frames import road_frames

pytestmark = pytest.mark.drivevla_reference

SRC = os.environ.get("W0SIM_DRIVEVLA_SRC", "")
PYTHON = os.environ.get("W0SIM_DRIVEVLA_PYTHON", "")
EMU3 = Path(SRC) / "reference" / "Emu3"
# A micro Emu3-VisionTokenizer (official config.json fields): 4 stages of 32 channels, attention in the last.
OFFICIAL_CONFIG = dict(codebook_size=16, embed_dim=4, z_channels=4, double_z=False, in_channels=3, out_channels=3,
                       temporal_downsample_factor=4, ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1,
                       attn_resolutions=[3], dropout=0.0)

# Runs in the reference environment: argv = Emu3 folder, mode (save: build, perturb and save a model; load: load a
# folder), folder, frames .npy, output .npz (codes, decoded frames, and the keys the load missed or did not use).
OFFICIAL_RUN = """
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from emu3.tokenizer.configuration_emu3visionvq import Emu3VisionVQConfig
from emu3.tokenizer.modeling_emu3visionvq import Emu3VisionVQModel
mode, folder, frames, out = sys.argv[2:6]
if mode == "save":
    torch.manual_seed(0)
    model = Emu3VisionVQModel(Emu3VisionVQConfig(**json.loads(sys.argv[6])))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_((t + 0.05 * torch.randn_like(t)).abs() if "running_var" in name else t + 0.05 * torch.randn_like(t))
    model.save_pretrained(folder)
    info = {"missing_keys": [], "unexpected_keys": []}
else:
    model, info = Emu3VisionVQModel.from_pretrained(folder, output_loading_info=True)
model.eval()
with torch.no_grad():
    codes = model.encode(torch.from_numpy(np.load(frames)) * 2 - 1)
    decoded = ((model.decode(codes) + 1) / 2).clamp(0, 1)
np.savez(out, codes=codes.numpy(), decoded=decoded.numpy(), missing=np.array(info["missing_keys"], dtype=str),
         unexpected=np.array(info["unexpected_keys"], dtype=str))
"""


def _official(mode: str, folder: Path, frames: torch.Tensor, tmp_path: Path) -> dict[str, np.ndarray]:
    if not (SRC and PYTHON):
        pytest.skip("set W0SIM_DRIVEVLA_SRC (a DriveVLA-W0 checkout) and W0SIM_DRIVEVLA_PYTHON (the interpreter of "
                    "scripts/drivevla_reference_env.sh) to run the official code")
    if not (EMU3 / "emu3" / "tokenizer" / "modeling_emu3visionvq.py").is_file():
        pytest.skip(f"{EMU3}/emu3/tokenizer/modeling_emu3visionvq.py is absent: W0SIM_DRIVEVLA_SRC is not a DriveVLA-W0 "
                    "checkout")
    np.save(tmp_path / "frames.npy", frames.numpy())
    out = tmp_path / f"{mode}.npz"
    subprocess.run([PYTHON, "-c", OFFICIAL_RUN, str(EMU3), mode, str(folder), str(tmp_path / "frames.npy"), str(out),
                    json.dumps(OFFICIAL_CONFIG)], check=True, timeout=300)
    return dict(np.load(out))


def _frames() -> torch.Tensor:
    return road_frames(2, MICRO["image_height"], MICRO["image_width"], seed=4)


def test_an_official_vision_tokenizer_loads_through_the_converter_and_gives_its_codes_and_frames(tmp_path):
    frames = _frames()
    official = _official("save", tmp_path / "official", frames, tmp_path)
    fields = vision_tokenizer_fields(tmp_path / "official")
    model = DriveVLAW0ForDriving(DriveVLAW0Config.preset("tiny", **{**MICRO, **fields})).eval()
    load_official_vision_tokenizer(model, tmp_path / "official")
    with torch.no_grad():
        codes = model.vq.encode(frames)
        assert np.array_equal(codes.numpy(), official["codes"]) and len(np.unique(official["codes"])) > 1
        np.testing.assert_allclose(model.vq.decode(codes).numpy(), official["decoded"], atol=1e-5)


def test_the_converter_writes_a_vision_tokenizer_the_official_model_loads_whole(tmp_path):
    frames = _frames()
    torch.manual_seed(0)
    model = DriveVLAW0ForDriving(DriveVLAW0Config.preset("tiny", **{**MICRO, **MICRO_EMU3, "vq_codebook_size": 16,
                                                                    "emu3_vq_temporal_factor": 4})).eval()
    with torch.no_grad():
        for t in model.vq.model.parameters():
            t.add_(0.05 * torch.randn_like(t))
    save_official_vision_tokenizer(model, tmp_path / "ours")
    official = _official("load", tmp_path / "ours", frames, tmp_path)
    assert list(official["missing"]) == [] and list(official["unexpected"]) == []
    with torch.no_grad():
        codes = model.vq.encode(frames)
        assert np.array_equal(codes.numpy(), official["codes"])
        np.testing.assert_allclose(model.vq.decode(codes).numpy(), official["decoded"], atol=1e-5)
