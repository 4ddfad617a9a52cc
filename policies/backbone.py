"""VLA backbone: a Qwen2 causal decoder over the unified vocabulary, its action and AR world-model losses, constrained decoding.

Loss convention (w0sim): explicit per-group means, L = action_loss_weight * CE(action tokens)
+ world_model_loss_weight * CE(future-frame image tokens). The official code instead folds alpha
into a class weight of one CE over all labels (drivevla_w0_paper.md §3.3); per-group means keep
alpha meaningful when image tokens outnumber action tokens ~100:1. The LM head runs only at the
positions that carry a label, so the paper-sized 184k-id head is not applied to every token.

Image positions hold VQ code ids (Emu3 path) or, with `config.image_input == "patch"`, projected
continuous patch features (ViT / Qwen2.5-VL path; the ids there are placeholders).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedModel, Qwen2Model

from policies.action_tokens import ActionTokenizer
from policies.config import DriveVLAW0Config
from policies.sequence import TokenType, VLASequence


@dataclass
class BackboneOutput:
    """Total loss (None without labels), its parts, the last hidden states (B,L,H) and the KV cache."""

    loss: torch.Tensor | None
    action_loss: torch.Tensor | None
    world_model_loss: torch.Tensor | None
    hidden_states: torch.Tensor
    cache: DynamicCache | None = None


class DriveVLAW0Backbone(PreTrainedModel):
    """Qwen2Model + untied LM head over `config.vocab_size` ids (random init, no download)."""

    config_class = DriveVLAW0Config
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _no_split_modules = ["Qwen2DecoderLayer"]

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config.backbone_config())
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Continuous path: patch features are projected into the history frames' image positions.
        self.image_proj = nn.Linear(config.patch_dim, config.hidden_size) if config.image_input == "patch" else None
        self.action_tokenizer = ActionTokenizer(config)
        self.post_init()

    # --- embedding ------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None,
              image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings (B,L,H); with `image_features` (B,F,h*w,D) from the patch encoder, the
        history frames' image positions (type IMAGE, placeholder ids) take the projected features."""
        x = self.model.embed_tokens(input_ids)
        if image_features is None:
            return x
        if self.image_proj is None or type_ids is None:
            raise ValueError("image_features need config.image_input='patch' and the sequence's type_ids")
        feats = self.image_proj(image_features.flatten(1, 2)).to(x.dtype)  # (B, F*h*w, H), sequence order
        return x.masked_scatter((type_ids == int(TokenType.IMAGE))[..., None], feats)

    # --- forward and losses -----------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                type_ids: torch.Tensor | None = None, image_features: torch.Tensor | None = None,
                cache: DynamicCache | None = None, use_cache: bool = False) -> BackboneOutput:
        """Run the decoder: last hidden states (and the KV cache); no loss (see `loss`)."""
        out = self.model(inputs_embeds=self.embed(input_ids, type_ids, image_features),
                         attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=use_cache)
        return BackboneOutput(None, None, None, out.last_hidden_state, out.cache)

    def loss(self, seq: VLASequence, image_features: torch.Tensor | None = None) -> BackboneOutput:
        """Action loss and AR world-model loss of a training `VLASequence` (next-token CE by type)."""
        c = self.config
        out = self(seq.input_ids, seq.attention_mask, seq.position_ids, seq.type_ids, image_features)
        hidden, type_ids = out.hidden_states, seq.type_ids
        target_types, targets, pred = type_ids[:, 1:], seq.input_ids[:, 1:], hidden[:, :-1]
        action_loss = self._group_ce(pred, targets, target_types == int(TokenType.ACTION))
        loss = c.action_loss_weight * action_loss
        wm_loss = None
        if c.use_world_model:
            wm_mask = target_types == int(TokenType.FUTURE_IMAGE)
            if c.world_model_on_history and image_features is None:
                wm_mask = wm_mask | (target_types == int(TokenType.IMAGE))
            if bool(wm_mask.any()):
                wm_loss = self._group_ce(pred, targets, wm_mask)
                loss = loss + c.world_model_loss_weight * wm_loss
        return BackboneOutput(loss, action_loss, wm_loss, hidden)

    def _group_ce(self, pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean next-token CE over the masked positions (LM head applied to those only)."""
        logits = self.lm_head(pred[mask]).float()
        return F.cross_entropy(logits, targets[mask])

    # --- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def _decode(self, seq: VLASequence, steps: int, allowed: Callable[[int], tuple[int, int]],
                temperature: float = 0.0, top_k: int | None = None, generator: torch.Generator | None = None,
                image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy (temperature 0) or sampled decoding of `steps` tokens after `seq`, each restricted
        to the id range `allowed(step)`, with a KV cache: one prefill, then one token per step."""
        cache = DynamicCache(config=self.model.config)
        mask, pos = seq.attention_mask, seq.position_ids[:, -1:]
        out = self.model(inputs_embeds=self.embed(seq.input_ids, seq.type_ids, image_features),
                         attention_mask=mask, position_ids=seq.position_ids, cache=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        tokens = []
        for step in range(steps):
            lo, hi = allowed(step)
            logits = self.lm_head(hidden).float()[:, lo:hi]
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                if top_k is not None:
                    kth = logits.topk(min(top_k, hi - lo), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            nxt = nxt + lo
            tokens.append(nxt)
            if step + 1 == steps:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            pos = pos + 1
            out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                             cache=cache, use_cache=True)
            hidden = out.last_hidden_state[:, -1]
        return torch.stack(tokens, 1)

    def generate_action_tokens(self, prompt: VLASequence, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_poses*3) greedy action ids after a prompt ending in <boa> (the baseline VLA)."""
        if int(prompt.input_ids[0, -1]) != self.config.special_id("<boa>"):
            raise ValueError("the decoding prompt must end with <boa> (build it without action_ids)")
        return self._decode(prompt, self.config.num_action_tokens, self.action_tokenizer.allowed_range,
                            image_features=image_features)

    def generate_actions(self, prompt: VLASequence, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_poses, 3) trajectory (x, y, heading bin centres) decoded through the backbone."""
        return self.action_tokenizer.decode(self.generate_action_tokens(prompt, image_features))

    def generate_future_codes(self, context: VLASequence, temperature: float = 1.0, top_k: int | None = None,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,h,w) VQ codes of the next frame, sampled after a context ending in <boi> (world-model
        rollout; temperature 0 is greedy)."""
        c = self.config
        if int(context.input_ids[0, -1]) != c.special_id("<boi>"):
            raise ValueError("the world-model context must end with <boi>")
        image_range = (c.image_offset, c.image_offset + c.vq_codebook_size)
        codes = self._decode(context, c.image_tokens_per_frame, lambda _: image_range,
                             temperature, top_k, generator)
        return (codes - c.image_offset).view(-1, *c.image_grid)
