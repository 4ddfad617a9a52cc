"""Instruction tokenizer: deterministic vocabulary, encode/decode round trip, unknown words, padding."""
from __future__ import annotations

import torch

from policies.config import DriveVLAW0Config
from policies.text import InstructionTokenizer

INSTRUCTIONS = [
    "turn left at the next intersection",
    "go straight",
    "follow the current lane",
    "merge onto the highway",
]


def test_round_trip_and_determinism():
    tok = InstructionTokenizer()
    assert InstructionTokenizer().vocab == tok.vocab
    for text in INSTRUCTIONS:
        ids = tok.encode(text)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids) == text
    assert tok.encode("Turn LEFT, at the next intersection!") == tok.encode(INSTRUCTIONS[0])


def test_unknown_words_and_vocab_fits_config():
    tok = InstructionTokenizer()
    assert tok.encode("fly to the moon", add_special_tokens=False)[0] == tok.unk_id
    assert len(tok) <= DriveVLAW0Config.preset("tiny").text_vocab_size


def test_batch_padding_and_truncation():
    tok = InstructionTokenizer()
    ids, mask = tok.batch_encode(INSTRUCTIONS)
    lengths = [len(tok.encode(t)) for t in INSTRUCTIONS]
    assert ids.shape == (4, max(lengths))
    assert mask.sum(1).tolist() == lengths
    assert torch.all(ids[~mask] == tok.pad_id)
    short, short_mask = tok.batch_encode(INSTRUCTIONS, max_length=4)
    assert short.shape == (4, 4) and short[0, -1] == tok.eos_id
