"""Config presets: Emu3 vocabulary layout (paper ids exactly, disjoint ranges), action bounds, derived sizes, the
backbone's Emu3TextConfig, JSON round trip, parameter counts (paper on the meta device)."""
from __future__ import annotations

import pytest
import torch
from transformers import Emu3ForCausalLM, Emu3TextConfig

from policies.backbone import DriveVLAW0Backbone
from policies.config import SPECIAL_OFFSETS, DriveVLAW0Config
from policies.text import InstructionTokenizer
from policies.vq import image_tokenizer
from tests.policies.checkpoints import micro_config

PRESETS = ["tiny", "small", "paper"]

# Emu3's ids (reference/Emu3/emu3/mllm/configuration_emu3.py; drivevla_w0_paper.md §2.1).
EMU3_IDS = {"<pad>": 151643, "<boa>": 151844, "<eoa>": 151845, "<eol>": 151846, "<eof>": 151847, "<bos>": 151849,
            "<eos>": 151850, "<img>": 151851, "<boi>": 151852, "<eoi>": 151853}


def test_paper_preset_uses_emu3_ids_exactly():
    c = DriveVLAW0Config.preset("paper")
    assert c.pad_id == 151643
    assert {name: c.special_id(name) for name in EMU3_IDS} == EMU3_IDS
    assert c.image_offset == 151854  # Emu3's first visual token
    assert c.image_offset + c.vq_codebook_size - 1 == 184621  # ... and its last
    assert c.vocab_size == 184622
    # FAST token k -> 151642 - k: the last 2048 text ids, counting down from pad - 1.
    for k in (0, 1, 1000, 2047):
        assert c.fast_to_id(k) == 151642 - k
        assert c.id_to_fast(151642 - k) == k
    assert c.fast_id_range == (151642 - 2047, 151643)
    ks = torch.tensor([0, 5, 2047])
    assert torch.equal(c.fast_to_id(ks), 151642 - ks)
    assert torch.equal(c.id_to_fast(c.fast_to_id(ks)), ks)
    bb = c.backbone_config()
    assert (bb.vocab_size, bb.pad_token_id, bb.bos_token_id, bb.eos_token_id) == (184622, 151643, 151849, 151850)


@pytest.mark.parametrize("name", PRESETS)
def test_vocabulary_ranges_do_not_overlap(name):
    c = DriveVLAW0Config.preset(name)
    words = range(0, c.text_vocab_size)
    fast_lo, fast_hi = c.fast_id_range
    fast = range(fast_lo, fast_hi)
    specials = [c.special_id(s) for s in SPECIAL_OFFSETS]
    images = range(c.image_offset, c.image_offset + c.vq_codebook_size)
    assert len(fast) == c.fast_vocab_size
    assert words.stop == fast.start  # words sit directly below the FAST range
    assert fast.stop == c.pad_id  # FAST tokens end right below <pad>
    assert len(set(specials)) == len(specials)
    assert all(c.pad_id <= s < c.image_offset for s in specials)
    assert min(specials) == c.pad_id and max(specials) == c.image_offset - 1  # <eoi> is right before the codes
    assert images.stop == c.vocab_size
    # FAST token 0 is the top of the range, the last FAST token the bottom; all map inside it.
    assert c.fast_to_id(0) == fast_hi - 1 and c.fast_to_id(c.fast_vocab_size - 1) == fast_lo
    assert len(InstructionTokenizer()) <= c.text_vocab_size  # the word vocabulary fits below the FAST range
    assert c.image_grid == (c.image_height // 8, c.image_width // 8)
    assert c.image_tokens_per_frame == c.image_grid[0] * c.image_grid[1]


@pytest.mark.parametrize("low, high", [
    ((0.0, -1.0, -1.0), (0.0, 1.0, 1.0)),  # empty dx range
    ((-1.0, 2.0, -1.0), (1.0, 1.0, 1.0)),  # dy low above high
    ((-1.0, -1.0), (1.0, 1.0)),  # two dimensions
    ((-1.0, -1.0, -1.0, -1.0), (1.0, 1.0, 1.0, 1.0)),  # four dimensions
])
def test_invalid_action_bounds_are_refused(low, high):
    with pytest.raises(ValueError, match="action_low"):
        DriveVLAW0Config.preset("tiny", action_low=low, action_high=high)


def test_action_bounds_are_tuples_and_survive_json(tmp_path):
    c = DriveVLAW0Config.preset("tiny", action_low=[-0.1, -0.3, -0.2], action_high=[6.0, 0.3, 0.2])
    assert c.action_low == (-0.1, -0.3, -0.2) and c.action_high == (6.0, 0.3, 0.2)
    c.save_pretrained(tmp_path)
    back = DriveVLAW0Config.from_pretrained(tmp_path)
    assert back.action_low == c.action_low and back.action_high == c.action_high
    assert back.to_dict() == c.to_dict()


def test_fitted_config_round_trips_through_json(tmp_path):
    c = micro_config()
    assert c.fast_tokenizer and c.action_low != (-1.0, -1.0, -1.0)
    c.save_pretrained(tmp_path)
    back = DriveVLAW0Config.from_pretrained(tmp_path)
    assert back.to_dict() == c.to_dict()
    assert back.fast_tokenizer == c.fast_tokenizer and back.action_high == c.action_high


def test_presets_and_errors(tmp_path):
    tiny = DriveVLAW0Config.preset("tiny", num_history_frames=4)
    assert (tiny.image_width, tiny.image_height, tiny.num_history_frames) == (128, 64, 4)
    assert tiny.fast_tokenizer == ""  # unfitted until fit_action_tokenizer
    tiny.save_pretrained(tmp_path)
    assert DriveVLAW0Config.from_pretrained(tmp_path).to_dict() == tiny.to_dict()
    with pytest.raises(ValueError):
        DriveVLAW0Config.preset("huge")
    with pytest.raises(ValueError):
        DriveVLAW0Config.preset("tiny", image_height=60)
    with pytest.raises(ValueError):
        DriveVLAW0Config.preset("tiny", num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError):
        DriveVLAW0Config.preset("tiny", image_input="pixels")
    with pytest.raises(ValueError):
        DriveVLAW0Config.preset("tiny", expert_decoder="diffusion")


def test_backbone_config_is_emu3_with_explicit_head_dim():
    # head_dim 8 is NOT hidden / heads (32 / 2 = 16): the decoder must read the explicit value.
    c = micro_config(head_dim=8, rope_theta=5e5, rms_norm_eps=1e-5)
    bb = c.backbone_config()
    assert isinstance(bb, Emu3TextConfig)
    assert bb.head_dim == 8 and bb.hidden_size == 32 and bb.vocab_size == c.vocab_size
    assert bb.num_attention_heads == 2 and bb.num_key_value_heads == 1
    assert bb.tie_word_embeddings is False
    assert bb.rms_norm_eps == 1e-5 and bb.rope_parameters["rope_theta"] == 5e5
    assert bb.pad_token_id == c.pad_id and bb.bos_token_id == c.special_id("<bos>")
    assert bb.eos_token_id == c.special_id("<eos>")
    with torch.device("meta"):
        lm = Emu3ForCausalLM(bb)
    attn = lm.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (2 * 8, 32) and attn.k_proj.weight.shape == (1 * 8, 32)
    assert lm.lm_head.weight.shape == (c.vocab_size, 32)
    assert lm.lm_head.weight is not lm.model.embed_tokens.weight  # untied
    expert = c.expert_config()
    assert isinstance(expert, Emu3TextConfig)
    assert (expert.hidden_size, expert.intermediate_size) == (c.expert_hidden_size, c.expert_intermediate_size)
    assert (expert.head_dim, expert.num_hidden_layers, expert.num_attention_heads) == (8, 1, 2)


def _count(config: DriveVLAW0Config) -> tuple[int, int]:
    with torch.device("meta"):  # shapes only, no memory
        backbone, vq = DriveVLAW0Backbone(config), image_tokenizer(config)
    return sum(p.numel() for p in backbone.parameters()), sum(p.numel() for p in vq.parameters())


def test_parameter_counts():
    tiny_backbone, tiny_vq = _count(DriveVLAW0Config.preset("tiny"))
    assert 2e6 < tiny_backbone < 6e6 and tiny_vq < 1e6
    small_backbone, _ = _count(DriveVLAW0Config.preset("small"))
    assert 10e6 < small_backbone < 20e6
    # Emu3-8B: 8.49B parameters (h 4096, 32 L, GQA 32/8, MLP 14336, untied 184,622-id vocabulary).
    paper_backbone, paper_vq = _count(DriveVLAW0Config.preset("paper"))
    assert abs(paper_backbone - 8.49e9) < 0.1 * 8.49e9
    assert abs(paper_vq - 270.7e6) < 1e6  # Emu3-VisionTokenizer's 270.7M parameters
