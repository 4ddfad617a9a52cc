"""Diffusion world model: conditions gathered per row (current frame's image states, the plan's mean state), next-frame
latent loss, zero-init image condition, DDIM sampling, gradients into the backbone, save/load."""
from __future__ import annotations

import pytest
import torch

from policies.backbone import DriveVLAW0Backbone
from policies.diffusion_wm import DiffusionWorldModel
from policies.noise import BatchNoise
from policies.sequence import TokenType
from tests.policies.checkpoints import micro_config
from tests.policies.test_action_expert import vla_batch

SMALL = dict(num_hidden_layers=2, use_action_expert=False, diffusion_channels=(16, 32), diffusion_cond_channels=8,
             diffusion_cross_dim=32)


def _conditioned():
    """A micro config, backbone and world model (seed 0), a training batch and the backbone's hidden states for it."""
    config = micro_config(**SMALL)
    torch.manual_seed(0)
    backbone, wm = DriveVLAW0Backbone(config), DiffusionWorldModel(config)
    batch = vla_batch(config)
    seq = batch.full
    return config, backbone, wm, batch, backbone(seq.input_ids, seq.attention_mask, seq.position_ids).hidden_states


def test_loss_sampling_and_conditioning():
    config, backbone, wm, batch, hidden = _conditioned()
    h, w = config.image_grid
    target = torch.randn(2, config.vq_code_dim, h, w)
    loss = wm.loss(hidden, batch.full, target, BatchNoise(torch.Generator().manual_seed(0)))
    assert loss.dim() == 0 and torch.isfinite(loss)
    # The image condition enters through zero-initialised conv_in channels.
    assert torch.all(wm.unet.conv_in.weight[:, config.vq_code_dim:] == 0)
    loss.backward()
    assert wm.unet.conv_in.weight.grad[:, config.vq_code_dim:].abs().sum() > 0
    assert wm.action_mlp[1].weight.grad.abs().sum() > 0
    assert backbone.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0  # dense signal reaches the backbone
    with torch.no_grad():
        sample = wm.sample(hidden, batch.full, steps=2, generator=torch.Generator().manual_seed(0))
    assert sample.shape == target.shape and torch.isfinite(sample).all()


@torch.no_grad()
def test_conditions_are_gathered_per_row_from_the_current_frame_and_the_plan():
    """Rows of another length (other words, other FAST counts: other left padding) read their own positions: the image
    map is the current frame's hidden states in raster order (through the projection), the action token the mean
    hidden state over the row's plan tokens (the FAST tokens after its last <boa>)."""
    config, _, wm, batch, _ = _conditioned()
    seq = batch.full
    assert (seq.type_ids == TokenType.PAD).sum(1).unique().numel() == 2  # the rows are padded differently
    hidden = torch.randn(*seq.input_ids.shape, config.hidden_size, generator=torch.Generator().manual_seed(0))
    img, act = wm.conditions(hidden, seq)
    h, w = config.image_grid
    assert img.shape == (2, config.diffusion_cond_channels, h, w) and act.shape == (2, 1, config.diffusion_cross_dim)
    for r in range(2):
        positions = (seq.type_ids[r] == TokenType.IMAGE).nonzero()[:, 0][-config.image_tokens_per_frame:]
        grid = wm.image_norm(hidden[r, positions]).T.reshape(1, config.hidden_size, h, w)
        torch.testing.assert_close(img[r:r + 1], wm.image_proj(grid))
        last_boa = int((seq.input_ids[r] == config.special_id("<boa>")).nonzero().max())
        plan = (seq.type_ids[r] == TokenType.ACTION) & (torch.arange(seq.input_ids.shape[1]) > last_boa)
        assert plan.sum() == seq.plan_mask[r].sum() > 0
        torch.testing.assert_close(act[r, 0], wm.action_mlp(hidden[r, plan].mean(0)))


@torch.no_grad()
def test_a_row_has_the_same_conditions_in_a_batch_as_alone():
    config, _, wm, batch, _ = _conditioned()
    seq = batch.full
    hidden = torch.randn(*seq.input_ids.shape, config.hidden_size, generator=torch.Generator().manual_seed(0))
    img, act = wm.conditions(hidden, seq)
    for r in range(2):
        pads = int((seq.type_ids[r] == TokenType.PAD).sum())
        row = type(seq)(**{k: (v[r:r + 1, pads:] if k != "image_index" else v[r:r + 1] - pads)
                           for k, v in vars(seq).items()})
        row_img, row_act = wm.conditions(hidden[r:r + 1, pads:], row)
        torch.testing.assert_close(row_img, img[r:r + 1])
        torch.testing.assert_close(row_act, act[r:r + 1])


def test_a_sequence_without_the_plan_is_refused():
    config, backbone, wm, batch, _ = _conditioned()
    prompt = batch.prompt
    hidden = torch.zeros(*prompt.input_ids.shape, config.hidden_size)
    with pytest.raises(ValueError, match="plan"):
        wm.conditions(hidden, prompt)


def test_training_reduces_the_denoising_loss():
    config = micro_config(**SMALL)
    torch.manual_seed(0)
    wm = DiffusionWorldModel(config)
    h, w = config.image_grid
    seq = vla_batch(config).full
    hidden = torch.randn(*seq.input_ids.shape, config.hidden_size)
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
    config = micro_config(**SMALL)
    torch.manual_seed(0)
    wm = DiffusionWorldModel(config).eval()
    seq = vla_batch(config).full
    hidden = torch.randn(*seq.input_ids.shape, config.hidden_size)
    wm.save_pretrained(tmp_path)
    loaded = DiffusionWorldModel.from_pretrained(tmp_path).eval()
    a = wm.sample(hidden, seq, steps=2, generator=torch.Generator().manual_seed(0))
    b = loaded.sample(hidden, seq, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_the_sampler_inverts_the_training_objective():
    """A denoiser that returns exactly the noise of the training objective's forward process (x_t = sqrt(abar_t) x0 +
    sqrt(1 - abar_t) eps, under the training schedule) has zero training loss, and DDIM walks it down the same
    noise: every later step's input holds the noise the first step found (deterministic DDIM keeps eps), and the
    sample is x0. A sampler on another schedule or reading the network as another prediction (v, x0) changes eps
    between steps."""
    config, _, wm, batch, hidden = _conditioned()
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
    assert wm.loss(hidden, batch.full, x0, BatchNoise(torch.Generator().manual_seed(0))) < 1e-10
    predicted.clear()
    sample = wm.sample(hidden, batch.full, steps=7, generator=torch.Generator().manual_seed(0))
    assert len(predicted) == 7
    for eps in predicted[1:]:
        torch.testing.assert_close(eps, predicted[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(sample, x0, atol=1e-4, rtol=0)
