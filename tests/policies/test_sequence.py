"""The 2VA sequence: exact token order, left padding, labels, prompt / world-model variants, masks, positions, errors."""
from __future__ import annotations

import pytest
import torch

from policies.action_tokens import ActionTokenizer, frame_motions
from policies.config import DriveVLAW0Config
from policies.motion import poses_to_deltas
from policies.sequence import IGNORE, SequenceBuilder, TokenType
from policies.text import InstructionTokenizer
from tests.policies.checkpoints import driving_motion, micro_config

T = TokenType


@pytest.fixture(scope="module")
def config() -> DriveVLAW0Config:
    return micro_config()


def _fast(config: DriveVLAW0Config, *ks: int) -> list[int]:
    return [config.fast_to_id(k) for k in ks]


def _parts(config: DriveVLAW0Config):
    """Two rows of different lengths: row 0 has a longer command and longer FAST chunks than row 1."""
    words = InstructionTokenizer()
    texts = [words.encode("turn left at the next intersection", add_special_tokens=False),
             words.encode("go straight", add_special_tokens=False)]
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, config.vq_codebook_size, (2, 2, *config.image_grid), generator=g)
    past = [[_fast(config, 1, 2, 3), _fast(config, 4)], [_fast(config, 5, 6), _fast(config, 7, 8, 9, 10)]]
    actions = [[_fast(config, 11, 12), _fast(config, 13)], [_fast(config, 14, 15, 16, 17, 18), _fast(config, 19)]]
    return texts, codes, past, actions


def _expected_row(config: DriveVLAW0Config, r: int, texts, codes, past, actions, open_image=False):
    """(ids, types, labelled-with-world-model) of row r, written out from the layout of drivevla_w0_paper.md §2.2."""
    s = config.special_id
    ids, types, labelled = [], [], []

    def add(tokens, ty, lab):
        ids.extend(tokens)
        types.extend([ty] * len(tokens))
        labelled.extend([lab] * len(tokens))

    add([s("<bos>")], T.MARKER, False)
    for f in range(len(past)):
        add(texts[r], T.TEXT, False)
        add([s("<boi>"), s("<img>")], T.MARKER, False)
        add((codes[r, f].flatten() + config.image_offset).tolist(), T.IMAGE, True)
        add([s("<eof>"), s("<eoi>")], T.MARKER, False)
        add(past[f][r], T.PAST_ACTION, False)
        add([s("<boa>")], T.MARKER, True)
        if f < len(actions):
            add(actions[f][r], T.ACTION, True)
            add([s("<eoa>")], T.MARKER, True)
    if open_image:
        add(texts[r], T.TEXT, False)
        add([s("<boi>"), s("<img>")], T.MARKER, False)
    return ids, types, labelled


def test_training_rows_have_the_exact_token_order_and_are_left_padded(config):
    texts, codes, past, actions = _parts(config)
    seq = SequenceBuilder(config).build(texts, codes, past, actions, with_labels=True)
    rows = [_expected_row(config, r, texts, codes, past, actions) for r in range(2)]
    lengths = [len(ids) for ids, _, _ in rows]
    assert lengths[0] != lengths[1]
    width = max(lengths)
    for x in (seq.input_ids, seq.attention_mask, seq.position_ids, seq.type_ids, seq.labels, seq.context_mask,
              seq.plan_mask):
        assert x.shape == (2, width)
    for r, (ids, types, labelled) in enumerate(rows):
        pad = width - len(ids)
        # Real tokens at the right end (every row ends at the last column), pads in front.
        assert seq.input_ids[r, pad:].tolist() == ids
        assert seq.type_ids[r, pad:].tolist() == [int(t) for t in types]
        assert seq.input_ids[r, :pad].tolist() == [config.pad_id] * pad
        assert seq.type_ids[r, :pad].tolist() == [int(T.PAD)] * pad
        assert seq.attention_mask[r].tolist() == [0] * pad + [1] * len(ids)
        # Labels: the token itself where it carries loss, IGNORE elsewhere (pads included).
        expected = [IGNORE] * pad + [i if lab else IGNORE for i, lab in zip(ids, labelled)]
        assert seq.labels[r].tolist() == expected
        # Position ids count real tokens only.
        assert seq.position_ids[r, pad:].tolist() == list(range(len(ids)))
    assert seq.attention_mask.dtype == torch.long and seq.input_ids.dtype == torch.long


def test_labels_sit_on_image_codes_and_boa_eoa_spans_only(config):
    texts, codes, past, actions = _parts(config)
    seq = SequenceBuilder(config).build(texts, codes, past, actions, with_labels=True)
    has = seq.labels != IGNORE
    s = config.special_id
    assert torch.equal(seq.labels[has], seq.input_ids[has])
    # Every image code, every action / plan FAST token and every <boa> / <eoa> is labelled ...
    for ty in (T.IMAGE, T.ACTION):
        assert bool(has[seq.type_ids == ty].all())
    for marker in ("<boa>", "<eoa>"):
        assert bool(has[seq.input_ids == s(marker)].all())
    # ... and nothing else: no text, past action, pad or other marker.
    for ty in (T.TEXT, T.PAST_ACTION, T.PAD):
        assert not bool(has[seq.type_ids == ty].any())
    for marker in ("<bos>", "<boi>", "<img>", "<eof>", "<eoi>"):
        assert not bool(has[seq.input_ids == s(marker)].any())
    n_labels = 2 * config.image_tokens_per_frame + 2 * 2 + sum(len(a[0]) for a in actions)
    assert int(has[0].sum()) == n_labels
    # The action-only baseline: no label on image codes, the action labels unchanged.
    baseline = micro_config(use_world_model=False)
    seq_b = SequenceBuilder(baseline).build(texts, codes, past, actions, with_labels=True)
    assert torch.equal(seq_b.input_ids, seq.input_ids)
    assert not bool((seq_b.labels[seq_b.type_ids == T.IMAGE] != IGNORE).any())
    not_image = seq.type_ids != T.IMAGE
    assert torch.equal(seq_b.labels[not_image], seq.labels[not_image])
    # Without with_labels there are none.
    assert SequenceBuilder(config).build(texts, codes, past, actions).labels is None


def test_masks_and_image_index(config):
    texts, codes, past, actions = _parts(config)
    seq = SequenceBuilder(config).build(texts, codes, past, actions, with_labels=True)
    boa = config.special_id("<boa>")
    cols = torch.arange(seq.input_ids.shape[1])
    for r in range(2):
        last_boa = int((seq.input_ids[r] == boa).nonzero().max())
        real = seq.attention_mask[r].bool()
        # context: the real tokens before the last <boa>; the plan: exactly the FAST tokens between it and <eoa>.
        assert torch.equal(seq.context_mask[r], real & (cols < last_boa))
        plan = seq.input_ids[r][seq.plan_mask[r]].tolist()
        assert plan == actions[-1][r]
        assert seq.input_ids[r, -1] == config.special_id("<eoa>")
        assert torch.equal(seq.plan_mask[r].nonzero().flatten(), torch.arange(last_boa + 1, last_boa + 1 + len(plan)))
    # image_index: (B, F, h*w) positions of each frame's codes, in raster order.
    assert seq.image_index.shape == (2, 2, config.image_tokens_per_frame)
    for f in range(2):
        got = seq.input_ids.gather(1, seq.image_positions(f)) - config.image_offset
        assert torch.equal(got, codes[:, f].flatten(1))
    assert torch.equal(seq.image_positions(), seq.image_index[:, 1])


def test_prompt_ends_with_boa_and_holds_no_plan(config):
    texts, codes, past, actions = _parts(config)
    builder = SequenceBuilder(config)
    prompt = builder.build(texts, codes, past, actions[:1])
    train = builder.build(texts, codes, past, actions)
    assert prompt.labels is None
    assert bool((prompt.input_ids[:, -1] == config.special_id("<boa>")).all())
    assert not bool(prompt.plan_mask.any())
    # The context is everything but the final <boa>.
    assert torch.equal(prompt.context_mask[:, :-1], prompt.attention_mask[:, :-1].bool())
    assert not bool(prompt.context_mask[:, -1].any())
    for r in range(2):
        ids, _, _ = _expected_row(config, r, texts, codes, past, actions[:1])
        assert prompt.input_ids[r, -len(ids):].tolist() == ids
        # The prompt is the training row cut after the last <boa>, with the same positions.
        n_plan = len(actions[-1][r]) + 1
        t_ids, t_pos = train.input_ids[r, :-n_plan], train.position_ids[r, :-n_plan]
        assert prompt.input_ids[r, -len(ids):].tolist() == t_ids[-len(ids):].tolist()
        assert prompt.position_ids[r, -len(ids):].tolist() == t_pos[-len(ids):].tolist()
        # The context reaches as far as in the training sequence.
        assert int(prompt.context_mask[r].sum()) == int(train.context_mask[r].sum())


def test_a_row_alone_equals_its_row_in_a_padded_batch(config):
    texts, codes, past, actions = _parts(config)
    builder = SequenceBuilder(config)
    batch = builder.build(texts, codes, past, actions, with_labels=True)
    for r in range(2):
        alone = builder.build(texts[r:r + 1], codes[r:r + 1], [p[r:r + 1] for p in past],
                              [a[r:r + 1] for a in actions], with_labels=True)
        n = alone.input_ids.shape[1]
        assert int(batch.attention_mask[r].sum()) == n
        for name in ("input_ids", "position_ids", "type_ids", "labels", "context_mask", "plan_mask"):
            assert torch.equal(getattr(batch, name)[r, -n:], getattr(alone, name)[0]), name
        shift = batch.input_ids.shape[1] - n
        assert torch.equal(batch.image_index[r], alone.image_index[0] + shift)


def test_world_model_context_opens_the_next_frame(config):
    texts, codes, past, actions = _parts(config)
    builder = SequenceBuilder(config)
    ctx = builder.build(texts, codes, past, actions, open_image=True)
    s = config.special_id
    assert bool((ctx.input_ids[:, -2] == s("<boi>")).all()) and bool((ctx.input_ids[:, -1] == s("<img>")).all())
    for r in range(2):
        ids, types, _ = _expected_row(config, r, texts, codes, past, actions, open_image=True)
        assert ctx.input_ids[r, -len(ids):].tolist() == ids
        assert ctx.type_ids[r, -len(ids):].tolist() == [int(t) for t in types]
        # After the plan's <eoa>: the command again, then the next frame's <boi> <img>.
        assert ctx.input_ids[r, -(len(texts[r]) + 3):].tolist() == [s("<eoa>"), *texts[r], s("<boi>"), s("<img>")]
        assert ctx.input_ids[r][ctx.plan_mask[r]].tolist() == actions[-1][r]
    # The last frame alone (the first pair of world-model training): one image, codes (B,1,h,w).
    single = builder.build(texts, codes[:, 1:], past[1:], actions[1:], open_image=True)
    assert single.image_index.shape == (2, 1, config.image_tokens_per_frame)
    for r in range(2):
        ids, _, _ = _expected_row(config, r, texts, codes[:, 1:], past[1:], actions[1:], open_image=True)
        assert single.input_ids[r, -len(ids):].tolist() == ids
    with pytest.raises(ValueError):
        builder.build(texts, codes, past, actions[:1], open_image=True)  # no plan to condition on


def test_bad_frame_and_segment_counts_are_refused(config):
    texts, codes, past, actions = _parts(config)
    builder = SequenceBuilder(config)
    with pytest.raises(ValueError):
        builder.build(texts, codes[:, :0], [], [])  # no frame
    with pytest.raises(ValueError):
        builder.build(texts, torch.cat([codes, codes], 1), past * 2, actions * 2)  # more frames than the config's
    with pytest.raises(ValueError):
        builder.build(texts, codes, past, [])  # 2 frames, no action: neither a prompt nor a training row
    with pytest.raises(ValueError):
        builder.build(texts, codes, past, actions + actions[:1])  # 3 action segments for 2 frames


def test_built_from_real_motions(config):
    """From ego poses and a plan through frame_motions and the FAST tokenizer, as the model builds its input."""
    ego, plans = driving_motion(3, seed=9)
    tok = ActionTokenizer(config)
    m = frame_motions(config, ego.double())
    past = [tok.encode(m.past[:, f]) for f in range(2)]
    actions = [tok.encode(m.to_next[:, 0]), tok.encode(poses_to_deltas(plans.double()))]
    words = InstructionTokenizer()
    texts = [words.encode(t, add_special_tokens=False) for t in ("go straight", "turn left", "turn right")]
    codes = torch.zeros(3, 2, *config.image_grid, dtype=torch.long)
    seq = SequenceBuilder(config).build(texts, codes, past, actions, with_labels=True)
    lo, hi = config.fast_id_range
    for ty in (T.PAST_ACTION, T.ACTION):
        ids = seq.input_ids[seq.type_ids == ty]
        assert ids.numel() > 0 and bool(((ids >= lo) & (ids < hi)).all())
    text = seq.input_ids[seq.type_ids == T.TEXT]
    assert bool((text < config.text_vocab_size).all())
    decoded, valid = tok.decode([seq.input_ids[r][seq.plan_mask[r]].tolist() for r in range(3)], config.num_poses)
    assert bool(valid.all())
    torch.testing.assert_close(decoded, tok.decode(actions[-1], config.num_poses)[0])
