"""The Qwen2.5-VL track: Qwen's token ids, the official chat layout, the backbone as transformers' own
Qwen2_5_VLForConditionalGeneration computes it (ViT features in the image placeholders, M-RoPE positions), left
padding, cached decoding, and the VAE that gives the diffusion world model its latents."""
from __future__ import annotations

import pytest
import torch

from policies.backbone import DriveVLAW0Backbone
from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving
from policies.noise import BatchNoise
from policies.sequence import IGNORE, TokenType, VLASequence
from policies.text import InstructionTokenizer
from policies.vae import DriveVLAW0VAE, fit_scaling_factor
from tests.policies.checkpoints import micro_config
from tests.policies.frames import road_frames
from tests.policies.test_action_expert import vla_batch

VIT = dict(image_input="vit", num_hidden_layers=2)


def test_the_paper_presets_qwen_track_has_qwen2_5_vl_7bs_ids_and_grids():
    """Ids as Qwen2.5's tokenizer has them (<|endoftext|> 151643 ... <|video_pad|> 151656), the official code's two
    added action markers after its 151,665 tokens, FAST token k at 151642 - k, Qwen2.5-VL-7B's 152,064 embedding
    rows, 10x18 ViT tokens of a 504x280 frame and SD's 35x63 latent."""
    c = DriveVLAW0Config.preset("paper", image_input="vit")
    ids = {name: c.special_id(name) for name in ("<pad>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<boa>", "<eoa>")}
    assert ids == {"<pad>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                   "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<boa>": 151665,
                   "<eoa>": 151666}
    assert c.fast_to_id(0) == 151642 and c.fast_to_id(2047) == 151642 - 2047 and c.vocab_size == 152064
    assert c.image_grid == (10, 18) and c.image_tokens_per_frame == 180 and c.latent_grid == (35, 63)
    assert not c.use_action_expert
    q = c.qwen_config()
    assert (q.image_token_id, q.vision_start_token_id, q.text_config.hidden_size, q.vision_config.depth) == (
        151655, 151652, 3584, 32)
    with pytest.raises(KeyError, match="<boi>"):
        c.special_id("<boi>")  # an Emu3 token


@pytest.mark.parametrize("overrides, message", [
    (dict(use_action_expert=True), "no action expert"),
    (dict(mrope_section=(2, 2, 2)), "mrope_section"),
    (dict(vit_patch_size=6), "ViT token size"),
])
def test_inconsistent_qwen_track_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        micro_config(**VIT, **overrides)


def _names(config, ids) -> list[str]:
    words = InstructionTokenizer().vocab
    specials = {config.special_id(n): n for n in config.special_offsets}
    fast = range(*config.fast_id_range)
    return [specials.get(i) or ("FAST" if i in fast else words[i]) for i in ids]


def test_a_row_is_qwens_chat_template_with_labels_on_the_action_answers_only():
    config = micro_config(**VIT)
    batch = vla_batch(config)
    seq = batch.full
    pads = int((seq.type_ids[0] == TokenType.PAD).sum())
    names = _names(config, seq.input_ids[0, pads:].tolist())
    n = config.image_tokens_per_frame
    system = ["<|im_start|>", "system", "you", "are", "a", "helpful", "assistant", "<|im_end|>"]
    assert names[:len(system)] == system
    rest = names[len(system):]
    # user turn: image, the command's words, its past motions; assistant turn: <boa> FAST <eoa>; twice.
    for turn in range(2):
        assert rest[:3] == ["<|im_start|>", "user", "<|vision_start|>"]
        assert rest[3:3 + n] == ["<|image_pad|>"] * n and rest[3 + n] == "<|vision_end|>"
        end = rest.index("<|im_end|>")
        assert rest[4 + n:end] == ["go", "straight"] + ["FAST"] * (end - 6 - n)
        rest = rest[end + 1:]
        end = rest.index("<|im_end|>")
        assert rest[:3] == ["<|im_start|>", "assistant", "<boa>"] and rest[end - 1] == "<eoa>"
        assert set(rest[3:end - 1]) == {"FAST"}
        rest = rest[end + 1:]
    assert rest == []
    labelled = seq.labels[0] != IGNORE
    is_answer = torch.zeros_like(labelled)
    boas = (seq.input_ids[0] == config.special_id("<boa>")).nonzero()[:, 0]
    eoas = (seq.input_ids[0] == config.special_id("<eoa>")).nonzero()[:, 0]
    for b, e in zip(boas, eoas):
        is_answer[b:e + 1] = True
    assert torch.equal(labelled, is_answer) and torch.equal(seq.labels[0][labelled], seq.input_ids[0][labelled])
    # The prompt is the training row up to and including the plan's <boa>.
    prompt = batch.prompt
    assert prompt.input_ids[0, -1] == config.special_id("<boa>")
    cut = int(boas[-1]) + 1
    p_pads = int((prompt.type_ids[0] == TokenType.PAD).sum())
    assert torch.equal(prompt.input_ids[0, p_pads:], seq.input_ids[0, pads:cut])


def _patches(config, rows: int, seed: int = 0) -> torch.Tensor:
    model = DriveVLAW0ForDriving(config)
    frames = road_frames(rows * config.num_history_frames, config.image_height, config.image_width, seed=seed)
    return model.encode_frames(frames.view(rows, config.num_history_frames, *frames.shape[1:]))


def _spread(backbone: DriveVLAW0Backbone) -> None:
    with torch.no_grad():  # larger weights, so that positions and features visibly change the outputs
        for p in backbone.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def _row(seq: VLASequence, r: int) -> VLASequence:
    pads = int((seq.type_ids[r] == TokenType.PAD).sum())
    return VLASequence(**{k: (v[r:r + 1, pads:] if k != "image_index" else v[r:r + 1] - pads)
                          for k, v in vars(seq).items() if v is not None})


@torch.no_grad()
def test_the_backbone_computes_what_transformers_qwen2_5_vl_computes_and_left_padding_changes_nothing():
    """Row by row, our backbone's logits are those of Qwen2_5_VLForConditionalGeneration.forward given the pixel
    values, image_grid_thw and mm_token_type_ids (so ViT features land in the placeholders in order and the M-RoPE
    positions are Qwen's); in a left-padded batch every row gives the same logits as alone."""
    config = micro_config(**VIT)
    torch.manual_seed(0)
    backbone = DriveVLAW0Backbone(config).eval()
    _spread(backbone)
    seq = vla_batch(config, texts=["go straight", "turn left at the next intersection"]).full
    assert (seq.type_ids == TokenType.PAD).sum(1).unique().numel() == 2
    patches = _patches(config, 2)
    batch_logits = backbone.lm_head(backbone(seq, patches).hidden_states)
    grid = torch.tensor([config.vit_grid_thw] * config.num_history_frames)
    for r in range(2):
        row = _row(seq, r)
        ours = backbone.lm_head(backbone(row, patches[r:r + 1]).hidden_states)
        real = backbone.lm(input_ids=row.input_ids, attention_mask=row.attention_mask,
                           pixel_values=patches[r].flatten(0, 1), image_grid_thw=grid,
                           mm_token_type_ids=(row.type_ids == TokenType.IMAGE).int()).logits
        torch.testing.assert_close(ours, real)
        torch.testing.assert_close(batch_logits[r:r + 1, -ours.shape[1]:], ours, rtol=1e-4, atol=1e-4)
    # The frames matter, in their order.
    swapped = backbone.lm_head(backbone(seq, patches.flip(1)).hidden_states)
    assert (swapped - batch_logits).abs().max() > 1e-3


@torch.no_grad()
def test_cached_greedy_decoding_matches_decoding_without_a_cache():
    config = micro_config(**VIT)
    torch.manual_seed(0)
    backbone = DriveVLAW0Backbone(config).eval()
    _spread(backbone)
    prompt = vla_batch(config).prompt
    patches = _patches(config, 2)
    allowed = torch.zeros(config.vocab_size, dtype=torch.bool)
    allowed[slice(*config.fast_id_range)] = True
    cached = backbone._decode(prompt, 4, allowed, pixel_patches=patches)
    for r in range(2):
        row = _row(prompt, r)
        for step in range(4):
            logits = backbone.lm_head(backbone(row, patches[r:r + 1]).hidden_states[:, -1])
            nxt = logits.masked_fill(~allowed, float("-inf")).argmax(-1)
            assert nxt.item() == cached[r, step].item(), (r, step)
            one = torch.ones(1, 1, dtype=torch.long)
            row = VLASequence(torch.cat([row.input_ids, nxt[:, None]], 1), torch.cat([row.attention_mask, one], 1),
                              torch.cat([row.position_ids, row.position_ids[:, -1:] + 1], 1),
                              torch.cat([row.type_ids, one * int(TokenType.ACTION)], 1), row.image_index,
                              torch.cat([row.context_mask, one.bool()], 1), torch.cat([row.plan_mask, one.bool()], 1))


def test_the_vae_trains_and_its_fitted_scaling_gives_unit_variance_latents():
    config = micro_config(**VIT, vae_scaling_factor=0.0)
    torch.manual_seed(0)
    vae = DriveVLAW0VAE(config)
    frames = road_frames(8, config.image_height, config.image_width)
    with pytest.raises(ValueError, match="scaling factor"):
        vae.latents(frames)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = None
    for step in range(25):
        noise = torch.randn(8, config.vae_latent_channels, *config.latent_grid, generator=torch.Generator().manual_seed(step))
        out = vae(frames, noise)
        first = out.reconstruction_loss.item() if first is None else first
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.reconstruction_loss.item() < 0.5 * first
    vae.config.vae_scaling_factor = fit_scaling_factor(vae, frames)
    latents = vae.latents(frames, BatchNoise(torch.Generator().manual_seed(0)))
    assert latents.shape == (8, config.vae_latent_channels, *config.latent_grid)
    assert latents.std().item() == pytest.approx(1.0, rel=0.1)
    decoded = vae.decode_latents(latents)
    assert decoded.shape == frames.shape and decoded.min() >= 0 and decoded.max() <= 1
