"""DriveVLAW0Config: every size and constant of the DriveVLA-W0 model family, with presets tiny / small / paper.

Sizes follow shared/specs/drivevla_w0.md (w0sim scale-down table) and drivevla_w0_paper.md §10.2. The paper's two
tracks are `image_input` "vq" (Emu3: VQ image codes, AR world model) and "vit" (Qwen2.5-VL: ViT features, diffusion
world model over an AutoencoderKL latent). The Emu3 track's token vocabulary is Emu3's layout
(drivevla_w0_paper.md §2.1) with the text part shrunk to what the model reads:

    [ instruction words | FAST action tokens (top of the text range) | <pad> | 210 Emu3 specials | image codes ]

FAST token k is text id `pad - 1 - k`, as the official code maps them; the specials keep Emu3's offsets from
<pad> (<boa> = pad + 201, ..., <eoi> = pad + 210) and image code c is id `pad + 211 + c`. With Emu3's text
vocabulary (151,643 ids) and codebook (32,768) these are exactly Emu3's ids, so an official checkpoint's
embedding rows keep their meaning.

The Qwen track keeps Qwen2.5's layout the same way: words | FAST tokens (pad - 1 - k, as the official Qwen code
maps them) | <|endoftext|> (= pad) | Qwen's specials at their offsets from it | the two action markers the official
code adds after Qwen's 151,665 tokens (`QWEN_SPECIAL_OFFSETS`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import Emu3TextConfig, PreTrainedConfig, Qwen2_5_VLConfig

# Emu3's special tokens, by offset from <pad> (= Emu3's 151643, "<|endoftext|>"); the ids in between are
# Qwen's reserved tokens, kept so the layout matches (configuration_emu3.py of the official code).
SPECIAL_OFFSETS: dict[str, int] = {
    "<pad>": 0, "<boa>": 201, "<eoa>": 202, "<eol>": 203, "<eof>": 204, "<bos>": 206, "<eos>": 207,
    "<img>": 208, "<boi>": 209, "<eoi>": 210,
}
# Qwen2.5's special tokens by offset from <|endoftext|> (151643), and the official code's added <action_start> /
# <action_end> (token_utils.py adds them after Qwen's 151,665 tokens; their order there follows a Python set, so
# <boa> < <eoa> is this project's choice).
QWEN_SPECIAL_OFFSETS: dict[str, int] = {
    "<pad>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|vision_start|>": 9, "<|vision_end|>": 10,
    "<|image_pad|>": 12, "<|video_pad|>": 13, "<boa>": 22, "<eoa>": 23,
}
IMAGE_CODE_OFFSET = 211  # first image code, from <pad> (Emu3's visual token 0 is 151854)
# Driving commands, NAVSIM order (one-hot index in the sim's driving command).
COMMANDS: tuple[str, ...] = ("left", "straight", "right", "unknown")
EXPERT_DECODERS: tuple[str, ...] = ("query", "ar", "flow")
IMAGE_INPUTS: tuple[str, ...] = ("vq", "vit")
VQ_MODELS: tuple[str, ...] = ("w0sim", "emu3")


def cross_field_problems(f: Mapping[str, Any]) -> list[str]:
    """Every way config fields that are valid alone contradict each other: `DriveVLAW0Config` refuses a config with
    any, and the checkpoint loader names them all in a config.json (`policies.checkpoint.config_problems`)."""
    problems = []
    if f["image_input"] == "vit":
        factors = {"the ViT token size": (f["vit_patch_size"] * f["vit_merge_size"], "vit_patch_size x vit_merge_size"),
                   "the VAE downsampling": (2 ** (len(f["vae_channels"]) - 1), "2 ** (len(vae_channels) - 1)")}
        if f["use_action_expert"]:
            problems.append("use_action_expert is true on the Qwen2.5-VL track (image_input 'vit'), which has no action "
                            "expert in the official code")
        if 2 * sum(f["mrope_section"]) != f["head_dim"]:
            problems.append(f"mrope_section {list(f['mrope_section'])} does not sum to head_dim / 2 "
                            f"({f['head_dim']} / 2)")
        if f["hidden_size"] != f["num_attention_heads"] * f["head_dim"]:
            problems.append(f"hidden_size is {f['hidden_size']}, not num_attention_heads x head_dim "
                            f"({f['num_attention_heads']} x {f['head_dim']}), as Qwen2.5 needs")
    elif f["vq_model"] == "emu3":
        channels = f["emu3_vq_channels"]
        factors = {"the Emu3 VQ downsampling": (2 ** (len(channels) - 1), "2 ** (len(emu3_vq_channels) - 1)")}
        problems += [f"emu3_vq_channels {list(channels)}: {c} is not a multiple of 32 (Emu3's group norms have 32 "
                     "groups)" for c in channels if c % 32]
        problems += [f"emu3_vq_channels {list(channels)}: {c} is not a multiple of the first stage's {channels[0]}"
                     for c in channels if c % channels[0]]
        for stage in f["emu3_vq_attn_stages"]:
            if stage >= len(channels) or channels[stage] != channels[-1]:
                problems.append(f"emu3_vq_attn_stages has stage {stage}, which is not a stage of emu3_vq_channels "
                                f"{list(channels)} with the last stage's channels (transformers' Emu3VQVAE sizes "
                                "every attention block alike)")
        if f["emu3_vq_temporal_factor"] & (f["emu3_vq_temporal_factor"] - 1):
            problems.append(f"emu3_vq_temporal_factor is {f['emu3_vq_temporal_factor']}, not a power of 2")
    else:
        factors = {"the VQ downsampling": (2 ** len(f["vq_channels"]), "2 ** len(vq_channels)")}
    for what, (factor, source) in factors.items():
        for side in ("image_height", "image_width"):
            if f[side] % factor:
                problems.append(f"{side} is {f[side]}, not a multiple of {what} {factor} ({source})")
    if f["num_anchors"] and (f["expert_decoder"] != "query" or not f["use_action_expert"]):
        problems.append(f"num_anchors is {f['num_anchors']}, but anchors are scored by the action expert's query "
                        "decoder (expert_decoder 'query', use_action_expert true)")
    if f["num_anchors"] and f["expert_hidden_size"] % f["anchor_heads"]:
        problems.append(f"expert_hidden_size is {f['expert_hidden_size']}, not a multiple of anchor_heads "
                        f"{f['anchor_heads']}")
    if f["num_attention_heads"] % f["num_key_value_heads"]:
        problems.append(f"num_attention_heads is {f['num_attention_heads']}, not a multiple of "
                        f"num_key_value_heads {f['num_key_value_heads']}")
    if not all(lo < hi for lo, hi in zip(f["action_low"], f["action_high"])):
        problems.append(f"action_low {list(f['action_low'])} is not below action_high {list(f['action_high'])} in "
                        "every quantity (dx, dy, dyaw)")
    return problems


class DriveVLAW0Config(PreTrainedConfig):
    """Configuration of the DriveVLA-W0 policy: image tokenizer, VLA backbone, action expert, losses.

    Use `DriveVLAW0Config.preset("tiny" | "small" | "paper", **overrides)`; `preset(name, image_input="vit")` is
    the preset's Qwen2.5-VL track.
    """

    model_type = "drivevla_w0"

    # --- frames -------------------------------------------------------------------------------
    image_height: int = 64
    image_width: int = 128
    num_history_frames: int = 2  # the current frame is the last one
    frame_interval_s: float = 1.0  # spacing of history frames (paper Table 9: 1 s beats 4 s); data pipeline

    # --- VQ-VAE image tokenizer (Emu3 path) ---------------------------------------------------
    vq_channels: tuple[int, ...] | list[int] = (16, 32, 64)  # one stride-2 stage per entry
    vq_codebook_size: int = 512
    vq_code_dim: int = 64
    vq_commitment_weight: float = 0.25
    vq_ema_decay: float = 0.99
    vq_restart_after: int = 10  # training steps a code may go unused before it is restarted
    vq_model: str = "w0sim"  # "w0sim": the conv VQ-VAE above (vq_channels); "emu3": Emu3's tokenizer (below)

    # --- Emu3's vision tokenizer (vq_model "emu3": transformers' Emu3VQVAE, policies.emu3_vq) --------
    # Defaults: BAAI's Emu3-VisionTokenizer (ch 256, ch_mult 1/2/2/4, z 4, 2 res blocks, attention in the last
    # stage, temporal factor 4; with vq_codebook_size 32768 and vq_code_dim 4).
    emu3_vq_channels: tuple[int, ...] | list[int] = (256, 512, 512, 1024)  # per stage; 2x down between stages
    emu3_vq_res_blocks: int = 2
    emu3_vq_attn_stages: tuple[int, ...] | list[int] = (3,)  # stages with self-attention
    emu3_vq_latent_channels: int = 4  # the encoder's output channels (Emu3's z_channels)
    emu3_vq_temporal_factor: int = 4  # a still frame is repeated this many times, as Emu3VQVAE.encode does

    # --- Qwen2.5-VL track (image_input "vit"): Qwen's ViT (Qwen2VLImageProcessor patches) ------------
    image_input: str = "vq"  # "vq": the Emu3 track (VQ codes); "vit": the Qwen2.5-VL track (ViT features)
    vit_patch_size: int = 8  # pixels (Qwen2.5-VL: 14)
    vit_merge_size: int = 2  # 2x2 patches merged into one token (Qwen2.5-VL's merger)
    vit_depth: int = 2
    vit_hidden_size: int = 64
    vit_intermediate_size: int = 128
    vit_heads: int = 4
    vit_window_size: int = 112  # pixels (Qwen2.5-VL's window attention)
    vit_fullatt_blocks: tuple[int, ...] | list[int] = (1,)  # blocks with full attention (Qwen2.5-VL: 7, 15, 23, 31)
    mrope_section: tuple[int, ...] | list[int] = (8, 12, 12)  # temporal / height / width halves of head_dim
    qwen_vocab_size: int = 0  # embedding rows of the Qwen backbone; 0 = just the layout (Qwen2.5-VL-7B: 152064)

    # --- AutoencoderKL of the Qwen track's diffusion world model (SD-1.5's VAE role) ---------------
    vae_channels: tuple[int, ...] | list[int] = (32, 64, 64, 64)  # one block per entry, 2x down after all but the last
    vae_latent_channels: int = 4
    vae_layers_per_block: int = 1  # SD-1.5: 2
    vae_kl_weight: float = 1e-6  # KL term of the stage-0 reconstruction loss
    vae_scaling_factor: float = 0.0  # latent x factor has unit variance; fitted after stage 0 (SD-1.5: 0.18215)

    # --- text: the command string of each segment --------------------------------------------
    text_vocab_size: int = 64  # capacity reserved for policies.text's word vocabulary
    max_text_length: int = 16  # truncation for InstructionTokenizer.batch_encode (data pipeline)

    # --- actions: per-step SE(2) motions, quantile-normalised, FAST tokens (paper §2.4) ------------
    num_poses: int = 8  # NAVSIM: 8 poses at 0.5 s = 4 s
    pose_interval_s: float = 0.5
    num_past_actions: int = 3  # past per-step motions before each segment's frame (no loss)
    segment_action_steps: int = 2  # the motion from one frame to the next (1 s); the last segment has num_poses
    action_low: tuple[float, ...] | list[float] = (-1.0, -1.0, -1.0)  # q01 of dx, dy, dyaw (fitted on the data)
    action_high: tuple[float, ...] | list[float] = (1.0, 1.0, 1.0)  # q99
    fast_vocab_size: int = 256  # BPE vocabulary of the FAST tokenizer (paper: 2048)
    fast_scale: float = 10.0  # DCT coefficients x scale, rounded
    fast_tokenizer: str = ""  # the fitted FAST tokenizer (FastActionTokenizer.to_json); "" until fitted
    max_action_tokens: int = 15  # AR decoding cap, <boa> and <eoa> included (official)

    # --- VLA backbone (Emu3 decoder: Llama-style, no attention biases) -------------------------
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 688
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    attention_dropout: float = 0.0
    max_position_embeddings: int = 1024
    initializer_range: float = 0.02

    # --- action expert (same depth / heads / head_dim as the backbone, joint attention) --------
    expert_hidden_size: int = 128
    expert_intermediate_size: int = 512
    use_action_expert: bool = False  # DriveVLAW0ForDriving: False = the baseline VLA (AR actions via the backbone)
    expert_decoder: str = "query"  # "query" | "ar" | "flow" (drivevla_w0_paper.md §4.3)
    num_anchors: int = 0  # query decoder: score K trajectory anchors instead of regressing (official: 8192); 0 = off
    anchor_queries: int = 256  # expert queries of the anchor variant (official)
    anchor_layers: int = 3  # encoder and decoder layers of the anchor head (official)
    anchor_heads: int = 8
    flow_steps: int = 10  # Euler steps, tau 1 -> 0
    flow_beta_a: float = 1.5  # tau = 1 - u, u ~ Beta(a, 1) (official Beta(1.5, 1))

    # --- diffusion world model (Qwen2.5-VL track, drivevla_w0_paper.md §3.2 / §10.5) ----------------
    diffusion_channels: tuple[int, ...] | list[int] = (32, 64)  # UNet block widths (SD-1.5: 320, 640, 1280, 1280)
    diffusion_layers_per_block: int = 1  # SD-1.5: 2
    diffusion_cross_dim: int = 64  # cross-attention width (SD-1.5's CLIP: 768); its context is constant
    diffusion_train_timesteps: int = 1000
    diffusion_sample_steps: int = 20
    diffusion_loss_weight: float = 1.0  # beta (official: 1.0); applied by the trainer

    # --- losses: one CE over every label, visual-token classes weighted (official `vision_loss_weight`) ---
    vision_loss_weight: float = 0.5  # class weight of image codes in the weighted-mean CE (paper §3.3)
    use_world_model: bool = True  # False = the action-only baseline (image codes carry no label)

    def __post_init__(self, **kwargs: Any) -> None:
        # JSON stores tuples as lists; normalise so a reloaded config compares equal.
        for name in ("vq_channels", "diffusion_channels", "action_low", "action_high", "vit_fullatt_blocks",
                     "mrope_section", "vae_channels", "emu3_vq_channels", "emu3_vq_attn_stages"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.image_input not in IMAGE_INPUTS:
            raise ValueError(f"image_input={self.image_input!r}; choose from {IMAGE_INPUTS}")
        if self.vq_model not in VQ_MODELS:
            raise ValueError(f"vq_model={self.vq_model!r}; choose from {VQ_MODELS}")
        if self.expert_decoder not in EXPERT_DECODERS:
            raise ValueError(f"expert_decoder={self.expert_decoder!r}; choose from {EXPERT_DECODERS}")
        if len(self.action_low) != 3 or len(self.action_high) != 3:
            raise ValueError(f"action_low {self.action_low} / action_high {self.action_high} must be 3 values "
                             "(dx, dy, dyaw) each, low below high")
        problems = cross_field_problems(vars(self))
        if problems:
            raise ValueError("; ".join(problems))
        super().__post_init__(**kwargs)

    # --- presets ------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "DriveVLAW0Config":
        """A named configuration (`tiny`, `small`, `paper`) with optional field overrides; with
        `image_input="vit"`, the preset's Qwen2.5-VL track (`VIT_PRESETS`, no action expert); with
        `vq_model="emu3"`, its Emu3 tokenizer (`EMU3_VQ_PRESETS`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown DriveVLA-W0 preset {name!r}; choose from {sorted(PRESETS)}")
        fields = dict(PRESETS[name])
        if overrides.get("image_input") == "vit":
            fields.update(use_action_expert=False, **VIT_PRESETS[name])
        if overrides.get("vq_model", fields.get("vq_model")) == "emu3":
            fields.update(EMU3_VQ_PRESETS[name])
        return cls(**{**fields, **overrides})

    # --- derived sizes --------------------------------------------------------------------------
    @property
    def vq_downsample(self) -> int:
        if self.vq_model == "emu3":
            return 2 ** (len(self.emu3_vq_channels) - 1)
        return 2 ** len(self.vq_channels)

    @property
    def vae_downsample(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def image_grid(self) -> tuple[int, int]:
        """(h, w) of a frame's image tokens: the VQ code grid, or the ViT's merged-patch grid."""
        size = self.vit_patch_size * self.vit_merge_size if self.image_input == "vit" else self.vq_downsample
        return self.image_height // size, self.image_width // size

    @property
    def vit_grid_thw(self) -> tuple[int, int, int]:
        """(t, h, w) patch grid of one frame as Qwen's image processor gives it (`image_grid_thw`)."""
        return 1, self.image_height // self.vit_patch_size, self.image_width // self.vit_patch_size

    @property
    def latent_grid(self) -> tuple[int, int]:
        """(h, w) of the VAE latent (the diffusion world model's target)."""
        return self.image_height // self.vae_downsample, self.image_width // self.vae_downsample

    @property
    def image_tokens_per_frame(self) -> int:
        h, w = self.image_grid
        return h * w

    # --- vocabulary (module docstring) ----------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self.text_vocab_size + self.fast_vocab_size

    @property
    def special_offsets(self) -> dict[str, int]:
        return QWEN_SPECIAL_OFFSETS if self.image_input == "vit" else SPECIAL_OFFSETS

    def special_id(self, name: str) -> int:
        offsets = self.special_offsets
        if name not in offsets:
            raise KeyError(f"{name} is not a special token of the {self.track} track's vocabulary")
        return self.pad_id + offsets[name]

    @property
    def track(self) -> str:
        return "Qwen2.5-VL" if self.image_input == "vit" else "Emu3"

    def fast_to_id(self, fast: torch.Tensor | int) -> torch.Tensor | int:
        """FAST token(s) -> vocabulary id(s): the top of the text range, counting down (official mapping)."""
        return self.pad_id - 1 - fast

    def id_to_fast(self, ids: torch.Tensor | int) -> torch.Tensor | int:
        return self.pad_id - 1 - ids

    @property
    def fast_id_range(self) -> tuple[int, int]:
        """[start, stop) of the vocabulary ids of FAST tokens."""
        return self.text_vocab_size, self.pad_id

    @property
    def image_offset(self) -> int:
        """First image-code id (Emu3 track); on the Qwen track, past the vocabulary (no id is an image code)."""
        return self.vocab_size if self.image_input == "vit" else self.pad_id + IMAGE_CODE_OFFSET

    @property
    def vocab_size(self) -> int:
        if self.image_input == "vit":
            return max(self.pad_id + max(QWEN_SPECIAL_OFFSETS.values()) + 1, self.qwen_vocab_size)
        return self.pad_id + IMAGE_CODE_OFFSET + self.vq_codebook_size

    # --- transformers configs of the parts ------------------------------------------------------
    def backbone_config(self) -> Emu3TextConfig:
        """The Emu3 decoder configuration of the VLA backbone (`Emu3ForCausalLM`) over the vocabulary."""
        cfg = Emu3TextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.initializer_range,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            attention_dropout=self.attention_dropout,
            tie_word_embeddings=False,
            pad_token_id=self.pad_id,
            bos_token_id=self.special_id("<bos>"),
            eos_token_id=self.special_id("<eos>"),
            attn_implementation="sdpa",
        )
        # Emu3's attention reads an explicit head_dim when present (needed for the paired action expert).
        cfg.head_dim = self.head_dim
        return cfg

    def qwen_config(self) -> Qwen2_5_VLConfig:
        """The `Qwen2_5_VLForConditionalGeneration` configuration of the Qwen track's backbone (text decoder and ViT)."""
        text = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.initializer_range, rms_norm_eps=self.rms_norm_eps,
            attention_dropout=self.attention_dropout, pad_token_id=self.pad_id, bos_token_id=self.pad_id,
            eos_token_id=self.special_id("<|im_end|>"), tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta,
                             "mrope_section": list(self.mrope_section)},
        )
        vision = dict(
            depth=self.vit_depth, hidden_size=self.vit_hidden_size, intermediate_size=self.vit_intermediate_size,
            num_heads=self.vit_heads, patch_size=self.vit_patch_size, spatial_merge_size=self.vit_merge_size,
            temporal_patch_size=2, window_size=self.vit_window_size, out_hidden_size=self.hidden_size,
            fullatt_block_indexes=list(self.vit_fullatt_blocks), initializer_range=self.initializer_range,
        )
        ids = {name: self.special_id(token) for name, token in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                                attn_implementation="sdpa", **ids)

    def expert_config(self) -> Emu3TextConfig:
        """Decoder-layer configuration of the action expert: its own width and MLP, the backbone's
        depth, heads, KV heads and head_dim (joint attention concatenates both experts' K/V)."""
        cfg = self.backbone_config()
        cfg.hidden_size = self.expert_hidden_size
        cfg.intermediate_size = self.expert_intermediate_size
        return cfg


# Spec tables: drivevla_w0.md "w0sim scale-down" and drivevla_w0_paper.md §10.2 / §2.1 / §4.1.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        image_height=64, image_width=128, num_history_frames=2,
        vq_channels=(16, 32, 64), vq_codebook_size=512, vq_code_dim=64,
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=64, intermediate_size=688, max_position_embeddings=1024,
        expert_hidden_size=128, expert_intermediate_size=512,
    ),
    "small": dict(
        image_height=72, image_width=128, num_history_frames=2,
        vq_channels=(32, 64, 128), vq_codebook_size=1024, vq_code_dim=64,
        hidden_size=384, num_hidden_layers=8, num_attention_heads=6, num_key_value_heads=2,
        head_dim=64, intermediate_size=1024, max_position_embeddings=2048,
        expert_hidden_size=192, expert_intermediate_size=384, fast_vocab_size=512,
        diffusion_channels=(64, 128), diffusion_cross_dim=128,
    ),
    # Emu3-8B shape (configs/moe_fast_video.json): h 4096, 32 L, 32/8 heads x 128, MLP 14336,
    # RMSNorm 1e-5, RoPE 1e6, attention dropout 0.1, vocab 184,622 untied. Frames 256x144 -> 18x32
    # codes from Emu3's vision tokenizer (32,768 codes; EMU3_VQ_PRESETS). Expert: 32 paired layers, h 1024; MLP
    # 1536 puts the expert blocks at ~0.49B, the paper's "500M" (the third-party reading 1024/512 gives 0.39B).
    # vq_channels and vq_code_dim size w0sim's own VQ-VAE, when `vq_model="w0sim"` asks for it.
    "paper": dict(
        image_height=144, image_width=256, num_history_frames=2, vq_model="emu3",
        vq_channels=(128, 256, 512), vq_codebook_size=32768, vq_code_dim=256,
        text_vocab_size=151643 - 2048, fast_vocab_size=2048,  # Emu3's ids exactly: vocabulary 184,622
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=14336, rms_norm_eps=1e-5, attention_dropout=0.1,
        max_position_embeddings=4096,
        expert_hidden_size=1024, expert_intermediate_size=1536,
    ),
}
# The Qwen2.5-VL track's changes to each preset (`preset(name, image_input="vit")`). Paper: Qwen2.5-VL-7B's shape
# (its config.json): text h 3584, 28 L, 28/4 heads x 128, MLP 18944, RMSNorm 1e-6, RoPE 1e6 with mrope_section
# 16/24/24, vocab 152064 untied; ViT 32 blocks of 1280 (MLP 3420, 16 heads, 14 px patches, 2x2 merge, window 112,
# full attention in 7/15/23/31). Frames 504x280 (the released run's max_pixels 147,456) -> 10x18 tokens. Diffusion:
# SD-1.5's UNet widths, 2 layers per block and CLIP width; its VAE (128-256-512-512, 2 layers): latents 35x63.
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": dict(vit_hidden_size=128, vit_depth=4, vit_intermediate_size=256, vit_fullatt_blocks=(1, 3)),
    "paper": dict(
        image_height=280, image_width=504, qwen_vocab_size=152064, vq_model="w0sim",  # no VQ tokenizer on this track
        hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        head_dim=128, intermediate_size=18944, rms_norm_eps=1e-6, attention_dropout=0.0,
        mrope_section=(16, 24, 24), vit_patch_size=14, vit_merge_size=2, vit_depth=32, vit_hidden_size=1280,
        vit_intermediate_size=3420, vit_heads=16, vit_window_size=112, vit_fullatt_blocks=(7, 15, 23, 31),
        vae_channels=(128, 256, 512, 512), vae_layers_per_block=2,
        diffusion_channels=(320, 640, 1280, 1280), diffusion_layers_per_block=2, diffusion_cross_dim=768,
    ),
}
# The Emu3 tokenizer of each preset (`preset(name, vq_model="emu3")`), 8x down like the presets' own. Paper: BAAI's
# Emu3-VisionTokenizer (32,768 codes of 4 dims; the class defaults). Tiny and small repeat a frame once, not 4
# times: the same latent for a still frame at a quarter of the work.
EMU3_VQ_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(emu3_vq_channels=(32, 64, 64, 128), emu3_vq_res_blocks=1, emu3_vq_temporal_factor=1, vq_code_dim=4),
    "small": dict(emu3_vq_channels=(64, 128, 128, 256), emu3_vq_res_blocks=1, emu3_vq_temporal_factor=1,
                  vq_code_dim=4),
    "paper": dict(vq_code_dim=4),
}
