"""Interleaved sequence builder: layout, per-type masks, left padding, positions, prompt mode."""
from __future__ import annotations

import pytest
import torch

from policies.action_tokens import ActionTokenizer, StateTokenizer
from policies.config import DriveVLAW0Config
from policies.sequence import SequenceBuilder, TokenType
from policies.text import InstructionTokenizer


def _parts(config: DriveVLAW0Config, texts: list[str]):
    g = torch.Generator().manual_seed(0)
    b = len(texts)
    text_ids, text_mask = InstructionTokenizer().batch_encode(texts)
    h, w = config.image_grid
    history = torch.randint(0, config.vq_codebook_size, (b, config.num_history_frames, h, w), generator=g)
    future = torch.randint(0, config.vq_codebook_size, (b, h, w), generator=g)
    state = StateTokenizer(config).encode(torch.rand(b) * 20, torch.randn(b), torch.arange(b) % 4)
    actions = ActionTokenizer(config).encode(torch.randn(b, config.num_poses, 3))
    return text_ids, text_mask, history, state, actions, future


@pytest.fixture()
def config() -> DriveVLAW0Config:
    return DriveVLAW0Config.preset("tiny")


def test_full_sequence_layout_and_masks(config):
    texts = ["go straight", "turn left at the next intersection", "follow the current lane"]
    text_ids, text_mask, history, state, actions, future = _parts(config, texts)
    seq = SequenceBuilder(config).build(text_ids, text_mask, history, state, actions, future)
    t = text_ids.shape[1]
    n_img = config.image_tokens_per_frame
    length = t + config.num_history_frames * (n_img + 2) + 4 + config.num_action_tokens + 2 + n_img + 2
    for x in (seq.input_ids, seq.attention_mask, seq.position_ids, seq.type_ids):
        assert x.shape == (3, length)
    # Left padding: pads only in front, and exactly T - len(text) of them per row.
    lengths = text_mask.sum(1)
    assert torch.equal((seq.type_ids == TokenType.PAD).sum(1), t - lengths)
    assert torch.equal(seq.attention_mask.sum(1), length - (t - lengths))
    assert torch.all(seq.input_ids[seq.type_ids == TokenType.PAD] == config.pad_id)
    # Every row ends at the same absolute index; position ids count real tokens only.
    assert torch.equal(seq.position_ids[:, -1], seq.attention_mask.sum(1) - 1)
    for row in range(3):
        real = seq.attention_mask[row].bool()
        assert torch.equal(seq.position_ids[row][real], torch.arange(int(real.sum())))
    # Per-type counts.
    counts = {ty: (seq.type_ids == ty).sum(1) for ty in TokenType}
    assert torch.all(counts[TokenType.TEXT] == lengths)
    assert torch.all(counts[TokenType.IMAGE] == config.num_history_frames * n_img)
    assert torch.all(counts[TokenType.STATE] == 3)
    assert torch.all(counts[TokenType.ACTION] == config.num_action_tokens)
    assert torch.all(counts[TokenType.FUTURE_IMAGE] == n_img)
    # Shared segment indices and id ranges.
    a0, f0 = seq.action_start, seq.future_start
    assert torch.equal(seq.input_ids[:, a0:a0 + config.num_action_tokens], actions)
    assert torch.all(seq.input_ids[:, a0 - 1] == config.special_id("<boa>"))
    assert torch.all(seq.input_ids[:, f0 - 1] == config.special_id("<boi>"))
    assert torch.equal(seq.input_ids[:, f0:f0 + n_img], future.flatten(1) + config.image_offset)
    for frame in range(config.num_history_frames):
        codes = seq.input_ids[:, seq.image_positions(frame)]
        assert torch.equal(codes, history[:, frame].flatten(1) + config.image_offset)
    img = seq.input_ids[seq.type_ids == TokenType.IMAGE]
    assert int(img.min()) >= config.image_offset and int(img.max()) < config.vocab_size
    txt = seq.input_ids[seq.type_ids == TokenType.TEXT]
    assert int(txt.min()) >= config.text_offset and int(txt.max()) < config.state_offset


def test_text_is_left_aligned_in_order(config):
    texts = ["go straight", "merge onto the highway please now"]
    text_ids, text_mask, history, state, _, _ = _parts(config, texts)
    seq = SequenceBuilder(config).build(text_ids, text_mask, history, state)
    row = seq.input_ids[0][seq.type_ids[0] == TokenType.TEXT] - config.text_offset
    assert row.tolist() == text_ids[0][text_mask[0]].tolist()


def test_prompt_ends_with_boa_and_positions_match_unpadded(config):
    texts = ["go straight", "turn right at the next intersection"]
    text_ids, text_mask, history, state, _, _ = _parts(config, texts)
    builder = SequenceBuilder(config)
    seq = builder.build(text_ids, text_mask, history, state)
    assert seq.future_start is None and seq.action_start == seq.input_ids.shape[1]
    assert torch.all(seq.input_ids[:, -1] == config.special_id("<boa>"))
    single = builder.build(text_ids[:1, :int(text_mask[0].sum())], text_mask[:1, :int(text_mask[0].sum())],
                           history[:1], state[:1])
    n = single.input_ids.shape[1]
    assert torch.equal(seq.input_ids[0, -n:], single.input_ids[0])
    assert torch.equal(seq.position_ids[0, -n:], single.position_ids[0])


def test_future_without_actions_is_rejected(config):
    text_ids, text_mask, history, state, _, future = _parts(config, ["go straight"])
    with pytest.raises(ValueError):
        SequenceBuilder(config).build(text_ids, text_mask, history, state, None, future)

