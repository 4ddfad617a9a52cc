"""Strict reading of a DriveVLA-W0 checkpoint folder (`save_pretrained` layout: config.json + model.safetensors).

Every problem is a `CheckpointError` that names the folder, the file, and the field or tensors at fault:
- config.json: a JSON object of known fields only (`CONFIG_FIELDS`, `CONFIG_METADATA`), each of its type and
  in its range; `fast_tokenizer` a FAST tokenizer that loads; the model must build from it. Only the fields added
  after checkpoints were published (`ADDED_FIELDS`) may be absent: they take the value those checkpoints meant.
- model.safetensors: the header is parsed here and checked against the file (truncation, holes, a file that
  is not safetensors); tensor names, shapes and dtypes must be exactly those of the model the config builds
  (built on the meta device: no memory, no data read). Sizes the weights pin down (hidden size, layers,
  vocabulary, poses, codebook, ...) are named with both values when they contradict the config.
- the record: `save_pretrained` of `DriveVLAW0ForDriving` stores the config and a sha256 of the tensor data in
  the safetensors metadata (`write_record`). When a record is there, config.json must agree with it field by
  field (`FREE_FIELDS` excepted) and the data must hash to it. Checkpoints saved before the record existed
  (the shipped tiny one) load without it: their non-shape fields are trusted.
- after loading: every floating tensor finite.
`check_checkpoint` runs all checks that need no tensor data (cheap: an agent runs it when it is built);
`load_checkpoint` runs them, then the data checks, and returns the model.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from policies.config import EXPERT_DECODERS, IMAGE_INPUTS, VQ_MODELS, DriveVLAW0Config, cross_field_problems
from policies.fast_tokens import FastActionTokenizer
from policies.model import DriveVLAW0ForDriving
from policies.text import InstructionTokenizer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
MAX_LISTED = 5  # names listed per kind of problem; the rest are counted
RECORD_CONFIG = "w0sim.config"  # safetensors metadata keys of the record written at save time
RECORD_SHA256 = "w0sim.data_sha256"

# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
TORCH_DTYPES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
                torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.float64: "F64",
                torch.int64: "I64"}
# config.json's "dtype": the dtype of every floating tensor in model.safetensors.
FLOAT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}

# Tensors the model does not save, so they are never expected in model.safetensors (a test keeps this list equal
# to the model's non-persistent buffers): each is recomputed from the config when the model is built.
NOT_SAVED = {
    "inv_freq": "rotary embedding frequencies of the Emu3 backbone, from rope_theta and head_dim",
    "original_inv_freq": "the same frequencies before any RoPE scaling, from rope_theta and head_dim",
}
# No saved tensor is optional: the model ties no weights (tie_word_embeddings=False), and the VQ quantizer's EMA
# statistics and flags are persistent buffers that are saved and must be loaded like the weights.

# Fields config.json may set differently from the record written at save time: they change how the model is
# trained or how many integration steps it takes, not what its weights mean.
FREE_FIELDS = {
    "flow_steps": "Euler steps of the flow decoder at inference (any count integrates the same learned field)",
    "diffusion_sample_steps": "DDIM steps of the diffusion world model at inference",
    "vq_commitment_weight": "training loss weight", "vq_ema_decay": "training-time codebook EMA",
    "vq_restart_after": "training-time dead-code restarts", "initializer_range": "initialisation of new weights",
    "attention_dropout": "training-time dropout (inactive in eval mode)", "flow_beta_a": "training-time tau sampling",
    "diffusion_loss_weight": "training loss weight",
    "vision_loss_weight": "training loss weight",
}

# Fields added after checkpoints were published (the shipped one included): a config.json or record without one
# is read with the class default, which is what every checkpoint saved before it describes (Emu3's tokenizer came
# with vq_model; before it the image tokenizer was always w0sim's). Any other missing field is an error.
ADDED_FIELDS = ("vq_model", "emu3_vq_channels", "emu3_vq_res_blocks", "emu3_vq_attn_stages", "emu3_vq_latent_channels",
                "emu3_vq_temporal_factor")


def with_added_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` config fields with each absent `ADDED_FIELDS` field at its default (tuples as JSON lists)."""
    defaults = {name: getattr(DriveVLAW0Config, name) for name in ADDED_FIELDS if name not in raw}
    return {**{k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}, **raw}


class CheckpointError(ValueError):
    """A checkpoint folder cannot be loaded: the message names the folder, the file and what is wrong."""


# --- config.json -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """What one config.json field may hold: kind int / float / bool / choice /
    sizes (a list of 1 to 8 ints, one per stage) / indices (a list of 0 to 8 ints: which stages or blocks) / triple
    (3 numbers) / fast (a fitted FAST tokenizer's JSON, or ""), and bounds
    (inclusive unless `open_low`)."""

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    choices: tuple[str, ...] = ()


BIG = 1 << 24  # sizes beyond this are no model this project can build


def _size(low: int = 1, high: int = BIG) -> Rule:
    return Rule("int", low, high)


def _positive(high: float) -> Rule:
    return Rule("float", 0.0, high, open_low=True)


CONFIG_FIELDS: dict[str, Rule] = {
    "image_height": _size(1, 8192), "image_width": _size(1, 8192), "num_history_frames": _size(1, 1024),
    "frame_interval_s": _positive(60.0),
    "vq_channels": Rule("sizes", 1, 1 << 16), "vq_codebook_size": _size(),
    "vq_code_dim": _size(), "vq_commitment_weight": Rule("float", 0.0, 1e6), "vq_ema_decay": Rule("float", 0.0, 1.0),
    "vq_restart_after": _size(), "vq_model": Rule("choice", choices=VQ_MODELS),
    "emu3_vq_channels": Rule("sizes", 32, 1 << 16), "emu3_vq_res_blocks": _size(1, 64),
    "emu3_vq_attn_stages": Rule("indices", 0, 7), "emu3_vq_latent_channels": _size(1, 1 << 16),
    "emu3_vq_temporal_factor": _size(1, 64),
    "image_input": Rule("choice", choices=IMAGE_INPUTS), "vit_patch_size": _size(1, 4096),
    "vit_merge_size": _size(1, 64), "vit_depth": _size(1, 1024), "vit_hidden_size": _size(),
    "vit_intermediate_size": _size(), "vit_heads": _size(1, 1024), "vit_window_size": _size(1, 1 << 16),
    "vit_fullatt_blocks": Rule("indices", 0, 1024), "mrope_section": Rule("sizes", 1, 1 << 16),
    "qwen_vocab_size": _size(0), "vae_channels": Rule("sizes", 1, 1 << 16), "vae_latent_channels": _size(1, 1 << 16),
    "vae_layers_per_block": _size(1, 64), "vae_kl_weight": Rule("float", 0.0, 1e6),
    "vae_scaling_factor": Rule("float", 0.0, 1e6),
    "text_vocab_size": _size(len(InstructionTokenizer())), "max_text_length": _size(1),
    "num_poses": _size(1, 1024), "pose_interval_s": _positive(60.0), "num_past_actions": _size(1, 64),
    "segment_action_steps": _size(1, 1024), "action_low": Rule("triple", -1000.0, 1000.0),
    "action_high": Rule("triple", -1000.0, 1000.0), "fast_vocab_size": _size(2, 1 << 16),
    "fast_scale": _positive(1e6), "fast_tokenizer": Rule("fast"), "max_action_tokens": _size(3, 4096),
    "hidden_size": _size(), "num_hidden_layers": _size(1, 1024), "num_attention_heads": _size(1, 1024),
    "num_key_value_heads": _size(1, 1024), "head_dim": _size(), "intermediate_size": _size(),
    "rms_norm_eps": Rule("float", 0.0, 1.0, open_low=True), "rope_theta": _positive(1e12),
    "attention_dropout": Rule("float", 0.0, 1.0), "max_position_embeddings": _size(),
    "initializer_range": Rule("float", 0.0, 10.0),
    "expert_hidden_size": _size(), "expert_intermediate_size": _size(),
    "use_action_expert": Rule("bool"), "expert_decoder": Rule("choice", choices=EXPERT_DECODERS),
    "num_anchors": _size(0, 1 << 20), "anchor_queries": _size(1, 1 << 16), "anchor_layers": _size(1, 64),
    "anchor_heads": _size(1, 1024), "flow_steps": _size(1, 10_000), "flow_beta_a": _positive(1000.0),
    "diffusion_channels": Rule("sizes", 1, 1 << 16), "diffusion_layers_per_block": _size(1, 64),
    "diffusion_cross_dim": _size(), "diffusion_train_timesteps": _size(1, 100_000),
    "diffusion_sample_steps": _size(1, 100_000), "diffusion_loss_weight": Rule("float", 0.0, 1e6),
    "vision_loss_weight": Rule("float", 0.0, 1e6),
    "use_world_model": Rule("bool"),
}
# Fields transformers writes beside the model's own; "torch_dtype" is the name older versions gave "dtype".
CONFIG_METADATA = ("architectures", "model_type", "transformers_version", "dtype", "torch_dtype")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds(rule: Rule) -> str:
    low = "(" if rule.open_low else "["
    return f"in {low}{rule.low:g}, {rule.high:g}]"


def _field_problem(name: str, value: Any, rule: Rule) -> str | None:
    """Why `value` cannot be config field `name`, or None."""
    shown = json.dumps(value)[:60]
    if rule.kind == "bool":
        return None if isinstance(value, bool) else f"{name} is {shown}; it must be true or false"
    if rule.kind == "choice":
        return None if value in rule.choices else f"{name} is {shown}; it must be one of {', '.join(rule.choices)}"
    if rule.kind == "int":
        if not _is_int(value):
            return f"{name} is {shown}; it must be an integer"
        return None if rule.low <= value <= rule.high else f"{name} is {shown}; it must be {_bounds(rule)}"
    if rule.kind == "float":
        if not _is_number(value) or not math.isfinite(value):
            return f"{name} is {shown}; it must be a finite number"
        inside = (rule.low < value if rule.open_low else rule.low <= value) and value <= rule.high
        return None if inside else f"{name} is {value:g}; it must be {_bounds(rule)}"
    if rule.kind == "triple":
        if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) and math.isfinite(v) for v in value)):
            return f"{name} is {shown}; it must be 3 finite numbers (dx, dy, dyaw)"
        bad = [v for v in value if not rule.low <= v <= rule.high]
        return f"{name} has {bad[0]:g}; every entry must be {_bounds(rule)}" if bad else None
    if rule.kind == "fast":
        if not isinstance(value, str):
            return f"{name} is {shown}; it must be a string (a fitted FAST tokenizer's JSON, or empty)"
        if not value:
            return None
        try:
            FastActionTokenizer.from_json(value)
        except ValueError as err:
            return f"{name} is not a FAST tokenizer: {err}"
        return None
    # sizes / indices: a list of 1 / 0 to 8 ints
    fewest = 0 if rule.kind == "indices" else 1
    if not (isinstance(value, list) and fewest <= len(value) <= 8 and all(_is_int(v) for v in value)):
        return f"{name} is {shown}; it must be a list of {fewest} to 8 integers"
    bad = [v for v in value if not rule.low <= v <= rule.high]
    return f"{name} has {bad[0]}; every entry must be {_bounds(rule)}" if bad else None


def _metadata_problem(name: str, value: Any) -> str | None:
    shown = json.dumps(value)[:60]
    if name == "architectures" and value not in (["DriveVLAW0ForDriving"], None):
        return f"architectures is {shown}; this loader builds DriveVLAW0ForDriving"
    if name == "model_type" and value != DriveVLAW0Config.model_type:
        return f"model_type is {shown}, not {DriveVLAW0Config.model_type!r}"
    if name == "transformers_version" and not isinstance(value, str):
        return f"transformers_version is {shown}; it must be a string"
    if name in ("dtype", "torch_dtype") and value is not None and value not in FLOAT_DTYPES:
        return f"{name} is {shown}; it must be one of {', '.join(FLOAT_DTYPES)}"
    return None


def config_problems(raw: Any) -> list[str]:
    """Every reason the parsed config.json `raw` is not a valid DriveVLA-W0 config, each naming its field."""
    if not isinstance(raw, dict):
        return [f"it holds a JSON {type(raw).__name__}, not an object of fields"]
    raw = with_added_fields(raw)
    problems = [f"unknown field {name!r}" for name in raw if name not in CONFIG_FIELDS and name not in CONFIG_METADATA]
    problems += [f"field {name!r} is missing" for name in CONFIG_FIELDS if name not in raw]
    if "dtype" in raw and "torch_dtype" in raw and raw["dtype"] != raw["torch_dtype"]:
        problems.append(f"dtype is {raw['dtype']!r} but torch_dtype is {raw['torch_dtype']!r}")
    for name, value in raw.items():
        problem = (_field_problem(name, value, CONFIG_FIELDS[name]) if name in CONFIG_FIELDS
                   else _metadata_problem(name, value) if name in CONFIG_METADATA else None)
        if problem:
            problems.append(problem)
    if problems:
        return problems
    problems = cross_field_problems(raw)  # fields valid alone but not together
    if raw["diffusion_sample_steps"] > raw["diffusion_train_timesteps"]:
        problems.append(f"diffusion_sample_steps is {raw['diffusion_sample_steps']}, more than "
                        f"diffusion_train_timesteps {raw['diffusion_train_timesteps']}")
    if raw["fast_tokenizer"]:
        vocab = FastActionTokenizer.from_json(raw["fast_tokenizer"]).vocab_size
        if vocab > raw["fast_vocab_size"]:
            problems.append(f"fast_tokenizer has {vocab} tokens, more than fast_vocab_size {raw['fast_vocab_size']}: "
                            "its top ids would fall among the instruction words")
    return problems


def config_fields(config: DriveVLAW0Config) -> dict[str, Any]:
    """The model fields of `config` as JSON would hold them (tuples as lists)."""
    return {name: list(v) if isinstance(v := getattr(config, name), tuple) else v for name in CONFIG_FIELDS}


def float_dtype(config: DriveVLAW0Config) -> str:
    """The safetensors dtype of the config's floating tensors."""
    dtype = getattr(config, "dtype", None)
    name = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    return FLOAT_DTYPES.get(name, name)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _fail(folder: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {folder} cannot be loaded: {what}")


def _regular_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        hint = ""
        if name == CONFIG_NAME:  # a `w0sim train` run or experiment folder: name the model folders in it
            inside = sorted(str(p.parent.relative_to(folder)) for p in itertools.chain.from_iterable(
                folder.glob("*/" * depth + CONFIG_NAME) for depth in (1, 2, 3)) if (p.parent / WEIGHTS_NAME).is_file())
            hint = f"; model folders inside it: {_listing(inside)}" if inside else ""
        if name == WEIGHTS_NAME:
            others = [p.name for p in sorted(folder.glob("*")) if p.suffix in (".bin", ".pt", ".pth", ".ckpt")
                      or p.name.endswith(".index.json")]
            hint = f"; {', '.join(others[:3])} (sharded or pickled weights) are not loaded" if others else ""
        raise CheckpointError(f"checkpoint {folder} has no {name} (expected a save_pretrained folder: "
                              f"{CONFIG_NAME} + {WEIGHTS_NAME}){hint}")
    if not path.is_file():
        raise _fail(folder, f"{name} is not a regular file")
    return path


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; a ValueError when a name appears twice (JSON readers differ on which wins)."""
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"{twice[0]!r} appears more than once")
    return dict(pairs)


def read_config(folder: str | Path) -> DriveVLAW0Config:
    """The config of checkpoint `folder`, every field checked (`config_problems`)."""
    folder = Path(folder)
    path = _regular_file(folder, CONFIG_NAME)
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise _fail(folder, f"{CONFIG_NAME} is {size} bytes, more than the {MAX_CONFIG_BYTES} a config can need")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _fail(folder, f"{CONFIG_NAME} is not valid JSON ({type(err).__name__}: {err})") from None
    problems = config_problems(raw)
    if problems:
        raise _fail(folder, f"{CONFIG_NAME}: {'; '.join(problems[:MAX_LISTED])}"
                            + (f" (and {len(problems) - MAX_LISTED} more problems)" if len(problems) > MAX_LISTED else ""))
    raw = {**with_added_fields(raw), "dtype": raw.get("dtype") or raw.get("torch_dtype") or "float32"}
    raw.pop("torch_dtype", None)
    try:
        return DriveVLAW0Config.from_dict(raw)
    except Exception as err:  # noqa: BLE001 - the config's own checks; the fields above were all valid alone
        raise _fail(folder, f"{CONFIG_NAME}: {type(err).__name__}: {err}") from None


# --- model.safetensors ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets in the data section
    end: int


@dataclass(frozen=True)
class WeightsHeader:
    """The parsed header of a safetensors file: its tensors, its metadata and where its data section lies."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int
    data_size: int
    raw: dict[str, Any]


def read_header(path: str | Path, folder: str | Path | None = None) -> WeightsHeader:
    """The header of safetensors file `path`, checked against the file: a CheckpointError (naming `folder`, by
    default the file's folder) for a file that is not safetensors, is truncated, or indexes its data wrongly."""
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    name = path.name
    file_size = path.stat().st_size
    if file_size < 8:
        raise _fail(folder, f"{name} is not a safetensors file: it holds {file_size} bytes")
    with path.open("rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        if header_size > min(MAX_HEADER_BYTES, file_size - 8) or header_size < 2:
            raise _fail(folder, f"{name} is truncated or not a safetensors file: its first 8 bytes announce a "
                                f"header of {header_size} bytes, the file holds {file_size - 8} after them")
        text = f.read(header_size)
    try:
        raw = json.loads(text.decode("utf-8"), object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _fail(folder, f"{name} is not a safetensors file: its header is not JSON "
                            f"({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(raw, dict):
        raise _fail(folder, f"{name} is not a safetensors file: its header is not a JSON object")
    metadata = raw.get("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise _fail(folder, f"{name}: its __metadata__ is not a table of strings")
    tensors, problems = {}, []
    for key, entry in raw.items():
        if key == "__metadata__":
            continue
        info = _tensor_info(entry)
        if isinstance(info, str):
            problems.append(f"{key} {info}")
        else:
            tensors[key] = info
    if problems:
        raise _fail(folder, f"{name} has a damaged header: {_listing(problems)}")
    data_size = file_size - 8 - header_size
    indexed, holes = 0, []
    for key, info in sorted(tensors.items(), key=lambda item: (item[1].start, item[1].end)):
        if info.start != indexed:
            holes.append(f"{key} starts at byte {info.start}, not {indexed}")
        indexed = max(indexed, info.end)
    if holes:
        raise _fail(folder, f"{name} has a damaged header: its tensors overlap or leave gaps ({_listing(holes)})")
    if indexed > data_size:
        raise _fail(folder, f"{name} is truncated: its header indexes {indexed} bytes of tensor data, "
                            f"the file holds {data_size}")
    if indexed < data_size:
        raise _fail(folder, f"{name} has {data_size - indexed} bytes after its last tensor (not a safetensors "
                            f"file as saved)")
    return WeightsHeader(tensors, dict(metadata), 8 + header_size, data_size, raw)


def _tensor_info(entry: Any) -> TensorInfo | str:
    """The entry of one tensor in a safetensors header, or what is wrong with it."""
    if not (isinstance(entry, dict) and {"dtype", "shape", "data_offsets"} <= set(entry)):
        return "has no dtype, shape and data_offsets"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        return f"has an unknown dtype {str(dtype)[:20]!r}"
    if not (isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape)):
        return f"has a bad shape {str(shape)[:40]}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(n) and n >= 0 for n in offsets)
            and offsets[0] <= offsets[1]):
        return f"has bad data_offsets {str(offsets)[:40]}"
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
        return f"spans {offsets[1] - offsets[0]} bytes, not the {math.prod(shape) * DTYPE_BYTES[dtype]} of its {dtype} {shape}"
    return TensorInfo(dtype, tuple(shape), *offsets)


# --- config against weights -------------------------------------------------------------------------------------
def expected_tensors(config: DriveVLAW0Config) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, safetensors dtype) of every tensor `DriveVLAW0ForDriving(config)` saves (meta device)."""
    with torch.device("meta"):
        model = DriveVLAW0ForDriving(config)
    floating = float_dtype(config)
    return {name: (tuple(t.shape), floating if t.is_floating_point() else TORCH_DTYPES.get(t.dtype, str(t.dtype)))
            for name, t in model.state_dict().items()}


def _shape(tensors: dict[str, TensorInfo], name: str, rank: int) -> tuple[int, ...] | None:
    info = tensors.get(name)
    return info.shape if info is not None and len(info.shape) == rank else None


def weights_sizes(tensors: dict[str, TensorInfo]) -> dict[str, tuple[Any, str]]:
    """Config values the tensors pin down: name -> (value, the tensors that show it)."""
    found: dict[str, tuple[Any, str]] = {}
    prefixes = {name.split(".")[0] for name in tensors}
    found["use_action_expert"] = ("policy" in prefixes, "policy.* tensors" if "policy" in prefixes else "no policy.*")
    lm = "policy.backbone.lm." if "policy" in prefixes else "vla.lm."
    vit = any(name.startswith(f"{lm}model.visual.") for name in tensors)
    found["image_input"] = ("vit" if vit else "vq", f"{lm}model.visual.* tensors" if vit else f"no {lm}model.visual.*")
    backbone = f"{lm}model.language_model." if vit else f"{lm}model."  # the text decoder
    if (emb := _shape(tensors, f"{backbone}embed_tokens.weight", 2)) is not None:
        evidence = f"{backbone}embed_tokens.weight {list(emb)}"
        found["vocabulary size"], found["hidden_size"] = (emb[0], evidence), (emb[1], evidence)
    layers = {int(m.group(1)) for name in tensors if (m := re.match(re.escape(backbone) + r"layers\.(\d+)\.", name))}
    if layers:
        found["num_hidden_layers"] = (max(layers) + 1, f"{backbone}layers.0-{max(layers)}")
    probes = [(f"{backbone}layers.0.mlp.gate_proj.weight", 2, 0, "intermediate_size"),
              (f"{backbone}layers.0.self_attn.q_proj.weight", 2, 0, "num_attention_heads x head_dim"),
              (f"{backbone}layers.0.self_attn.k_proj.weight", 2, 0, "num_key_value_heads x head_dim"),
              ("policy.expert.norm.weight", 1, 0, "expert_hidden_size"),
              ("policy.expert.layers.0.mlp.gate_proj.weight", 2, 0, "expert_intermediate_size"),
              ("policy.flow_pos", 2, 0, "num_poses"), ("policy.anchors", 3, 0, "num_anchors"),
              ("vq.quantizer.codebook", 2, 0, "vq_codebook_size"), ("vq.quantizer.codebook", 2, 1, "vq_code_dim")]
    for name, rank, dim, field in probes:
        if (shape := _shape(tensors, name, rank)) is not None:
            found[field] = (shape[dim], f"{name} {list(shape)}")
    if (shape := _shape(tensors, "policy.ar_out.weight", 2)) is not None:  # the FAST ids and <eoa>
        found["fast_vocab_size"] = (shape[0] - 1, f"policy.ar_out.weight {list(shape)} (FAST ids and <eoa>)")
    decoders = {"queries": "query", "flow_in": "flow", "ar_out": "ar"}
    present = [d for part, d in decoders.items() if any(n.startswith(f"policy.{part}") for n in tensors)]
    if len(present) == 1:
        found["expert_decoder"] = (present[0], f"policy.{[p for p, d in decoders.items() if d == present[0]][0]}*")
    downs = sorted((int(m.group(1)), info.shape[0]) for name, info in tensors.items()
                   if (m := re.fullmatch(r"vq\.encoder\.net\.(\d+)\.weight", name)) and info.shape[2:] == (4, 4))
    if downs:
        found["vq_channels"] = ([c for _, c in downs], "vq.encoder's stride-2 convolutions")
    return found


def _config_sizes(config: DriveVLAW0Config) -> dict[str, Any]:
    sizes = config_fields(config)
    sizes["vocabulary size"] = config.vocab_size
    sizes["num_attention_heads x head_dim"] = config.num_attention_heads * config.head_dim
    sizes["num_key_value_heads x head_dim"] = config.num_key_value_heads * config.head_dim
    return sizes


def weights_problems(config: DriveVLAW0Config, header: WeightsHeader) -> list[str]:
    """Every way `header`'s tensors contradict `config`: named sizes first, then the tensors."""
    sizes = _config_sizes(config)
    problems = []
    for field, (value, evidence) in weights_sizes(header.tensors).items():
        if sizes[field] != value:
            label = field + (" (from text_vocab_size, fast_vocab_size and vq_codebook_size)"
                             if field == "vocabulary size" else "")
            problems.append(f"{label} is {json.dumps(sizes[field])} in {CONFIG_NAME}, {json.dumps(value)} in "
                            f"{WEIGHTS_NAME} ({evidence})")
    try:
        expected = expected_tensors(config)
    except Exception as err:  # noqa: BLE001 - a config every field of which is valid alone but no model builds from
        return problems + [f"no model builds from {CONFIG_NAME} ({type(err).__name__}: {str(err)[:200]})"]
    found = header.tensors
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    reshaped = [f"{name} {list(found[name].shape)} (expected {list(shape)})"
                for name, (shape, _) in expected.items() if name in found and found[name].shape != shape]
    retyped = [f"{name} {found[name].dtype} (expected {dtype})"
               for name, (_, dtype) in expected.items() if name in found and found[name].dtype != dtype]
    for count, what in ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"),
                        (retyped, "of another dtype")):
        if count:
            problems.append(f"{len(count)} tensor{'s' if len(count) > 1 else ''} {what}: {_listing(count)}")
    return problems


def record_problems(config: DriveVLAW0Config, header: WeightsHeader) -> list[str]:
    """Fields of `config` that differ from the config recorded in the weights when they were saved (none when no
    record is there); `FREE_FIELDS` may differ."""
    if RECORD_CONFIG not in header.metadata:
        return []
    try:
        record = json.loads(header.metadata[RECORD_CONFIG])
    except ValueError:
        return [f"its {RECORD_CONFIG} record is not JSON"]
    if not isinstance(record, dict):
        return [f"its {RECORD_CONFIG} record is not a table of fields"]
    record = with_added_fields(record)
    fields = config_fields(config)
    return [f"{name} is {_shown(fields.get(name))} in {CONFIG_NAME}, {_shown(record.get(name))} when the "
            f"weights were saved" for name in CONFIG_FIELDS
            if name not in FREE_FIELDS and (name not in record or fields[name] != record[name])]


def _shown(value: Any) -> str:
    """A field's value for a message: JSON, long strings (a FAST tokenizer) cut to their start and a digest."""
    text = json.dumps(value)
    if len(text) <= 80:
        return text
    return f"{text[:40]}... ({len(text)} characters, sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]})"


def check_checkpoint(folder: str | Path) -> tuple[DriveVLAW0Config, WeightsHeader]:
    """Every check that reads no tensor data: the folder, config.json, the header of model.safetensors, the
    config against the record and the tensors. Returns the config and the header."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} is not a folder")
    try:
        config = read_config(folder)
        header = read_header(_regular_file(folder, WEIGHTS_NAME), folder)
    except OSError as err:
        raise _fail(folder, f"{type(err).__name__}: {err}") from None
    problems = weights_problems(config, header)
    if problems:
        raise _fail(folder, f"{CONFIG_NAME} does not match {WEIGHTS_NAME}: " + "; ".join(problems))
    problems = record_problems(config, header)
    if problems:
        raise _fail(folder, f"{CONFIG_NAME} contradicts the config recorded in {WEIGHTS_NAME} at save time: "
                            + "; ".join(problems[:MAX_LISTED])
                            + (f" (and {len(problems) - MAX_LISTED} more fields)" if len(problems) > MAX_LISTED else ""))
    return config, header


def data_sha256(path: Path, header: WeightsHeader) -> str:
    """sha256 of the data section of safetensors file `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(header.data_start)
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def quiet_loading():
    """transformers' "Loading weights" progress bar off while we load a model (one bar per model and process, in
    every worker), and back as it was after."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> DriveVLAW0ForDriving:
    """`DriveVLAW0ForDriving` from checkpoint `folder` in eval mode, after `check_checkpoint`, the recorded data hash
    (when recorded) and a strict load; every floating tensor must be finite."""
    folder = Path(folder)
    config, header = check_checkpoint(folder)
    path = folder / WEIGHTS_NAME
    recorded = header.metadata.get(RECORD_SHA256)
    try:
        digest = data_sha256(path, header) if recorded is not None else None
    except OSError as err:
        raise _fail(folder, f"{type(err).__name__}: {err}") from None
    if digest != recorded:
        raise _fail(folder, f"{WEIGHTS_NAME}: its tensor data do not hash to the sha256 recorded when it was saved "
                            f"(damaged or edited since)")
    try:
        with quiet_loading():
            model, info = DriveVLAW0ForDriving.from_pretrained(folder, config=config, use_safetensors=True,
                                                                local_files_only=True, output_loading_info=True)
    except Exception as err:  # noqa: BLE001 - the file changed since it was checked, or safetensors refuses it
        raise _fail(folder, f"{WEIGHTS_NAME}: {type(err).__name__}: {str(err)[:300]}") from None
    # The checks above make these empty; a transformers that renames or converts weights would not stay silent.
    report = [f"{len(v)} {k.replace('_', ' ')}: {_listing(sorted(map(str, v)))}" for k, v in info.items() if v]
    if report:
        raise _fail(folder, f"{WEIGHTS_NAME} did not load exactly: {'; '.join(report)}")
    state = model.state_dict()
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise _fail(folder, f"{WEIGHTS_NAME} has non-finite values (NaN or inf) in {len(bad)} "
                            f"tensor{'s' if len(bad) > 1 else ''}: {_listing(bad)}")
    return model.to(device).eval()


def write_record(folder: str | Path, config: DriveVLAW0Config) -> None:
    """Add the record (the model fields of `config`, the data's sha256) to `folder`'s model.safetensors metadata;
    the tensors and their bytes stay as they are. Sharded saves (no model.safetensors) get no record."""
    folder = Path(folder)
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        return
    header = read_header(path, folder)
    metadata = {**header.metadata, RECORD_CONFIG: json.dumps(config_fields(config), sort_keys=True),
                RECORD_SHA256: data_sha256(path, header)}
    encoded = json.dumps({**header.raw, "__metadata__": metadata}, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data section stays 8-byte aligned
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with path.open("rb") as src, tmp.open("wb") as dst:
            dst.write(struct.pack("<Q", len(encoded)) + encoded)
            src.seek(header.data_start)
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["CONFIG_FIELDS", "FREE_FIELDS", "NOT_SAVED", "CheckpointError", "WeightsHeader", "check_checkpoint",
           "config_problems", "expected_tensors", "load_checkpoint", "quiet_loading", "read_config", "read_header",
           "weights_sizes", "write_record"]
