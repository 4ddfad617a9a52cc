"""Continuous (ViT-style) image path: patch autoencoder, patch features in the backbone's image positions, expert on top."""
from __future__ import annotations

import torch

from policies.action_expert import DriveVLAW0ExpertPolicy, state_features
from policies.config import DriveVLAW0Config
from policies.patch_encoder import DriveVLAW0PatchEncoder
from policies.sequence import SequenceBuilder
from tests.policies.frames import road_frames
from tests.policies.test_backbone import _batch

TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, expert_hidden_size=32, expert_intermediate_size=64,
            image_height=32, image_width=64, image_input="patch", patch_dim=32, patch_layers=1)


def test_patch_autoencoder_shapes_and_training():
    config = DriveVLAW0Config.preset("tiny", **TINY)
    torch.manual_seed(0)
    enc = DriveVLAW0PatchEncoder(config)
    frames = road_frames(4, config.image_height, config.image_width)
    feats, first = enc(frames)
    assert feats.shape == (4, config.image_tokens_per_frame, config.patch_dim)
    assert enc.decode(feats).shape == frames.shape
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    for _ in range(20):
        _, loss = enc(frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first.item()


@torch.no_grad()
def test_patch_encoder_save_load(tmp_path):
    config = DriveVLAW0Config.preset("tiny", **TINY)
    enc = DriveVLAW0PatchEncoder(config).eval()
    frames = road_frames(2, config.image_height, config.image_width)
    enc.save_pretrained(tmp_path)
    loaded = DriveVLAW0PatchEncoder.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.encode(frames), enc.encode(frames))


def test_backbone_and_expert_read_patch_features():
    config = DriveVLAW0Config.preset("tiny", **TINY)
    torch.manual_seed(0)
    enc, model = DriveVLAW0PatchEncoder(config), DriveVLAW0ExpertPolicy(config)
    frames = road_frames(2 * config.num_history_frames, config.image_height, config.image_width)
    with torch.no_grad():
        feats = enc.encode(frames).view(2, config.num_history_frames, config.image_tokens_per_frame, -1)
    batch = _batch(config)
    batch["history_codes"] = None
    batch.pop("future_codes")
    builder = SequenceBuilder(config)
    out = model.backbone.loss(builder.build(**batch), image_features=feats)
    assert torch.isfinite(out.loss) and out.world_model_loss is None
    batch.pop("action_ids")
    prompt = builder.build(**batch)
    model.eval()
    traj = model.backbone.generate_actions(prompt, image_features=feats)
    assert traj.shape == (2, config.num_poses, 3)
    with torch.no_grad():
        model.query_out.weight.normal_()
    state = state_features(config, torch.tensor([3.0, 9.0]), torch.zeros(2), torch.tensor([1, 2]))
    a = model.predict(prompt, state, image_features=feats)
    b = model.predict(prompt, state, image_features=feats.flip(1))  # swap the two frames
    assert a.shape == (2, config.num_poses, 3) and (a - b).abs().max() > 1e-4


def test_decoding_writes_frames_back_in_the_pixel_range_encoding_reads():
    """encode reads frames in [0,1] as [-1,1]; decode maps the decoder's [-1,1] output back to [0,1] (clamped), so a
    decoder that reproduced its input exactly would give the frames back."""
    config = DriveVLAW0Config.preset("tiny", **TINY)
    enc = DriveVLAW0PatchEncoder(config)
    frames = road_frames(2, config.image_height, config.image_width)
    enc._pixels = lambda features: frames * 2 - 1  # a perfect decoder of these frames
    torch.testing.assert_close(enc.decode(enc.encode(frames)), frames)
    enc._pixels = lambda features: torch.full_like(frames, 3.0)
    assert torch.equal(enc.decode(enc.encode(frames)), torch.ones_like(frames))
