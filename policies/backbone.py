"""VLA backbone: transformers' Emu3ForCausalLM or Qwen2_5_VLForConditionalGeneration, its one weighted CE, constrained decoding.

Loss (the official `Emu3MoE.forward`, drivevla_w0_paper.md §3.1): one next-token cross-entropy over every label
of the sequence (image codes and <boa> ... <eoa> spans), a weighted mean whose class weight is
`vision_loss_weight` for image codes and 1 elsewhere, so image codes carry most of it (they outnumber action
tokens ~10:1 at tiny scale, ~60:1 in the paper's), over the global batch on any number of processes
(`policies.batch_mean`); so is the action part it reports. The world-model part is the plain mean over image codes,
which every row has the same number of.
The LM head runs only at labelled positions, so the paper-sized 184k-id head is not applied to every token.

The decoder is transformers' `Emu3ForCausalLM` (Emu3 track: image positions hold image code ids) or, with
`config.image_input == "vit"`, `Qwen2_5_VLForConditionalGeneration` (Qwen2.5-VL track: image positions are
<|image_pad|> placeholders that take its ViT's features of the frames' pixel patches, and rotary positions are Qwen's
3-D M-RoPE ones from its `get_rope_index`; the loss has no image labels there, so it is the mean CE over action
tokens, as the official Qwen code's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, Emu3ForCausalLM, PreTrainedModel, Qwen2_5_VLForConditionalGeneration

from policies.action_tokens import ActionTokenizer
from policies.batch_mean import at_least_float32, batch_mean
from policies.config import DriveVLAW0Config
from policies.sequence import IGNORE, TokenType, VLASequence


def pick_tokens(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) next tokens of (B,V) logits: the argmax at temperature 0, else a sample at `temperature` from the `top_k`
    most likely (from all without); the generator must be on the logits' device."""
    if temperature <= 0:
        return logits.argmax(-1)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]


@dataclass
class BackboneOutput:
    """Total loss (None without labels), its parts, the last hidden states (B,L,H) and the KV cache."""

    loss: torch.Tensor | None
    action_loss: torch.Tensor | None
    world_model_loss: torch.Tensor | None
    hidden_states: torch.Tensor
    cache: DynamicCache | None = None


class DriveVLAW0Backbone(PreTrainedModel):
    """The VLA decoder of either track (module docstring): untied LM head, random init, no download."""

    config_class = DriveVLAW0Config
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _no_split_modules = ["Emu3DecoderLayer", "Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        self.is_qwen = config.image_input == "vit"
        self.lm = (Qwen2_5_VLForConditionalGeneration(config.qwen_config()) if self.is_qwen
                   else Emu3ForCausalLM(config.backbone_config()))
        self.action_tokenizer = ActionTokenizer(config)
        self.post_init()

    @property
    def model(self) -> nn.Module:
        """The text decoder (`Emu3TextModel` / `Qwen2_5_VLTextModel`): embeddings, layers, final norm, rotary."""
        return self.lm.model.language_model if self.is_qwen else self.lm.model

    @property
    def lm_head(self) -> nn.Linear:
        return self.lm.lm_head

    # --- embedding and positions ------------------------------------------------------------------
    def _grid_thw(self, images: int, device: torch.device) -> torch.Tensor:
        return torch.tensor([self.config.vit_grid_thw] * images, device=device)

    def embed(self, input_ids: torch.Tensor, pixel_patches: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings (B,L,H); on the Qwen track the <|image_pad|> positions take the ViT's features of
        `pixel_patches` (B,F,N,D): each frame's patches as Qwen's image processor gives them, oldest frame first."""
        x = self.model.embed_tokens(input_ids)
        if pixel_patches is None:
            return x
        if not self.is_qwen:
            raise ValueError("pixel patches feed the Qwen track's ViT (config.image_input='vit')")
        grid = self._grid_thw(pixel_patches.shape[0] * pixel_patches.shape[1], x.device)
        feats = torch.cat(self.lm.model.get_image_features(pixel_patches.flatten(0, 2), grid).pooler_output)
        return x.masked_scatter((input_ids == self.lm.config.image_token_id)[..., None], feats.to(x.dtype))

    def positions(self, seq: VLASequence) -> torch.Tensor:
        """Rotary positions of `seq`: its (B,L) position ids (Emu3), or Qwen's (3,B,L) M-RoPE ones."""
        if not self.is_qwen:
            return seq.position_ids
        is_image = seq.type_ids == int(TokenType.IMAGE)
        images = int(is_image.sum()) // self.config.image_tokens_per_frame
        positions, _ = self.lm.model.get_rope_index(seq.input_ids, mm_token_type_ids=is_image.int(),
                                                    image_grid_thw=self._grid_thw(images, seq.input_ids.device),
                                                    attention_mask=seq.attention_mask)
        return positions

    # --- forward and loss -------------------------------------------------------------------------
    def forward(self, seq: VLASequence, pixel_patches: torch.Tensor | None = None,
                cache: DynamicCache | None = None, use_cache: bool = False) -> BackboneOutput:
        """Run the decoder over `seq`: last hidden states (and the KV cache); no loss (see `loss`)."""
        out = self.model(inputs_embeds=self.embed(seq.input_ids, pixel_patches),
                         attention_mask=seq.attention_mask, position_ids=self.positions(seq),
                         cache=cache, use_cache=use_cache)
        return BackboneOutput(None, None, None, out.last_hidden_state, out.cache)

    def loss(self, seq: VLASequence, pixel_patches: torch.Tensor | None = None) -> BackboneOutput:
        """The weighted-mean CE of a training `VLASequence` (module docstring) and its action / image parts."""
        if seq.labels is None:
            raise ValueError("the sequence has no labels (build it with with_labels=True)")
        c = self.config
        out = self(seq, pixel_patches)
        targets = seq.labels[:, 1:]
        keep = targets != IGNORE
        target = targets[keep]
        logits = at_least_float32(self.lm_head(out.hidden_states[:, :-1][keep]))
        per_token = F.cross_entropy(logits, target, reduction="none")
        is_image = target >= c.image_offset
        weight = torch.where(is_image, c.vision_loss_weight, 1.0)
        loss = batch_mean((per_token * weight).sum(), weight.sum())
        action_loss = batch_mean(per_token[~is_image].sum(), (~is_image).sum().to(per_token.dtype))
        # Image labels are all or none: every row has the same number, or the world model is off.
        wm_loss = per_token[is_image].mean() if bool(is_image.any()) else None
        return BackboneOutput(loss, action_loss, wm_loss, out.hidden_states)

    # --- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def _decode(self, seq: VLASequence, steps: int, allowed: torch.Tensor, stop_id: int | None = None,
                temperature: float = 0.0, top_k: int | None = None, generator: torch.Generator | None = None,
                pixel_patches: torch.Tensor | None = None) -> torch.Tensor:
        """Up to `steps` tokens after `seq` (B,steps), greedy (temperature 0) or sampled (with `top_k`), each among
        the ids where `allowed` (V,) is True, with a KV cache; rows that emitted `stop_id` continue with it."""
        cache = DynamicCache(config=self.model.config)
        out = self(seq, pixel_patches, cache, use_cache=True)
        mask, pos = seq.attention_mask, self.positions(seq)[..., -1:]
        hidden = out.hidden_states[:, -1]
        blocked = ~allowed.to(hidden.device)
        done = torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        tokens = []
        for step in range(steps):
            logits = self.lm_head(hidden).float().masked_fill(blocked, float("-inf"))
            nxt = pick_tokens(logits, temperature, top_k, generator)
            if stop_id is not None:
                nxt = torch.where(done, stop_id, nxt)
                done = done | (nxt == stop_id)
            tokens.append(nxt)
            if step + 1 == steps or bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            pos = pos + 1
            out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                             cache=cache, use_cache=True)
            hidden = out.last_hidden_state[:, -1]
        return torch.stack(tokens, 1)

    def generate_plan_tokens(self, prompt: VLASequence, pixel_patches: torch.Tensor | None = None) -> list[list[int]]:
        """Per row, the greedy FAST ids of the plan after a prompt ending in <boa>, up to <eoa> (the baseline VLA;
        at most `max_action_tokens` with <boa> and <eoa>, as the official decoding)."""
        c = self.config
        if not bool((prompt.input_ids[:, -1] == c.special_id("<boa>")).all()):
            raise ValueError("the decoding prompt must end with <boa> (build it without the plan)")
        eoa = c.special_id("<eoa>")
        allowed = torch.zeros(c.vocab_size, dtype=torch.bool)
        allowed[slice(*c.fast_id_range)] = True
        allowed[eoa] = True
        ids = self._decode(prompt, c.max_action_tokens - 1, allowed, eoa, pixel_patches=pixel_patches)
        return [[int(i) for i in row if i != eoa] for row in ids.tolist()]

    def generate_plan(self, prompt: VLASequence, pixel_patches: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_poses, 3) trajectory decoded through the backbone (FAST tokens -> motions -> poses)."""
        return self.action_tokenizer.decode_plan(self.generate_plan_tokens(prompt, pixel_patches))

    def generate_image_codes(self, context: VLASequence, temperature: float = 0.0, top_k: int | None = None,
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,h,w) image codes of the next frame after a context ending in <boi> <img> (world-model rollout);
        greedy at temperature 0, else sampled from the `top_k` most likely codes."""
        c = self.config
        if not bool((context.input_ids[:, -1] == c.special_id("<img>")).all()):
            raise ValueError("the world-model context must end with <boi> <img>")
        allowed = torch.zeros(c.vocab_size, dtype=torch.bool)
        allowed[c.image_offset:c.image_offset + c.vq_codebook_size] = True
        codes = self._decode(context, c.image_tokens_per_frame, allowed, None, temperature, top_k, generator)
        return (codes - c.image_offset).view(-1, *c.image_grid)
