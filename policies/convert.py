"""Official DriveVLA-W0 / Emu3 / Qwen2.5-VL weights <-> w0sim's DriveVLAW0ForDriving, by renaming tensors (no copy of their code).

The official names of the Emu3 track (BraveGroup/DriveVLA-W0, `reference/Emu3/emu3/mllm/modeling_emu3.py`):
- an Emu3 backbone (`BAAI/Emu3-Stage1`, the stage-1 `Emu3MoE`) has transformers' `Emu3ForCausalLM` names,
  `model.*` and `lm_head.weight`; a stage-2 model keeps it under `vlm.`;
- the action expert: `action_expert.layers.N.*` / `action_expert.norm.weight` (Emu3 blocks; its
  `action_expert.embed_tokens` is never used and is dropped), the state token MLP `state_projector.{0,2}`;
- query decoder (`Emu3QFormer`): `action_queries` (1,P,He), `action_decoder.norm_final` (LayerNorm),
  `action_decoder.linear`; flow matching (`Emu3Pi0`): `action_projector.{W1,W2,W3,pos_embed}`,
  `action_decoder.adaLN_modulation.1`, `action_decoder.linear`; AR (`Emu3AutoRegressive`):
  `action_embed_projector.{0,2}` and `action_lm_head.weight` over the whole vocabulary, of which w0sim keeps the
  FAST rows and <eoa>'s; the anchor variant (`Emu3QFormer` with `anchor`): `anchor_mlp_planning.{0,2}`,
  `anchor_cluster_encoder.*`, `anchor_tf_decoder.*` (torch transformer layers), `anchor_policy_head.{0,2}`, its
  unused regression head `action_decoder.*` is dropped, and its anchors are not in the checkpoint (the official
  code reads them from `cluster_centers_8192.npy`: `load_official(..., anchors=PATH)`).
The Qwen2.5-VL track (`reference/Qwen2.5-VL/qwen2_5_vl/modeling_qwen2_5_vl_ross.py`, `modeling_ross/denoiser_sd.py`):
- the backbone has the names transformers and the Hub write for `Qwen2_5_VLForConditionalGeneration`: `model.*`
  (the text decoder), `visual.*` (the ViT), `lm_head.weight`; transformers' in-memory names
  (`model.language_model.*`, `model.visual.*`) are read too;
- the ROSS head: `denoiser.unet.*` (diffusers' UNet names), `denoiser.mlp.{0,2}` / `denoiser.mlp_a.{0,2}` (image /
  action condition MLPs), `denoiser.factor` / `denoiser.factor_a` (their gates); `denoiser.pos_embed` is never read
  by the official forward and is dropped; the frozen SD VAE is `vae.*` (diffusers' AutoencoderKL names).
The vocabulary layouts are the same (`policies.config`), so embedding rows need no remapping.
Emu3's vision tokenizer is a checkpoint of its own (BAAI's `Emu3-VisionTokenizer`, the official
`reference/Emu3/emu3/tokenizer/modeling_emu3visionvq.py`): `load_official_vision_tokenizer` reads it, with its
config.json, into the image tokenizer of a model built with `vq_model="emu3"` (transformers' `Emu3VQVAE`, whose
names differ: `VISION_RENAMES`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving

# Official name prefix -> w0sim name prefix (relative to the policy / expert), per part.
EXPERT_RENAMES = {
    "action_expert.layers.": "expert.layers.", "action_expert.norm.": "expert.norm.",
    "state_projector.": "state_in.",
}
DECODER_RENAMES = {
    "query": {"action_decoder.norm_final.": "query_norm.", "action_decoder.linear.": "query_out."},
    "flow": {"action_projector.W1.": "flow_in.", "action_projector.W2.": "flow_mix.0.",
             "action_projector.W3.": "flow_mix.2.", "action_decoder.adaLN_modulation.1.": "flow_time.1.",
             "action_decoder.linear.": "flow_out."},
    "ar": {"action_embed_projector.": "ar_in."},
    "anchor": {"anchor_mlp_planning.": "anchor_head.anchor_in.", "anchor_cluster_encoder.": "anchor_head.encoder.",
               "anchor_tf_decoder.": "anchor_head.decoder.", "anchor_policy_head.": "anchor_head.score."},
}
ANCHOR_UNUSED = ("action_decoder.",)  # the anchor variant's regression head, which its forward never calls
UNUSED = ("action_expert.embed_tokens.", "denoiser.pos_embed")  # saved by the official code, read by nothing
ROSS_RENAMES = {
    "denoiser.unet.": "diffusion_wm.unet.", "denoiser.mlp.": "diffusion_wm.image_mlp.",
    "denoiser.mlp_a.": "diffusion_wm.action_mlp.", "vae.": "vae.autoencoder.",
}
ROSS_GATES = {"denoiser.factor": "diffusion_wm.image_gate", "denoiser.factor_a": "diffusion_wm.action_gate"}
# Qwen2.5-VL's saved names -> transformers' in-memory ones (the Hub layout keeps the text decoder at `model.`).
QWEN_SAVED = {"visual.": "model.visual.", "model.": "model.language_model."}

# Emu3-VisionTokenizer name pieces and transformers' Emu3VQVAE ones, applied in order (from the start of a name unless
# the piece starts with "."): {s} is encoder or decoder, {i} a block index, {p} q, k or v. The attention q / k / v /
# proj_out are 1x1 convolutions there and Linear layers in transformers.
VISION_NAMES = (
    ("{s}.mid.attn_1.norm.", "{s}.middle_block.attn_norm."), ("{s}.mid.", "{s}.middle_block."),
    ("encoder.down.", "encoder.down_block.down."), ("decoder.up.", "decoder.up_block.up."),
    (".attn.{i}.norm.", ".attn_norms.{i}."), (".attn.{i}.{p}.", ".attn.{i}.{p}_proj."),
    (".attn_1.{p}.", ".attn_1.{p}_proj."), (".attn.{i}.proj_out.", ".attn.{i}.out_proj."),
    (".attn_1.proj_out.", ".attn_1.out_proj."),
)
PIECE_GROUPS = {"s": "encoder|decoder", "i": r"\d+", "p": "[qkv]"}


def _piece_rule(old: str, new: str) -> tuple[re.Pattern, str]:
    """A (pattern, replacement) that rewrites name piece `old` into `new` (VISION_NAMES' placeholders)."""
    pattern = re.escape(old)
    for name, group in PIECE_GROUPS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{group})")
        new = new.replace("{" + name + "}", rf"\g<{name}>")
    return re.compile(pattern if old.startswith(".") else "^" + pattern), new


VISION_RENAMES = tuple(_piece_rule(official, ours) for official, ours in VISION_NAMES)
VISION_INVERSE = tuple(_piece_rule(ours, official) for official, ours in VISION_NAMES)
# What transformers writes in a safetensors header (its from_pretrained refuses a file without it, as 4.44 does).
PT_METADATA = {"format": "pt"}
VISION_PROJECTIONS = re.compile(r"\.(attn_1|attn\.\d+)\.(q_proj|k_proj|v_proj|out_proj)\.weight$")
# Emu3-VisionTokenizer config.json field -> w0sim config field.
VISION_CONFIG = {"codebook_size": "vq_codebook_size", "embed_dim": "vq_code_dim", "z_channels": "emu3_vq_latent_channels",
                 "num_res_blocks": "emu3_vq_res_blocks", "attn_resolutions": "emu3_vq_attn_stages",
                 "temporal_downsample_factor": "emu3_vq_temporal_factor"}


class ConversionError(ValueError):
    """The weights do not fit the model: the message names the tensors at fault."""


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers checkpoint folder: model.safetensors, or the shards its index lists."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    single = folder / "model.safetensors"
    if not single.exists():
        raise ConversionError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    return load_file(single)


def _backbone_prefix(model: DriveVLAW0ForDriving) -> str:
    return "vla.lm." if model.policy is None else "policy.backbone.lm."


def _decoder(model: DriveVLAW0ForDriving) -> str:
    """The expert decoder's renaming table: query, flow, ar, or anchor (the query decoder with an anchor head)."""
    return "anchor" if model.config.num_anchors else model.config.expert_decoder


def _ar_head_rows(c: DriveVLAW0Config) -> list[int]:
    """Vocabulary rows of the AR expert's head classes: the FAST ids in id order, then <eoa>."""
    return [c.fast_to_id(k) for k in range(c.fast_vocab_size)] + [c.special_id("<eoa>")]


def _rename(name: str, renames: dict[str, str]) -> str | None:
    for old, new in renames.items():
        if name.startswith(old):
            return new + name[len(old):]
    return None


def _qwen_backbone_name(stem: str) -> str:
    """A Qwen2.5-VL tensor name, saved or in-memory, -> its in-memory name."""
    if stem.startswith(("model.language_model.", "model.visual.", "lm_head.")):
        return stem
    return _rename(stem, QWEN_SAVED) or stem


def official_to_w0sim(weights: dict[str, torch.Tensor], model: DriveVLAW0ForDriving) -> dict[str, torch.Tensor]:
    """Official (or transformers Emu3 / Qwen2.5-VL) tensors -> `model`'s state-dict names; a backbone alone fills only
    the backbone. Unknown names raise."""
    c, out, unknown = model.config, {}, []
    backbone = _backbone_prefix(model)
    qwen = model.backbone.is_qwen
    decoder = DECODER_RENAMES[_decoder(model)] if model.policy is not None else {}
    unused = UNUSED + (ANCHOR_UNUSED if _decoder(model) == "anchor" else ())
    ross = model.diffusion_wm is not None
    for name, tensor in weights.items():
        stem = name[len("vlm."):] if name.startswith("vlm.") else name
        if stem.startswith(("model.", "lm_head.")) or (qwen and stem.startswith("visual.")):
            out[backbone + (_qwen_backbone_name(stem) if qwen else stem)] = tensor
        elif name.startswith(unused):
            continue
        elif ross and name in ROSS_GATES:
            out[ROSS_GATES[name]] = tensor
        elif ross and (new := _rename(name, ROSS_RENAMES)):
            out[new] = tensor
        elif model.policy is not None and (new := _rename(name, {**EXPERT_RENAMES, **decoder})):
            out["policy." + new] = tensor
        elif model.policy is not None and name == "action_queries" and c.expert_decoder == "query":
            out["policy.queries"] = tensor.reshape(tensor.shape[-2:])
        elif model.policy is not None and name == "action_projector.pos_embed.weight" and c.expert_decoder == "flow":
            out["policy.flow_pos"] = tensor
        elif model.policy is not None and name == "action_lm_head.weight" and c.expert_decoder == "ar":
            out["policy.ar_out.weight"] = tensor[_ar_head_rows(c)]
        else:
            unknown.append(name)
    if unknown:
        kind = f"{c.track} " + (f"{c.expert_decoder!r} " if model.policy is not None else "")
        raise ConversionError(f"{len(unknown)} tensors have no place in a {kind}DriveVLAW0ForDriving: "
                              f"{', '.join(sorted(unknown)[:5])}")
    return out


def w0sim_to_official(model: DriveVLAW0ForDriving) -> dict[str, torch.Tensor]:
    """`model`'s weights under the official names: the Emu3 backbone and action expert (`vlm.` + Emu3 names with an
    expert, the plain Emu3 names without), or the Qwen2.5-VL backbone under its saved names and the ROSS head and
    VAE. The VQ-VAE and other parts without an official counterpart are left out."""
    c, out = model.config, {}
    backbone = _backbone_prefix(model)
    vlm = "" if model.policy is None else "vlm."
    inverse = {new: old for old, new in {**EXPERT_RENAMES, **DECODER_RENAMES[_decoder(model)]}.items()}
    qwen_saved = {new: old for old, new in QWEN_SAVED.items()}
    ross = {new: old for old, new in ROSS_RENAMES.items()}
    gates = {new: old for old, new in ROSS_GATES.items()}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().contiguous()
        if name.startswith(backbone):
            stem = name[len(backbone):]
            out[vlm + (_rename(stem, qwen_saved) or stem if model.backbone.is_qwen else stem)] = tensor
        elif name in gates:
            out[gates[name]] = tensor
        elif (old := _rename(name, ross)) is not None:
            out[old] = tensor
        elif model.policy is None or not name.startswith("policy."):
            continue
        elif (old := _rename(name[len("policy."):], inverse)) is not None:
            out[old] = tensor
        elif name == "policy.queries":
            out["action_queries"] = tensor[None]
        elif name == "policy.flow_pos":
            out["action_projector.pos_embed.weight"] = tensor
        elif name == "policy.ar_out.weight":
            full = tensor.new_zeros(c.vocab_size, tensor.shape[1])
            full[_ar_head_rows(c)] = tensor
            out["action_lm_head.weight"] = full
    return out


def _check_fit(where: str, weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor], required: list[str]) -> None:
    """Raise a `ConversionError` naming, after `where`, the converted tensors of another shape than the model's,
    those the model lacks, or the `required` model tensors not given (the first 5 of a kind)."""
    wrong = [f"{k} {list(v.shape)} (model {list(own[k].shape)})" for k, v in weights.items()
             if k in own and v.shape != own[k].shape]
    extra = [k for k in weights if k not in own]
    missing = [k for k in required if k not in weights]
    for label, names in (("shape mismatch", wrong), ("not in the model", extra), ("missing", missing)):
        if names:
            raise ConversionError(f"{where}: {label}: {', '.join(names[:5])}"
                                  + (f" and {len(names) - 5} more" if len(names) > 5 else ""))


def load_official(model: DriveVLAW0ForDriving, folder: str | Path, backbone_only: bool = False,
                  anchors: str | Path | None = None) -> DriveVLAW0ForDriving:
    """Load an official checkpoint folder's weights into `model` (built from the matching config). Every tensor of
    the folder must fit a tensor of the model with the same shape; every model tensor of the converted parts
    (the backbone, and unless `backbone_only` the expert, or the Qwen track's ROSS head and VAE) must be given.
    `anchors`: the anchor variant's anchor file (a .npy of (K, P, 3) x, y, yaw, as `cluster_centers_8192.npy`)."""
    weights = official_to_w0sim(read_weights(folder), model)
    if anchors is not None:
        weights["policy.anchors"] = torch.from_numpy(np.load(anchors)).float()
    own = model.state_dict()
    if backbone_only:
        prefixes = (_backbone_prefix(model),)
    elif model.policy is not None:
        prefixes = ("policy.",)
    else:
        prefixes = (_backbone_prefix(model),) + (("diffusion_wm.", "vae.") if model.diffusion_wm is not None else ())
    _check_fit(f"{folder}", weights, own, [k for k in own if k.startswith(prefixes)])
    model.load_state_dict(weights, strict=False)
    return model


def save_official(model: DriveVLAW0ForDriving, folder: str | Path) -> Path:
    """Write `w0sim_to_official(model)` as folder/model.safetensors (for tools that read the official layout)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(w0sim_to_official(model), folder / "model.safetensors", metadata=PT_METADATA)
    return folder


def _renamed(name: str, rules: tuple[tuple[re.Pattern, str], ...]) -> str:
    for pattern, new in rules:
        name = pattern.sub(new, name)
    return name


def vision_tokenizer_fields(folder: str | Path) -> dict[str, Any]:
    """The w0sim config fields (vq_model "emu3", emu3_vq_*, vq_codebook_size, vq_code_dim) of the Emu3-VisionTokenizer
    in `folder`, from its config.json."""
    path = Path(folder) / "config.json"
    try:
        official = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConversionError(f"{path}: not a readable JSON config ({type(err).__name__}: {err})") from None
    if not isinstance(official, dict):
        raise ConversionError(f"{path}: holds a JSON {type(official).__name__}, not an object of fields")
    if official.get("double_z") or official.get("in_channels", 3) != 3 or official.get("out_channels", 3) != 3:
        raise ConversionError(f"{path}: an Emu3 vision tokenizer of RGB frames with double_z false is expected, got "
                              f"double_z {official.get('double_z')}, in/out channels {official.get('in_channels')} / "
                              f"{official.get('out_channels')}")
    missing = [k for k in (*VISION_CONFIG, "ch", "ch_mult") if k not in official]
    if missing:
        raise ConversionError(f"{path}: lacks {', '.join(missing)}")
    fields = {ours: official[theirs] for theirs, ours in VISION_CONFIG.items()}
    return {"vq_model": "emu3", "emu3_vq_channels": [official["ch"] * m for m in official["ch_mult"]], **fields}


def load_official_vision_tokenizer(model: DriveVLAW0ForDriving, folder: str | Path) -> DriveVLAW0ForDriving:
    """Load an Emu3-VisionTokenizer checkpoint folder (official names, or transformers' Emu3VQVAE names) into the
    image tokenizer of `model`, which must be built with `vq_model="emu3"` and the folder's sizes
    (`vision_tokenizer_fields` of its config.json). Every tensor must be given, with its shape."""
    if model.config.vq_model != "emu3":
        raise ConversionError(f"the model's image tokenizer is vq_model {model.config.vq_model!r}; Emu3's weights "
                              "need vq_model 'emu3'")
    own = model.vq.model.state_dict()
    weights = {}
    for name, tensor in read_weights(folder).items():
        new = _renamed(name, VISION_RENAMES)
        if VISION_PROJECTIONS.search(new) and tensor.dim() == 4:
            tensor = tensor[:, :, 0, 0]  # a 1x1 convolution's kernel is the Linear layer's matrix
        weights[new] = tensor
    _check_fit(f"{folder}: vision tokenizer", weights, own, list(own))
    model.vq.model.load_state_dict(weights)
    return model


def save_official_vision_tokenizer(model: DriveVLAW0ForDriving, folder: str | Path) -> Path:
    """Write the image tokenizer of a `vq_model="emu3"` model as an Emu3-VisionTokenizer folder: model.safetensors
    under the official names and config.json with the official fields."""
    c = model.config
    if c.vq_model != "emu3":
        raise ConversionError(f"the model's image tokenizer is vq_model {c.vq_model!r}, not Emu3's")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, tensor in model.vq.model.state_dict().items():
        tensor = tensor.detach().contiguous()
        out[_renamed(name, VISION_INVERSE)] = tensor[:, :, None, None] if VISION_PROJECTIONS.search(name) else tensor
    save_file(out, folder / "model.safetensors", metadata=PT_METADATA)
    official = {theirs: getattr(c, ours) for theirs, ours in VISION_CONFIG.items()}  # tuples are written as lists
    ch = c.emu3_vq_channels[0]
    official.update(model_type="Emu3VisionVQ", ch=ch, ch_mult=[x // ch for x in c.emu3_vq_channels], double_z=False,
                    in_channels=3, out_channels=3, dropout=0.0)
    (folder / "config.json").write_text(json.dumps(official, indent=2) + "\n")
    return folder


__all__ = ["ConversionError", "load_official", "load_official_vision_tokenizer", "official_to_w0sim", "read_weights",
           "save_official", "save_official_vision_tokenizer", "vision_tokenizer_fields", "w0sim_to_official"]
