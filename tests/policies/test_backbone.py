"""VLA backbone: losses per token type, world-model switch, KV-cached constrained decoding, padding invariance, save/load."""
from __future__ import annotations

import pytest
import torch

from policies.action_tokens import ActionTokenizer, StateTokenizer
from policies.backbone import DriveVLAW0Backbone
from policies.config import DriveVLAW0Config
from policies.sequence import SequenceBuilder, VLASequence
from policies.text import InstructionTokenizer

TEXTS = ["go straight", "turn left at the next intersection"]


def _config(**overrides) -> DriveVLAW0Config:
    # tiny, narrowed further so every test here runs in a second or two on 2 cores.
    base = dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=2,
                num_key_value_heads=1, image_height=32, image_width=64)
    return DriveVLAW0Config.preset("tiny", **{**base, **overrides})


def _batch(config: DriveVLAW0Config, texts=TEXTS, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b = len(texts)
    text_ids, text_mask = InstructionTokenizer().batch_encode(texts)
    h, w = config.image_grid
    history = torch.randint(0, config.vq_codebook_size, (b, config.num_history_frames, h, w), generator=g)
    future = torch.randint(0, config.vq_codebook_size, (b, h, w), generator=g)
    state = StateTokenizer(config).encode(torch.rand(b, generator=g) * 20, torch.zeros(b), torch.arange(b) % 4)
    poses = torch.cumsum(torch.rand(b, config.num_poses, 3, generator=g), 1)
    actions = ActionTokenizer(config).encode(poses)
    return dict(text_ids=text_ids, text_mask=text_mask, history_codes=history, state_ids=state,
                action_ids=actions, future_codes=future)


def _model(config: DriveVLAW0Config, seed: int = 0) -> DriveVLAW0Backbone:
    torch.manual_seed(seed)
    return DriveVLAW0Backbone(config)


def test_losses_and_world_model_switch():
    config = _config()
    seq = SequenceBuilder(config).build(**_batch(config))
    out = _model(config).loss(seq)
    assert out.hidden_states.shape == (*seq.input_ids.shape, config.hidden_size)
    assert torch.isfinite(out.hidden_states).all()
    assert out.loss is not None and out.world_model_loss is not None
    torch.testing.assert_close(out.loss, config.action_loss_weight * out.action_loss
                               + config.world_model_loss_weight * out.world_model_loss)
    baseline = _config(use_world_model=False)
    out_base = _model(baseline).loss(seq)
    assert out_base.world_model_loss is None
    torch.testing.assert_close(out_base.loss, out_base.action_loss)
    torch.testing.assert_close(out_base.action_loss, out.action_loss)  # same weights, same seed


def test_a_batchs_loss_is_the_mean_of_its_samples_losses_so_padding_is_masked_out():
    """The shorter instruction is padded to the longer; masked padding leaves each sample's loss as it is alone
    (every sample has the same number of action and future-frame targets, so the batch mean is the samples' mean)."""
    config = _config()
    batch = _batch(config)
    model = _model(config)
    together = model.loss(SequenceBuilder(config).build(**batch))
    alone = []
    for i, text in enumerate(TEXTS):
        row = {k: v[i:i + 1] for k, v in batch.items()}
        row["text_ids"], row["text_mask"] = InstructionTokenizer().batch_encode([text])
        alone.append(model.loss(SequenceBuilder(config).build(**row)))
    assert batch["text_mask"].sum(1).tolist()[0] < batch["text_mask"].shape[1]  # the first row is padded
    for name in ("action_loss", "world_model_loss"):
        torch.testing.assert_close(getattr(together, name), sum(getattr(o, name) for o in alone) / 2,
                                   rtol=1e-5, atol=1e-5)


def test_world_model_loss_on_history_frames_too():
    seq = SequenceBuilder(_config()).build(**_batch(_config()))
    future_only = _model(_config()).loss(seq)
    with_history = _model(_config(world_model_on_history=True)).loss(seq)
    torch.testing.assert_close(with_history.action_loss, future_only.action_loss)
    assert not torch.allclose(with_history.world_model_loss, future_only.world_model_loss)


def _greedy_reference(model: DriveVLAW0Backbone, prompt: VLASequence) -> torch.Tensor:
    """Decoding without a cache: re-run the whole growing sequence each step."""
    ids, mask, pos = prompt.input_ids, prompt.attention_mask, prompt.position_ids
    out = []
    for step in range(model.config.num_action_tokens):
        hidden = model(ids, mask, pos).hidden_states[:, -1]
        lo, hi = model.action_tokenizer.allowed_range(step)
        nxt = model.lm_head(hidden)[:, lo:hi].argmax(-1) + lo
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
    return torch.stack(out, 1)


@torch.no_grad()
def test_cached_decoding_matches_reference_and_is_padding_invariant():
    config = _config()
    model = _model(config).eval()
    batch = _batch(config)
    batch.pop("action_ids"), batch.pop("future_codes")
    builder = SequenceBuilder(config)
    prompt = builder.build(**batch)
    tokens = model.generate_action_tokens(prompt)
    assert tokens.shape == (2, config.num_action_tokens)
    assert torch.equal(tokens, _greedy_reference(model, prompt))
    # The short-text row decodes the same alone as in a left-padded batch.
    n = int(batch["text_mask"][0].sum())
    alone = builder.build(batch["text_ids"][:1, :n], batch["text_mask"][:1, :n],
                          batch["history_codes"][:1], batch["state_ids"][:1])
    assert torch.equal(model.generate_action_tokens(alone)[0], tokens[0])
    traj = model.generate_actions(prompt)
    assert traj.shape == (2, config.num_poses, 3) and traj.dtype == torch.float32
    torch.testing.assert_close(traj, model.action_tokenizer.decode(tokens))


@torch.no_grad()
def test_future_frame_sampling_and_prompt_checks():
    config = _config()
    model = _model(config).eval()
    batch = _batch(config)
    batch.pop("future_codes")
    context = SequenceBuilder(config).build(**batch, open_future=True)
    g = torch.Generator().manual_seed(0)
    codes = model.generate_future_codes(context, temperature=1.0, top_k=16, generator=g)
    assert codes.shape == (2, *config.image_grid)
    assert int(codes.min()) >= 0 and int(codes.max()) < config.vq_codebook_size
    with pytest.raises(ValueError):
        model.generate_action_tokens(context)


def test_fits_a_fixed_batch():
    config = _config()
    seq = SequenceBuilder(config).build(**_batch(config))
    model = _model(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(seq)
    for _ in range(25):
        out = model.loss(seq)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    last = model.loss(seq)
    assert last.action_loss < 0.5 * first.action_loss
    assert last.world_model_loss < 0.8 * first.world_model_loss


@torch.no_grad()
def test_save_load_bit_identical(tmp_path):
    config = _config()
    model = _model(config).eval()
    seq = SequenceBuilder(config).build(**_batch(config))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    loaded = DriveVLAW0Backbone.from_pretrained(tmp_path).eval()
    a, b = model.loss(seq), loaded.loss(seq)
    assert torch.equal(a.hidden_states, b.hidden_states) and torch.equal(a.loss, b.loss)
