"""Interleaved VLA sequences: command text, history frames, ego state, actions, future frame -> ids, masks, positions, types.

Layout (w0sim keeps the paper's order, drivevla_w0.md "Sequence"):

    [text ...] [<boi> frame_1 codes <eoi>] ... [<boi> frame_F codes <eoi>]
    [<bos_state> speed accel command] [<boa> x1 y1 h1 ... x8 y8 h8 <eoa>] [<boi> future codes <eoi>]

Ego state is given as discrete tokens (speed bin, acceleration bin, command id) from
`policies.action_tokens.StateTokenizer`, so every input is an id of the one unified vocabulary
and the backbone needs no extra projection. Text is LEFT-padded: every segment after the text sits
at the same index in every row, so loss positions and the decoding position are shared by the
batch (no per-row loops), and position ids count only real tokens (cumsum of the mask).
Without actions the sequence ends with <boa> (the decoding prompt).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch

from policies.config import DriveVLAW0Config


class TokenType(IntEnum):
    """Per-token role, for per-type loss masks."""

    PAD = 0
    TEXT = 1
    IMAGE = 2  # history frames
    STATE = 3
    ACTION = 4
    FUTURE_IMAGE = 5  # world-model target frame
    MARKER = 6  # <boi> <eoi> <bos_state> <boa> <eoa>


@dataclass
class VLASequence:
    """A batch of interleaved sequences, all (B, L); `action_start` / `future_start` index the first
    action / future-image token (shared by all rows), `future_start` is None without a future frame."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    type_ids: torch.Tensor
    action_start: int
    future_start: int | None = None
    history_starts: tuple[int, ...] = ()  # index of the first code of each history frame
    frame_tokens: int = 0  # codes per frame (h*w)

    def image_positions(self, frame: int = -1) -> torch.Tensor:
        """(h*w,) sequence indices of the codes of history frame `frame` (default: the current one)."""
        start = self.history_starts[frame]
        return torch.arange(start, start + self.frame_tokens, device=self.input_ids.device)


def left_align(ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the real tokens of right-padded (B,T) rows to the right end: (ids, mask) left-padded."""
    t = ids.shape[1]
    shift = t - mask.sum(1, keepdim=True)  # (B,1) pads to put in front
    src = torch.arange(t, device=ids.device)[None] - shift
    valid = src >= 0
    gathered = ids.gather(1, src.clamp(min=0))
    return torch.where(valid, gathered, torch.full_like(ids, pad_id)), valid


class SequenceBuilder:
    """Builds `VLASequence` batches from already-tokenised parts (see module docstring)."""

    def __init__(self, config: DriveVLAW0Config) -> None:
        self.config = config
        self.boi, self.eoi = config.special_id("<boi>"), config.special_id("<eoi>")
        self.bos_state = config.special_id("<bos_state>")
        self.boa, self.eoa = config.special_id("<boa>"), config.special_id("<eoa>")

    def _image_block(self, codes: torch.Tensor, token_type: TokenType) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,F,h,w) codes -> (B, F*(h*w+2)) ids framed by <boi>/<eoi>, and their types."""
        b, f = codes.shape[:2]
        flat = codes.flatten(2) + self.config.image_offset
        boi = flat.new_full((b, f, 1), self.boi)
        eoi = flat.new_full((b, f, 1), self.eoi)
        ids = torch.cat([boi, flat, eoi], dim=2).flatten(1)
        types = torch.full_like(flat, int(token_type))
        types = torch.cat([torch.full_like(boi, int(TokenType.MARKER)), types,
                           torch.full_like(eoi, int(TokenType.MARKER))], dim=2).flatten(1)
        return ids, types

    def build(self, text_ids: torch.Tensor, text_mask: torch.Tensor, history_codes: torch.Tensor | None,
              state_ids: torch.Tensor, action_ids: torch.Tensor | None = None,
              future_codes: torch.Tensor | None = None, open_future: bool = False) -> VLASequence:
        """Assemble a batch.

        text_ids, text_mask: (B,T) right-padded ids of `InstructionTokenizer` (local text ids).
        history_codes: (B,F,h,w) VQ codes, oldest first; None on the continuous path (placeholder
        ids; the backbone puts patch features at those IMAGE positions). state_ids: (B,3) from `StateTokenizer`.
        action_ids: (B, num_poses*3) from `ActionTokenizer`, or None for a decoding prompt.
        future_codes: (B,h,w) VQ codes of the next frame (world-model target); needs action_ids.
        open_future: with action_ids and no future_codes, end with the future frame's <boi> (the
        context for sampling the next frame, `DriveVLAW0Backbone.generate_future_codes`).
        """
        c = self.config
        if (future_codes is not None or open_future) and action_ids is None:
            raise ValueError("a future frame needs action_ids: it follows the actions")
        if history_codes is None:
            history_codes = torch.zeros(text_ids.shape[0], c.num_history_frames, *c.image_grid,
                                        dtype=torch.long, device=text_ids.device)
        if history_codes.shape[1] != c.num_history_frames:
            raise ValueError(f"history_codes has {history_codes.shape[1]} frames, "
                             f"config.num_history_frames is {c.num_history_frames}")
        b = text_ids.shape[0]
        text, text_valid = left_align(text_ids + c.text_offset, text_mask.bool(), c.pad_id)
        parts = [text]
        types = [torch.where(text_valid, int(TokenType.TEXT), int(TokenType.PAD)).long()]

        img, img_types = self._image_block(history_codes, TokenType.IMAGE)
        per_frame = history_codes.shape[2] * history_codes.shape[3] + 2
        t = text.shape[1]
        history_starts = tuple(t + i * per_frame + 1 for i in range(history_codes.shape[1]))
        parts.append(img)
        types.append(img_types)

        parts.append(torch.cat([state_ids.new_full((b, 1), self.bos_state), state_ids], 1))
        types.append(torch.tensor([TokenType.MARKER] + [TokenType.STATE] * 3).expand(b, 4))

        parts.append(state_ids.new_full((b, 1), self.boa))
        types.append(torch.full((b, 1), int(TokenType.MARKER)))
        action_start = sum(p.shape[1] for p in parts)
        future_start = None
        if action_ids is not None:
            parts += [action_ids, action_ids.new_full((b, 1), self.eoa)]
            types += [torch.full_like(action_ids, int(TokenType.ACTION)),
                      torch.full((b, 1), int(TokenType.MARKER))]
            if future_codes is not None:
                fut, fut_types = self._image_block(future_codes[:, None], TokenType.FUTURE_IMAGE)
                future_start = action_start + action_ids.shape[1] + 2  # after <eoa> <boi>
                parts.append(fut)
                types.append(fut_types)
            elif open_future:
                future_start = action_start + action_ids.shape[1] + 2
                parts.append(action_ids.new_full((b, 1), self.boi))
                types.append(torch.full((b, 1), int(TokenType.MARKER)))

        device = text_ids.device
        input_ids = torch.cat([p.to(device) for p in parts], 1)
        type_ids = torch.cat([t.to(device=device, dtype=torch.long) for t in types], 1)
        attention_mask = (type_ids != int(TokenType.PAD)).long()
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        return VLASequence(input_ids, attention_mask, position_ids, type_ids, action_start, future_start,
                           history_starts, per_frame - 2)
