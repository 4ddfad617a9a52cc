"""Diffusion world model (the Qwen track's ROSS head): conditions gathered per row (the first frame's image states resized
to the latent grid, the first action segment's mean state), zero-gated injection after conv_in, the training loss,
DDPM sampling that inverts it, gradients into the backbone, save/load."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from policies.backbone import DriveVLAW0Backbone
from policies.diffusion_wm import DiffusionWorldModel, first_action_mask
from policies.noise import BatchNoise
from policies.sequence import TokenType
from tests.policies.checkpoints import micro_config
from tests.policies.test_action_expert import vla_batch

VIT = dict(image_input="vit", num_hidden_layers=2)


def _conditioned():
    """A micro Qwen-track config, backbone and world model (seed 0), a training batch and the backbone's hidden states
    for it (its frames' pixel patches random)."""
    config = micro_config(**VIT)
    torch.manual_seed(0)
    backbone, wm = DriveVLAW0Backbone(config), DiffusionWorldModel(config)
    batch = vla_batch(config)
    patches = torch.randn(2, config.num_history_frames, 128, 96)
    return config, backbone, wm, batch, backbone(batch.full, patches).hidden_states


def _open_gates(wm: DiffusionWorldModel) -> None:
    with torch.no_grad():
        wm.image_gate.fill_(0.7)
        wm.action_gate.fill_(-1.3)


def test_the_first_action_mask_is_the_first_assistant_answers_fast_tokens():
    config, _, _, batch, _ = _conditioned()
    seq = batch.full
    mask = first_action_mask(seq)
    eoa = config.special_id("<eoa>")
    for r in range(2):
        first_eoa = int((seq.input_ids[r] == eoa).nonzero()[0])
        expected = (seq.type_ids[r] == TokenType.ACTION) & (torch.arange(seq.input_ids.shape[1]) < first_eoa)
        assert expected.sum() > 0 and torch.equal(mask[r], expected)
        assert not (mask[r] & seq.plan_mask[r]).any()


@torch.no_grad()
def test_conditions_are_the_first_frames_states_on_the_latent_grid_and_the_first_actions_mean_state():
    """Rows padded differently read their own positions: the image map is the first frame's hidden states in raster
    order, normed, bilinearly resized to the latent grid, through the image MLP; the action vector is the mean hidden
    state over the first segment's FAST tokens, normed, through the action MLP; each times its gate."""
    config, _, wm, batch, _ = _conditioned()
    _open_gates(wm)
    seq = batch.full
    assert (seq.type_ids == TokenType.PAD).sum(1).unique().numel() == 2  # the rows are padded differently
    hidden = torch.randn(*seq.input_ids.shape, config.hidden_size, generator=torch.Generator().manual_seed(0))
    cond = wm.conditions(hidden, seq)
    h, w = config.image_grid
    assert cond.shape == (2, config.diffusion_channels[0], *config.latent_grid)
    for r in range(2):
        positions = (seq.type_ids[r] == TokenType.IMAGE).nonzero()[:, 0][:config.image_tokens_per_frame]
        grid = F.layer_norm(hidden[r, positions], (config.hidden_size,)).T.reshape(1, -1, h, w)
        grid = F.interpolate(grid, size=config.latent_grid, mode="bilinear")
        image = wm.image_mlp(grid[0].flatten(1).T).T.reshape(1, -1, *config.latent_grid)
        first = first_action_mask(seq)[r]
        action = wm.action_mlp(F.layer_norm(hidden[r, first].mean(0), (config.hidden_size,)))
        torch.testing.assert_close(cond[r:r + 1], 0.7 * image - 1.3 * action[None, :, None, None])


@torch.no_grad()
def test_the_condition_enters_after_conv_in_and_closed_gates_leave_the_unet_alone():
    config, _, wm, batch, hidden = _conditioned()
    seq = batch.full
    noisy = torch.randn(2, config.vae_latent_channels, *config.latent_grid, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10, 500])
    context = torch.zeros(2, 1, config.diffusion_cross_dim)
    plain = wm.unet(noisy, t, encoder_hidden_states=context).sample
    torch.testing.assert_close(wm._eps(noisy, t, wm.conditions(hidden, seq)), plain)  # gates start at 0
    _open_gates(wm)
    cond = wm.conditions(hidden, seq)
    seen = []

    def record(module, args, kwargs):
        seen.append(args[0] if args else kwargs["hidden_states"])

    handle = wm.unet.down_blocks[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        gated = wm._eps(noisy, t, cond)
    finally:
        handle.remove()
    assert (gated - plain).abs().max() > 1e-4
    torch.testing.assert_close(seen[0], wm.unet.conv_in(noisy) + cond)
    # The hook is armed only inside _eps: a plain UNet call afterwards is unconditioned again.
    torch.testing.assert_close(wm.unet(noisy, t, encoder_hidden_states=context).sample, plain)


def test_loss_gradients_reach_the_gates_the_mlps_the_backbone_and_the_vit():
    config, backbone, wm, batch, hidden = _conditioned()
    target = torch.randn(2, config.vae_latent_channels, *config.latent_grid)
    loss = wm.loss(hidden, batch.full, target, BatchNoise(torch.Generator().manual_seed(0)))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert wm.image_gate.grad.abs() > 0 and wm.action_gate.grad.abs() > 0  # closed gates still learn to open
    # Once open, the MLPs, the backbone and its ViT get the world model's gradient.
    config, backbone, wm, batch, hidden = _conditioned()
    _open_gates(wm)
    wm.loss(hidden, batch.full, target, BatchNoise(torch.Generator().manual_seed(0))).backward()
    assert wm.image_mlp[0].weight.grad.abs().sum() > 0 and wm.action_mlp[0].weight.grad.abs().sum() > 0
    assert backbone.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    assert backbone.lm.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0


def test_a_sequence_without_the_first_action_is_refused():
    config, _, wm, batch, _ = _conditioned()
    seq = batch.full
    seq.type_ids = torch.where(seq.type_ids == TokenType.ACTION, int(TokenType.TEXT), seq.type_ids)
    with pytest.raises(ValueError, match="action tokens"):
        wm.conditions(torch.zeros(*seq.input_ids.shape, config.hidden_size), seq)


def test_training_reduces_the_denoising_loss():
    config, _, wm, batch, hidden = _conditioned()
    hidden = hidden.detach()
    seq = batch.full
    target = torch.randn(2, config.vae_latent_channels, *config.latent_grid).tanh()
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
    config, _, wm, batch, hidden = _conditioned()
    _open_gates(wm)
    wm.eval().save_pretrained(tmp_path)
    loaded = DiffusionWorldModel.from_pretrained(tmp_path).eval()
    a = wm.sample(hidden, batch.full, steps=2, generator=torch.Generator().manual_seed(0))
    b = loaded.sample(hidden, batch.full, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_the_sampler_inverts_the_training_objective():
    """A denoiser that returns exactly the noise of the training objective's forward process (x_t = sqrt(abar_t) x0 +
    sqrt(1 - abar_t) eps, under SD-1.5's schedule) has zero training loss, and DDPM sampling with it ends at x0 (each
    step's x0 estimate is exact; the last step adds no noise). A sampler on another schedule or reading the network
    as another prediction (v, x0) would not."""
    config, _, wm, batch, hidden = _conditioned()
    hidden = hidden.detach()
    x0 = torch.rand(2, config.vae_latent_channels, *config.latent_grid, generator=torch.Generator().manual_seed(1))
    x0 = x0 * 1.6 - 0.8
    abar = wm.scheduler.alphas_cumprod
    assert torch.allclose(wm.scheduler.betas[[0, -1]], torch.tensor([0.00085, 0.012]))
    calls = []

    def oracle(noisy, t, condition):
        a = abar[t].view(-1, 1, 1, 1).to(noisy.dtype)
        calls.append(t)
        return (noisy - a.sqrt() * x0) / (1 - a).sqrt()

    wm._eps = oracle
    assert wm.loss(hidden, batch.full, x0, BatchNoise(torch.Generator().manual_seed(0))) < 1e-10
    calls.clear()
    sample = wm.sample(hidden, batch.full, steps=7, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 7
    torch.testing.assert_close(sample, x0, atol=1e-4, rtol=0)
