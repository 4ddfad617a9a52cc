"""Action expert: joint attention vs a from-scratch reference, context masking, the three decoders, caching, save/load."""
from __future__ import annotations

import pytest
import torch
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from policies.action_expert import DriveVLAW0ExpertPolicy, state_features
from policies.config import DriveVLAW0Config
from policies.noise import BatchNoise
from policies.sequence import SequenceBuilder, TokenType
from tests.policies.test_backbone import _batch

TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, expert_hidden_size=32, expert_intermediate_size=64,
            image_height=32, image_width=64)


def _setup(decoder: str = "query", seed: int = 0, **overrides):
    config = DriveVLAW0Config.preset("tiny", **{**TINY, "expert_decoder": decoder, **overrides})
    torch.manual_seed(seed)
    model = DriveVLAW0ExpertPolicy(config)
    batch = _batch(config)
    b = batch["text_ids"].shape[0]
    state = state_features(config, torch.tensor([3.0, 12.0]), torch.tensor([0.5, -1.0]), torch.tensor([1, 0]))
    g = torch.Generator().manual_seed(1)
    poses = torch.cumsum(torch.rand(b, config.num_poses, 3, generator=g) * torch.tensor([4.0, 0.4, 0.05]), 1)
    return config, model, batch, state, poses


def _reference_expert(model: DriveVLAW0ExpertPolicy, seq, x: torch.Tensor) -> torch.Tensor:
    """Joint attention computed from scratch: backbone layer inputs -> RoPE'd K/V, explicit softmax."""
    backbone = model.backbone.model
    out = backbone(input_ids=seq.input_ids, attention_mask=seq.attention_mask,
                   position_ids=seq.position_ids, output_hidden_states=True)
    length = seq.action_start - 1
    cos, sin = backbone.rotary_emb(out.hidden_states[0], seq.position_ids)
    hd = model.config.head_dim
    groups = model.config.num_attention_heads // model.config.num_key_value_heads
    b, n, _ = x.shape
    ctx_ok = seq.attention_mask[:, :length].bool()[:, None, None, :].expand(b, 1, n, length)
    allowed = torch.cat([ctx_ok, torch.ones(b, 1, n, n, dtype=torch.bool)], -1)
    for i, (vla_layer, layer) in enumerate(zip(backbone.layers, model.expert.layers)):
        hv = vla_layer.input_layernorm(out.hidden_states[i])
        kv = vla_layer.self_attn.k_proj(hv).view(b, -1, model.config.num_key_value_heads, hd).transpose(1, 2)
        vv = vla_layer.self_attn.v_proj(hv).view(b, -1, model.config.num_key_value_heads, hd).transpose(1, 2)
        kv, _ = apply_rotary_pos_emb(kv, kv, cos, sin)
        h = layer.input_layernorm(x)
        q = layer.self_attn.q_proj(h).view(b, n, -1, hd).transpose(1, 2)
        k = layer.self_attn.k_proj(h).view(b, n, -1, hd).transpose(1, 2)
        v = layer.self_attn.v_proj(h).view(b, n, -1, hd).transpose(1, 2)
        keys = torch.cat([kv[:, :, :length], k], 2).repeat_interleave(groups, 1)
        values = torch.cat([vv[:, :, :length], v], 2).repeat_interleave(groups, 1)
        scores = (q @ keys.transpose(-1, -2)) * hd ** -0.5
        attn = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        x = x + layer.self_attn.o_proj((attn @ values).transpose(1, 2).reshape(b, n, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.expert.norm(x)


@torch.no_grad()
def test_joint_attention_matches_reference_and_reads_only_the_context():
    config, model, batch, state, _ = _setup()
    model.eval()
    builder = SequenceBuilder(config)
    seq = builder.build(**batch)  # full training sequence: GT actions + future frame after <boa>
    x = torch.randn(2, 5, config.expert_hidden_size)
    ctx, mask = model.context(seq)
    got, _ = model.expert(x, ctx, mask, causal=False)
    torch.testing.assert_close(got, _reference_expert(model, seq, x), atol=1e-5, rtol=1e-4)

    def expert_out(s):
        c, m = model.context(s)
        return model.expert(x, c, m, causal=False)[0]

    # Tokens after the context (GT actions, future frame) and masked padding do not matter...
    changed = batch | {"action_ids": batch["action_ids"].flip(1), "future_codes": batch["future_codes"] * 0}
    torch.testing.assert_close(expert_out(builder.build(**changed)), got, atol=1e-6, rtol=0)
    padded = builder.build(**batch)
    padded.input_ids[padded.type_ids == TokenType.PAD] = config.image_offset + 7
    torch.testing.assert_close(expert_out(padded), got, atol=1e-6, rtol=0)
    # ...but the backbone's context (here one history image code) does.
    history = batch["history_codes"].clone()
    history[:, 0, 0, 0] = (history[:, 0, 0, 0] + 1) % config.vq_codebook_size
    assert (expert_out(builder.build(**(batch | {"history_codes": history}))) - got).abs().max() > 1e-4


@pytest.mark.parametrize("decoder", ["query", "ar", "flow"])
def test_decoders_train_and_predict_trajectories(decoder):
    config, model, batch, state, poses = _setup(decoder)
    builder = SequenceBuilder(config)
    seq = builder.build(**batch)
    head = getattr(model, "query_out", None) or getattr(model, "flow_out", None)
    if head is not None:  # zero-init heads pass no gradient upstream on the very first step
        with torch.no_grad():
            head.weight.normal_(std=0.02)
    out = model.loss(seq, state, poses, BatchNoise(torch.Generator().manual_seed(0)))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    # The expert's action loss also trains the backbone (stage 2: backbone not frozen).
    assert model.backbone.model.layers[0].self_attn.k_proj.weight.grad.abs().sum() > 0
    prompt_batch = {k: v for k, v in batch.items() if k not in ("action_ids", "future_codes")}
    prompt = builder.build(**prompt_batch)
    model.eval()
    traj = model.predict(prompt, state, generator=torch.Generator().manual_seed(0))
    assert traj.shape == (2, config.num_poses, 3) and torch.isfinite(traj).all()
    if decoder == "flow":
        one = model.predict(prompt, state, flow_steps=1, generator=torch.Generator().manual_seed(0))
        assert one.shape == (2, config.num_poses, 3) and torch.isfinite(one).all()


def test_query_decoder_fits_a_fixed_batch():
    config, model, batch, state, poses = _setup("query")
    seq = SequenceBuilder(config).build(**batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(seq, state, poses).loss.item()
    for _ in range(30):
        loss = model.loss(seq, state, poses).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


@torch.no_grad()
def test_ar_expert_cached_decoding_matches_full_pass():
    config, model, batch, state, _ = _setup("ar")
    model.eval()
    prompt_batch = {k: v for k, v in batch.items() if k not in ("action_ids", "future_codes")}
    prompt = SequenceBuilder(config).build(**prompt_batch)
    ctx, mask = model.context(prompt)
    tokens = model._ar_decode(ctx, mask, state)
    boa = torch.full((2, 1), config.special_id("<boa>"))
    x = torch.cat([model._state_token(state), model._ar_embed(torch.cat([boa, tokens[:, :-1]], 1))], 1)
    logits = model.ar_out(model.expert(x, ctx, mask, causal=True)[0][:, 1:])
    bins = config.action_bins
    for step in range(config.num_action_tokens):
        block = (step % 3) * bins
        expected = logits[:, step, block:block + bins].argmax(-1) + block + config.action_offset
        assert torch.equal(tokens[:, step], expected)


@torch.no_grad()
def test_initial_query_prediction_is_the_range_centre_and_save_load(tmp_path):
    config, model, batch, state, _ = _setup("flow")
    assert torch.all(model.flow_out.weight == 0)
    config, model, batch, state, _ = _setup("query")
    model.eval()
    prompt_batch = {k: v for k, v in batch.items() if k not in ("action_ids", "future_codes")}
    prompt = SequenceBuilder(config).build(**prompt_batch)
    traj = model.predict(prompt, state)
    torch.testing.assert_close(traj, model.denormalize_poses(torch.zeros_like(traj)))
    with torch.no_grad():
        model.query_out.weight.normal_()
    model.save_pretrained(tmp_path)
    loaded = DriveVLAW0ExpertPolicy.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.predict(prompt, state), model.predict(prompt, state))


def test_bf16_autocast_and_bf16_weights():
    config, model, batch, state, poses = _setup("flow")
    builder = SequenceBuilder(config)
    prompt_batch = {k: v for k, v in batch.items() if k not in ("action_ids", "future_codes")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(builder.build(**batch), state, poses)
        out.loss.backward()
        traj = model.eval().predict(builder.build(**prompt_batch), state, flow_steps=2)
    assert torch.isfinite(out.loss) and traj.dtype == torch.float32 and torch.isfinite(traj).all()
    model = model.to(torch.bfloat16)
    traj = model.predict(builder.build(**prompt_batch), state.bfloat16(), flow_steps=2)
    assert traj.shape == (2, config.num_poses, 3) and torch.isfinite(traj).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_the_flow_loss_of_a_model_in_another_dtype_trains_in_that_dtype(dtype):
    """A model cast to bfloat16 or float64 draws its flow-matching noise and times in its own dtype: the loss and
    the velocity come out in it and backpropagate (a float32 time would make the interpolated input float32, which
    a bfloat16 model's layers refuse)."""
    config, model, batch, state, poses = _setup("flow")
    model = model.to(dtype)
    out = model.loss(SequenceBuilder(config).build(**batch), state.to(dtype), poses,
                     BatchNoise(torch.Generator().manual_seed(0)))
    assert out.loss.dtype == dtype and out.prediction.dtype == dtype and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.flow_out.weight.grad.dtype == dtype and model.flow_out.weight.grad.abs().sum() > 0


def test_pose_normalisation_maps_the_configured_ranges_onto_minus_one_to_one_and_back():
    """The decoders work in [-1, 1]: each pose coordinate's configured range (x, y, heading) maps onto it, ends onto
    ends, and denormalising inverts normalising."""
    config, model, _, _, poses = _setup()
    ranges = torch.tensor([config.action_x_range, config.action_y_range, config.action_heading_range])
    lo, hi = ranges[:, 0], ranges[:, 1]
    torch.testing.assert_close(model.normalize_poses(torch.stack([lo, hi, (lo + hi) / 2])),
                               torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3]))
    torch.testing.assert_close(model.denormalize_poses(torch.tensor([[-1.0] * 3, [1.0] * 3])), torch.stack([lo, hi]))
    torch.testing.assert_close(model.denormalize_poses(model.normalize_poses(poses)), poses)
