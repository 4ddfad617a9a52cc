"""Emu3's vision tokenizer as the Emu3 track's image tokenizer (`vq_model="emu3"`): the codes and frames are
transformers' `Emu3VQVAE`'s own, stage 0 trains it, and a checkpoint under the official Emu3-VisionTokenizer names
(read from the official `modeling_emu3visionvq.py`) loads through the converter and gives the same codes."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from policies.config import DriveVLAW0Config
from policies.convert import (
    ConversionError,
    load_official_vision_tokenizer,
    save_official_vision_tokenizer,
    vision_tokenizer_fields,
)
from policies.emu3_vq import Emu3ImageTokenizer
from policies.model import DriveVLAW0ForDriving
from tests.policies.checkpoints import MICRO, MICRO_EMU3
from tests.policies.frames import road_frames


def _config(**overrides) -> DriveVLAW0Config:
    return DriveVLAW0Config.preset("tiny", **{**MICRO, **MICRO_EMU3, **overrides})


def _randomised(tokenizer: Emu3ImageTokenizer, seed: int = 0) -> Emu3ImageTokenizer:
    """Weights and batch-norm statistics drawn away from their initial values, so a misplaced tensor would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in tokenizer.model.state_dict().items():
            if t.is_floating_point():
                t.copy_((t + 0.05 * torch.randn(t.shape, generator=g)).abs() if "running_var" in name
                        else t + 0.05 * torch.randn(t.shape, generator=g))
    return tokenizer.eval()


@pytest.mark.parametrize("temporal_factor", [1, 4])
@torch.no_grad()
def test_codes_and_frames_are_those_of_transformers_emu3vqvae(temporal_factor):
    config = _config(emu3_vq_temporal_factor=temporal_factor)
    torch.manual_seed(0)
    tokenizer = _randomised(Emu3ImageTokenizer(config))
    frames = road_frames(2, config.image_height, config.image_width)
    codes = tokenizer.encode(frames)
    sizes = torch.tensor([[config.image_height, config.image_width]] * 2)
    expected = torch.stack(tokenizer.model.encode(frames * 2 - 1, sizes).image_tokens)
    assert codes.shape == (2, *config.image_grid) and torch.equal(codes, expected)
    assert codes.unique().numel() > 1
    torch.testing.assert_close(tokenizer.decode(codes), ((tokenizer.model.decode(codes) + 1) / 2).clamp(0, 1))
    out = tokenizer(frames)  # the training forward quantises to the same codes
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(out.reconstruction.clamp(0, 1), tokenizer.decode(codes))


def test_stage_0_loss_reaches_every_parameter_and_lowers_the_reconstruction_error():
    config = _config()
    torch.manual_seed(0)
    tokenizer = Emu3ImageTokenizer(config).train()
    frames = road_frames(4, config.image_height, config.image_width, seed=1)
    tokenizer(frames).loss.backward()
    assert [n for n, p in tokenizer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    opt = torch.optim.Adam(tokenizer.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        out = tokenizer(frames)
        out.loss.backward()
        opt.step()
        losses.append(out.reconstruction_loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_the_model_builds_it_from_the_config_and_the_preset_keeps_the_code_grid():
    tiny = DriveVLAW0Config.preset("tiny")
    emu3 = DriveVLAW0Config.preset("tiny", vq_model="emu3")
    assert emu3.image_grid == tiny.image_grid and emu3.vocab_size == tiny.vocab_size
    assert isinstance(DriveVLAW0ForDriving(_config()).vq, Emu3ImageTokenizer)
    paper = DriveVLAW0Config.preset("paper")  # the paper's tokenizer is BAAI's Emu3-VisionTokenizer: 18x32 codes a frame
    assert paper.image_grid == (18, 32) and (paper.vq_codebook_size, paper.vq_code_dim) == (32768, 4)
    assert (paper.vq_model, paper.emu3_vq_channels, paper.emu3_vq_temporal_factor) == ("emu3", (256, 512, 512, 1024), 4)
    assert DriveVLAW0Config.preset("paper", image_input="vit").vq_model == "w0sim"  # that track has no VQ tokenizer


@pytest.mark.parametrize("overrides, message", [
    ({"emu3_vq_channels": (32, 48)}, "48 is not a multiple of 32"),
    ({"emu3_vq_channels": (64, 96, 128, 128)}, "96 is not a multiple of the first stage's"),
    ({"emu3_vq_attn_stages": (1,), "emu3_vq_channels": (32, 64, 64, 128)}, "stage 1, which is not a stage"),
    ({"emu3_vq_temporal_factor": 3}, "not a power of 2"),
    ({"image_height": 36}, "image_height is 36, not a multiple of the Emu3 VQ downsampling 8"),
    ({"vq_model": "taming"}, "vq_model='taming'"),
])
def test_tokenizer_sizes_transformers_cannot_build_are_refused_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


# Official Emu3-VisionTokenizer names (modeling_emu3visionvq.py: encoder.down[i].attn[j] with its own GroupNorm and
# 1x1-convolution q / k / v / proj_out, mid.attn_1, decoder.up[i] with spatial norms), as they are in its checkpoint.
OFFICIAL_NAMES = {
    "encoder.down.3.attn.0.q.weight": (32, 32, 1, 1), "encoder.down.3.attn.0.norm.weight": (32,),
    "encoder.mid.attn_1.proj_out.weight": (32, 32, 1, 1), "encoder.mid.attn_1.norm.bias": (32,),
    "encoder.mid.block_1.conv1.weight": (32, 32, 3, 3), "encoder.down.0.downsample.conv.weight": (32, 32, 3, 3),
    "decoder.up.3.attn.1.norm.conv_y.weight": (32, 4, 1, 1), "decoder.mid.attn_1.k.bias": (32,),
    "decoder.up.1.upsample.conv.weight": (32, 32, 3, 3), "quantize.embedding.weight": (8, 4),
}


def test_an_official_vision_tokenizer_checkpoint_loads_through_the_converter(tmp_path):
    config = _config()
    torch.manual_seed(0)
    model = DriveVLAW0ForDriving(config).eval()
    _randomised(model.vq)
    frames = road_frames(2, config.image_height, config.image_width, seed=2)
    with torch.no_grad():
        codes, decoded = model.vq.encode(frames), model.vq.decode(model.vq.encode(frames))
    save_official_vision_tokenizer(model, tmp_path)
    saved = {k: tuple(v.shape) for k, v in load_file(tmp_path / "model.safetensors").items()}
    assert {k: saved.get(k) for k in OFFICIAL_NAMES} == OFFICIAL_NAMES
    assert not [k for k in saved if any(s in k for s in ("_proj", "middle_block", "down_block", "up_block", "attn_norm"))]
    fields = vision_tokenizer_fields(tmp_path)
    fresh = DriveVLAW0ForDriving(DriveVLAW0Config.preset("tiny", **{**MICRO, **fields})).eval()
    assert fresh.config.emu3_vq_channels == config.emu3_vq_channels and fresh.config.image_grid == config.image_grid
    load_official_vision_tokenizer(fresh, tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh.vq.encode(frames), codes)
        torch.testing.assert_close(fresh.vq.decode(codes), decoded)


def test_a_vision_tokenizer_of_other_sizes_or_a_w0sim_model_is_refused(tmp_path):
    save_official_vision_tokenizer(DriveVLAW0ForDriving(_config()), tmp_path)
    with pytest.raises(ConversionError, match="shape mismatch: .*quantize.embedding.weight"):
        load_official_vision_tokenizer(DriveVLAW0ForDriving(_config(vq_codebook_size=16)), tmp_path)
    with pytest.raises(ConversionError, match="missing: .*down_block.down.4"):
        load_official_vision_tokenizer(DriveVLAW0ForDriving(_config(emu3_vq_channels=(32,) * 5, image_height=64,
                                                                    image_width=128)), tmp_path)
    with pytest.raises(ConversionError, match="need vq_model 'emu3'"):
        load_official_vision_tokenizer(DriveVLAW0ForDriving(DriveVLAW0Config.preset("tiny", **MICRO)), tmp_path)
