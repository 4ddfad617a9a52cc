"""Continuous (ViT-style) image path: patch autoencoder, patch features in the backbone's image positions, expert on top."""
from __future__ import annotations

import pytest
import torch

from policies.action_expert import DriveVLAW0ExpertPolicy
from policies.patch_encoder import DriveVLAW0PatchEncoder
from policies.sequence import IGNORE, TokenType
from tests.policies.checkpoints import micro_config
from tests.policies.frames import road_frames
from tests.policies.test_action_expert import vla_batch

PATCH = dict(num_hidden_layers=2, image_input="patch", patch_dim=32, patch_layers=1)


def _features(config, enc: DriveVLAW0PatchEncoder, seed: int = 0) -> torch.Tensor:
    """(2, F, h*w, D) patch features of road frames."""
    f = config.num_history_frames
    frames = road_frames(2 * f, config.image_height, config.image_width, seed=seed)
    with torch.no_grad():
        return enc.encode(frames).view(2, f, config.image_tokens_per_frame, -1)


def test_patch_autoencoder_shapes_and_training():
    config = micro_config(**PATCH)
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
    config = micro_config(**PATCH)
    enc = DriveVLAW0PatchEncoder(config).eval()
    frames = road_frames(2, config.image_height, config.image_width)
    enc.save_pretrained(tmp_path)
    loaded = DriveVLAW0PatchEncoder.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.encode(frames), enc.encode(frames))


@torch.no_grad()
def test_patch_features_take_the_image_positions_in_sequence_order_and_the_placeholder_ids_do_not_matter():
    config = micro_config(**PATCH)
    torch.manual_seed(0)
    enc, model = DriveVLAW0PatchEncoder(config), DriveVLAW0ExpertPolicy(config)
    backbone = model.backbone
    feats = _features(config, enc)
    seq = vla_batch(config).full
    x = backbone.embed(seq.input_ids, seq.type_ids, feats)
    rows = torch.arange(2)[:, None]
    for f in range(config.num_history_frames):
        torch.testing.assert_close(x[rows, seq.image_index[:, f]], backbone.image_proj(feats[:, f]))
    others = seq.type_ids != TokenType.IMAGE
    torch.testing.assert_close(x[others], backbone.model.embed_tokens(seq.input_ids)[others])
    hidden = backbone(seq.input_ids, seq.attention_mask, seq.position_ids, seq.type_ids, feats).hidden_states
    ids = seq.input_ids.clone()
    ids[seq.type_ids == TokenType.IMAGE] = config.image_offset + 5
    again = backbone(ids, seq.attention_mask, seq.position_ids, seq.type_ids, feats).hidden_states
    assert torch.equal(again, hidden)
    with pytest.raises(ValueError, match="type_ids"):
        backbone.embed(seq.input_ids, None, feats)


def test_backbone_and_expert_read_patch_features():
    config = micro_config(**PATCH)
    torch.manual_seed(0)
    enc, model = DriveVLAW0PatchEncoder(config), DriveVLAW0ExpertPolicy(config)
    feats = _features(config, enc)
    batch = vla_batch(config)
    assert batch.codes is None
    out = model.backbone.loss(batch.full, image_features=feats)
    assert torch.isfinite(out.loss) and torch.isfinite(out.action_loss)
    out.loss.backward()
    assert model.backbone.image_proj.weight.grad.abs().sum() > 0
    other = model.backbone.loss(batch.full, image_features=feats.flip(1))  # swap the two frames
    assert (other.action_loss - out.action_loss).abs() > 1e-5
    model.eval()
    traj = model.backbone.generate_plan(batch.prompt, image_features=feats)
    assert traj.shape == (2, config.num_poses, 3) and torch.isfinite(traj).all()
    with torch.no_grad():
        model.query_out.weight.normal_()
    a = model.predict(batch.prompt, batch.state, image_features=feats)
    b = model.predict(batch.prompt, batch.state, image_features=feats.flip(1))
    assert a.shape == (2, config.num_poses, 3) and (a - b).abs().max() > 1e-4


def test_the_patch_paths_placeholder_image_ids_carry_no_label():
    """On the patch path the world model is the diffusion head: the image positions hold placeholder ids, which must
    not be CE targets (the backbone would learn to predict the placeholder code, and its loss would include it)."""
    config = micro_config(**PATCH)
    torch.manual_seed(0)
    enc, model = DriveVLAW0PatchEncoder(config), DriveVLAW0ExpertPolicy(config)
    seq = vla_batch(config).full
    assert not (seq.labels[seq.type_ids == TokenType.IMAGE] != IGNORE).any()
    assert model.backbone.loss(seq, image_features=_features(config, enc)).world_model_loss is None


def test_decoding_writes_frames_back_in_the_pixel_range_encoding_reads():
    """encode reads frames in [0,1] as [-1,1]; decode maps the decoder's [-1,1] output back to [0,1] (clamped), so a
    decoder that reproduced its input exactly would give the frames back."""
    config = micro_config(**PATCH)
    enc = DriveVLAW0PatchEncoder(config)
    frames = road_frames(2, config.image_height, config.image_width)
    enc._pixels = lambda features: frames * 2 - 1  # a perfect decoder of these frames
    torch.testing.assert_close(enc.decode(enc.encode(frames)), frames)
    enc._pixels = lambda features: torch.full_like(frames, 3.0)
    assert torch.equal(enc.decode(enc.encode(frames)), torch.ones_like(frames))
