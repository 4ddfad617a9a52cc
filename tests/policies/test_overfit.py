"""Issue-4 overfitting check (opt-in, W0SIM_SLOW_TESTS=1): the tiny backbone fits 8 samples, action and AR world-model losses both fall 10x.

Measured: 76 AdamW steps, 162 s on one thread of a loaded 2-core CPU (428 tokens, batch 8);
too slow for the default policy-test budget, hence opt-in.
"""
from __future__ import annotations

import os

import pytest
import torch

from policies.backbone import DriveVLAW0Backbone
from policies.config import DriveVLAW0Config
from policies.sequence import SequenceBuilder
from policies.vq import DriveVLAW0VQVAE
from tests.policies.frames import road_frames
from tests.policies.test_backbone import _batch

pytestmark = pytest.mark.skipif(os.environ.get("W0SIM_SLOW_TESTS") != "1",
                                reason="slow (minutes on CPU); set W0SIM_SLOW_TESTS=1")


def test_tiny_backbone_fits_eight_samples():
    torch.manual_seed(0)
    config = DriveVLAW0Config.preset("tiny")
    texts = ["go straight", "turn left at the next intersection", "follow the current lane",
             "merge onto the highway"] * 2
    batch = _batch(config, texts)
    vq = DriveVLAW0VQVAE(config).train()
    frames = road_frames(8 * 3, config.image_height, config.image_width, seed=3)
    with torch.no_grad():
        vq(frames)  # data-dependent codebook init, so the codes look like a trained tokenizer's
        codes = vq.eval().encode(frames).view(8, 3, *config.image_grid)
    batch["history_codes"], batch["future_codes"] = codes[:, :2], codes[:, 2]
    seq = SequenceBuilder(config).build(**batch)
    model = DriveVLAW0Backbone(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.95))
    first = model.loss(seq)
    a0, w0 = first.action_loss.item(), first.world_model_loss.item()
    for _ in range(150):
        out = model.loss(seq)
        if out.action_loss.item() < a0 / 10 and out.world_model_loss.item() < w0 / 10:
            return
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    pytest.fail(f"losses did not fall 10x: action {a0:.3f}->{out.action_loss.item():.3f}, "
                f"world model {w0:.3f}->{out.world_model_loss.item():.3f}")
