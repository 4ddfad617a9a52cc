"""DriveVLA-W0 with the action expert: backbone context pass + joint-attention expert with a query, AR or flow-matching decoder.

drivevla_w0_paper.md §4.3. The expert's first token is the state token, an MLP of the current frame's past
motions (3 x (dx, dy, dyaw), normalised) and the command one-hot, as the official code builds it. It reads the
backbone's context up to (excluding) the last <boa>:
- query: learned queries, one bidirectional pass, LayerNorm + zero-init Linear -> the plan's normalised
  motions, L1 loss; with `num_anchors`, `anchor_queries` queries and the anchor head (`policies.anchors`) score
  fitted trajectory anchors instead (symmetric KL; the best-scored anchor is the plan);
- ar: FAST tokens (backbone embedding table -> MLP) through the expert only, causal, CE over the FAST ids and
  <eoa> (the head covers those ids, not the whole vocabulary), greedy up to <eoa>;
- flow: x_tau = (1-tau) x0 + tau eps on the normalised motions, tau = 1 - Beta(1.5, 1), target eps - x0, adaLN
  head, Euler from tau 1 to 0 in `flow_steps` steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.models.emu3.modeling_emu3 import rotate_half

from policies.anchors import AnchorHead, anchor_targets, symmetric_kl
from policies.backbone import DriveVLAW0Backbone, pick_tokens
from policies.batch_mean import at_least_float32, batch_mean
from policies.config import COMMANDS, DriveVLAW0Config
from policies.joint_attention import KV, ActionExpertTransformer
from policies.motion import deltas_to_poses, poses_to_deltas
from policies.noise import BatchNoise
from policies.sequence import IGNORE, VLASequence

STATE_FEATURES = 9 + len(COMMANDS)  # 3 past motions x (dx, dy, dyaw), command one-hot


def state_features(past_motions: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
    """(B,3,3) normalised past motions of the current frame, (B,) command index -> (B, 13) state-token input."""
    onehot = F.one_hot(command.long(), len(COMMANDS)).to(past_motions.dtype)
    return torch.cat([past_motions.flatten(1), onehot], dim=1)


def _sinusoidal(t: torch.Tensor, width: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """(B,) scalars in [0,1] -> (B, width) sin/cos features over geometric periods (pi0-style)."""
    frac = torch.linspace(0, 1, width // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** frac
    angle = 2 * math.pi * t.float()[:, None] / period[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


@dataclass
class ExpertOutput:
    """Action loss of the expert's decoder (the stage-2 objective) and the decoder's raw output."""

    loss: torch.Tensor
    prediction: torch.Tensor  # query: (B,P,3) normalised motions; flow: velocity; ar: logits


class DriveVLAW0ExpertPolicy(PreTrainedModel):
    """Backbone + action expert; `config.expert_decoder` picks the decoder built on the expert."""

    config_class = DriveVLAW0Config
    base_model_prefix = "policy"
    _supports_sdpa = True
    _no_split_modules = ["Emu3DecoderLayer"]

    def __init__(self, config: DriveVLAW0Config) -> None:
        super().__init__(config)
        he, p = config.expert_hidden_size, config.num_poses
        self.backbone = DriveVLAW0Backbone(config)
        self.expert = ActionExpertTransformer(config)
        self.state_in = nn.Sequential(nn.Linear(STATE_FEATURES, he), nn.SiLU(), nn.Linear(he, he))
        decoder = config.expert_decoder
        if decoder == "query" and config.num_anchors:
            self.queries = nn.Parameter(torch.randn(config.anchor_queries, he) * he ** -0.5)
            self.anchor_head = AnchorHead(config)
            # Fitted on the training plans before stage 2 (training.pipeline); all zeros until then.
            self.register_buffer("anchors", torch.zeros(config.num_anchors, p, 3))
        elif decoder == "query":
            self.queries = nn.Parameter(torch.randn(p, he) * he ** -0.5)
            self.query_norm = nn.LayerNorm(he, eps=1e-6)
            self.query_out = nn.Linear(he, 3)
        elif decoder == "flow":
            self.flow_in = nn.Linear(3, he)
            self.flow_pos = nn.Parameter(torch.randn(p, he) * he ** -0.5)
            self.flow_mix = nn.Sequential(nn.Linear(2 * he, he), nn.SiLU(), nn.Linear(he, he))
            self.flow_time = nn.Sequential(nn.SiLU(), nn.Linear(he, 2 * he))  # adaLN shift, scale
            self.flow_norm = nn.LayerNorm(he, elementwise_affine=False)
            self.flow_out = nn.Linear(he, 3)
        else:  # "ar"
            self.ar_in = nn.Sequential(nn.Linear(config.hidden_size, he), nn.SiLU(), nn.Linear(he, he))
            # FAST ids in id order, then <eoa>: the official head's rows of those ids (no bias, as it has none)
            self.ar_out = nn.Linear(he, config.fast_vocab_size + 1, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # Zero-init output heads (official query / flow heads, adaLN modulation): training starts
        # from a zero prediction (the range centre / zero velocity) instead of random offsets.
        zero = [getattr(self, name) for name in ("query_out", "flow_out") if hasattr(self, name)]
        if hasattr(self, "flow_time"):
            zero.append(self.flow_time[-1])
        if any(module is z for z in zero):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    # --- targets ------------------------------------------------------------------------------------
    def plan_motions(self, poses: torch.Tensor) -> torch.Tensor:
        """(B,P,3) plan poses -> (B,P,3) normalised per-step motions, the continuous decoders' target."""
        return self.backbone.action_tokenizer.normalizer.normalize(poses_to_deltas(poses.double())).float()

    def motions_to_poses(self, x: torch.Tensor) -> torch.Tensor:
        """(B,P,3) normalised motions -> (B,P,3) poses in the current ego frame."""
        return deltas_to_poses(self.backbone.action_tokenizer.normalizer.denormalize(x.double())).float()

    # --- context ----------------------------------------------------------------------------------
    def context(self, seq: VLASequence) -> tuple[list[KV], torch.Tensor]:
        """One backbone pass over the context before the last <boa> (what the expert reads, §4.2); its per-layer K/V
        and mask.

        The backbone is causal, so the context's K/V do not depend on what follows it (the ground-truth actions and
        plan of a training sequence): only the context is run. Each layer's K/V are its key and value
        projections (keys with RoPE) of that layer's input, as the layer's attention computes them; they are taken
        from the layers' inputs, not from a KV cache, because transformers drops the cache of a layer under
        activation checkpointing (the replay would write it twice)."""
        model = self.backbone.model
        length = int(seq.context_mask.long().cumsum(1).argmax(1).max()) + 1  # columns up to the last context token
        mask, positions = seq.context_mask[:, :length], seq.position_ids[:, :length]
        embeds = self.backbone.embed(seq.input_ids[:, :length])
        out = model(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions,
                    output_hidden_states=True, use_cache=False)
        cos, sin = (t.unsqueeze(1) for t in model.rotary_emb(embeds, positions))
        kv = []
        for layer, inputs in zip(model.layers, out.hidden_states):
            attn, x = layer.self_attn, layer.input_layernorm(inputs)
            shape = (*x.shape[:-1], -1, attn.head_dim)
            keys = attn.k_proj(x).view(shape).transpose(1, 2)
            values = attn.v_proj(x).view(shape).transpose(1, 2)
            kv.append((keys * cos + rotate_half(keys) * sin, values))
        return kv, mask

    def _state_token(self, state: torch.Tensor) -> torch.Tensor:
        return self.state_in(state.to(self.state_in[0].weight.dtype))[:, None]

    # --- decoders: one pass ----------------------------------------------------------------------
    def _query_pass(self, ctx: list[KV], mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B,P,3) normalised motions, or with anchors (B,K) anchor logits."""
        b = state.shape[0]
        x = torch.cat([self._state_token(state), self.queries[None].expand(b, -1, -1)], 1)
        out, _ = self.expert(x, ctx, mask, causal=False)
        if hasattr(self, "anchor_head"):  # the official head reads all final states, the state token's too
            return self.anchor_head(self._fitted_anchors(), out)
        return self.query_out(self.query_norm(out[:, 1:]))

    def _fitted_anchors(self) -> torch.Tensor:
        if not bool(self.anchors.any()):
            raise ValueError("the anchor head's anchors are not fitted (all zeros): training.pipeline fits them on the "
                             "training plans before stage 2 (policies.anchors.fit_anchors)")
        return self.anchors

    def _flow_velocity(self, ctx: list[KV], mask: torch.Tensor, state: torch.Tensor,
                       x_tau: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        he = self.config.expert_hidden_size
        temb = _sinusoidal(tau, he).to(x_tau.dtype)
        tokens = self.flow_in(x_tau) + self.flow_pos
        tokens = self.flow_mix(torch.cat([tokens, temb[:, None].expand_as(tokens)], -1))
        out, _ = self.expert(torch.cat([self._state_token(state), tokens], 1), ctx, mask, causal=False)
        shift, scale = self.flow_time(temb)[:, None].chunk(2, dim=-1)
        return self.flow_out(self.flow_norm(out[:, 1:]) * (1 + scale) + shift)

    def _ar_embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.ar_in(self.backbone.model.embed_tokens(ids))

    # --- training ---------------------------------------------------------------------------------
    def loss(self, seq: VLASequence, state: torch.Tensor, poses: torch.Tensor,
             noise: BatchNoise | None = None) -> ExpertOutput:
        """Stage-2 action loss of the configured decoder. seq: a VLA sequence (prompt or full training
        sequence; the expert only reads its context before the last <boa>); state: (B,13) `state_features`;
        poses: (B,P,3) ground-truth trajectory; noise: the flow decoder's draws (unseeded without)."""
        ctx, mask = self.context(seq)
        decoder = self.config.expert_decoder
        if decoder == "query" and hasattr(self, "anchor_head"):
            logits = self._query_pass(ctx, mask, state)
            return ExpertOutput(symmetric_kl(logits, anchor_targets(self.anchors, poses.to(logits.device))), logits)
        if decoder == "query":
            pred = self._query_pass(ctx, mask, state)
            return ExpertOutput(F.l1_loss(pred, self.plan_motions(poses).to(pred.dtype)), pred)
        if decoder == "flow":
            x0 = self.plan_motions(poses).to(self.flow_in.weight.dtype)
            b = x0.shape[0]
            noise = noise or BatchNoise()
            eps = noise.randn(x0.shape, x0.device, x0.dtype)
            # u ~ Beta(a, 1) by inverse CDF (r ** (1/a)); tau = 1 - u favours small tau (near data).
            r = noise.rand((b,), x0.device, x0.dtype)
            tau = 1 - r ** (1 / self.config.flow_beta_a)
            x_tau = (1 - tau[:, None, None]) * x0 + tau[:, None, None] * eps
            v = self._flow_velocity(ctx, mask, state, x_tau, tau)
            return ExpertOutput(F.mse_loss(v, eps - x0), v)
        inputs, targets = self._ar_teacher_forcing(poses)
        x = torch.cat([self._state_token(state), self._ar_embed(inputs.to(state.device))], 1)
        out, _ = self.expert(x, ctx, mask, causal=True)
        logits = at_least_float32(self.ar_out(out[:, 1:]))
        targets = targets.to(logits.device).flatten()
        total = F.cross_entropy(logits.flatten(0, 1), targets, ignore_index=IGNORE, reduction="sum")
        return ExpertOutput(batch_mean(total, (targets != IGNORE).sum().float()), logits)

    def _ar_teacher_forcing(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs <boa> t1 .. tn (vocabulary ids, <eoa>-padded) and targets t1 .. tn <eoa> (head classes, IGNORE
        after <eoa>) of the plans' FAST tokens, cut at `max_action_tokens` with <boa> and <eoa> (official cap)."""
        c = self.config
        tokenizer = self.backbone.action_tokenizer
        rows = [row[:c.max_action_tokens - 2] for row in tokenizer.encode(poses_to_deltas(poses.double()))]
        width = max(len(r) for r in rows) + 1
        eoa_class = c.fast_vocab_size
        inputs = torch.full((len(rows), width), c.special_id("<eoa>"), dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, row in enumerate(rows):
            inputs[i, :len(row) + 1] = torch.tensor([c.special_id("<boa>"), *row])
            targets[i, :len(row) + 1] = torch.tensor([*(c.id_to_fast(t) for t in row), eoa_class])
        return inputs, targets

    # --- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, prompt: VLASequence, state: torch.Tensor, flow_steps: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, num_poses, 3) trajectory: one backbone context pass, then the expert decodes."""
        ctx, mask = self.context(prompt)
        decoder = self.config.expert_decoder
        if decoder == "query" and hasattr(self, "anchor_head"):
            return self.anchors[self._query_pass(ctx, mask, state).argmax(-1)].float()
        if decoder == "query":
            return self.motions_to_poses(self._query_pass(ctx, mask, state).float())
        if decoder == "flow":
            return self._flow_decode(ctx, mask, state, flow_steps, generator)
        return self.backbone.action_tokenizer.decode_plan(self._ar_decode(ctx, mask, state))

    @torch.no_grad()
    def candidates(self, prompt: VLASequence, state: torch.Tensor, n: int, generator: torch.Generator | None = None,
                   temperature: float = 1.0) -> torch.Tensor:
        """(B, n, num_poses, 3) candidate trajectories for best-of-N selection, from one context pass: the n
        best-scored anchors, n flow samples, or n AR-expert decodes sampled at `temperature`. The regression query
        decoder has only one plan."""
        ctx, mask = self.context(prompt)
        decoder = self.config.expert_decoder
        if decoder == "query" and hasattr(self, "anchor_head"):
            logits = self._query_pass(ctx, mask, state)
            return self.anchors[logits.topk(min(n, logits.shape[-1]), -1).indices].float()
        if decoder == "query":
            raise ValueError("the query decoder regresses one plan: best-of-N needs the ar or flow decoder, or anchors")
        if decoder == "flow":
            plans = [self._flow_decode(ctx, mask, state, None, generator) for _ in range(n)]
        else:
            decode = self.backbone.action_tokenizer.decode_plan
            plans = [decode(self._ar_decode(ctx, mask, state, temperature, generator)) for _ in range(n)]
        return torch.stack(plans, 1)

    def _flow_decode(self, ctx: list[KV], mask: torch.Tensor, state: torch.Tensor, flow_steps: int | None,
                     generator: torch.Generator | None) -> torch.Tensor:
        steps = flow_steps or self.config.flow_steps
        b, dtype = state.shape[0], self.flow_in.weight.dtype
        x = torch.randn(b, self.config.num_poses, 3, generator=generator, device=state.device, dtype=dtype)
        for k in range(steps):  # Euler from tau = 1 (noise) to 0 (data)
            tau = torch.full((b,), 1 - k / steps, device=state.device, dtype=dtype)
            x = x - self._flow_velocity(ctx, mask, state, x, tau) / steps
        return self.motions_to_poses(x.float())

    def _ar_decode(self, ctx: list[KV], mask: torch.Tensor, state: torch.Tensor, temperature: float = 0.0,
                   generator: torch.Generator | None = None) -> list[list[int]]:
        """Per row, FAST ids (vocabulary ids) through the expert only, with its own K/V cache, up to <eoa>: greedy,
        or sampled at `temperature` > 0."""
        c = self.config
        b = state.shape[0]
        boa = torch.full((b, 1), c.special_id("<boa>"), device=state.device, dtype=torch.long)
        x = torch.cat([self._state_token(state), self._ar_embed(boa)], 1)
        past, rows = None, [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool)
        for _ in range(c.max_action_tokens - 1):
            out, past = self.expert(x, ctx, mask, causal=True, past_kv=past)
            cls = pick_tokens(self.ar_out(out[:, -1]).float(), temperature, generator=generator).cpu()
            for i in range(b):
                if not done[i] and int(cls[i]) < c.fast_vocab_size:
                    rows[i].append(c.fast_to_id(int(cls[i])))
            done |= cls == c.fast_vocab_size
            if bool(done.all()):
                break
            ids = torch.where(cls == c.fast_vocab_size, c.special_id("<eoa>"), c.fast_to_id(cls))
            x = self._ar_embed(ids[:, None].to(state.device))
        return rows
