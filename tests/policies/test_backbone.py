"""VLA backbone (Emu3ForCausalLM): the one weighted-mean CE and its parts, constrained greedy FAST decoding up to <eoa>,
image-code decoding (greedy / top-k), KV cache against a no-cache reference, left-padding invariance, save / load."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from policies.action_tokens import ActionTokenizer, frame_motions
from policies.backbone import DriveVLAW0Backbone
from policies.config import DriveVLAW0Config
from policies.motion import deltas_to_poses, poses_to_deltas
from policies.sequence import IGNORE, SequenceBuilder, VLASequence
from policies.text import InstructionTokenizer
from tests.policies.checkpoints import driving_motion, micro_config

TEXTS = ["turn left at the next intersection", "go straight"]


def _config(**overrides) -> DriveVLAW0Config:
    return micro_config(**{"num_hidden_layers": 2, **overrides})


def _model(config: DriveVLAW0Config, seed: int = 0) -> DriveVLAW0Backbone:
    torch.manual_seed(seed)
    return DriveVLAW0Backbone(config)


def _parts(config: DriveVLAW0Config, seed: int = 1):
    """Two rows from made-up drives: texts of different lengths, real FAST past motions / actions / plans."""
    ego, plans = driving_motion(len(TEXTS), seed=seed)
    tok = ActionTokenizer(config)
    m = frame_motions(config, ego.double())
    past = [tok.encode(m.past[:, f]) for f in range(config.num_history_frames)]
    actions = [tok.encode(m.to_next[:, 0]), tok.encode(poses_to_deltas(plans.double()))]
    words = InstructionTokenizer()
    texts = [words.encode(t, add_special_tokens=False) for t in TEXTS]
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, config.vq_codebook_size, (len(TEXTS), 2, *config.image_grid), generator=g)
    return texts, codes, past, actions


def _rows(parts, rows: slice):
    texts, codes, past, actions = parts
    return texts[rows], codes[rows], [p[rows] for p in past], [a[rows] for a in actions]


def _training(config: DriveVLAW0Config, parts) -> VLASequence:
    return SequenceBuilder(config).build(*parts, with_labels=True)


def _prompt(config: DriveVLAW0Config, parts) -> VLASequence:
    texts, codes, past, actions = parts
    return SequenceBuilder(config).build(texts, codes, past, actions[:-1])


def _context(config: DriveVLAW0Config, parts) -> VLASequence:
    return SequenceBuilder(config).build(*parts, open_image=True)


# --- loss -----------------------------------------------------------------------------------------


def _spread(model: DriveVLAW0Backbone, seq: VLASequence, steps: int = 8) -> None:
    """A few training steps, so the action CE falls well below the image-code CE (at init both are ~log V)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model.loss(seq).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_loss_is_the_weighted_mean_of_per_token_ce():
    config = _config(vision_loss_weight=0.3)
    model = _model(config)
    seq = _training(config, _parts(config))
    _spread(model, seq)
    model.requires_grad_(False)
    out = model.loss(seq)
    # Reference: full-vocabulary logits, shifted targets, a per-token CE written out by hand.
    hidden = model(seq).hidden_states
    assert hidden.shape == (*seq.input_ids.shape, config.hidden_size)
    torch.testing.assert_close(out.hidden_states, hidden)
    logits = model.lm_head(hidden[:, :-1]).float()
    targets = seq.labels[:, 1:]
    keep = targets != IGNORE
    logp = logits.log_softmax(-1)[keep]
    target = targets[keep]
    ce = -logp.gather(1, target[:, None])[:, 0]
    image = target >= config.image_offset
    n_image, n_action = int(image.sum()), int((~image).sum())
    assert n_image == 2 * 2 * config.image_tokens_per_frame  # 2 rows x 2 frames
    assert n_action == sum(len(a[r]) + 2 for a in _parts(config)[3] for r in range(2))  # <boa> FAST <eoa>
    expected = (ce[~image].sum() + 0.3 * ce[image].sum()) / (n_action + 0.3 * n_image)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.action_loss, ce[~image].mean())
    torch.testing.assert_close(out.world_model_loss, ce[image].mean())
    # The same as PyTorch's class-weighted CE (the official formulation) ...
    weight = torch.ones(config.vocab_size)
    weight[config.image_offset:] = 0.3
    official = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), weight=weight, ignore_index=IGNORE)
    torch.testing.assert_close(out.loss, official)
    # ... and the weighting matters here: neither the plain mean nor the sum of the parts.
    assert abs(float(out.world_model_loss - out.action_loss)) > 0.5
    assert abs(float(out.loss - ce.mean())) > 1e-2
    assert abs(float(out.loss - (out.action_loss + out.world_model_loss))) > 1e-2
    # vision_loss_weight 1: the plain mean over every label.
    plain = DriveVLAW0Backbone(_config(vision_loss_weight=1.0))
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.loss(seq).loss, ce.mean())


def test_padding_is_masked_out_of_the_loss():
    """Left-padded batch: its loss is the rows' losses combined by their label weights, as if each ran alone."""
    config = _config(vision_loss_weight=0.5)
    model = _model(config)
    parts = _parts(config)
    _spread(model, _training(config, parts))
    model.requires_grad_(False)
    batch = model.loss(_training(config, parts))
    totals, weights, actions = 0.0, 0.0, []
    for r in range(2):
        seq = _training(config, _rows(parts, slice(r, r + 1)))
        labels = seq.labels[seq.labels != IGNORE]
        n_image = int((labels >= config.image_offset).sum())
        w = (labels.numel() - n_image) + 0.5 * n_image
        out = model.loss(seq)
        totals, weights = totals + out.loss * w, weights + w
        actions.append((out.action_loss, labels.numel() - n_image))
    assert _training(config, parts).attention_mask[1].sum() < _training(config, parts).attention_mask.shape[1]
    torch.testing.assert_close(batch.loss, totals / weights, rtol=1e-5, atol=1e-5)
    action = sum(loss * n for loss, n in actions) / sum(n for _, n in actions)
    torch.testing.assert_close(batch.action_loss, action, rtol=1e-5, atol=1e-5)


def test_world_model_switch():
    parts = _parts(_config())
    with_wm = _model(_config())
    out = with_wm.loss(_training(_config(), parts))
    baseline_config = _config(use_world_model=False)
    baseline = _model(baseline_config)  # same seed, same weights
    out_b = baseline.loss(_training(baseline_config, parts))
    assert out_b.world_model_loss is None and out.world_model_loss is not None
    torch.testing.assert_close(out_b.loss, out_b.action_loss)
    torch.testing.assert_close(out_b.action_loss, out.action_loss)  # a plain mean of the same action tokens
    with pytest.raises(ValueError):
        with_wm.loss(_prompt(_config(), parts))  # no labels


# --- forced decoding: a model whose next token depends only on the last one --------------------------


def _markov(model: DriveVLAW0Backbone, chain: dict[int, int], distractors: list[int]) -> None:
    """Make the model a lookup table: zero every layer's output projections so the last hidden state is the (normed)
    embedding of the last token; give each token of `chain` a one-hot embedding and let the LM head score
    chain[a] after a. Every distractor scores even higher after every chain token (decoding must never emit one)."""
    h = model.config.hidden_size
    tokens = sorted(set(chain) | set(chain.values()))
    assert len(tokens) <= h
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for i, t in enumerate(tokens):
            emb[t] = F.one_hot(torch.tensor(i), h).float()
        for a, b in chain.items():
            head[b, tokens.index(a)] = 10.0
            for d in distractors:
                head[d, tokens.index(a)] = 20.0


@torch.no_grad()
def test_plan_decoding_stops_at_eoa_and_emits_only_fast_ids():
    config = _config()
    model = _model(config).eval()
    s = config.special_id
    f1, f2 = config.fast_to_id(3), config.fast_to_id(40)
    # Ids that beat every FAST token but are not FAST tokens: a word, <pad>, <boa>, <eos>, an image code.
    distractors = [5, config.pad_id, s("<boa>"), s("<eos>"), config.image_offset + 1]
    _markov(model, {s("<boa>"): f1, f1: f2, f2: s("<eoa>")}, distractors)
    prompt = _prompt(config, _parts(config))
    tokens = model.generate_plan_tokens(prompt)
    assert tokens == [[f1, f2], [f1, f2]]
    # generate_plan decodes those tokens into poses.
    traj = model.generate_plan(prompt)
    assert traj.shape == (2, config.num_poses, 3) and traj.dtype == torch.float32
    motions, _ = model.action_tokenizer.decode(tokens, config.num_poses)
    torch.testing.assert_close(traj, deltas_to_poses(motions).float())


@torch.no_grad()
@pytest.mark.parametrize("cap", [4, 15])
def test_plan_decoding_respects_max_action_tokens(cap):
    config = _config(max_action_tokens=cap)
    model = _model(config).eval()
    s = config.special_id
    f1 = config.fast_to_id(7)
    _markov(model, {s("<boa>"): f1, f1: f1}, [s("<eoa>") + 1, config.image_offset])  # never <eoa>
    tokens = model.generate_plan_tokens(_prompt(config, _parts(config)))
    for row in tokens:
        assert 1 + len(row) <= cap  # <boa> and the generated tokens within the cap
        assert len(row) >= cap - 2 and set(row) == {f1}  # ... and decoding ran until it


@torch.no_grad()
def test_plan_decoding_refuses_a_prompt_not_ending_in_boa():
    config = _config()
    model = _model(config).eval()
    parts = _parts(config)
    with pytest.raises(ValueError, match="<boa>"):
        model.generate_plan_tokens(_training(config, parts))  # ends with the plan's <eoa>
    with pytest.raises(ValueError, match="<boa>"):
        model.generate_plan_tokens(_context(config, parts))  # ends with <img>


@torch.no_grad()
def test_image_decoding_feeds_back_codes_and_emits_only_codes():
    config = _config()
    model = _model(config).eval()
    s = config.special_id
    c3, c5 = config.image_offset + 3, config.image_offset + 5
    _markov(model, {s("<img>"): c3, c3: c5, c5: c3}, [config.fast_to_id(0), s("<eoi>"), s("<eof>"), 2])
    codes = model.generate_image_codes(_context(config, _parts(config)))
    n = config.image_tokens_per_frame
    assert codes.shape == (2, *config.image_grid)
    expected = torch.tensor([3, 5] * (n // 2)).view(*config.image_grid)
    assert torch.equal(codes[0], expected) and torch.equal(codes[1], expected)
    with pytest.raises(ValueError, match="<img>"):
        model.generate_image_codes(_prompt(config, _parts(config)))


# --- random weights: cache, sampling, padding invariance ---------------------------------------------


def _greedy_reference(model: DriveVLAW0Backbone, seq: VLASequence, steps: int, allowed: torch.Tensor) -> torch.Tensor:
    """Decoding without a cache: re-run the whole growing sequence each step."""
    ids, mask, pos = seq.input_ids, seq.attention_mask, seq.position_ids
    out = []
    for _ in range(steps):
        logits = model.lm_head(model.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1])
        nxt = logits.masked_fill(~allowed, float("-inf")).argmax(-1)
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
    return torch.stack(out, 1)


def _sharpen(model: DriveVLAW0Backbone) -> None:
    """Larger LM-head weights than the 0.02 init, so greedy choices are not near-ties."""
    with torch.no_grad():
        model.lm_head.weight.mul_(20)


@torch.no_grad()
def test_cached_decoding_matches_a_no_cache_reference():
    config = _config()
    model = _model(config).eval()
    _sharpen(model)
    parts = _parts(config)
    prompt = _prompt(config, parts)
    fast = torch.zeros(config.vocab_size, dtype=torch.bool)
    fast[slice(*config.fast_id_range)] = True
    fast[config.special_id("<eoa>")] = True
    tokens = model.generate_plan_tokens(prompt)
    reference = _greedy_reference(model, prompt, config.max_action_tokens - 1, fast).tolist()
    eoa = config.special_id("<eoa>")
    for row, ref in zip(tokens, reference):
        assert row == (ref[:ref.index(eoa)] if eoa in ref else ref)
    context = _context(config, parts)
    images = torch.zeros(config.vocab_size, dtype=torch.bool)
    images[config.image_offset:] = True
    codes = model.generate_image_codes(context)
    reference = _greedy_reference(model, context, config.image_tokens_per_frame, images) - config.image_offset
    assert torch.equal(codes.flatten(1), reference)


@torch.no_grad()
def test_image_code_sampling():
    config = _config()
    model = _model(config).eval()
    context = _context(config, _parts(config))
    greedy = model.generate_image_codes(context)
    assert greedy.shape == (2, *config.image_grid) and greedy.dtype == torch.long
    assert int(greedy.min()) >= 0 and int(greedy.max()) < config.vq_codebook_size
    assert torch.equal(model.generate_image_codes(context), greedy)  # greedy is deterministic
    top1 = model.generate_image_codes(context, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top1, greedy)
    sampled = [model.generate_image_codes(context, temperature=1.0, top_k=4, generator=torch.Generator().manual_seed(s))
               for s in (0, 0, 1)]
    assert torch.equal(sampled[0], sampled[1])  # same generator seed, same codes
    assert not torch.equal(sampled[0], sampled[2]) and not torch.equal(sampled[0], greedy)
    for codes in sampled:
        assert int(codes.min()) >= 0 and int(codes.max()) < config.vq_codebook_size
    full = model.generate_image_codes(context, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert int(full.min()) >= 0 and int(full.max()) < config.vq_codebook_size


@torch.no_grad()
def test_left_padded_batched_decoding_equals_each_row_alone():
    config = _config()
    model = _model(config).eval()
    _sharpen(model)
    parts = _parts(config)
    prompt, context = _prompt(config, parts), _context(config, parts)
    assert prompt.attention_mask[1].sum() < prompt.attention_mask.shape[1]  # row 1 is left-padded
    tokens, codes = model.generate_plan_tokens(prompt), model.generate_image_codes(context)
    for r in range(2):
        row = _rows(parts, slice(r, r + 1))
        assert model.generate_plan_tokens(_prompt(config, row)) == [tokens[r]]
        assert torch.equal(model.generate_image_codes(_context(config, row))[0], codes[r])


def test_fits_a_fixed_batch_and_decodes_its_plans_up_to_each_eoa():
    """Training memorises two rows whose plans differ in length; greedy decoding then stops at each row's <eoa>,
    batched (left-padded) or alone."""
    config = _config()
    texts, codes, past, actions = _parts(config)
    actions = [actions[0], [[config.fast_to_id(k) for k in (3, 17, 40)],
                            [config.fast_to_id(k) for k in (9, 9, 21, 2, 50, 33)]]]
    parts = (texts, codes, past, actions)
    seq = _training(config, parts)
    model = _model(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model.loss(seq)
    for _ in range(150):
        out = model.loss(seq)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = model.loss(seq)
        assert last.action_loss < 0.05 * first.action_loss
        assert last.world_model_loss < 0.8 * first.world_model_loss
        assert model.generate_plan_tokens(_prompt(config, parts)) == actions[-1]
        for r in range(2):
            assert model.generate_plan_tokens(_prompt(config, _rows(parts, slice(r, r + 1)))) == [actions[-1][r]]


@torch.no_grad()
def test_save_load_bit_identical(tmp_path):
    config = _config()
    model = _model(config).eval()
    seq = _training(config, _parts(config))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    loaded = DriveVLAW0Backbone.from_pretrained(tmp_path).eval()
    assert loaded.config.fast_tokenizer == config.fast_tokenizer
    assert loaded.action_tokenizer.fast is not None
    a, b = model.loss(seq), loaded.loss(seq)
    assert torch.equal(a.hidden_states, b.hidden_states) and torch.equal(a.loss, b.loss)
