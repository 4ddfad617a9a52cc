"""Diffusion world model: next-frame latent loss, zero-init image condition, DDIM sampling shapes, gradients into the backbone."""
from __future__ import annotations

import torch

from policies.backbone import DriveVLAW0Backbone
from policies.config import DriveVLAW0Config
from policies.diffusion_wm import DiffusionWorldModel
from policies.noise import BatchNoise
from policies.sequence import SequenceBuilder
from tests.policies.test_backbone import _batch

TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, image_height=32, image_width=64, vq_code_dim=8,
            diffusion_channels=(16, 32), diffusion_cond_channels=8, diffusion_cross_dim=32)


def _conditioned():
    """A tiny config, backbone and world model (seed 0), a prompt sequence and the backbone's hidden states for it."""
    config = DriveVLAW0Config.preset("tiny", **TINY)
    torch.manual_seed(0)
    backbone, wm = DriveVLAW0Backbone(config), DiffusionWorldModel(config)
    batch = _batch(config)
    batch.pop("future_codes")
    seq = SequenceBuilder(config).build(**batch)
    return config, backbone, wm, seq, backbone(seq.input_ids, seq.attention_mask, seq.position_ids).hidden_states


def test_loss_sampling_and_conditioning():
    config, backbone, wm, seq, hidden = _conditioned()
    h, w = config.image_grid
    target = torch.randn(2, config.vq_code_dim, h, w)
    loss = wm.loss(hidden, seq, target, BatchNoise(torch.Generator().manual_seed(0)))
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
            return sum(wm.loss(hidden, seq, target, BatchNoise(torch.Generator().manual_seed(s))).item() for s in range(4))

    first = eval_loss()
    for step in range(15):
        loss = wm.loss(hidden, seq, target, BatchNoise(torch.Generator().manual_seed(100 + step)))
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


def test_the_sampler_inverts_the_training_objective():
    """A denoiser that returns exactly the noise of the training objective's forward process (x_t = sqrt(abar_t) x0 +
    sqrt(1 - abar_t) eps, under the training schedule) has zero training loss, and DDIM walks it down the same
    noise: every later step's input holds the noise the first step found (deterministic DDIM keeps eps), and the
    sample is x0. A sampler on another schedule or reading the network as another prediction (v, x0) changes eps between steps."""
    config, _, wm, seq, hidden = _conditioned()
    hidden = hidden.detach()
    h, w = config.image_grid
    x0 = torch.rand(2, config.vq_code_dim, h, w, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    abar = wm.train_scheduler.alphas_cumprod
    predicted = []

    def oracle(noisy, t, img, act):
        a = abar[t].view(-1, 1, 1, 1).to(noisy.dtype)
        predicted.append((noisy - a.sqrt() * x0) / (1 - a).sqrt())
        return predicted[-1]

    wm._eps = oracle
    assert wm.loss(hidden, seq, x0, BatchNoise(torch.Generator().manual_seed(0))) < 1e-10
    predicted.clear()
    sample = wm.sample(hidden, seq, steps=7, generator=torch.Generator().manual_seed(0))
    assert len(predicted) == 7
    for eps in predicted[1:]:
        torch.testing.assert_close(eps, predicted[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(sample, x0, atol=1e-4, rtol=0)
