"""DriveVLAW0Config: every size and constant of the DriveVLA-W0 model family, with presets tiny / small / paper.

Sizes follow shared/specs/drivevla_w0.md (w0sim scale-down table) and drivevla_w0_paper.md §10.2.
The unified token vocabulary (specials, text, ego state, action bins, image codes) is laid out here
so that every module agrees on the id ranges.
"""
from __future__ import annotations

import math
from typing import Any

from transformers import PreTrainedConfig, Qwen2Config

# Specials of the unified vocabulary, in id order (ids 0..len-1).
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<boi>", "<eoi>", "<bos_state>", "<boa>", "<eoa>")
# Driving commands, NAVSIM order (one-hot index in the sim's driving command).
COMMANDS: tuple[str, ...] = ("left", "straight", "right", "unknown")
EXPERT_DECODERS: tuple[str, ...] = ("query", "ar", "flow")
IMAGE_INPUTS: tuple[str, ...] = ("vq", "patch")


class DriveVLAW0Config(PreTrainedConfig):
    """Configuration of the DriveVLA-W0 policy: image tokenizer, VLA backbone, action expert, losses.

    Use `DriveVLAW0Config.preset("tiny" | "small" | "paper", **overrides)`.
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

    # --- continuous image path (ViT / Qwen2.5-VL track): patch encoder, patch = vq_downsample ---
    image_input: str = "vq"  # "vq": image tokens are VQ codes; "patch": continuous patch features
    patch_dim: int = 64
    patch_layers: int = 2
    patch_heads: int = 4

    # --- text ---------------------------------------------------------------------------------
    text_vocab_size: int = 64  # capacity reserved for policies.text's word vocabulary
    max_text_length: int = 16  # truncation for InstructionTokenizer.batch_encode (data pipeline)

    # --- ego state (discrete bins, one token each: speed, acceleration, command) ---------------
    state_speed_bins: int = 64
    state_speed_range: tuple[float, float] | list[float] = (0.0, 32.0)  # m/s
    state_accel_bins: int = 32
    state_accel_range: tuple[float, float] | list[float] = (-8.0, 8.0)  # m/s^2

    # --- actions (per pose x / y / heading uniform bins) ----------------------------------------
    num_poses: int = 8  # NAVSIM: 8 poses at 0.5 s = 4 s
    pose_interval_s: float = 0.5
    action_bins: int = 256
    action_x_range: tuple[float, float] | list[float] = (-5.0, 75.0)  # m, ego frame at t
    action_y_range: tuple[float, float] | list[float] = (-25.0, 25.0)  # m
    action_heading_range: tuple[float, float] | list[float] = (-math.pi / 2, math.pi / 2)  # rad

    # --- VLA backbone (Qwen2-family decoder) ----------------------------------------------------
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
    vocab_pad_to: int = 0  # pad the unified vocabulary to this size (paper: Emu3's 184,622)

    # --- action expert (same depth / heads / head_dim as the backbone, joint attention) --------
    expert_hidden_size: int = 128
    expert_intermediate_size: int = 512
    use_action_expert: bool = False  # DriveVLAW0ForDriving: False = the baseline VLA (AR actions via the backbone)
    expert_decoder: str = "query"  # "query" | "ar" | "flow" (drivevla_w0_paper.md §4.3)
    flow_steps: int = 10  # Euler steps, tau 1 -> 0
    flow_beta_a: float = 1.5  # tau = 1 - u, u ~ Beta(a, 1) (official Beta(1.5, 1))

    # --- diffusion world model (ViT / Qwen2.5-VL track, drivevla_w0_paper.md §3.2 / §10.5) ------
    diffusion_channels: tuple[int, ...] | list[int] = (32, 64)  # UNet block widths
    diffusion_latent_channels: int = 0  # channels of the target latent; 0 = vq_code_dim (VQ latents)
    diffusion_cond_channels: int = 32  # backbone image-state map, concatenated to the latent
    diffusion_cross_dim: int = 64  # width of the action-feature token (cross-attention context)
    diffusion_train_timesteps: int = 1000
    diffusion_sample_steps: int = 20
    diffusion_loss_weight: float = 1.0  # beta (official: 1.0); applied by the trainer

    # --- losses -------------------------------------------------------------------------------
    action_loss_weight: float = 1.0
    world_model_loss_weight: float = 0.5  # alpha; official scripts' vision weight (paper §3.3)
    use_world_model: bool = True  # False = the action-only baseline
    world_model_on_history: bool = False  # paper code also labels history frames' image tokens

    def __post_init__(self, **kwargs: Any) -> None:
        # JSON stores tuples as lists; normalise so a reloaded config compares equal.
        for name in ("vq_channels", "diffusion_channels", "state_speed_range", "state_accel_range",
                     "action_x_range", "action_y_range", "action_heading_range"):
            setattr(self, name, tuple(getattr(self, name)))
        factor = self.vq_downsample
        if self.image_height % factor or self.image_width % factor:
            raise ValueError(f"image {self.image_height}x{self.image_width} is not divisible by "
                             f"the VQ downsampling factor {factor} (vq_channels={self.vq_channels})")
        if self.image_input not in IMAGE_INPUTS:
            raise ValueError(f"image_input={self.image_input!r}; choose from {IMAGE_INPUTS}")
        if self.expert_decoder not in EXPERT_DECODERS:
            raise ValueError(f"expert_decoder={self.expert_decoder!r}; choose from {EXPERT_DECODERS}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        super().__post_init__(**kwargs)

    # --- presets ------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "DriveVLAW0Config":
        """A named configuration (`tiny`, `small`, `paper`) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown DriveVLA-W0 preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # --- derived sizes --------------------------------------------------------------------------
    @property
    def vq_downsample(self) -> int:
        return 2 ** len(self.vq_channels)

    @property
    def image_grid(self) -> tuple[int, int]:
        """(h, w) of the VQ code grid."""
        return self.image_height // self.vq_downsample, self.image_width // self.vq_downsample

    @property
    def image_tokens_per_frame(self) -> int:
        h, w = self.image_grid
        return h * w

    @property
    def num_action_tokens(self) -> int:
        return self.num_poses * 3

    # --- unified vocabulary layout: [specials | text | state | action bins | image codes | pad] --
    def special_id(self, name: str) -> int:
        return SPECIAL_TOKENS.index(name)

    @property
    def pad_id(self) -> int:
        return SPECIAL_TOKENS.index("<pad>")

    @property
    def text_offset(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def state_offset(self) -> int:
        return self.text_offset + self.text_vocab_size

    @property
    def speed_offset(self) -> int:
        return self.state_offset

    @property
    def accel_offset(self) -> int:
        return self.speed_offset + self.state_speed_bins

    @property
    def command_offset(self) -> int:
        return self.accel_offset + self.state_accel_bins

    @property
    def action_offset(self) -> int:
        return self.command_offset + len(COMMANDS)

    @property
    def image_offset(self) -> int:
        return self.action_offset + 3 * self.action_bins

    @property
    def vocab_size(self) -> int:
        return max(self.image_offset + self.vq_codebook_size, self.vocab_pad_to)

    # --- transformers configs of the parts ------------------------------------------------------
    def backbone_config(self) -> Qwen2Config:
        """The Qwen2 decoder configuration of the VLA backbone over the unified vocabulary."""
        cfg = Qwen2Config(
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
            attn_implementation="sdpa",
        )
        # Qwen2 reads an explicit head_dim when present (needed for the paired action expert).
        cfg.head_dim = self.head_dim
        return cfg

    def expert_config(self) -> Qwen2Config:
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
        action_bins=256,
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=64, intermediate_size=688, max_position_embeddings=1024,
        expert_hidden_size=128, expert_intermediate_size=512,
    ),
    "small": dict(
        image_height=72, image_width=128, num_history_frames=2,
        vq_channels=(32, 64, 128), vq_codebook_size=1024, vq_code_dim=64,
        action_bins=256,
        hidden_size=384, num_hidden_layers=8, num_attention_heads=6, num_key_value_heads=2,
        head_dim=64, intermediate_size=1024, max_position_embeddings=2048,
        expert_hidden_size=192, expert_intermediate_size=384,
        diffusion_channels=(64, 128), diffusion_cond_channels=64, diffusion_cross_dim=128,
        patch_dim=128, patch_layers=4,
    ),
    # Emu3-8B shape (configs/moe_fast_video.json): h 4096, 32 L, 32/8 heads x 128, MLP 14336,
    # RMSNorm 1e-5, RoPE 1e6, attention dropout 0.1, vocab 184,622 untied. Frames 256x144 -> 18x32
    # codes from a 32,768-code VQ. Expert: 32 paired layers, h 1024; MLP 1536 puts the expert
    # blocks at ~0.49B, the paper's "500M" (the third-party reading 1024/512 gives 0.39B).
    "paper": dict(
        image_height=144, image_width=256, num_history_frames=2,
        vq_channels=(128, 256, 512), vq_codebook_size=32768, vq_code_dim=256,
        action_bins=512,
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=14336, rms_norm_eps=1e-5, attention_dropout=0.1,
        max_position_embeddings=4096, vocab_pad_to=184622,
        expert_hidden_size=1024, expert_intermediate_size=1536,
        diffusion_channels=(320, 640, 1280, 1280), diffusion_cond_channels=320, diffusion_cross_dim=768,
        patch_dim=1280, patch_layers=32, patch_heads=16,  # Qwen2.5-VL ViT width / depth
    ),
}
