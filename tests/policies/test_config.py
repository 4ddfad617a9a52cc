"""Config presets: derived sizes, vocabulary layout, JSON round trip, parameter counts (paper on the meta device)."""
from __future__ import annotations

import pytest
import torch

from policies.backbone import DriveVLAW0Backbone
from policies.config import COMMANDS, SPECIAL_TOKENS, DriveVLAW0Config
from policies.vq import DriveVLAW0VQVAE


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_vocabulary_layout_is_contiguous(name):
    c = DriveVLAW0Config.preset(name)
    assert c.text_offset == len(SPECIAL_TOKENS)
    assert c.action_offset == c.state_offset + c.state_speed_bins + c.state_accel_bins + len(COMMANDS)
    assert c.image_offset == c.action_offset + 3 * c.action_bins
    assert c.vocab_size >= c.image_offset + c.vq_codebook_size
    assert c.image_grid == (c.image_height // 8, c.image_width // 8)


def test_presets_and_errors(tmp_path):
    tiny = DriveVLAW0Config.preset("tiny", num_history_frames=4)
    assert (tiny.image_width, tiny.image_height, tiny.num_history_frames) == (128, 64, 4)
    tiny.save_pretrained(tmp_path)
    assert DriveVLAW0Config.from_pretrained(tmp_path).to_dict() == tiny.to_dict()
    with pytest.raises(ValueError):
        DriveVLAW0Config.preset("huge")
    with pytest.raises(ValueError):
        DriveVLAW0Config.preset("tiny", image_height=60)


def _count(config: DriveVLAW0Config) -> tuple[int, int]:
    with torch.device("meta"):  # shapes only, no memory
        backbone, vq = DriveVLAW0Backbone(config), DriveVLAW0VQVAE(config)
    return sum(p.numel() for p in backbone.parameters()), sum(p.numel() for p in vq.parameters())


def test_parameter_counts():
    tiny_backbone, tiny_vq = _count(DriveVLAW0Config.preset("tiny"))
    assert 2e6 < tiny_backbone < 6e6 and tiny_vq < 1e6
    small_backbone, _ = _count(DriveVLAW0Config.preset("small"))
    assert 10e6 < small_backbone < 20e6
    # Emu3-8B: 8.49B parameters (h 4096, 32 L, GQA 32/8, MLP 14336, untied 184,622-id vocabulary).
    paper_backbone, _ = _count(DriveVLAW0Config.preset("paper"))
    assert abs(paper_backbone - 8.49e9) < 0.1 * 8.49e9
