"""Action-expert transformer: one small decoder layer per backbone layer, joint attention over the backbone's per-layer K/V.

pi0-style mixture of transformers (drivevla_w0_paper.md §4.1-4.2). In layer i the expert's tokens
compute their own Q/K/V and attend over [backbone K/V of layer i over the context ; expert K/V].
The backbone never attends to expert tokens, so its half of the joint attention is exactly a
plain causal forward: running the backbone once and letting the expert read each layer's K/V of
the context is the same computation as the joint layer, and lets decoders run many expert passes
per context pass. Expert tokens get no rotary embedding (as the official code).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.emu3.modeling_emu3 import Emu3DecoderLayer, Emu3RMSNorm

from policies.config import DriveVLAW0Config

KV = tuple[torch.Tensor, torch.Tensor]  # (B, kv_heads, L, head_dim) keys and values


class JointAttentionLayer(Emu3DecoderLayer):
    """An Emu3 block at the expert's width whose attention reads [the paired backbone layer's context K/V ; its own].

    A subclass, so that its parameters keep the Emu3 block's names, FSDP wraps it as a unit, and transformers'
    activation checkpointing recomputes it (its forward is called, not the Emu3 block's)."""

    def forward(self, x: torch.Tensor, context: KV, past: KV | None, mask: torch.Tensor) -> tuple[torch.Tensor, KV]:
        """x (B,N,He) -> (output, this layer's expert K/V, past included); mask (B,1,N,Lc+past+N) bool."""
        attn, b, n = self.self_attn, x.shape[0], x.shape[1]
        h = self.input_layernorm(x)
        q = attn.q_proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        keys, values = torch.cat([context[0].to(k.dtype), k], 2), torch.cat([context[1].to(v.dtype), v], 2)
        # Grouped-query attention in the kernel: K/V are not copied to every query head.
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True,
                                             dropout_p=attn.attention_dropout if self.training else 0.0)
        x = x + self.dropout(attn.o_proj(out.transpose(1, 2).reshape(b, n, -1)))
        x = x + self.dropout(self.mlp(self.post_attention_layernorm(x)))
        return x, (k, v)


class ActionExpertTransformer(nn.Module):
    """Expert decoder layers (`JointAttentionLayer`) paired with the backbone layers."""

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__()
        cfg = config.expert_config()
        self.layers = nn.ModuleList(JointAttentionLayer(cfg, i) for i in range(config.num_hidden_layers))
        self.norm = Emu3RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, context_kv: list[KV], context_mask: torch.Tensor,
                causal: bool, past_kv: list[KV] | None = None) -> tuple[torch.Tensor, list[KV]]:
        """Expert tokens x (B,N,He) through all layers.

        context_kv: per layer, the backbone's post-RoPE (B,kv,Lc,hd) keys/values of the context.
        context_mask: (B,Lc) bool, True where the expert may attend (real context tokens).
        causal: expert tokens attend causally among themselves (AR decoder) or bidirectionally.
        past_kv: per layer, earlier expert tokens' K/V (incremental AR decoding), all visible.
        Returns normed outputs (B,N,He) and per-layer expert K/V (past + new) for the next step.
        """
        b, n, _ = x.shape
        past_len = 0 if past_kv is None else past_kv[0][0].shape[2]
        own = torch.ones(n, past_len + n, dtype=torch.bool, device=x.device)
        if causal:
            own = torch.tril(own, diagonal=past_len)
        mask = torch.cat([context_mask[:, None, None, :].expand(b, 1, n, -1),
                          own[None, None].expand(b, 1, n, -1)], dim=-1)
        new_kv: list[KV] = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, context_kv[i], None if past_kv is None else past_kv[i], mask)
            new_kv.append(kv)
        return self.norm(x), new_kv
