"""Official-layout checkpoints load through the converter: an Emu3 backbone saved by transformers' own Emu3ForCausalLM,
stage-2 models under the official DriveVLA-W0 names (read from its modeling_emu3.py), a Qwen2.5-VL backbone saved by
transformers' own Qwen2_5_VLForConditionalGeneration, and a Qwen-track model with the official ROSS head's names (read
from its modeling_qwen2_5_vl_ross.py and denoiser_sd.py) give the same outputs."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Emu3ForCausalLM, Qwen2_5_VLForConditionalGeneration

from policies.convert import ConversionError, load_official, save_official, w0sim_to_official
from policies.model import DriveVLAW0ForDriving
from policies.noise import BatchNoise
from policies.sequence import TokenType
from tests.policies.checkpoints import driving_motion, micro_config

# The official stage-2 names per decoder, beyond `vlm.*` and the expert's Emu3 blocks (modeling_emu3.py:
# Emu3QFormer, Emu3Pi0, Emu3AutoRegressive). Written out here, not derived from the converter.
OFFICIAL_HEADS = {
    "query": {"action_queries", "action_decoder.norm_final.weight", "action_decoder.norm_final.bias",
              "action_decoder.linear.weight", "action_decoder.linear.bias"},
    "flow": {"action_projector.W1.weight", "action_projector.W1.bias", "action_projector.W2.weight",
             "action_projector.W2.bias", "action_projector.W3.weight", "action_projector.W3.bias",
             "action_projector.pos_embed.weight", "action_decoder.adaLN_modulation.1.weight",
             "action_decoder.adaLN_modulation.1.bias", "action_decoder.linear.weight", "action_decoder.linear.bias"},
    "ar": {"action_embed_projector.0.weight", "action_embed_projector.0.bias", "action_embed_projector.2.weight",
           "action_embed_projector.2.bias", "action_lm_head.weight"},
}
EXPERT_BLOCK = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                "input_layernorm.weight", "post_attention_layernorm.weight"}


def _batch(config, n: int = 2):
    torch.manual_seed(1)
    frames = torch.rand(n, config.num_history_frames, 3, config.image_height, config.image_width)
    ego_poses, _ = driving_motion(n, seed=3)
    return frames, ["turn left", "go straight"][:n], ego_poses, torch.tensor([0, 1])[:n]


def test_an_emu3_backbone_saved_by_transformers_loads_and_gives_its_logits(tmp_path):
    config = micro_config(use_action_expert=False)
    torch.manual_seed(0)
    emu3 = Emu3ForCausalLM(config.backbone_config()).eval()
    emu3.save_pretrained(tmp_path)
    model = load_official(DriveVLAW0ForDriving(config).eval(), tmp_path)
    ids = torch.randint(0, config.vocab_size, (2, 12))
    expected = emu3(input_ids=ids).logits
    hidden = model.backbone.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  position_ids=torch.arange(12).expand(2, -1)).last_hidden_state
    torch.testing.assert_close(model.backbone.lm_head(hidden), expected)


@pytest.mark.parametrize("decoder", ["query", "flow", "ar"])
def test_a_stage_2_checkpoint_in_the_official_layout_gives_the_same_plans(tmp_path, decoder):
    config = micro_config(expert_decoder=decoder, num_hidden_layers=2)
    torch.manual_seed(0)
    model = DriveVLAW0ForDriving(config).eval()
    for p in model.policy.parameters():  # zero-initialised heads would hide a wrong mapping
        torch.nn.init.normal_(p, std=0.2)
    frames, texts, ego_poses, command = _batch(config)
    before = model.predict_trajectory(frames, texts, ego_poses, command, torch.Generator().manual_seed(0))
    save_official(model, tmp_path)
    names = set(load_file(tmp_path / "model.safetensors"))
    expert = {f"action_expert.layers.{i}.{n}" for i in range(2) for n in EXPERT_BLOCK} | {"action_expert.norm.weight"}
    state = {f"state_projector.{i}.{k}" for i in (0, 2) for k in ("weight", "bias")}
    vlm = {n for n in names if n.startswith("vlm.")}
    assert names - vlm == expert | state | OFFICIAL_HEADS[decoder]
    assert "vlm.lm_head.weight" in vlm and "vlm.model.embed_tokens.weight" in vlm
    fresh = DriveVLAW0ForDriving(config).eval()
    fresh.vq.load_state_dict(model.vq.state_dict())  # the image tokenizer is not part of the official layout
    load_official(fresh, tmp_path)
    after = fresh.predict_trajectory(frames, texts, ego_poses, command, torch.Generator().manual_seed(0))
    torch.testing.assert_close(after, before)


def test_the_official_ar_head_keeps_the_fast_rows_and_eoa_of_the_whole_vocabulary():
    config = micro_config(expert_decoder="ar")
    model = DriveVLAW0ForDriving(config)
    head = w0sim_to_official(model)["action_lm_head.weight"]
    assert head.shape[0] == config.vocab_size
    ours = model.policy.ar_out.weight
    torch.testing.assert_close(head[config.fast_to_id(0)], ours[0])
    torch.testing.assert_close(head[config.special_id("<eoa>")], ours[-1])


def test_weights_that_do_not_fit_are_refused_by_name(tmp_path):
    config = micro_config()
    model = DriveVLAW0ForDriving(config)
    save_official(model, tmp_path)
    wider = DriveVLAW0ForDriving(micro_config(expert_hidden_size=32))
    with pytest.raises(ConversionError, match="shape mismatch: .*expert"):
        load_official(wider, tmp_path)
    other_decoder = DriveVLAW0ForDriving(micro_config(expert_decoder="flow"))
    with pytest.raises(ConversionError, match="action_queries"):
        load_official(other_decoder, tmp_path)


# The ROSS head's parameters in the official Qwen track (RossStableDiffusionXOmni, mlp_depth 2: Linear, GELU, Linear
# without bias; its UNet and the SD VAE keep diffusers' names), written out here, not derived from the converter.
OFFICIAL_ROSS = {"denoiser.mlp.0.weight", "denoiser.mlp.0.bias", "denoiser.mlp.2.weight", "denoiser.mlp_a.0.weight",
                 "denoiser.mlp_a.0.bias", "denoiser.mlp_a.2.weight", "denoiser.factor", "denoiser.factor_a"}


def test_a_qwen2_5_vl_backbone_saved_by_transformers_loads_and_gives_its_logits(tmp_path):
    config = micro_config(image_input="vit")
    torch.manual_seed(0)
    qwen = Qwen2_5_VLForConditionalGeneration(config.qwen_config()).eval()
    qwen.save_pretrained(tmp_path)
    assert any(k.startswith("visual.") for k in load_file(tmp_path / "model.safetensors"))  # the saved layout
    model = load_official(DriveVLAW0ForDriving(config).eval(), tmp_path, backbone_only=True)
    frames, texts, ego_poses, command = _batch(config)
    inputs = model.build_inputs(frames, texts, ego_poses, command)
    seq, patches = inputs.sequence, inputs.pixel_patches
    grid = torch.tensor([config.vit_grid_thw] * 2 * config.num_history_frames)
    with torch.no_grad():
        expected = qwen(input_ids=seq.input_ids, attention_mask=seq.attention_mask, pixel_values=patches.flatten(0, 2),
                        image_grid_thw=grid, mm_token_type_ids=(seq.type_ids == TokenType.IMAGE).int()).logits
        logits = model.backbone.lm_head(model.backbone(seq, patches).hidden_states)
    keep = seq.attention_mask.bool()
    torch.testing.assert_close(logits[keep], expected[keep])
    with pytest.raises(ConversionError, match="missing: (vae|diffusion_wm)"):  # a backbone alone is no ROSS model
        load_official(DriveVLAW0ForDriving(config), tmp_path)


@torch.no_grad()
def test_a_qwen_track_model_in_the_official_ross_layout_gives_the_same_plans_and_world_model(tmp_path):
    config = micro_config(image_input="vit")
    torch.manual_seed(0)
    model = DriveVLAW0ForDriving(config).eval()
    for p in model.diffusion_wm.parameters():  # zero gates would hide a wrong mapping of the condition MLPs
        torch.nn.init.normal_(p, std=0.2)
    frames, texts, ego_poses, command = _batch(config)
    save_official(model, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    names = set(weights)
    assert OFFICIAL_ROSS <= names and "denoiser.unet.conv_in.weight" in names and "vae.encoder.conv_in.weight" in names
    assert {"lm_head.weight", "model.embed_tokens.weight", "visual.patch_embed.proj.weight"} <= names
    assert all(n.startswith(("model.", "visual.", "lm_head.", "denoiser.", "vae.")) for n in names)
    # The official file also holds the denoiser's positional embedding, which its forward never reads.
    weights["denoiser.pos_embed"] = torch.zeros(1, config.image_tokens_per_frame, config.hidden_size)
    save_file(weights, tmp_path / "model.safetensors")
    fresh = load_official(DriveVLAW0ForDriving(config).eval(), tmp_path)
    torch.testing.assert_close(fresh.predict_trajectory(frames, texts, ego_poses, command),
                               model.predict_trajectory(frames, texts, ego_poses, command))
    _, plans = driving_motion(2, seed=5)
    images = model.encode_frames(frames)

    def world_model(m: DriveVLAW0ForDriving) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled next frame and the world-model loss, from fixed seeds."""
        frame, _ = m.predict_next_frame(images, texts, ego_poses, command, plans, diffusion_steps=3,
                                        generator=torch.Generator().manual_seed(0))
        inputs = m.build_inputs(frames, texts, ego_poses, command, plans, BatchNoise(torch.Generator().manual_seed(1)))
        return frame, m.loss(inputs, noise=BatchNoise(torch.Generator().manual_seed(2))).world_model_loss

    for got, want in zip(world_model(fresh), world_model(model)):
        torch.testing.assert_close(got, want)


@torch.no_grad()
def test_the_anchor_variant_in_the_official_layout_gives_the_same_plans(tmp_path):
    """The official anchor head's names (Emu3QFormer._ensure_anchor_setup: torch transformer layers), its anchors from a
    separate .npy (the official cluster_centers_8192.npy is not in the checkpoint) and its unused regression head."""
    import numpy as np

    from policies.anchors import fit_anchors

    config = micro_config(num_anchors=5, anchor_queries=3, anchor_layers=1, anchor_heads=2, num_hidden_layers=2)
    torch.manual_seed(0)
    model = DriveVLAW0ForDriving(config).eval()
    for p in model.policy.parameters():
        torch.nn.init.normal_(p, std=0.2)
    model.policy.anchors.copy_(fit_anchors(driving_motion(20, seed=2)[1], 5))
    save_official(model, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    for name in ("anchor_mlp_planning.0.weight", "anchor_mlp_planning.2.bias",
                 "anchor_cluster_encoder.layers.0.self_attn.in_proj_weight", "anchor_cluster_encoder.layers.0.linear1.weight",
                 "anchor_tf_decoder.layers.0.multihead_attn.in_proj_weight", "anchor_tf_decoder.layers.0.norm3.weight",
                 "anchor_policy_head.0.weight", "anchor_policy_head.2.bias"):
        assert name in weights, name
    assert weights["action_queries"].shape == (1, 3, config.expert_hidden_size)
    weights["action_decoder.linear.weight"] = torch.zeros(3, config.expert_hidden_size)  # official, never called
    save_file(weights, tmp_path / "model.safetensors")
    np.save(tmp_path / "cluster_centers.npy", model.policy.anchors.numpy())
    fresh = DriveVLAW0ForDriving(config).eval()
    fresh.vq.load_state_dict(model.vq.state_dict())
    with pytest.raises(ConversionError, match="missing: policy.anchors"):
        load_official(fresh, tmp_path)
    load_official(fresh, tmp_path, anchors=tmp_path / "cluster_centers.npy")
    frames, texts, ego_poses, command = _batch(config)
    torch.testing.assert_close(fresh.predict_trajectory(frames, texts, ego_poses, command),
                               model.predict_trajectory(frames, texts, ego_poses, command))
    _, plans = driving_motion(2, seed=5)  # the loss reads every anchor's logit, not only the best one
    losses = [m.loss(m.build_inputs(frames, texts, ego_poses, command, plans), stage=2).loss for m in (fresh, model)]
    torch.testing.assert_close(*losses)
