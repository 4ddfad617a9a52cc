"""Diffusion world model: next-frame latent loss, zero-init image condition, DDIM sampling shapes, gradients into the backbone."""
from __future__ import annotations

import torch

from policies.backbone import DriveVLAW0Backbone
from policies.config import DriveVLAW0Config
from policies.diffusion_wm import DiffusionWorldModel
from policies.sequence import SequenceBuilder
from tests.policies.test_backbone import _batch

TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, image_height=32, image_width=64, vq_code_dim=8,
            diffusion_channels=(16, 32), diffusion_cond_channels=8, diffusion_cross_dim=32)


def test_loss_sampling_and_conditioning():
    config = DriveVLAW0Config.preset("tiny", **TINY)
    torch.manual_seed(0)
    backbone, wm = DriveVLAW0Backbone(config), DiffusionWorldModel(config)
    batch = _batch(config)
    batch.pop("future_codes")
    seq = SequenceBuilder(config).build(**batch)
    hidden = backbone(seq.input_ids, seq.attention_mask, seq.position_ids).hidden_states
    h, w = config.image_grid
    target = torch.randn(2, config.vq_code_dim, h, w)
    loss = wm.loss(hidden, seq, target, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    # The image condition enters through zero-initialised conv_in channels.
    assert torch.all(wm.unet.conv_in.weight[:, config.vq_code_dim:] == 0)
    loss.backward()
    assert wm.unet.conv_in.weight.grad[:, config.vq_code_dim:].abs().sum() > 0
    assert backbone.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0  # dense signal reaches the backbone
    with torch.no_grad():
        sample = wm.sample(hidden, seq, steps=2, generator=torch.Generator().manual_seed(0))
    assert sample.shape == target.shape and torch.isfinite(sample).all()


def test_training_reduces_the_denoising_loss():
    config = DriveVLAW0Config.preset("tiny", **TINY)
    torch.manual_seed(0)
    wm = DiffusionWorldModel(config)
    h, w = config.image_grid
    hidden = torch.randn(2, 200, config.hidden_size)
    batch = _batch(config)
    batch.pop("future_codes")
    seq = SequenceBuilder(config).build(**batch)
    hidden = hidden[:, :seq.input_ids.shape[1]]
    target = torch.randn(2, config.vq_code_dim, h, w).tanh()
    opt = torch.optim.AdamW(wm.parameters(), lr=2e-3)

    def eval_loss() -> float:
        with torch.no_grad():
            return sum(wm.loss(hidden, seq, target, torch.Generator().manual_seed(s)).item() for s in range(4))

    first = eval_loss()
    for step in range(15):
        loss = wm.loss(hidden, seq, target, torch.Generator().manual_seed(100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < first


@torch.no_grad()
def test_save_load_round_trip(tmp_path):
    config = DriveVLAW0Config.preset("tiny", **TINY)
    torch.manual_seed(0)
    wm = DiffusionWorldModel(config).eval()
    batch = _batch(config)
    batch.pop("future_codes")
    seq = SequenceBuilder(config).build(**batch)
    hidden = torch.randn(2, seq.input_ids.shape[1], config.hidden_size)
    wm.save_pretrained(tmp_path)
    loaded = DiffusionWorldModel.from_pretrained(tmp_path).eval()
    a = wm.sample(hidden, seq, steps=2, generator=torch.Generator().manual_seed(0))
    b = loaded.sample(hidden, seq, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
