"""Action expert: its context is the backbone's own K/V before the last <boa>, joint attention vs a from-scratch reference,
the state token, the query / AR / flow decoders, caching, dtypes, save/load."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import DynamicCache
from transformers.models.emu3.modeling_emu3 import apply_rotary_pos_emb

from policies.action_expert import STATE_FEATURES, DriveVLAW0ExpertPolicy, state_features
from policies.action_tokens import ActionTokenizer, frame_motions
from policies.config import COMMANDS, DriveVLAW0Config
from policies.motion import deltas_to_poses, poses_to_deltas
from policies.noise import BatchNoise
from policies.sequence import IGNORE, ChatSequenceBuilder, SequenceBuilder, TokenType, VLASequence
from policies.text import InstructionTokenizer
from tests.policies.checkpoints import driving_motion, micro_config

TEXTS = ["go straight", "turn left at the next intersection"]


@dataclass
class VLABatch:
    """A batch as the model builds it: the decoding prompt (ends with the current frame's <boa>), the training
    sequence (the plan after it, labels), the expert's state features and the parts they were built from."""

    prompt: VLASequence
    full: VLASequence
    state: torch.Tensor
    plans: torch.Tensor
    ego_poses: torch.Tensor
    command: torch.Tensor
    codes: torch.Tensor | None


def vla_batch(config: DriveVLAW0Config, seed: int = 0, codes: torch.Tensor | None = None,
              plans: torch.Tensor | None = None, command: torch.Tensor | None = None,
              texts: list[str] = TEXTS) -> VLABatch:
    """Sequences of `len(texts)` made-up drives (`driving_motion`): random image codes on the Emu3 track, Qwen's chat
    layout (image placeholders, `codes` None) on the Qwen track."""
    b, frames = len(texts), config.num_history_frames
    ego_poses, made_up = driving_motion(b, seed)
    plans = made_up if plans is None else plans
    command = torch.arange(b) % len(COMMANDS) if command is None else command
    if codes is None and config.image_input == "vq":
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, config.vq_codebook_size, (b, frames, *config.image_grid), generator=g)
    tokenizer = ActionTokenizer(config)
    words = [InstructionTokenizer().encode(t, add_special_tokens=False) for t in texts]
    motions = frame_motions(config, ego_poses.double())
    past = [tokenizer.encode(motions.past[:, f]) for f in range(frames)]
    to_next = [tokenizer.encode(motions.to_next[:, f]) for f in range(frames - 1)]
    plan_ids = tokenizer.encode(poses_to_deltas(plans.double()))
    if config.image_input == "vit":
        chat = ChatSequenceBuilder(config)
        prompt = chat.build(words, past, to_next)
        full = chat.build(words, past, to_next + [plan_ids], with_labels=True)
    else:
        builder = SequenceBuilder(config)
        prompt = builder.build(words, codes, past, to_next)
        full = builder.build(words, codes, past, to_next + [plan_ids], with_labels=True)
    state = state_features(tokenizer.normalizer.normalize(motions.past[:, -1]).float(), command)
    return VLABatch(prompt, full, state, plans, ego_poses, command, codes)


def _setup(decoder: str = "query", seed: int = 0, **overrides) -> tuple[DriveVLAW0Config, DriveVLAW0ExpertPolicy,
                                                                          VLABatch]:
    config = micro_config(num_hidden_layers=2, expert_decoder=decoder, **overrides)
    torch.manual_seed(seed)
    return config, DriveVLAW0ExpertPolicy(config), vla_batch(config)


def _expert_out(model: DriveVLAW0ExpertPolicy, seq: VLASequence, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
    ctx, mask = model.context(seq)
    return model.expert(x, ctx, mask, causal=causal)[0]


def _rows(ctx, mask, i: int):
    return [(k[i:i + 1], v[i:i + 1]) for k, v in ctx], mask[i:i + 1]


def _reference_expert(model: DriveVLAW0ExpertPolicy, seq: VLASequence, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Joint attention from scratch: the backbone over the WHOLE sequence, each layer's RoPE'd keys / values of its
    input, the expert's queries over [those at `context_mask` ; its own K/V], explicit softmax, repeated KV heads."""
    backbone, c = model.backbone.model, model.config
    out = backbone(input_ids=seq.input_ids, attention_mask=seq.attention_mask, position_ids=seq.position_ids,
                   output_hidden_states=True)
    cos, sin = backbone.rotary_emb(out.hidden_states[0], seq.position_ids)
    hd, groups = c.head_dim, c.num_attention_heads // c.num_key_value_heads
    b, n, _ = x.shape
    length = seq.input_ids.shape[1]
    own = torch.ones(n, n, dtype=torch.bool)
    own = torch.tril(own) if causal else own
    allowed = torch.cat([seq.context_mask[:, None, None, :].expand(b, 1, n, length),
                         own[None, None].expand(b, 1, n, n)], -1)
    for i, (vla_layer, layer) in enumerate(zip(backbone.layers, model.expert.layers)):
        hv = vla_layer.input_layernorm(out.hidden_states[i])
        kv = vla_layer.self_attn.k_proj(hv).view(b, length, -1, hd).transpose(1, 2)
        vv = vla_layer.self_attn.v_proj(hv).view(b, length, -1, hd).transpose(1, 2)
        kv, _ = apply_rotary_pos_emb(kv, kv, cos, sin)
        h = layer.input_layernorm(x)
        q = layer.self_attn.q_proj(h).view(b, n, -1, hd).transpose(1, 2)
        k = layer.self_attn.k_proj(h).view(b, n, -1, hd).transpose(1, 2)
        v = layer.self_attn.v_proj(h).view(b, n, -1, hd).transpose(1, 2)
        keys = torch.cat([kv, k], 2).repeat_interleave(groups, 1)
        values = torch.cat([vv, v], 2).repeat_interleave(groups, 1)
        scores = (q @ keys.transpose(-1, -2)) * hd ** -0.5
        attn = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        x = x + layer.self_attn.o_proj((attn @ values).transpose(1, 2).reshape(b, n, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.expert.norm(x)


# --- the context ------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_the_context_kv_are_the_backbones_own_attention_kv_before_the_last_boa():
    config, model, batch = _setup()
    model.eval()
    seq = batch.full
    cache = DynamicCache(config=model.backbone.model.config)
    model.backbone(seq, cache=cache, use_cache=True)
    ctx, mask = model.context(seq)
    n = mask.shape[1]
    # The context: every real token before the row's last <boa> (so not the plan), no column beyond it.
    last_boa = [int((row == config.special_id("<boa>")).nonzero().max()) for row in seq.input_ids]
    for r, boa in enumerate(last_boa):
        assert torch.equal(mask[r], seq.attention_mask[r, :n].bool() & (torch.arange(n) < boa))
    assert not seq.context_mask[:, n:].any()
    assert len(ctx) == config.num_hidden_layers
    for (keys, values), layer in zip(ctx, cache.layers):
        assert keys.shape == (2, config.num_key_value_heads, n, config.head_dim)
        torch.testing.assert_close(keys.transpose(1, 2)[mask], layer.keys[:, :, :n].transpose(1, 2)[mask])
        torch.testing.assert_close(values.transpose(1, 2)[mask], layer.values[:, :, :n].transpose(1, 2)[mask])


@torch.no_grad()
@pytest.mark.parametrize("causal", [False, True])
def test_joint_attention_matches_a_reference_computation(causal):
    config, model, batch = _setup()
    model.eval()
    x = torch.randn(2, 5, config.expert_hidden_size, generator=torch.Generator().manual_seed(0))
    got = _expert_out(model, batch.full, x, causal)
    torch.testing.assert_close(got, _reference_expert(model, batch.full, x, causal), atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_the_context_excludes_the_plan_so_the_prompt_and_the_training_sequence_give_the_same_output():
    config, model, batch = _setup()
    model.eval()
    x = torch.randn(2, 4, config.expert_hidden_size, generator=torch.Generator().manual_seed(0))
    ref = _expert_out(model, batch.prompt, x)
    _, prompt_mask = model.context(batch.prompt)
    assert torch.equal(prompt_mask.sum(1), batch.prompt.attention_mask.sum(1) - 1)  # all but the final <boa>
    torch.testing.assert_close(_expert_out(model, batch.full, x), ref, atol=1e-5, rtol=0)
    # Another plan (other FAST tokens, another row length and left padding) reads the same context...
    other = vla_batch(config, plans=batch.plans.flip(1) * torch.tensor([0.5, -1.0, -1.0]))
    assert not torch.equal(other.full.input_ids[other.full.plan_mask], batch.full.input_ids[batch.full.plan_mask])
    torch.testing.assert_close(_expert_out(model, other.full, x), ref, atol=1e-5, rtol=0)
    # ...and masked padding tokens are not read either.
    padded = vla_batch(config)
    padded.prompt.input_ids[padded.prompt.type_ids == TokenType.PAD] = config.image_offset + 3
    assert (padded.prompt.type_ids == TokenType.PAD).any()
    torch.testing.assert_close(_expert_out(model, padded.prompt, x), ref, atol=1e-5, rtol=0)
    # The stage-2 loss is the same on either sequence.
    torch.testing.assert_close(model.loss(batch.full, batch.state, batch.plans).loss,
                               model.loss(batch.prompt, batch.state, batch.plans).loss, atol=1e-6, rtol=0)
    # The context does hold the frames: one code of the current frame changes the output.
    codes = batch.codes.clone()
    codes[:, -1, 0, 0] = (codes[:, -1, 0, 0] + 1) % config.vq_codebook_size
    assert (_expert_out(model, vla_batch(config, codes=codes).prompt, x) - ref).abs().max() > 1e-4


def test_the_expert_never_changes_the_backbones_hidden_states():
    """The backbone never attends to expert tokens: its hidden states over the training sequence are the same before
    and after an expert pass (with backward), and whatever the expert's weights are."""
    config, model, batch = _setup()
    seq = batch.full

    def hidden():
        with torch.no_grad():
            return model.backbone(seq).hidden_states

    before = hidden()
    model.loss(seq, batch.state, batch.plans).loss.backward()
    assert torch.equal(hidden(), before)
    with torch.no_grad():
        for p in model.expert.parameters():
            p.add_(torch.randn_like(p))
    assert torch.equal(hidden(), before)


# --- the state token ------------------------------------------------------------------------------------------
def test_state_features_are_the_past_motions_then_the_command_one_hot():
    past = torch.arange(18, dtype=torch.float32).view(2, 3, 3) / 20
    state = state_features(past, torch.tensor([2, 0]))
    assert state.shape == (2, STATE_FEATURES) == (2, 13)
    torch.testing.assert_close(state[:, :9], past.flatten(1))
    assert torch.equal(state[:, 9:], torch.tensor([[0.0, 0, 1, 0], [1, 0, 0, 0]]))


@torch.no_grad()
def test_the_query_prediction_depends_on_the_state_token():
    config, model, batch = _setup()
    model.eval()
    with torch.no_grad():
        model.query_out.weight.normal_()
    a = model.predict(batch.prompt, batch.state)
    turned = vla_batch(config, command=torch.tensor([2, 2]))
    assert (model.predict(turned.prompt, turned.state) - a).abs().max() > 1e-4


# --- decoders -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", ["query", "ar", "flow"])
def test_decoders_train_and_predict_trajectories(decoder):
    config, model, batch = _setup(decoder)
    head = getattr(model, "query_out", None) or getattr(model, "flow_out", None)
    if head is not None:  # zero-init heads pass no gradient upstream on the very first step
        with torch.no_grad():
            head.weight.normal_(std=0.02)
    out = model.loss(batch.full, batch.state, batch.plans, BatchNoise(torch.Generator().manual_seed(0)))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    # The expert's action loss also trains the backbone (stage 2: backbone not frozen) and the state MLP.
    assert model.backbone.model.layers[0].self_attn.k_proj.weight.grad.abs().sum() > 0
    assert model.state_in[0].weight.grad.abs().sum() > 0
    model.eval()
    traj = model.predict(batch.prompt, batch.state, generator=torch.Generator().manual_seed(0))
    assert traj.shape == (2, config.num_poses, 3) and traj.dtype == torch.float32 and torch.isfinite(traj).all()
    if decoder == "flow":
        one = model.predict(batch.prompt, batch.state, flow_steps=1, generator=torch.Generator().manual_seed(0))
        assert one.shape == (2, config.num_poses, 3) and torch.isfinite(one).all()
        again = model.predict(batch.prompt, batch.state, generator=torch.Generator().manual_seed(0))
        assert torch.equal(again, traj)


def _fit(model: DriveVLAW0ExpertPolicy, batch: VLABatch, steps: int, decay: bool, lr: float = 3e-3) -> list[float]:
    """AdamW on the stage-2 loss of one fixed batch (the learning rate decaying linearly to 0 with `decay`); the
    losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps if decay else 1.0)
    losses = []
    for _ in range(steps):
        loss = model.loss(batch.full, batch.state, batch.plans).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def test_query_decoder_fits_a_fixed_batch_and_predicts_its_plans():
    config, model, batch = _setup("query")
    losses = _fit(model, batch, 100, decay=True, lr=1e-2)
    assert losses[-1] < 0.05 * losses[0], losses[::10]
    model.eval()
    error = (model.predict(batch.prompt, batch.state) - batch.plans).abs().amax((0, 1))  # max over rows and steps
    assert error[0] < 0.5 and error[1] < 0.2 and error[2] < 0.01, error


def test_the_flow_loss_targets_noise_minus_data_and_euler_integrates_from_noise_to_data():
    """x_tau = (1 - tau) x0 + tau eps: the velocity field (x - x0) / tau is exactly eps - x0 on every path, so the loss
    is zero for it, and Euler steps from tau = 1 (noise) to 0 (data) with it land on x0, the plan's motions."""
    config, model, batch = _setup("flow")
    x0 = model.plan_motions(batch.plans)
    taus = []

    def oracle(ctx, mask, state, x_tau, tau):
        taus.append(tau)
        return (x_tau - x0.to(x_tau.dtype)) / tau[:, None, None]

    model._flow_velocity = oracle
    out = model.loss(batch.full, batch.state, batch.plans, BatchNoise(torch.Generator().manual_seed(0)))
    assert out.loss < 1e-8
    assert ((taus[0] > 0) & (taus[0] <= 1)).all()
    taus.clear()
    traj = model.eval().predict(batch.prompt, batch.state, flow_steps=4, generator=torch.Generator().manual_seed(0))
    assert [t[0].item() for t in taus] == [1.0, 0.75, 0.5, 0.25]
    torch.testing.assert_close(traj, model.motions_to_poses(x0), atol=1e-4, rtol=0)


def _check_cached_decoding(model: DriveVLAW0ExpertPolicy, batch: VLABatch) -> list[list[int]]:
    """The AR expert's cached greedy decoding gives, row by row, the argmax of a full causal pass over [<boa> and the
    tokens it decoded], and stops at <eoa> or the cap; its tokens."""
    config = model.config
    with torch.no_grad():
        ctx, mask = model.context(batch.prompt)
        decoded = model._ar_decode(ctx, mask, batch.state)
        for i, tokens in enumerate(decoded):
            ctx_i, mask_i = _rows(ctx, mask, i)
            ids = torch.tensor([[config.special_id("<boa>"), *tokens]])
            x = torch.cat([model._state_token(batch.state[i:i + 1]), model._ar_embed(ids)], 1)
            classes = model.ar_out(model.expert(x, ctx_i, mask_i, causal=True)[0][:, 1:]).argmax(-1)[0].tolist()
            assert classes[:len(tokens)] == [config.id_to_fast(t) for t in tokens]
            assert len(tokens) <= config.max_action_tokens - 1
            if len(tokens) < config.max_action_tokens - 1:  # stopped by <eoa>, not by the cap
                assert classes[len(tokens)] == config.fast_vocab_size
    return decoded


def test_the_ar_decoder_learns_the_plans_fast_tokens():
    config, model, batch = _setup("ar")
    tokenizer = ActionTokenizer(config)
    plan_ids = tokenizer.encode(poses_to_deltas(batch.plans.double()))
    losses = _fit(model, batch, 120, decay=False)
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    model.eval()
    assert _check_cached_decoding(model, batch) == plan_ids  # stopped by <eoa>
    with torch.no_grad():
        traj = model.predict(batch.prompt, batch.state)
    _, valid = tokenizer.decode(plan_ids, config.num_poses)
    assert valid.all()
    torch.testing.assert_close(traj, tokenizer.decode_plan(plan_ids))
    assert (traj - batch.plans).abs()[..., :2].max() < 1.0


def test_ar_teacher_forcing_is_boa_then_the_plans_fast_tokens_then_eoa_and_respects_the_cap():
    config, model, batch = _setup("ar")
    rows = ActionTokenizer(config).encode(poses_to_deltas(batch.plans.double()))
    inputs, targets = model._ar_teacher_forcing(batch.plans)
    eoa, boa = config.special_id("<eoa>"), config.special_id("<boa>")
    assert inputs.shape == targets.shape == (2, max(len(r) for r in rows) + 1)
    for i, row in enumerate(rows):
        n = len(row)
        assert inputs[i].tolist() == [boa, *row] + [eoa] * (inputs.shape[1] - n - 1)
        assert targets[i].tolist() == [config.id_to_fast(t) for t in row] + [config.fast_vocab_size] + \
            [IGNORE] * (targets.shape[1] - n - 1)
        assert all(0 <= config.id_to_fast(t) < config.fast_vocab_size for t in row)
    # With <boa> and <eoa>, at most max_action_tokens (the official cap).
    config, model, batch = _setup("ar", max_action_tokens=4)
    inputs, targets = model._ar_teacher_forcing(batch.plans)
    assert inputs.shape[1] == 3 and (targets[:, -1] == config.fast_vocab_size).any()


def test_ar_expert_cached_decoding_matches_a_full_causal_pass_up_to_the_cap():
    config, model, batch = _setup("ar", seed=1)
    model.eval()
    with torch.no_grad():
        model.ar_out.weight[-1] = 0  # <eoa>'s logit 0: a random head then rarely stops before the cap
    decoded = _check_cached_decoding(model, batch)
    assert max(len(tokens) for tokens in decoded) == config.max_action_tokens - 1


# --- initialisation, normalisation, dtypes, save / load ----------------------------------------------------------
@torch.no_grad()
def test_zero_initialised_heads_predict_the_range_centre_and_save_load(tmp_path):
    _, model, _ = _setup("flow")
    assert torch.all(model.flow_out.weight == 0) and torch.all(model.flow_time[-1].weight == 0)
    config, model, batch = _setup("query")
    model.eval()
    traj = model.predict(batch.prompt, batch.state)
    torch.testing.assert_close(traj, model.motions_to_poses(torch.zeros_like(traj)))
    model.query_out.weight.normal_()
    model.save_pretrained(tmp_path)
    loaded = DriveVLAW0ExpertPolicy.from_pretrained(tmp_path).eval()
    assert loaded.config.fast_tokenizer == config.fast_tokenizer
    assert torch.equal(loaded.predict(batch.prompt, batch.state), model.predict(batch.prompt, batch.state))


def test_plan_motions_are_per_step_motions_normalised_by_the_action_range():
    """The continuous decoders' target: each step's (dx, dy, dyaw) from the previous pose, action_low -> -1,
    action_high -> +1; `motions_to_poses` inverts it inside the range."""
    config, model, batch = _setup()
    low, high = torch.tensor(config.action_low), torch.tensor(config.action_high)
    motions = torch.stack([low, high, (low + high) / 2, low]).double()[None]
    poses = deltas_to_poses(motions).float()
    torch.testing.assert_close(model.plan_motions(poses)[0], torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3,
                                                                           [-1.0] * 3]), atol=1e-5, rtol=0)
    u = torch.rand(2, config.num_poses, 3, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9
    torch.testing.assert_close(model.plan_motions(model.motions_to_poses(u)), u, atol=1e-5, rtol=0)


def test_bf16_autocast_and_bf16_weights():
    config, model, batch = _setup("flow")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(batch.full, batch.state, batch.plans)
        out.loss.backward()
        traj = model.eval().predict(batch.prompt, batch.state, flow_steps=2)
    assert torch.isfinite(out.loss) and traj.dtype == torch.float32 and torch.isfinite(traj).all()
    model = model.to(torch.bfloat16)
    traj = model.predict(batch.prompt, batch.state.bfloat16(), flow_steps=2)
    assert traj.shape == (2, config.num_poses, 3) and torch.isfinite(traj).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_the_flow_loss_of_a_model_in_another_dtype_trains_in_that_dtype(dtype):
    """A model cast to bfloat16 or float64 draws its flow-matching noise and times in its own dtype: the loss and
    the velocity come out in it and backpropagate."""
    config, model, batch = _setup("flow")
    model = model.to(dtype)
    out = model.loss(batch.full, batch.state.to(dtype), batch.plans, BatchNoise(torch.Generator().manual_seed(0)))
    assert out.loss.dtype == dtype and out.prediction.dtype == dtype and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.flow_out.weight.grad.dtype == dtype and model.flow_out.weight.grad.abs().sum() > 0
