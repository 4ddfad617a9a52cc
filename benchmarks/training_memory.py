"""Memory per GPU of one DriveVLA-W0 training step (paper preset by default), per sharding choice, from counting: no GPU needed.

What is counted, per stage (1: backbone + world model, 2: action expert + the backbone parameters its loss reaches):
- parameters: exact counts of the model built on the meta device (`training.pipeline.model_config`: the preset with
  the action expert and the world model; an Emu3 decoder as backbone), per part, and the parameters
  `training.trainer.trainable_groups` trains;
- model states per GPU on G GPUs under bf16 mixed precision as torch autocast does it: float32 weights (4 B/param),
  float32 gradients (4 B per trained param), AdamW exp_avg + exp_avg_sq (8 B per trained param), frozen parameters
  weights only; sharded over G as DDP / ZeRO-2 / ZeRO-3 / ZeRO-3 with CPU offload do it (see `CHOICES`);
- the bf16 weight copies autocast makes of float32 weights, caches until the forward ends and autograd keeps for
  the backward pass (DDP, ZeRO-2), or, under ZeRO-3, the largest module gathered at once in bf16 (working memory);
- activations: MEASURED on this CPU as the bytes autograd saves for the backward pass, as they stand at the end of
  the forward (saved_tensors_hooks; each storage once, by its data_ptr, the whole storage even when a view of it is
  saved) during one bf16-autocast training forward of one sample, its sequence built by the model's own
  `_inputs` (2VA layout: the longest command text, random image codes for every history frame, the FAST tokens of a
  made-up drive: of the drives the action tokenizer is fitted on, the one whose sequence is longest), at the
  preset's width with the depth reduced to 2 and 3 layers (per layer = the difference; 2 and not 1, because in
  stage 2 the last layer differs: only its K/V path trains) and the vocabulary reduced (a small text range and VQ
  codebook; the sequence does not depend on them);
  the LM head's logits are added analytically at the full vocabulary (`DriveVLAW0Backbone.loss` applies the head
  at the labelled positions only, every frame's image codes and each <boa> ... <eoa> span, and takes a float32
  copy). With activation checkpointing the checkpointed layers keep only their inputs (the tensors handed to the
  checkpoint function, also measured), plus one layer's activations while it is recomputed. Attention is counted as
  the fused CUDA kernels keep it (q, k, v, output and a float32 log-sum-exp per row and head), not as the CPU math
  kernel does (the L x L probabilities).

Progress goes to stderr; the last stdout line is one JSON object. `--write PATH` writes a markdown report.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import functools
import gc
import json
import os
import resource
import subprocess
import sys
import time
import weakref
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from transformers.models.emu3.modeling_emu3 import Emu3DecoderLayer  # noqa: E402

from benchmarks.made_up_drives import DRIVES, made_up_drives, with_fitted_tokenizer  # noqa: E402
from policies.action_tokens import ActionTokenizer, frame_motions  # noqa: E402
from policies.config import DriveVLAW0Config  # noqa: E402
from policies.model import DriveVLAW0ForDriving, DrivingInputs  # noqa: E402
from policies.motion import poses_to_deltas  # noqa: E402
from policies.sequence import IGNORE, TokenType  # noqa: E402
from policies.text import TEXT_WORDS  # noqa: E402
from training.pipeline import model_config  # noqa: E402
from training.trainer import TrainConfig, trainable_groups  # noqa: E402

GB = 1e9  # bytes; the fit limits below are in the same unit
LIMITS_GB = {"40GB": 40.0, "80GB": 80.0}  # the paper's L20 (as the paper states it), an H100
CHOICES = ("DDP (no sharding)", "ZeRO-2 / FSDP SHARD_GRAD_OP", "ZeRO-3 / FSDP FULL_SHARD",
           "ZeRO-3 + CPU offload (the official scripts' setting)")
SHORT = dict(zip(CHOICES, ("DDP", "ZeRO-2", "ZeRO-3", "ZeRO-3 + offload")))
# The longest command text: the model cuts it to config.max_text_length words, the longest text the data gives.
LONGEST_TEXT = " ".join(TEXT_WORDS)
DEPTHS = (2, 3)  # layers of the measured models
# Vocabulary reduction for the measured models (the sequence does not depend on it): a text range that still holds
# the instruction words' ids, and a small VQ codebook.
MEASURED_TEXT_VOCAB = 64
MEASURED_CODEBOOK = 1024
REGIONS = ("backbone layer", "backbone, outside the layers", "context K/V for the expert", "expert", "LM head", "other")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc keeps it otherwise), so runs do not pile up."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_gb() -> float:
    """This process's resident memory now (Linux), GB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 / GB for line in f if line.startswith("VmRSS:"))


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- the configuration: the preset with a fitted action tokenizer --------------------------------------------------
@functools.cache
def preset_config(preset: str) -> DriveVLAW0Config:
    """`training.pipeline.model_config(preset)` with its action tokenizer fitted on `made_up_drives` (a sequence
    needs one; the parameter counts do not depend on it)."""
    return with_fitted_tokenizer(model_config(preset))


def longest_drive(config: DriveVLAW0Config) -> int:
    """Index of the made-up drive with the most FAST tokens in its training sequence (past motions of every frame,
    the actions between frames, the plan): the longest sequence, with the longest text."""
    ego_poses, plans = made_up_drives()
    tokenizer, motions = ActionTokenizer(config), frame_motions(config, ego_poses.double())
    chunks = [*motions.past.unbind(1), *motions.to_next.unbind(1), poses_to_deltas(plans.double())]
    counts = torch.tensor([[len(row) for row in tokenizer.encode(chunk)] for chunk in chunks]).sum(0)
    return int(counts.argmax())


# --- parameters ----------------------------------------------------------------------------------------------------
def count_parameters(config: DriveVLAW0Config) -> dict:
    """Exact parameter counts of the model built on the meta device, per part and per stage's trained set."""
    with torch.device("meta"):
        model = DriveVLAW0ForDriving(config)
    backbone = model.backbone
    in_backbone = {id(p) for p in backbone.parameters()}
    counts = {
        "total": numel(model),
        "backbone": numel(backbone),
        "action_expert": sum(p.numel() for p in model.policy.parameters() if id(p) not in in_backbone),
        "vq_tokenizer": numel(model.vq),
        "backbone_layer": numel(backbone.model.layers[0]),
        "embedding": numel(backbone.model.embed_tokens),
        "lm_head": numel(backbone.lm_head),
        "expert_layer": numel(model.policy.expert.layers[0]),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
    }
    for stage in (1, 2):
        groups = trainable_groups(model, TrainConfig(stage=stage))
        counts[f"stage{stage}_trained"] = sum(p.numel() for g in groups for p in g["params"])
    return counts


# --- the training sequence -----------------------------------------------------------------------------------------
def training_inputs(model: DriveVLAW0ForDriving, batch: int) -> DrivingInputs:
    """What `DriveVLAW0ForDriving.forward` hands to `loss` for `batch` samples of the longest text and the longest
    made-up drive: the training sequence (per frame: text, image codes, past motions, action; the last frame's action
    is the plan) built by the model's own `_inputs` from random image codes (the frozen VQ's encoding saves nothing
    for the backward pass, so it is skipped)."""
    c = model.config
    g = torch.Generator().manual_seed(0)
    ego_poses, plans = made_up_drives()
    drive = longest_drive(c)
    history = torch.randint(0, c.vq_codebook_size, (batch, c.num_history_frames, *c.image_grid), generator=g)
    return model._inputs(history, [LONGEST_TEXT] * batch, ego_poses[drive].expand(batch, -1, -1),
                         torch.ones(batch, dtype=torch.long), plans[drive].expand(batch, -1, -1).clone())


def describe_sequence(inputs: DrivingInputs, config: DriveVLAW0Config) -> dict:
    """Length and make-up of one sample's training sequence, and the positions where the stage-1 loss applies the LM
    head (the next token is labelled): image codes (the world model) and the rest (<boa>, FAST tokens, <eoa>)."""
    seq = inputs.sequence
    types, targets = seq.type_ids[0], seq.labels[0, 1:]
    labelled = targets != IGNORE
    image = targets >= config.image_offset
    return {"length": seq.input_ids.shape[1],
            "text_tokens": int((types == int(TokenType.TEXT)).sum()) // config.num_history_frames,  # before each frame
            "fast_tokens": {"past": int((types == int(TokenType.PAST_ACTION)).sum()),
                            "actions": int((types == int(TokenType.ACTION)).sum())},
            "labelled_positions": {"action": int((labelled & ~image).sum()), "image": int((labelled & image).sum())}}


# --- measurement ---------------------------------------------------------------------------------------------------
class _FusedAttentionSaves(torch.autograd.Function):
    """Scaled dot-product attention whose saved tensors are those of the fused CUDA kernels (FlashAttention-2,
    memory-efficient, cuDNN): q, k, v, the output, a float32 log-sum-exp per query row and head, and the mask if one
    is given. The CPU math kernel would keep the L x L probabilities instead, which a GPU run does not."""

    @staticmethod
    def forward(ctx, q, k, v, mask, dropout_p, is_causal, scale, enable_gqa):
        with torch.no_grad():
            out = _REAL_SDPA(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        log_sum_exp = torch.empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, log_sum_exp, *(() if mask is None else (mask,)))
        return out

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("a memory measurement only: this attention has no backward pass")


_REAL_SDPA = F.scaled_dot_product_attention


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if torch.is_autocast_enabled("cpu"):  # CUDA autocast runs SDPA in bf16 (RoPE hands it float32 q and k)
        dtype = torch.get_autocast_dtype("cpu")
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    return _FusedAttentionSaves.apply(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


class _ParameterCasts(TorchDispatchMode):
    """Records the copies made by casting a parameter (autocast's bf16 weight copies): storage data_ptr -> (bytes,
    whether the parameter trains, region). Autocast caches the copy of a trained (leaf, requires_grad) weight until
    the forward's autocast context exits; a frozen weight's copy lives only as long as autograd keeps it."""

    def __init__(self, counter: "SavedForBackward"):
        super().__init__()
        self.counter = counter
        self.copies: dict[int, tuple[int, bool, str]] = {}
        self._alive: list[torch.Tensor] = []  # held so that no later tensor reuses a recorded address

    def release(self) -> None:
        self._alive.clear()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default:
            source = args[0].untyped_storage().data_ptr()
            if source in self.counter.parameter_storages:
                storage = out.untyped_storage()
                trained = source in self.counter.trained_storages
                self.copies[storage.data_ptr()] = (storage.nbytes(), trained, self.counter.stack[-1])
                self._alive.append(out)
        return out


class SavedForBackward:
    """Bytes of the storages kept for the backward pass of one forward, as they stand at its end: each storage once,
    by the region that first kept it; parameters' own storages are not counted (they are weights) and autocast's
    weight copies apart. Tensors are followed by weak references, so what the forward already let go (the stage-2
    context pass computes outputs no loss uses) is not counted, and a freed address reused later is not confused."""

    def __init__(self, model: DriveVLAW0ForDriving):
        self.model = model
        self.parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.trained_storages = {p.untyped_storage().data_ptr() for p in model.parameters() if p.requires_grad}
        self.records: list[tuple[weakref.ref, str]] = []  # (tensor, region) in the order kept
        self.stack = ["other"]
        self.casts = _ParameterCasts(self)

    def keep(self, tensor: torch.Tensor) -> None:
        self.records.append((weakref.ref(tensor), self.stack[-1]))

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        # Detached: the same storage, without the grad_fn an output would link back to (a cycle that never frees).
        packed = tensor.detach()
        self.keep(packed)
        return packed

    def _keep_checkpoint_inputs(self, checkpoint):
        """The checkpoint function, recording the tensors it holds until the backward pass: its arguments and the
        keyword arguments bound into the function (transformers binds the mask and the rotary embeddings)."""
        def recorded(function, *args, **kwargs):
            bound = function.keywords.values() if isinstance(function, functools.partial) else ()
            for value in (*args, *kwargs.values(), *bound):
                for t in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(t, torch.Tensor):
                        self.keep(t)
            return checkpoint(function, *args, **kwargs)
        return recorded

    @contextlib.contextmanager
    def regions(self):
        """Tag saved tensors with the module that keeps them (hooks and method wrappers, removed on exit)."""
        model, handles, wrapped = self.model, [], []

        def enter(name):
            return lambda *_: self.stack.append(name)

        def leave(*_):
            self.stack.pop()

        backbone = model.backbone
        tagged = [(layer, "backbone layer") for layer in backbone.model.layers]
        tagged.append((backbone.model, "backbone, outside the layers"))
        if model.policy is not None:
            tagged.append((model.policy.expert, "expert"))
        for module, name in tagged:
            handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]

        def tag(owner, method, name):
            original = getattr(owner, method)

            def run(*args, **kwargs):
                self.stack.append(name)
                try:
                    return original(*args, **kwargs)
                finally:
                    self.stack.pop()
            setattr(owner, method, run)
            wrapped.append((owner, method))

        # `loss` runs the decoder (tagged above; its embedding lookup through `embed`), then the LM head and the CE.
        tag(backbone, "loss", "LM head")
        tag(backbone, "embed", "backbone, outside the layers")
        if model.policy is not None:
            tag(model.policy, "context", "context K/V for the expert")
        checkpointing = {m: m._gradient_checkpointing_func for m in model.modules()
                         if getattr(m, "_gradient_checkpointing_func", None) is not None}
        for module, checkpoint in checkpointing.items():
            module._gradient_checkpointing_func = self._keep_checkpoint_inputs(checkpoint)
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for owner, method in wrapped:
                delattr(owner, method)
            for module, checkpoint in checkpointing.items():
                module._gradient_checkpointing_func = checkpoint

    def by_region(self) -> dict[str, dict[str, int]]:
        """{region: {"activations": bytes kept for the backward pass, "weight_copies": bytes of the bf16 weight copies
        alive (cached by autocast or kept by autograd)}}; call it at the end of the forward, with the graph alive."""
        kept: dict[int, tuple[str, int]] = {}  # storage data_ptr -> (region, bytes)
        for ref, region in self.records:
            tensor = ref()
            if tensor is None:
                continue
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if ptr and ptr not in self.parameter_storages and ptr not in kept:
                kept[ptr] = (region, storage.nbytes())
        out = {r: {"activations": 0, "weight_copies": 0} for r in REGIONS}
        for ptr, (region, size) in kept.items():
            if ptr not in self.casts.copies:
                out[region]["activations"] += size
        for ptr, (size, trained, region) in self.casts.copies.items():
            if trained or ptr in kept:
                out[region]["weight_copies"] += size
        return out


def measure_forward(model: DriveVLAW0ForDriving, stage: int, checkpointing: bool, batch: int) -> dict[str, dict[str, int]]:
    """Saved-for-backward bytes by region of one bf16-autocast training forward of `stage` (train modes as the
    trainer sets them; the stage's trained parameters require gradients)."""
    trainable_groups(model, TrainConfig(stage=stage))
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()
    model.train()
    model.vq.eval()
    inputs = training_inputs(model, batch)
    counter = SavedForBackward(model)
    F.scaled_dot_product_attention = _fused_sdpa
    try:
        with counter.regions(), counter.casts, torch.autograd.graph.saved_tensors_hooks(counter._pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model.loss(inputs, stage).loss
    finally:
        F.scaled_dot_product_attention = _REAL_SDPA
    assert torch.isfinite(loss.float()), "the measured forward gave a non-finite loss"
    regions = counter.by_region()  # while the graph (what the backward pass would need) is alive
    del loss
    counter.casts.release()
    _release_memory()
    return regions


def measured_config(preset: str, depth: int) -> DriveVLAW0Config:
    """The preset at `depth` layers with a small text range and VQ codebook (so a small vocabulary), the same fitted
    action tokenizer: same widths, same sequence."""
    full = preset_config(preset)
    return DriveVLAW0Config.from_dict({**full.to_dict(), "num_hidden_layers": depth,
                                       "text_vocab_size": min(full.text_vocab_size, MEASURED_TEXT_VOCAB),
                                       "vq_codebook_size": min(full.vq_codebook_size, MEASURED_CODEBOOK)})


def measure_activations(preset: str, batch_check: bool) -> tuple[dict, dict]:
    """Per-sample saved bytes, by region, at depths 2 and 3 for stages 1 / 2 with and without checkpointing; and the
    training sequence measured (length, text tokens, labelled positions)."""
    runs: dict[str, dict] = {}
    for depth in DEPTHS:
        torch.manual_seed(0)
        model = DriveVLAW0ForDriving(measured_config(preset, depth))
        if depth == DEPTHS[0]:
            sequence = describe_sequence(training_inputs(model, 1), model.config)
            log(f"[measure] training sequence {sequence['length']} tokens, FAST {sequence['fast_tokens']}, "
                f"labelled {sequence['labelled_positions']}")
        for stage in (1, 2):
            for checkpointing in (False, True):
                key = f"stage{stage}, depth {depth}, {'checkpointing' if checkpointing else 'no checkpointing'}"
                started = time.perf_counter()
                runs[key] = measure_forward(model, stage, checkpointing, batch=1)
                total = sum(v["activations"] for v in runs[key].values())
                log(f"[measure] {key}: {total / 1e6:.1f} MB saved activations ({time.perf_counter() - started:.1f} s, "
                    f"RSS {_rss_gb():.1f} GB)")
        if batch_check and depth == DEPTHS[0]:
            started = time.perf_counter()
            runs[f"stage1, depth {depth}, no checkpointing, micro-batch 2"] = measure_forward(model, 1, False, batch=2)
            log(f"[measure] micro-batch 2 check ({time.perf_counter() - started:.1f} s)")
        del model
        _release_memory()
    return runs, sequence


# --- assembling the figures ----------------------------------------------------------------------------------------
def activation_model(runs: dict, params: dict, config: DriveVLAW0Config, positions: dict[str, int]) -> dict:
    """Full-depth per-sample activations and per-step bf16 weight copies of each stage and checkpointing mode, from
    the two depths measured: per layer = the difference, rest = the shallower run minus its layers (the LM head
    apart; in stage 2 the rest holds the last layer, which keeps only what its K/V path needs)."""
    layers, vocab, hidden = config.num_hidden_layers, config.vocab_size, config.hidden_size
    labelled = sum(positions.values())
    # The head at the full vocabulary: the bf16 logits and their float32 copy at the labelled positions (the float32
    # log-probabilities are what cross-entropy keeps; both exist while the copy is made), and the head's bf16 input.
    head = {"logits": labelled * vocab * (2 + 4), "input": labelled * hidden * 2}
    layer_regions = [r for r in REGIONS if r != "LM head"]
    out = {}
    for stage in (1, 2):
        stage_out = {}
        for mode in ("no checkpointing", "checkpointing"):
            low, high = (runs[f"stage{stage}, depth {d}, {mode}"] for d in DEPTHS)
            per_layer = {r: high[r]["activations"] - low[r]["activations"] for r in layer_regions}
            copies_layer = sum(high[r]["weight_copies"] - low[r]["weight_copies"] for r in layer_regions)
            # Stage 2's last layer is not a typical one (only its K/V path trains): it stays in the rest.
            typical = layers - (stage == 2)
            in_low = DEPTHS[0] - (stage == 2)
            rest = sum(low[r]["activations"] for r in layer_regions) - in_low * sum(per_layer.values())
            copies_rest = sum(low[r]["weight_copies"] for r in layer_regions) - in_low * copies_layer
            head_bytes = sum(head.values()) if stage == 1 else 0
            stage_out[mode] = {
                "per_layer": per_layer, "layers_at_per_layer": typical, "rest": rest, "lm_head_analytic": head_bytes,
                "kept_per_sample": typical * sum(per_layer.values()) + rest + head_bytes,
                "bf16_weight_copies_per_layer": copies_layer,
                "bf16_weight_copies": typical * copies_layer + copies_rest + (2 * params["lm_head"] if stage == 1 else 0),
            }
        plain, checkpointed = stage_out["no checkpointing"], stage_out["checkpointing"]
        plain["per_sample"] = plain["kept_per_sample"]
        # The backward pass rebuilds one checkpointed layer at a time: the largest, a backbone layer, at most.
        checkpointed["recompute_one_layer"] = plain["per_layer"]["backbone layer"]
        checkpointed["per_sample"] = checkpointed["kept_per_sample"] + checkpointed["recompute_one_layer"]
        out[f"stage{stage}"] = stage_out
    out["lm_head_formula"] = {"labelled_positions": labelled, "vocab": vocab, **head}
    return out


def linear_parameters(config: DriveVLAW0Config) -> int:
    """Elements of one backbone decoder layer's linear weights (Emu3 blocks have no biases): what autocast casts to
    bf16 (and caches)."""
    with torch.device("meta"):
        layer = Emu3DecoderLayer(config.backbone_config(), 0)
    return sum(p.numel() for m in layer.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters())


def gathered_unit(params: dict) -> tuple[str, int]:
    """The largest module ZeRO-3 / FSDP gathers at once (name, parameters): a layer, the embedding or the LM head."""
    units = {"the LM head": params["lm_head"], "the embedding table": params["embedding"],
             "a backbone decoder layer": params["backbone_layer"], "an expert layer": params["expert_layer"]}
    name = max(units, key=units.get)
    return name, units[name]


def model_states(params: dict, stage: int, gpus: int) -> dict[str, dict[str, float]]:
    """Bytes per GPU of weights, gradients and AdamW states per sharding choice (the same in every setting)."""
    total, trained, buffers = params["total"], params[f"stage{stage}_trained"], params["buffer_bytes"]
    return {
        CHOICES[0]: {"weights": 4 * total + buffers, "gradients": 4 * trained, "adamw": 8 * trained},
        CHOICES[1]: {"weights": 4 * total + buffers, "gradients": 4 * trained / gpus, "adamw": 8 * trained / gpus},
        CHOICES[2]: {"weights": 4 * total / gpus + buffers, "gradients": 4 * trained / gpus, "adamw": 8 * trained / gpus},
        CHOICES[3]: {"weights": 2 * total / gpus + buffers, "gradients": 2 * trained / gpus, "adamw": 0},
    }


def memory_table(params: dict, acts: dict, gpus: int, micro_batches: list[int]) -> dict:
    """Per stage and choice: the model states and, per (micro-batch, checkpointing) setting, the bf16 working
    weights, activations and total per GPU, with the fit judgments."""
    gathered = 2 * gathered_unit(params)[1]
    out = {}
    for stage in (1, 2):
        a = acts[f"stage{stage}"]
        stage_out = {}
        for choice, states in model_states(params, stage, gpus).items():
            settings = []
            for mb in micro_batches:
                for ckpt in (False, True):
                    mode = a["checkpointing" if ckpt else "no checkpointing"]
                    working = gathered if choice.startswith("ZeRO-3") else mode["bf16_weight_copies"]
                    activations = mb * mode["per_sample"]
                    total = sum(states.values()) + working + activations
                    settings.append({"micro_batch": mb, "checkpointing": ckpt, "bf16_working_weights": working,
                                     "activations": activations, "total": total,
                                     "fits": {k: total <= v * GB for k, v in LIMITS_GB.items()}})
            stage_out[choice] = {**states, "settings": settings}
        out[f"stage{stage}"] = stage_out
    return out


def host_offload_bytes(params: dict, stage: int, gpus: int) -> float:
    """CPU memory per GPU process under ZeRO-3 offload: float32 master weights + AdamW states of its shard."""
    return 12 * params[f"stage{stage}_trained"] / gpus


# --- report --------------------------------------------------------------------------------------------------------
def gb(x: float) -> str:
    return f"{x / GB:.2f}" if x < 10 * GB else f"{x / GB:.1f}"


def mb_(x: float) -> str:
    return f"{x / 1e6:.1f}"


def provenance(argv: list[str]) -> str:
    """When, at which commit (read as the run starts: the code measured) and by which command."""
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                           text=True).stdout.strip()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tree = f"{commit} (with uncommitted changes to tracked files)" if dirty else commit
    return f"Generated {date}, commit {tree}, by `python benchmarks/training_memory.py {' '.join(argv)}`"


def markdown(result: dict, argv: list[str]) -> str:
    p, acts, mem, g = result["parameters"], result["activations"], result["memory"], result["gpus"]
    mbs, s, f = result["micro_batches"], result["sequence"], acts["lm_head_formula"]
    lines = [f"# Training memory per GPU: DriveVLA-W0 `{result['preset']}` preset on {g} GPUs", "",
             "What one training step needs on each GPU, from counting (no GPU run): model states under bf16 mixed "
             "precision as torch autocast does it, per sharding choice, plus activations measured on a CPU as the bytes "
             "autograd keeps for the backward pass. Method and caveats under *How it is counted*. GB = 10^9 bytes, "
             "MB = 10^6 bytes.", "",
             "## Parameters (exact, model built on the meta device)", "",
             "| part | parameters |", "|---|---:|"]
    for key, label in (("backbone", "backbone (Emu3 decoder incl. embedding and LM head)"),
                       ("action_expert", "action expert (expert layers, state MLP, query head)"),
                       ("vq_tokenizer", "VQ tokenizer (frozen in stages 1 and 2)"), ("total", "**total**"),
                       ("backbone_layer", "one backbone decoder layer"), ("embedding", "embedding table"),
                       ("lm_head", "LM head"), ("expert_layer", "one expert layer"),
                       ("stage1_trained", "trained in stage 1"), ("stage2_trained", "trained in stage 2")):
        lines.append(f"| {label} | {p[key]:,} |")
    lines += ["", "## Activations per sample (measured on a CPU)", "",
              f"Training sequence: {s['length']} tokens ({result['frames']} frames of {result['image_tokens']} image "
              f"codes, the longest command text ({s['text_tokens']} tokens) before each, {s['fast_tokens']['past']} "
              f"FAST tokens of past motions and {s['fast_tokens']['actions']} of the actions and the plan; "
              f"{s['labelled_positions']['action']} action (<boa>, FAST, <eoa>) and {s['labelled_positions']['image']} "
              "image-code positions carry the stage-1 LM-head loss). In MB:", "",
              "| | stage 1 | stage 1, checkpointing | stage 2 | stage 2, checkpointing |", "|---|---:|---:|---:|---:|"]
    cols = [acts[f"stage{st}"][m] for st in (1, 2) for m in ("no checkpointing", "checkpointing")]
    lines.append("| layers counted at the per-layer figures | " + " | ".join(str(c["layers_at_per_layer"]) for c in cols) + " |")
    rows = [("per backbone layer", lambda c: c["per_layer"]["backbone layer"]),
            ("per layer: the expert's context K/V (computed outside the layers)",
             lambda c: c["per_layer"]["context K/V for the expert"]),
            ("per expert layer", lambda c: c["per_layer"]["expert"]),
            ("rest (embedding, RoPE tables, final norm, losses; stage 2: the last layer)", lambda c: c["rest"]),
            (f"LM head logits at {f['vocab']:,} ids (analytic)", lambda c: c["lm_head_analytic"]),
            ("recompute of one layer in the backward pass", lambda c: c.get("recompute_one_layer", 0)),
            ("**per sample**", lambda c: c["per_sample"]),
            ("bf16 weight copies alive at the end of the forward (per step, DDP / ZeRO-2)",
             lambda c: c["bf16_weight_copies"])]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(mb_(get(c)) for c in cols) + " |")
    lines += ["", "## Memory per GPU (GB)", "",
              "After each total: ✓/✗ fits 40 GB (the paper's L20), then ✓/✗ fits 80 GB (H100). mb = per-GPU "
              "micro-batch, ckpt = activation checkpointing. *bf16 working weights*: autocast's weight copies under DDP "
              "and ZeRO-2 (without / with checkpointing), the largest gathered module under ZeRO-3.", ""]
    lines += ["Which choices fit:", "", "| setting | stage 1, 40 GB | stage 1, 80 GB | stage 2, 40 GB | stage 2, 80 GB |",
              "|---|---|---|---|---|"]
    for mb in mbs:
        for ckpt in (False, True):
            cells = [fitting(mem[f"stage{stage}"], mb, ckpt, limit) for stage in (1, 2) for limit in LIMITS_GB]
            lines.append(f"| mb {mb}{', ckpt' if ckpt else ''} | " + " | ".join(cells) + " |")
    lines.append("")
    for stage in (1, 2):
        header = "| choice | weights | gradients | AdamW | bf16 working weights | " + " | ".join(
            f"total, mb {mb}{', ckpt' if ck else ''}" for mb in mbs for ck in (False, True)) + " |"
        lines += [f"### Stage {stage} ({p[f'stage{stage}_trained']:,} trained parameters)", "", header,
                  "|---|" + "---:|" * (4 + 2 * len(mbs))]
        for choice, row in mem[f"stage{stage}"].items():
            working = sorted({gb(x["bf16_working_weights"]) for x in row["settings"]}, key=float)
            totals = [f"{gb(x['total'])} {'✓' if x['fits']['40GB'] else '✗'}{'✓' if x['fits']['80GB'] else '✗'}"
                      for x in row["settings"]]
            lines.append(f"| {choice} | {gb(row['weights'])} | {gb(row['gradients'])} | {gb(row['adamw'])} | "
                         f"{' / '.join(reversed(working))} | " + " | ".join(totals) + " |")
        host = result["host_offload_bytes_per_gpu"][f"stage{stage}"]
        lines += ["", f"ZeRO-3 + CPU offload keeps {gb(host)} GB of float32 master weights and AdamW states per GPU "
                  f"process in CPU memory ({gb(host * g)} GB for {g} GPUs).", ""]
    lines += ["## How it is counted", ""] + [f"- {n}" for n in result["notes"]]
    lines += ["", "No GPU was lent to this session; the GPU benchmark `benchmarks/training_gpu.py` measures peak memory "
              "where one is.", "",
              f"{result['provenance']} ({result['runtime_s']:.0f} s, peak {result['peak_rss_gb']} GB of RAM, on "
              f"{os.cpu_count()} CPU cores).", ""]
    return "\n".join(lines)


def fitting(table: dict, mb: int, ckpt: bool, limit: str) -> str:
    """The choices (short names) whose total fits `limit` in one setting."""
    names = [SHORT[c] for c, row in table.items() for x in row["settings"]
             if x["micro_batch"] == mb and x["checkpointing"] == ckpt and x["fits"][limit]]
    return ", ".join(names) or "none"


def notes(result: dict) -> list[str]:
    p, g, acts, check = result["parameters"], result["gpus"], result["activations"], result["checks"]
    unit_name, unit = gathered_unit(p)
    head = acts["lm_head_formula"]
    batch_check = (f"measured at micro-batch 2 (stage 1, {DEPTHS[0]} layers) the kept activations are "
                   f"{check['batch_ratio']:.3f} x those of micro-batch 1" if "batch_ratio" in check
                   else "not checked in this run (--quick)")
    fast, length = result["sequence"]["fast_tokens"], result["sequence"]["length"]
    per_token = acts["stage1"]["no checkpointing"]["per_sample"] / length
    return [
        f"Model: `training.pipeline.model_config('{result['preset']}')`, the preset with the query action expert and "
        "the AR (VQ) world model (backbone: transformers' `Emu3ForCausalLM`, untied LM head, no attention biases), "
        "every parameter float32 at rest as the trainer keeps it. The frozen VQ tokenizer's "
        f"weights count as weights; buffers ({p['buffer_bytes'] / 1e6:.0f} MB: Emu3's tokenizer has only batch-norm "
        "statistics, w0sim's VQ-VAE its codebook and its EMA) are counted whole on every GPU.",
        "Stage 1 trains the backbone; stage 2 the action expert plus the backbone parameters its loss reaches "
        "(`trainable_groups` with backbone_lr_scale 1, as the official `--freeze_vlm False`).",
        "DDP: every GPU holds float32 weights (4 B per parameter), float32 gradients (4 B) and AdamW exp_avg + "
        f"exp_avg_sq (8 B) per trained parameter. ZeRO-2 / FSDP SHARD_GRAD_OP: gradients and AdamW states sharded "
        f"over the {g} GPUs, the weights whole during the step. ZeRO-3 / FSDP FULL_SHARD: weights, gradients and AdamW "
        "states sharded. ZeRO-3 + CPU offload: the GPU keeps bf16 weight shards and bf16 gradient shards, the float32 "
        "master weights and AdamW states live in CPU memory (DeepSpeed offload_optimizer; offload_param would move the "
        "weight shards off the GPU as well).",
        "bf16 working weights, DDP and ZeRO-2: with float32 weights, autocast casts each weight to bf16 where it is "
        "used, caches the copy of every trained weight until the forward's autocast context ends, and autograd keeps "
        "copies for the backward pass; measured as the parameter casts (seen by a dispatch mode) alive at the end of "
        "the forward, per layer by the depth difference (expected per backbone layer: "
        f"{mb_(check['weight_copies_per_layer_expected'])} MB for its linear weights, Emu3 blocks having no biases; measured "
        f"{mb_(acts['stage1']['no checkpointing']['bf16_weight_copies_per_layer'])} MB), the LM head's added "
        "analytically. Checkpointing does not remove them (the cache holds them). ZeRO-3: the compute weights are "
        "bf16 gathers freed after use, counted as "
        f"the largest module gathered at once, {unit_name} ({unit:,} parameters, bf16; a decoder layer has "
        f"{p['backbone_layer']:,}). Prefetching the next module can add about one more.",
        "Activations: measured on a CPU by counting the storages autograd saves for the backward pass during one "
        "bf16-autocast training forward of one sample, as they stand at the end of the forward "
        "(torch.autograd.graph.saved_tensors_hooks, followed by weak references; each storage once, by its data_ptr, "
        "and whole where only a view of it is saved; parameters and weight copies apart), at the preset's widths and "
        f"exact training-sequence length, with {DEPTHS[0]} and {DEPTHS[1]} layers (per layer = the difference, rest = "
        f"the {DEPTHS[0]}-layer run minus its typical layers) and a {MEASURED_TEXT_VOCAB}-id text range and "
        f"{MEASURED_CODEBOOK}-code VQ codebook for a small vocabulary (the sequence does not depend on them). Full depth = "
        "rest + typical layers x per layer. In stage 2 "
        "the last layer is not typical and sits in the rest: it keeps only what its K/V path needs (its attention "
        "output and MLP feed no loss, and autograd frees them during the forward).",
        "Attention is counted as the fused CUDA kernels (FlashAttention-2, memory-efficient, cuDNN) keep it: q, k, v, "
        "the output and a float32 log-sum-exp per row and head, with K/V as transformers hands them to SDPA (not "
        "repeated for GQA when there is no padding mask). The CPU math kernel would keep the L x L probabilities. A "
        "micro-batch whose rows differ in length (command texts, FAST token counts) is left-padded, and transformers "
        "then repeats K/V for "
        f"SDPA: about {mb_(check['padded_kv_extra_per_layer'])} MB more per sample and layer "
        f"({gb(check['padded_kv_extra_per_layer'] * result['layers'])} GB per sample over the {result['layers']} layers).",
        f"LM head, stage 1, analytic: {head['labelled_positions']} labelled positions x {head['vocab']:,} ids x (2 B "
        "bf16 logits + 4 B float32 copy; `DriveVLAW0Backbone.loss` applies the head at the labelled positions only "
        "(every frame's image codes, each <boa> ... <eoa> span) and cross-entropy "
        "keeps the float32 log-probabilities), plus the head's bf16 input. Check at the reduced vocabulary: the head "
        f"kept {mb_(check['lm_head_measured_reduced'])} MB, the formula's kept part (float32 log-probabilities + bf16 "
        f"input) gives {mb_(check['lm_head_formula_reduced'])} MB.",
        "Activation checkpointing: the checkpointed layers keep only the tensors handed to the checkpoint function "
        "(measured: the layer input, the mask and the rotary tables), plus one backbone layer's full activations while "
        "the backward pass recomputes it (added in full: an upper bound, as the forward's end, where autocast's cache "
        "is full, and the recompute do not coincide). Stage 2's context K/V (norm, K/V projections and RoPE of each "
        "layer's input, computed outside the checkpointed layers) are kept either way.",
        f"The sequence's action tokens: the FAST tokenizer (fast_vocab_size {result['fast_vocab_size']:,}) fitted, as "
        f"`fit_action_tokenizer` does on a data set, on {DRIVES} made-up drives (constant speed 0-12 m/s on gentle arcs); "
        f"the sample is the drive whose sequence holds the most FAST tokens ({fast['past']} of past motions, "
        f"{fast['actions']} of the actions and the plan). A data set's chunks can take more tokens (AR decoding caps a "
        f"plan at {result['max_plan_tokens']}): activations grow about linearly with the sequence, by about "
        f"{mb_(per_token)} MB per sample per token in stage 1 without checkpointing.",
        f"Activations scale with the micro-batch: {batch_check}. Not counted: transient buffers (the activation "
        "gradients of the layer in its backward pass, a layer's unsharded gradients before ZeRO's reduce-scatter, "
        "communication buckets), the CUDA context (about 0.5-1 GB) and allocator fragmentation: a total within a few "
        "GB of a limit is marginal.",
        "The measurement uses the CPU's autocast; for the ops here (linear and SDPA in bf16; embedding, RMSNorm, "
        "RoPE tables and cross-entropy in float32) CUDA autocast makes the same choices.",
        "40 GB is the paper's figure for its L20 GPUs (NVIDIA lists the L20 at 48 GB); 80 GB is an H100. The official "
        "scripts train with ZeRO-3 + offload, gradient checkpointing and 4-12 samples per GPU (5.2 of the spec).",
    ]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the states are sharded over (default 8)")
    parser.add_argument("--micro-batch", default="1,6", help="per-GPU micro-batch sizes, comma-separated (default 1,6)")
    parser.add_argument("--quick", action="store_true", help="skip the micro-batch linearity check (tests)")
    parser.add_argument("--write", type=Path, help="write the markdown report to this path")
    args = parser.parse_args(argv)
    micro_batches = [int(x) for x in args.micro_batch.split(",")]
    made_by = provenance(argv)
    started = time.perf_counter()
    config = preset_config(args.preset)
    params = count_parameters(config)
    log(f"[{args.preset}] {params['total']:,} parameters; trained: stage 1 {params['stage1_trained']:,}, "
        f"stage 2 {params['stage2_trained']:,}")

    runs, sequence = measure_activations(args.preset, batch_check=not args.quick)
    positions = sequence["labelled_positions"]
    acts = activation_model(runs, params, config, positions)
    one = runs[f"stage1, depth {DEPTHS[0]}, no checkpointing"]
    labelled, small_vocab = sum(positions.values()), measured_config(args.preset, 1).vocab_size
    c = config
    checks = {
        "lm_head_measured_reduced": one["LM head"]["activations"],
        "lm_head_formula_reduced": labelled * (small_vocab * 4 + c.hidden_size * 2),
        "padded_kv_extra_per_layer": 2 * 2 * sequence["length"] * c.head_dim * (c.num_attention_heads - c.num_key_value_heads),
        "weight_copies_per_layer_expected": 2 * linear_parameters(c),
    }
    pair = runs.get(f"stage1, depth {DEPTHS[0]}, no checkpointing, micro-batch 2")
    if pair is not None:
        checks["batch_ratio"] = sum(v["activations"] for v in pair.values()) / sum(v["activations"] for v in one.values())
    result = {"preset": args.preset, "gpus": args.gpus, "micro_batches": micro_batches, "sequence": sequence,
              "layers": config.num_hidden_layers, "frames": config.num_history_frames,
              "image_tokens": config.image_tokens_per_frame, "fast_vocab_size": config.fast_vocab_size,
              "max_plan_tokens": config.max_action_tokens - 2,
              "parameters": params, "activations": acts,
              "memory": memory_table(params, acts, args.gpus, micro_batches),
              "host_offload_bytes_per_gpu": {f"stage{s}": host_offload_bytes(params, s, args.gpus) for s in (1, 2)},
              "checks": checks, "measurements": runs}
    result["notes"] = notes(result)
    result["runtime_s"] = round(time.perf_counter() - started, 1)
    result["provenance"] = made_by
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB, 2)
    log(f"done in {result['runtime_s']} s, peak RSS {result['peak_rss_gb']} GB")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(markdown(result, argv))
        log(f"wrote {args.write}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
